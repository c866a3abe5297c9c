"""What a call makes the server read or write for its caller, with the server's own rights: files on the
server, S3 objects through the server's S3 credentials, topics it publishes to. On AWS an execution role
bounds these; zeroscale has no roles, so the caller's own policies must allow each (``authz.py``), or any
user who may create a model could deploy another tenant's model data, or the server's own files, and have
a model's code read them.

Pure: a request's parameters in, ``Use``s out; the file system is not asked (this runs on the event loop, and
a path may lead onto a mount that hangs). Where a path leads through symlinks is checked with the same
rights by CreateModel in its thread, and every file read when the model deploys; the objects a transform
job's manifest names, when the job reads it. A member the call's handler refuses names nothing here; its
handler says why.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zeroscale.artifacts.fetch import LocalLocation, S3Location, parse_model_data_url, s3_object_of_https
from zeroscale.errors import DeployError
from zeroscale.images.names import parse_reference
from zeroscale.runtimes.image_uris import resolve_image
from zeroscale.runtimes.usercode import SUBMIT_DIRECTORY

LOCAL_READ = "zeroscale:ReadLocalFile"
USE_IMAGE = "zeroscale:UseImage"
S3_READ = "s3:GetObject"
S3_WRITE = "s3:PutObject"
PUBLISH = "sns:Publish"
SCALE = "sagemaker:UpdateEndpointWeightsAndCapacities"
ALARM_ACTIONS = ("OKActions", "AlarmActions", "InsufficientDataActions")
# a step scaling policy ARN names what it scales: ...:resource/sagemaker/endpoint/<name>/variant/<variant>:
_SCALED_ENDPOINT = re.compile(r":resource/sagemaker/endpoint/([^/:]+)/variant/")
# Application Auto Scaling's calls that change what a variant's instance count becomes
SCALING_CHANGES = frozenset(
    {"RegisterScalableTarget", "DeregisterScalableTarget", "PutScalingPolicy", "DeleteScalingPolicy"}
)
_SCALABLE_VARIANT = re.compile(r"endpoint/([^/]+)/variant/[^/]+")


@dataclass(frozen=True)
class Use:
    """``action`` on ``target``: an absolute path (LOCAL_READ), ``bucket/key`` (S3; a prefix ends with
    ``*``; ``*`` is every object), a topic's ARN (PUBLISH), an endpoint's name (SCALE; ``*``: every one),
    or a pushed image's name (USE_IMAGE; ``*``: every one)."""

    action: str
    target: str  # SCALE: an endpoint's name


def uses(params: Mapping[str, Any], s3_endpoint_url: str | None = None) -> list[Use]:
    """Every use a control-plane call's parameters name: the containers of CreateModel and
    CreateModelPackage, an endpoint configuration's asynchronous outputs and topics, a transform job's
    input and output."""
    found: list[Use] = []
    for container in containers(params):
        found += image(container.get("Image"))
        multi_model = container.get("Mode") == "MultiModel"
        found += model_data(container.get("ModelDataUrl"), s3_endpoint_url, prefix=multi_model)
        source = _dict(_dict(container.get("ModelDataSource")).get("S3DataSource"))
        found += model_data(
            source.get("S3Uri"), s3_endpoint_url, prefix=source.get("S3DataType") != "S3Object"
        )
        submit = _dict(container.get("Environment")).get(SUBMIT_DIRECTORY)
        if isinstance(submit, str) and "://" in submit:  # a path is the worker's to read, in its sandbox
            found += model_data(submit, s3_endpoint_url)
    output = _dict(_dict(params.get("AsyncInferenceConfig")).get("OutputConfig"))
    for member in ("S3OutputPath", "S3FailurePath"):
        found += _s3(S3_WRITE, output.get(member), s3_endpoint_url, under=True)
    for member in ("SuccessTopic", "ErrorTopic"):
        topic = _dict(output.get("NotificationConfig")).get(member)
        if isinstance(topic, str):
            found.append(Use(PUBLISH, topic))
    source = _dict(_dict(_dict(params.get("TransformInput")).get("DataSource")).get("S3DataSource"))
    if source.get("S3DataType") == "ManifestFile":
        # the manifest; the objects it names are known when the job reads it, and are checked then, each
        # with its creator's rights (``Authorizer.object_reads``)
        found += _s3(S3_READ, source.get("S3Uri"), s3_endpoint_url)
    else:
        found += _s3(S3_READ, source.get("S3Uri"), s3_endpoint_url, starts=True)
    output_path = _dict(params.get("TransformOutput")).get("S3OutputPath")
    found += _s3(S3_WRITE, output_path, s3_endpoint_url, under=True)
    return list(dict.fromkeys(found))


