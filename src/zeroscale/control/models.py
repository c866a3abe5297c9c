"""Models: CreateModel, DescribeModel, ListModels, DeleteModel over wire-shaped dicts.

The API layer has already validated input against botocore's model (types, lengths, patterns, enums,
required members, the 100-entry / 1024-character Environment limits); only semantic rules live here.
A container naming a ``ModelPackageName`` is resolved once, at CreateModel, to the package version's
containers (kept in the model's document as ``ResolvedContainers``, never described): deploying the model
later runs exactly that version.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from zeroscale.artifacts.extract import ReadCheck
from zeroscale.artifacts.fetch import LocalLocation, parse_model_data_url
from zeroscale.control.arns import Arns
from zeroscale.control.model_packages import ModelPackages
from zeroscale.control.resources import Resources
from zeroscale.errors import AccessDenied, DeployError, ValidationException
from zeroscale.images.names import digest_of
from zeroscale.runtimes.batching import MAX_BATCH_SIZE, batch_settings, unsupported
from zeroscale.runtimes.usercode import SUBMIT_DIRECTORY, check_templates
from zeroscale.store.db import Record, Store

KIND = "model"
ENVIRONMENT_MAX_TOTAL_BYTES = 32 * 1024

# DescribeModelOutput members echoed from the create request (the wire layer refuses the others).
_DESCRIBED = (
    "PrimaryContainer",
    "Containers",
    "InferenceExecutionConfig",
    "ExecutionRoleArn",
    "EnableNetworkIsolation",
)
_FROM_PACKAGE = ("Image", "ModelDataUrl", "ModelDataSource", "ContainerHostname")
RESOLVED = "ResolvedContainers"  # the containers a ModelPackageName stood for (stored, never described)
# The IAM user who created the model, [name, user id] (stored, never described; absent: the admin): model
# data on the server's disk is read with that user's rights (``Deployer``), as an execution role bounds AWS's.
READ_AS = "ReadAs"


def creator(doc: Mapping[str, Any]) -> tuple[str, str]:
    """The IAM user who created a model or a transform job (its ``READ_AS``), (name, user id); ("", "")
    for the admin."""
    read_as = doc.get(READ_AS) or ("", "")
    return str(read_as[0]), str(read_as[1])


def runnable_containers(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The containers a model runs, in order (a model package's, where one was named)."""
    resolved = doc.get(RESOLVED)
    if resolved is not None:
        return [dict(c) for c in resolved]
    primary = doc.get("PrimaryContainer")
    return [dict(primary)] if primary else [dict(c) for c in doc.get("Containers") or []]


def execution_mode(doc: Mapping[str, Any]) -> str:
    """How several containers are invoked: ``Serial`` (an inference pipeline, the default) or ``Direct``."""
    return str((doc.get("InferenceExecutionConfig") or {}).get("Mode") or "Serial")


def _check_url(url: str, prefix: bool, where: str) -> None:
    """A ModelDataUrl the artifact store can read, refused at CreateModel rather than at deployment: an
    S3 object (``s3://`` or its ``https://`` URL), or a file or directory on the server by absolute path
    (``file:///...`` or ``/...``, zeroscale's widening of botocore's pattern). ``prefix``: a multi-model
    container's, the prefix its models' keys are appended to. An ``https://`` URL is left to the deployment
    (whether it is S3's depends on the S3 endpoint the server is configured with)."""
    if url[:8].lower() == "https://":
        return
    try:
        location = parse_model_data_url(url.rstrip("/") + "/model.tar.gz" if prefix else url)
    except DeployError as exc:
        raise ValidationException(f"{where}.ModelDataUrl: {exc}") from None
    if isinstance(location, LocalLocation) and not url.startswith(("/", "file:")):
        raise ValidationException(
            f"{where}.ModelDataUrl {url!r} is neither an S3 URL (s3://bucket/key) nor an absolute path on "
            "the server (file:///path/model.tar.gz)."
        )


