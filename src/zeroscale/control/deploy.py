"""From an endpoint configuration to runnable variant pools: resolve each model's image to a runtime,
prepare its artifact (fetch, verify, extract, cache), and hand the result to the router."""

from __future__ import annotations

import asyncio
from typing import Any

from zeroscale.artifacts import ArtifactCache
from zeroscale.control.endpoint_configs import VariantSpec, idle_timeout_override, variant_specs
from zeroscale.control.models import Models
from zeroscale.errors import DeployError, ZeroscaleError
from zeroscale.router.spec import PoolSpec
from zeroscale.runtimes.images import resolve_image
from zeroscale.store.db import Record

# A real-time variant names an instance type; its worker gets this much memory unless the type says more.
_INSTANCE_MEMORY_MB = {"medium": 4096, "large": 8192, "xlarge": 16384}
_DEFAULT_INSTANCE_MEMORY_MB = 2048
SUBMIT_DIRECTORY = "SAGEMAKER_SUBMIT_DIRECTORY"


def instance_memory_mb(instance_type: str | None) -> int:
    size = (instance_type or "").rsplit(".", 1)[-1]
    return _INSTANCE_MEMORY_MB.get(size, _DEFAULT_INSTANCE_MEMORY_MB)


def primary_container(model: Record) -> dict[str, Any]:
    doc = model.doc
    container = doc.get("PrimaryContainer") or (doc.get("Containers") or [{}])[0]
    return dict(container)


class Deployer:
    def __init__(self, models: Models, artifacts: ArtifactCache, default_idle_timeout_s: float) -> None:
        self._models = models
        self._artifacts = artifacts
        self._default_idle_timeout_s = default_idle_timeout_s

    async def pool_specs(self, endpoint: str, config: Record) -> list[PoolSpec]:
        """Raises DeployError naming the variant and what went wrong."""
        try:
            idle_s = idle_timeout_override(config.doc) or self._default_idle_timeout_s
        except ZeroscaleError as exc:
            raise DeployError(exc.message) from exc
        variants = variant_specs(config.doc)
        return list(await asyncio.gather(*(self._pool_spec(endpoint, v, idle_s) for v in variants)))

    async def _pool_spec(self, endpoint: str, variant: VariantSpec, idle_s: float) -> PoolSpec:
        try:
            model = self._models.get(variant.model_name)
        except ZeroscaleError as exc:
            raise DeployError(f"Variant {variant.name}: {exc.message}") from exc
        container = primary_container(model)
        image = str(container.get("Image") or "")
        env = {str(k): str(v) for k, v in (container.get("Environment") or {}).items()}
        try:
            runtime = resolve_image(image)
            model_dir = await asyncio.to_thread(self._artifacts.prepare, container.get("ModelDataUrl"))
            submit = env.get(SUBMIT_DIRECTORY, "")
            if submit.startswith(("s3://", "file://")):
                # The sagemaker SDK points this at its uploaded sourcedir.tar.gz: fetch and unpack it too.
                env[SUBMIT_DIRECTORY] = str(await asyncio.to_thread(self._artifacts.prepare, submit))
        except DeployError as exc:
            raise DeployError(f"Variant {variant.name} (model {model.name}): {exc}") from exc
        if variant.serverless is not None:
            memory_mb = variant.serverless.memory_mb
            max_concurrency = variant.serverless.max_concurrency
            provisioned = variant.serverless.provisioned_concurrency
        else:  # real-time: always-warm instances, one worker each
            memory_mb = instance_memory_mb(variant.instance_type)
            max_concurrency = provisioned = max(1, variant.instance_count)
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
        )
