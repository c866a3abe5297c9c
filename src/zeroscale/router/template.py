"""One pool's template: a process that loaded the pool's model once and forks further workers of it.

While the pool has workers it keeps one (started in the background after the pool's first worker), so
scale-out skips the model load. When the pool goes back to zero the template goes to the warm-model cache
with one replica forked ahead of need and parked beside it (``Workers.park``: set up to its listening
socket, given no request), and the pool's next cold start takes both back from there: that cold start is
the parked replica's first request, without a fork or a set-up on its path. Only where forking a loaded
model is safe (``runtimes.usercode.forks_loaded_model``): a built-in runtime, whose model_fn (its own, or
the user's) leaves a process that can be forked; a template that finds other threads, a child process or a
descriptor its load opened refuses to fork, after which the pool tries no other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from zeroscale.background import Background
from zeroscale.errors import DeployError
from zeroscale.router.spec import PoolSpec, Workers
from zeroscale.router.warmcache import TemplateKey, WarmCache
from zeroscale.runtimes.usercode import forks_loaded_model
from zeroscale.workers.manager import WorkerSpec
from zeroscale.workers.zygotes import TemplateRefused, Zygote, ZygoteError


class PoolTemplate:
    def __init__(
        self,
        spec: PoolSpec,
        manager: Workers,
        cache: WarmCache | None,
        background: Background,
        wanted: Callable[[], bool],
    ) -> None:
        """``wanted()``: the pool still has workers and is not draining (a template that finishes loading
        after that goes to the cache at once)."""
        self._spec = spec
        self._manager = manager
        self._cache = cache
        self._background = background
        self._wanted = wanted
        self._template: Zygote | None = None
        self._stashing: Zygote | None = None  # on its way to the cache: its replica is being parked
        self._worker_spec: WorkerSpec | None = None  # what the pool's workers are started with
        self._loading = False
        self._refused = False  # the model's template refused to fork (threads): none is tried again
        self._closed = False  # the pool drained: a template that finishes loading now is closed, not kept
        templated = (
            not spec.command
            and not spec.multi_model
            and not spec.target_model  # a multi-model variant's memory counts each loaded model once
            and forks_loaded_model(spec.runtime, spec.env)
        )
        self.key = TemplateKey.of(spec.runtime, spec.model_dir, spec.env) if templated else None

    @property
    def current(self) -> Zygote | None:
        """The template to fork the next worker from (None: fork the runtime's zygote)."""
        return self._template

    def take_cached(self) -> None:
        """A cold start from zero: a template the warm cache kept makes it a fork of a loaded model."""
        if self._cache is None or self.key is None or self._template is not None:
            return
        if self._stashing is not None:  # back before it reached the cache
            self._template, self._stashing = self._stashing, None
            self._cache.hit_in_flight()
            return
        cached = self._cache.take(self.key)
        if cached is not None:
            self._template = cast(Zygote, cached)

    def note(self, spec: WorkerSpec) -> None:
        """The pool started a worker with ``spec`` (what a replica parked for it is started with)."""
        self._worker_spec = spec

    def keep(self, spec: WorkerSpec) -> None:
        """The pool's worker answered a request: make sure a template of its model is there or on its way."""
        self._worker_spec = spec
        if self.key is None or self._loading or self._refused or self._closed:
            return
        if self._template is not None and self._template.alive:
            return
        self._loading = True
        self._background.spawn(self._load(spec))

    async def _load(self, spec: WorkerSpec) -> None:
        try:
            template = await self._manager.start_template(spec)
        except TemplateRefused:
            self._refused = True  # loading the model starts threads: scale-out keeps forking the zygote
            return
        except (ZygoteError, DeployError):
            return  # scale-out keeps forking the zygote
        finally:
            self._loading = False
        if self._closed:  # its pool drained while it loaded (an endpoint deleted): not for the warm cache
            await template.close()
            return
        self._template = template
        if not self._wanted():
            self.stash(draining=False)  # the pool went back to zero while it loaded

    def stash(self, *, draining: bool) -> None:
        """The pool is at zero: the template goes to the warm cache (closed when there is none, the pool is
        draining, or it does not fit)."""
        template, self._template = self._template, None
        if template is None:
            return
        if self._cache is None or self.key is None or draining or not template.alive:
            self._background.spawn(template.close())
            return
        self._stashing = template
        self._background.spawn(self._park_and_put(template))

    async def _park_and_put(self, template: Zygote) -> None:
        try:
            spec = self._worker_spec
            if spec is None:
                size = self._manager.template_bytes(template)
            else:
                size = await self._manager.park(spec, template)
        except BaseException:
            if self._stashing is template:
                self._stashing = None
                await template.close()
            raise
        if self._stashing is not template:  # the pool took it back meanwhile, or it was closed
            return
        self._stashing = None
        assert self._cache is not None and self.key is not None
        self._cache.put(self.key, template, size, self._spec.endpoint)

    async def close(self) -> None:
        self._closed = True
        template, self._template = self._template, None
        stashing, self._stashing = self._stashing, None
        for each in (template, stashing):
            if each is not None:
                await each.close()