def _check_source(s3: Mapping[str, Any], where: str) -> None:
    """An S3DataSource zeroscale runs: an uncompressed prefix, or one gzip-compressed tar archive."""
    uri, kind = str(s3.get("S3Uri", "")), s3.get("S3DataType")
    compression = s3.get("CompressionType")
    if kind == "S3Prefix":
        if not uri.endswith("/"):
            raise ValidationException(
                f"{where}.S3Uri must be an S3 prefix ending with '/' (S3DataType S3Prefix)."
            )
        if compression != "None":
            raise ValidationException(
                f"{where}: an S3Prefix is uncompressed files (CompressionType None); a compressed archive is "
                "one object (S3DataType S3Object, CompressionType Gzip)."
            )
        if s3.get("ETag") is not None:
            raise ValidationException(f"{where}.ETag names one object: give it with S3DataType S3Object.")
        return
    if uri.endswith("/") or not uri.startswith("s3://"):
        raise ValidationException(
            f"{where}.S3Uri must name one S3 object, s3://bucket/key (S3DataType S3Object)."
        )
    if compression != "Gzip":
        raise ValidationException(
            f"{where}: one uncompressed object (S3Object with CompressionType None) is not served by "
            "zeroscale yet: give a tar.gz archive (CompressionType Gzip), or the model's files under a "
            "prefix (S3Prefix)."
        )


def check_container(container: Mapping[str, Any], where: str) -> None:
    """One container runnable by zeroscale (an image, model data from one place, its environment)."""
    if not container.get("Image") and not container.get("ModelPackageName"):
        raise ValidationException(
            f"{where} must specify an Image or a ModelPackageName: zeroscale runs a container only from an "
            "image URI or a model package."
        )
    if container.get("ModelPackageName") and container.get("Image"):
        raise ValidationException(f"{where} must specify either an Image or a ModelPackageName, not both.")
    if isinstance(container.get("Image"), str):
        digest_of(container["Image"])  # a digest zeroscale could not check is refused, never ignored
    for key in ("ModelDataUrl", "ModelDataSource"):
        if container.get("ModelPackageName") and container.get(key) is not None:
            raise ValidationException(
                f"{where} names a ModelPackageName: its model data comes from the package, so {key} "
                "must not be given."
            )
    source = container.get("ModelDataSource")
    if source is not None:
        if container.get("ModelDataUrl"):
            raise ValidationException(
                f"{where} must specify either ModelDataUrl or ModelDataSource, not both."
            )
        _check_source(source.get("S3DataSource") or {}, f"{where}.ModelDataSource.S3DataSource")
    url = container.get("ModelDataUrl")
    if url:
        _check_url(str(url), container.get("Mode") == "MultiModel", where)
    if container.get("Mode") == "MultiModel" and not container.get("ModelDataUrl"):
        raise ValidationException(
            f"{where}.Mode is MultiModel: ModelDataUrl must name the S3 prefix that holds the models."
        )
    if container.get("MultiModelConfig") and container.get("Mode") != "MultiModel":
        raise ValidationException(f"{where}.MultiModelConfig is only for Mode MultiModel.")
    if container.get("Mode") == "MultiModel" and container.get("ModelDataSource") is not None:
        raise ValidationException(
            f"{where}.Mode is MultiModel: its models are archives under the ModelDataUrl prefix, so "
            "ModelDataSource must not be given."
        )
    env: Mapping[str, str] = container.get("Environment") or {}
    check_environment(env, f"{where}.Environment")
    total = sum(len(k.encode()) + len(v.encode()) for k, v in env.items())
    if total > ENVIRONMENT_MAX_TOTAL_BYTES:
        raise ValidationException(
            f"The Environment of {where} is {total} bytes in total; keys and values together must not "
            f"exceed {ENVIRONMENT_MAX_TOTAL_BYTES} bytes."
        )
    try:
        batch_settings(env)
        check_templates(env)
    except ValueError as exc:
        raise ValidationException(f"{where}.Environment: {exc}") from None
    if container.get("Mode") == "MultiModel" and MAX_BATCH_SIZE in env:
        why = unsupported("", user_code=False, image=False, several=False, multi_model=True)
        raise ValidationException(f"{where}.Environment: {why}")