def alarm_actions(params: Mapping[str, Any]) -> list[Use]:
    """What a CloudWatch alarm's actions make the server do for the alarm's creator whenever its state
    changes: publish to a topic (the creator's own words, in the alarm's description and a state reason
    it may set), or run a step scaling policy, which changes the capacity of the endpoint it names."""
    found: list[Use] = []
    for member in ALARM_ACTIONS:
        for arn in _list(params.get(member)):
            if not isinstance(arn, str):
                continue
            scaled = _SCALED_ENDPOINT.search(arn) if arn.startswith("arn:aws:autoscaling:") else None
            if scaled is not None:
                found.append(Use(SCALE, scaled.group(1)))
            elif arn.startswith("arn:aws:sns:"):
                found.append(Use(PUBLISH, arn))
    return list(dict.fromkeys(found))


def image(value: object) -> list[Use]:
    """A container's image, where it is one pushed to this server (its files and its code are its pusher's:
    a model running it runs them, and a model's own code inside it reads them): ``zeroscale:UseImage`` on
    it, as an execution role needs ``ecr:BatchGetImage`` on AWS. zeroscale's own framework images need
    nothing. A value no pushed image can have is every image (the handler refuses it)."""
    if not isinstance(value, str) or not value.strip():
        return []
    try:
        resolve_image(value)
        return []
    except DeployError:
        pass
    ref = parse_reference(value)
    return [Use(USE_IMAGE, ref[0] if ref is not None else "*")]


def scaling(operation: str, params: Mapping[str, Any]) -> list[Use]:
    """An Application Auto Scaling call that sets a variant's capacity, or the bounds and policies the
    server then sets it by (a target's MinCapacity is an instance count at once): what
    UpdateEndpointWeightsAndCapacities does to the endpoint, as zeroscale's own rule (on AWS these calls
    act through a service-linked role; here another tenant could size, or hold at zero, an endpoint it may
    not touch). A ResourceId that is not a variant's is every endpoint (the handler refuses it)."""
    if operation not in SCALING_CHANGES:
        return []
    resource = params.get("ResourceId")
    named = _SCALABLE_VARIANT.fullmatch(resource) if isinstance(resource, str) else None
    return [Use(SCALE, named.group(1) if named is not None else "*")]


def model_data(url: object, s3_endpoint_url: str | None = None, *, prefix: bool = False) -> list[Use]:
    """What reading model data at ``url`` is: an S3 object, or a path on the server as written (``..``
    folded; where it leads through symlinks is checked by CreateModel itself, off the event loop, and
    every file read when the model deploys). ``prefix``: everything under it."""
    if not isinstance(url, str) or not url.strip():
        return []
    if url[:8].lower() == "https://" or url[:5].lower() == "s3://":
        return _s3(S3_READ, url, s3_endpoint_url, under=prefix)
    try:
        location = parse_model_data_url(url.rstrip("/") + "/*" if prefix else url)
    except DeployError:
        return []
    if not isinstance(location, LocalLocation):
        return []
    return [Use(LOCAL_READ, os.path.normpath(location.path))]


def object_use(action: str, url: str, s3_endpoint_url: str | None = None) -> list[Use]:
    """``action`` on the one S3 object at ``url`` (an asynchronous request's input or output)."""
    return _s3(action, url, s3_endpoint_url)


def input_location(url: str, s3_endpoint_url: str | None = None) -> list[Use]:
    """InvokeEndpointAsync's InputLocation: the object the server reads for the request."""
    return _s3(S3_READ, url, s3_endpoint_url)


def _s3(
    action: str, url: object, endpoint: str | None, *, under: bool = False, starts: bool = False
) -> list[Use]:
    """``url``'s object (``under``: the objects under it as a folder; ``starts``: every key it begins, as
    an S3 prefix is matched). An S3 URL that names no object as written (a bucket alone, ``s3://b`` or
    ``s3://b/``, which a transform job reads whole; a key the server refuses) is every object of its bucket,
    or of every bucket: a handler that reads more than the URL's key must never find it unchecked."""
    if not isinstance(url, str):
        return []
    found: tuple[str, str] | None = None
    if url[:8].lower() == "https://":
        found = s3_object_of_https(url.rstrip("/") + "/*" if under else url, endpoint)
        if found is None and s3_object_of_https(url.rstrip("/") + "/*", endpoint) is not None:
            return [Use(action, "*")]  # an S3 bucket's URL, with no key
    elif url[:5].lower() == "s3://":
        try:
            location = parse_model_data_url(url.rstrip("/") + "/*" if under else url)
        except DeployError:
            bucket = url[5:].partition("/")[0]
            return [Use(action, f"{bucket}/*" if bucket else "*")]
        if isinstance(location, S3Location):
            found = location.bucket, location.key
    if found is None:
        return []
    bucket, key = found
    return [Use(action, f"{bucket}/{key}*" if starts else f"{bucket}/{key}")]


def containers(params: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The container definitions of a CreateModel (PrimaryContainer, Containers) or CreateModelPackage
    (InferenceSpecification.Containers) request."""
    found: Iterable[object] = [
        params.get("PrimaryContainer"),
        *_list(params.get("Containers")),
        *_list(_dict(params.get("InferenceSpecification")).get("Containers")),
    ]
    return [c for c in found if isinstance(c, dict)]


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
