"""From an endpoint configuration to runnable variant pools: resolve each model's image to a runtime (or to
a registered bring-your-own image: its entrypoint, workdir and env), prepare its artifact (fetch, verify,
extract, cache), and hand the result to the router."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from zeroscale.artifacts import ArtifactCache
from zeroscale.artifacts.extract import ReadCheck
from zeroscale.artifacts.holds import Hold
from zeroscale.artifacts.pyenv import PythonEnvs
from zeroscale.control.endpoint_configs import (
    VariantSpec,
    idle_timeout_override,
    shadow_sampling,
    variant_specs,
)
from zeroscale.control.instances import instance_size, workers_per_instance
from zeroscale.control.models import Models, creator, execution_mode, runnable_containers
from zeroscale.errors import DeployError, ZeroscaleError
from zeroscale.fstree import remove_tree_quietly
from zeroscale.images import ImageRecord, ImageRegistry
from zeroscale.images.names import ImageError, digest_of
from zeroscale.router.spec import ContainerSpec, PoolSpec
from zeroscale.runtimes.batching import MAX_BATCH_SIZE, batch_settings, unsupported
from zeroscale.runtimes.image_uris import known_images, resolve_image
from zeroscale.runtimes.usercode import PYTHONPATH, check_code_env, has_user_code, requirements_file
from zeroscale.store.db import Record

SUBMIT_DIRECTORY = "SAGEMAKER_SUBMIT_DIRECTORY"
MULTI_MODEL_ENV = "SAGEMAKER_MULTI_MODEL"


def primary_container(model: Record) -> dict[str, Any]:
    return (runnable_containers(model.doc) or [{}])[0]


@dataclass(frozen=True)
class _Prepared:
    """One container, ready to run: its runtime (or image), model directory and environment."""

    runtime: str
    image: str
    model_dir: str
    env: dict[str, str]
    byo: ImageRecord | None


def multi_model_prefix(container: Mapping[str, Any]) -> str:
    """A multi-model container's ModelDataUrl (the prefix its target models are under), else ""."""
    if container.get("Mode") != "MultiModel":
        return ""
    return str(container.get("ModelDataUrl") or "")


class Images(Protocol):
    """Where registered images are found: this front end's registry, or every front end's
    (``images.sharing``). Blocking."""

    def resolve(self, image: str) -> ImageRecord | None: ...