def check_environment(env: Mapping[str, str], where: str) -> None:
    """A value a process's environment cannot hold is refused here, naming it, not at the first cold start
    (where the fork's set-up failed with a traceback as the endpoint's FailureReason)."""
    for key, value in env.items():
        if "\0" in value:
            raise ValidationException(
                f"{where}.{key}: the value holds a NUL character, which a process's environment cannot hold."
            )


def check_containers(params: Mapping[str, Any]) -> None:
    """Exactly one of PrimaryContainer or Containers, and every container runnable by zeroscale."""
    primary = params.get("PrimaryContainer")
    containers = params.get("Containers") or []
    if primary is not None and containers:
        raise ValidationException("Specify either PrimaryContainer or Containers, not both.")
    if primary is None and not containers:
        raise ValidationException("A model needs a container: specify either PrimaryContainer or Containers.")
    if primary is not None:
        check_container(primary, "PrimaryContainer")
        if params.get("InferenceExecutionConfig") is not None:
            raise ValidationException(
                "InferenceExecutionConfig applies to a model with Containers, not a PrimaryContainer."
            )
    for i, container in enumerate(containers, start=1):
        check_container(container, f"Containers.{i}")
        if (len(containers) > 1 or params.get("InferenceExecutionConfig")) and MAX_BATCH_SIZE in (
            container.get("Environment") or {}
        ):
            why = unsupported("", user_code=False, image=False, several=True, multi_model=False)
            raise ValidationException(f"Containers.{i}.Environment: {why}")
        if container.get("Mode") == "MultiModel" and (
            len(containers) > 1 or params.get("InferenceExecutionConfig")
        ):
            raise ValidationException(
                f"Containers.{i}.Mode is MultiModel: a multi-model endpoint runs one container, so it cannot "
                "be part of several containers or an InferenceExecutionConfig."
            )


def check_hostnames(containers: list[dict[str, Any]]) -> None:
    """Several containers: each ContainerHostname (given, or container-<n>) is unique."""
    seen: set[str] = set()
    for i, container in enumerate(containers, start=1):
        hostname = str(container.get("ContainerHostname") or f"container-{i}")
        if hostname.lower() in seen:
            raise ValidationException(
                f"ContainerHostname {hostname} is used by more than one container: each container of a "
                "model needs a hostname of its own."
            )
        seen.add(hostname.lower())


def check_local_data(containers: list[dict[str, Any]], reads: ReadCheck | None = None) -> None:
    """Model data on the server's disk is there when the model is created, as SageMaker checks an S3
    object's (``s3://`` is looked at when an endpoint deploys the model: a call to S3 is not made inside a
    control-plane call). A multi-model prefix may be empty until its models are put there. ``reads``: the
    caller's rights (an IAM user's), for where each path leads through symlinks now (the path as written
    was authorized before the call; resolving it touches the disk, so it is done here, off the event
    loop): AccessDenied with AWS's message, before whether it exists is said."""
    for container in containers:
        multi_model = container.get("Mode") == "MultiModel"
        url = container.get("ModelDataUrl")
        submit = str((container.get("Environment") or {}).get(SUBMIT_DIRECTORY, ""))
        try:  # a ModelDataUrl was checked with its container; the source archive's URL is checked here
            submitted = parse_model_data_url(submit) if submit.startswith("file://") else None
        except DeployError as exc:
            raise ValidationException(f"Environment.{SUBMIT_DIRECTORY}: {exc}") from None
        for given, location, prefix in (
            (url, parse_model_data_url(url) if url else None, multi_model),
            (submit, submitted, False),
        ):
            if not isinstance(location, LocalLocation):
                continue
            if reads is not None:
                real = Path(os.path.realpath(location.path))
                why = reads(real / "*" if prefix else real)  # a prefix: everything under it
                if why is not None:
                    raise AccessDenied(why)
            if not prefix and not location.path.exists():
                raise ValidationException(f"Could not find model data at {given}.")


