"""A model with several containers: each container runs in a variant pool of its own (its workers, memory,
logs, cold starts), and a ``Pipeline`` chains them for one request.

- ``Serial`` (an inference pipeline): the request goes to the first container; each container's answer,
  with its Content-Type, is the next one's request; the last one's answer is the endpoint's. The client's
  Accept goes to the last container only (the others answer in their own default, as on SageMaker, where
  ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` sets it).
- ``Direct``: the request goes to the one container its ``X-Amzn-SageMaker-Target-Container-Hostname``
  names; a request naming none is a ValidationError.

A failure names the container by its ContainerHostname (the pool's error messages carry it). A body
streamed from a file (batch transform's ``FilePayload``) stays out of memory through the chain: each
container's answer goes to a scratch file that the next one reads, and the last one's to the caller's sink.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile

from zeroscale.errors import RuntimeValidationError
from zeroscale.router.invocation import Invocation
from zeroscale.router.pool import VariantPool
from zeroscale.router.spec import PoolSpec
from zeroscale.workers.client import Body, FilePayload, WorkerResponse

SERIAL, DIRECT = "Serial", "Direct"
_FORWARDED_TO_EVERY_STAGE = (b"x-amzn-sagemaker-custom-attributes", b"x-amzn-sagemaker-inference-id")


def container_specs(spec: PoolSpec) -> list[PoolSpec]:
    """The pools a variant's spec runs: itself for one container, else one per container (in order)."""
    return [
        dataclasses.replace(
            spec,
            runtime=c.runtime,
            image=c.image,
            model_dir=c.model_dir,
            env=c.env,
            command=c.command,
            workdir=c.workdir,
            container=c.hostname,
        )
        for c in spec.containers
    ] or [spec]


def is_lead(spec: PoolSpec) -> bool:
    """The pool that stands for its variant in variant-wide events: the only one, or the first container's."""
    return not spec.containers or spec.container == spec.containers[0].hostname


class Pipeline:
    """A variant whose model has several containers: what ``EndpointRoute.choose`` hands out for it."""

    def __init__(self, pools: list[VariantPool]) -> None:
        self.pools = pools
        self.spec = pools[0].spec  # endpoint, variant, memory size: the variant's, for records and errors

    @property
    def hostnames(self) -> list[str]:
        return [p.spec.container for p in self.pools]

    @property
    def saturated(self) -> bool:
        """One of its containers' pools is (``VariantPool.saturated``): a new invocation would wait there."""
        return any(pool.saturated for pool in self.pools)

    async def invoke(self, inv: Invocation) -> WorkerResponse:
        if self.spec.execution == DIRECT:
            return await self._direct(inv)
        if inv.container is not None:
            raise RuntimeValidationError(
                f"Endpoint {self.spec.endpoint} runs its containers as an inference pipeline "
                "(InferenceExecutionConfig Mode Serial): a request cannot target one of them "
                "(TargetContainerHostname)."
            )
        return await self._serial(inv)

    async def _direct(self, inv: Invocation) -> WorkerResponse:
        names = ", ".join(self.hostnames)
        if inv.container is None:
            raise RuntimeValidationError(
                f"Endpoint {self.spec.endpoint} invokes its containers directly (InferenceExecutionConfig "
                "Mode Direct): name one with the X-Amzn-SageMaker-Target-Container-Hostname header "
                f"(TargetContainerHostname: one of {names})."
            )
        for pool in self.pools:
            if pool.spec.container == inv.container:
                return await pool.invoke(inv)
        raise RuntimeValidationError(
            f"Container {inv.container} (TargetContainerHostname) not found for endpoint "
            f"{self.spec.endpoint} variant {self.spec.variant}: its containers are {names}."
        )

    async def _serial(self, inv: Invocation) -> WorkerResponse:
        carried = [(k, v) for k, v in inv.headers if k.lower() in _FORWARDED_TO_EVERY_STAGE]
        accept = [(k, v) for k, v in inv.headers if k.lower() == b"accept"]
        headers = [(k, v) for k, v in inv.headers if k.lower() != b"accept"]
        body: Body = inv.body
        inv.setup_s = None
        provisioned = True
        last = len(self.pools) - 1
        with contextlib.ExitStack() as scratch:
            for i, pool in enumerate(self.pools):
                if isinstance(body, FilePayload) and isinstance(inv.body, FilePayload):
                    # the answer to the next stage's scratch file, or (the last) to the caller's sink
                    sink = inv.body.sink if i == last else scratch.enter_context(tempfile.TemporaryFile())
                    body = FilePayload(body.source, body.size, sink)
                stage = Invocation(
                    body,
                    headers + (accept if i == last else []),
                    timeout_s=inv.timeout_s,
                    max_answer=inv.max_answer,
                )
                resp = await self._stage(pool, stage, inv, provisioned)
                provisioned = inv.provisioned
                if i == last:
                    if isinstance(body, FilePayload) and isinstance(inv.body, FilePayload):
                        inv.body.written = body.written
                    return resp
                if isinstance(body, FilePayload):
                    body.sink.seek(0)
                    body = FilePayload(body.sink, body.written, body.sink)
                else:
                    body = resp.body
                content_type = resp.header(b"content-type")
                headers = carried + ([(b"Content-Type", content_type)] if content_type is not None else [])
        raise AssertionError("a pipeline has at least one container")

    @staticmethod
    async def _stage(
        pool: VariantPool, stage: Invocation, inv: Invocation, provisioned: bool
    ) -> WorkerResponse:
        """One container's part of ``inv``: its worker, model time and cold start are added to ``inv``'s."""
        try:
            return await pool.invoke(stage)
        finally:
            inv.worker_id = stage.worker_id or inv.worker_id
            inv.model_s += stage.model_s
            inv.model_status = stage.model_status
            inv.provisioned = provisioned and stage.provisioned
            if stage.setup_s is not None:
                inv.setup_s = (inv.setup_s or 0.0) + stage.setup_s