class Deployer:
    def __init__(
        self,
        models: Models,
        artifacts: ArtifactCache,
        default_idle_timeout_s: float,
        pyenvs: PythonEnvs | None = None,
        images: Images | None = None,
        reads_for: Callable[[tuple[str, str]], ReadCheck | None] | None = None,
    ) -> None:
        """``reads_for``: what a model made by an IAM user (``creator``) may read on the server's disk (None:
        anything)."""
        self._models = models
        self._reads_for = reads_for
        self._artifacts = artifacts
        # code/requirements.txt installs (default: beside the artifact cache, in <data-dir>/pyenvs)
        self._pyenvs = pyenvs or PythonEnvs(artifacts.root.parent / "pyenvs", holds=artifacts.holds)
        self._default_idle_timeout_s = default_idle_timeout_s
        # bring-your-own images (default: beside the artifact cache, in <data-dir>/images)
        self._images: Images = images or ImageRegistry(artifacts.root.parent / "images")
        # Multi-model images' models directories (one per deployment, removed when its pool drains): those
        # of a server that stopped are no pool's now.
        self._mme_root = artifacts.root.parent / "mme"
        if self._mme_root.is_dir():
            for stale in self._mme_root.iterdir():
                remove_tree_quietly(stale)

    def hold(self) -> Hold:
        """Keeps the artifacts and requirements environments prepared with it from eviction until closed
        (the two caches share one book of holds): close it once the pools of the specs made with it are
        routed (the caches then see them in use)."""
        return self._artifacts.hold()

    async def pool_specs(
        self,
        endpoint: str,
        config: Record,
        models: Mapping[str, Record] | None = None,
        hold: Hold | None = None,
    ) -> list[PoolSpec]:
        """Raises DeployError naming the variant and what went wrong. ``models`` (lower-cased name ->
        record) are used before the store's: the documents a deployment was made from. ``hold``: see
        ``hold()`` (without one, the artifacts are kept for the cache's grace period)."""
        try:
            idle_s = idle_timeout_override(config.doc) or self._default_idle_timeout_s
        except ZeroscaleError as exc:
            raise DeployError(exc.message) from exc
        variants = variant_specs(config.doc)
        sampling = shadow_sampling(variants)
        specs = await asyncio.gather(
            *(self._pool_spec(endpoint, v, idle_s, models or {}, hold) for v in variants)
        )
        several = next((s for s in specs if s.containers), None)
        if several is not None and config.doc.get("AsyncInferenceConfig"):
            raise DeployError(
                f"Variant {several.variant}: a model with several containers cannot serve an asynchronous "
                "endpoint in zeroscale (AsyncInferenceConfig); invoke it with InvokeEndpoint."
            )
        return [dataclasses.replace(s, shadow_sampling=sampling.get(s.variant, 0.0)) for s in specs]

    async def _pool_spec(
        self,
        endpoint: str,
        variant: VariantSpec,
        idle_s: float,
        models: Mapping[str, Record],
        hold: Hold | None,
    ) -> PoolSpec:
        try:
            model = models.get(variant.model_name.lower()) or self._models.get(variant.model_name)
        except ZeroscaleError as exc:
            raise DeployError(f"Variant {variant.name}: {exc.message}") from exc
        containers = runnable_containers(model.doc)
        made_by = creator(model.doc)
        reads = self._reads_for(made_by) if self._reads_for is not None else None
        try:
            prepared = await asyncio.gather(*(self._prepare(c, hold, reads) for c in containers))
        except DeployError as exc:
            raise DeployError(f"Variant {variant.name} (model {model.name}): {exc}") from exc
        first = prepared[0]
        env, runtime, image, model_dir, byo = (
            first.env,
            first.runtime,
            first.image,
            first.model_dir,
            first.byo,
        )
        multi_model = multi_model_prefix(containers[0])  # CreateModel refuses it with several containers
        several: tuple[ContainerSpec, ...] = ()
        if len(containers) > 1 or model.doc.get("InferenceExecutionConfig"):
            several = tuple(
                ContainerSpec(
                    hostname=str(c.get("ContainerHostname") or f"container-{i}"),
                    runtime=p.runtime,
                    image=p.image,
                    model_dir=p.model_dir,
                    env=p.env,
                    command=p.byo.manifest.entrypoint if p.byo else (),
                    workdir=str(p.byo.workdir) if p.byo else "",
                )
                for i, (c, p) in enumerate(zip(containers, prepared, strict=True), start=1)
            )
        try:
            batching = batch_settings(env)
        except ValueError as exc:
            raise DeployError(f"Variant {variant.name} (model {model.name}): {exc}") from None
        if any(MAX_BATCH_SIZE in p.env for p in prepared):
            why = unsupported(
                runtime,
                user_code=has_user_code(model_dir, env),
                image=byo is not None,
                several=bool(several),
                multi_model=bool(multi_model),
            )
            if why:
                raise DeployError(f"Variant {variant.name} (model {model.name}): {why}")
        count = per_instance = 0
        if variant.serverless is not None:
            memory_mb = variant.serverless.memory_mb
            max_concurrency = variant.serverless.max_concurrency
            provisioned = variant.serverless.provisioned_concurrency
        else:  # real-time: always-warm instances, each its workers and its memory
            try:
                size = instance_size(variant.instance_type or "", variant.name)
                per_instance = workers_per_instance(size, env)
            except ZeroscaleError as exc:
                raise DeployError(f"Variant {variant.name}: {exc.message}") from exc
            count = variant.instance_count
            memory_mb = size.memory_mb // per_instance
            max_concurrency = provisioned = count * per_instance
            if multi_model and byo is None:  # the models' workers share the instances' memory
                memory_mb = size.memory_mb * count
        return PoolSpec(
            endpoint=endpoint,
            variant=variant.name,
            runtime=runtime,
            image=image,
            model_dir=str(model_dir),
            memory_mb=memory_mb,
            max_concurrency=max_concurrency,
            provisioned=provisioned,
            idle_timeout_s=idle_s,
            weight=variant.weight,
            env=env,
            command=byo.manifest.entrypoint if byo else (),
            workdir=str(byo.workdir) if byo else "",
            instance_count=count,
            workers_per_instance=per_instance,
            containers=several,
            execution=execution_mode(model.doc) if several else "",
            multi_model=multi_model,
            model_cache=(containers[0].get("MultiModelConfig") or {}).get("ModelCacheSetting") != "Disabled",
            batching=batching,
            read_as=made_by,
        )

    async def _prepare(
        self, container: Mapping[str, Any], hold: Hold | None, reads: ReadCheck | None
    ) -> _Prepared:
        image = str(container.get("Image") or "")
        env = {str(k): str(v) for k, v in (container.get("Environment") or {}).items()}
        runtime, byo = await asyncio.to_thread(self._resolve, image)  # may copy it from another front end
        if byo is not None:  # the model's Environment is laid over the image's
            env = {**byo.manifest.env, **env}
        check_code_env(env)  # before any download: it names no directory outside the model
        multi_model = multi_model_prefix(container)
        source = (container.get("ModelDataSource") or {}).get("S3DataSource")
        model_dir: object
        if multi_model and byo is not None:
            # the image loads its models itself (POST /models): they are linked into this directory
            env[MULTI_MODEL_ENV] = "true"
            model_dir = await asyncio.to_thread(self._models_directory)
        elif multi_model:
            model_dir = multi_model  # the prefix of its target models (router/multimodel.py)
        elif source is not None and source.get("S3DataType") == "S3Object":  # one tar.gz, its ETag checked
            prepare = functools.partial(self._artifacts.prepare, etag=source.get("ETag"))
            model_dir = await asyncio.to_thread(prepare, str(source["S3Uri"]), hold)
        elif source is not None:  # an uncompressed S3 prefix
            model_dir = await asyncio.to_thread(self._artifacts.prepare_prefix, str(source["S3Uri"]), hold)
        else:
            prepare = functools.partial(self._artifacts.prepare, reads=reads)
            model_dir = await asyncio.to_thread(prepare, container.get("ModelDataUrl"), hold)
        submit = env.get(SUBMIT_DIRECTORY, "")
        if submit.startswith(("s3://", "file://")):
            # The sagemaker SDK points this at its uploaded sourcedir.tar.gz: fetch and unpack it too.
            prepare = functools.partial(self._artifacts.prepare, reads=reads)
            env[SUBMIT_DIRECTORY] = str(await asyncio.to_thread(prepare, submit, hold))
        requirements = None if byo or multi_model else requirements_file(str(model_dir), env)
        if requirements is not None:  # installed once per content, before any worker starts
            python_path = await self._pyenvs.prepare(requirements, hold)
            if python_path is not None:
                env[PYTHONPATH] = str(python_path)
        return _Prepared(runtime, image, str(model_dir), env, byo)

    def _models_directory(self) -> str:
        """A fresh directory for a multi-model image's models (its $SM_MODEL_DIR)."""
        path = self._mme_root / uuid.uuid4().hex
        path.mkdir(parents=True)
        return str(path)

    def _resolve(self, image: str) -> tuple[str, ImageRecord | None]:
        """A framework image -> (its runtime, None); a registered image -> ("byo/<name:tag@digest>", it)."""
        try:
            return resolve_image(image), None
        except DeployError:
            record = self._images.resolve(image) if image.strip() else None
            if record is None:
                if not image.strip():
                    raise
                raise DeployError(
                    f"Image {image.strip()!r} is not a known zeroscale image. "
                    f"Known images: {known_images()}; or one pushed with `zeroscale images push NAME:TAG "
                    "DIR` (`zeroscale images list` shows those pushed)."
                ) from None
            try:
                pinned = digest_of(image)
            except ImageError as exc:
                raise DeployError(str(exc)) from None
            if pinned is not None and pinned != record.digest:
                raise DeployError(
                    f"Image {image.strip()!r} pins sha256:{pinned}, but {record.name}:{record.tag} is "
                    f"sha256:{record.digest} now (pushed again since): name the digest it has, or push the "
                    "pinned content again."
                ) from None
            return f"byo/{record.resolved}", record