class Models:
    def __init__(
        self,
        store: Store,
        arns: Arns,
        clock: Callable[[], float] = time.time,
        packages: ModelPackages | None = None,
        local_reads: Callable[[tuple[str, str]], ReadCheck | None] | None = None,
    ) -> None:
        """``local_reads``: what an IAM user (name, user id) may read on the server's disk (None: all)."""
        self._res = Resources(store, arns, KIND, "model")
        self._clock = clock
        self._packages = packages
        self._local_reads = local_reads

    def create(self, params: Mapping[str, Any], read_as: tuple[str, str] = ("", "")) -> dict[str, Any]:
        """``read_as``: the IAM user calling, (name, user id); ("", "") for the admin."""
        name: str = params["ModelName"]
        if self._res.find(name) is not None:
            raise self._res.duplicate(name)
        check_containers(params)
        doc = copy.deepcopy(dict(params))
        if any(c.get("ModelPackageName") for c in runnable_containers(doc)):
            doc[RESOLVED] = self._resolve(runnable_containers(doc))
        check_hostnames(runnable_containers(doc))
        reads = self._local_reads(read_as) if self._local_reads is not None else None
        check_local_data(runnable_containers(doc), reads)
        doc["EnableNetworkIsolation"] = bool(doc.get("EnableNetworkIsolation", False))
        doc.setdefault("Tags", [])
        if read_as[0]:
            doc[READ_AS] = list(read_as)
        return {"ModelArn": self._res.insert(name, doc, self._clock())}

    def _resolve(self, containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each container naming a model package -> that version's containers (the container's own
        Environment and ContainerHostname laid over theirs)."""
        out: list[dict[str, Any]] = []
        for container in containers:
            name = container.get("ModelPackageName")
            if not name:
                out.append(container)
                continue
            if self._packages is None:
                raise ValidationException("Model packages are not served by this server.")
            package = self._packages.resolve(str(name))
            inners = package.doc["InferenceSpecification"]["Containers"]
            if container.get("ContainerHostname") and len(inners) > 1:
                raise ValidationException(
                    f"ContainerHostname {container['ContainerHostname']!r} names one container, but model "
                    f"package {package.arn} has {len(inners)}: each keeps the hostname the package gives it."
                )
            for inner in inners:
                merged = {k: copy.deepcopy(v) for k, v in inner.items() if k in _FROM_PACKAGE}
                merged["Environment"] = {
                    **(inner.get("Environment") or {}),
                    **(container.get("Environment") or {}),
                }
                if container.get("ContainerHostname"):
                    merged["ContainerHostname"] = container["ContainerHostname"]
                merged["ModelPackageArn"] = package.arn
                out.append(merged)
        return out

    def get(self, name: str) -> Record:
        """The stored model; ValidationException ``Could not find model "<arn>".`` when absent."""
        return self._res.get(name)

    def describe(self, name: str) -> dict[str, Any]:
        rec = self.get(name)
        out: dict[str, Any] = {"ModelName": rec.name}
        out.update({k: rec.doc[k] for k in _DESCRIBED if rec.doc.get(k) is not None})
        out["ModelArn"] = rec.arn
        out["CreationTime"] = rec.created_at
        return out

    def list(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._res.page(
            params,
            ("Name", "CreationTime"),
            "Models",
            lambda r: {"ModelName": r.name, "ModelArn": r.arn, "CreationTime": r.created_at},
            documents=False,
        )

    def delete(self, name: str) -> None:
        self._res.delete(name)
