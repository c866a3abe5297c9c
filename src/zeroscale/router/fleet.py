"""Every endpoint's routing table and variant pools, the shared memory budget, and the reconcile loop.

The control plane calls ``activate`` (deploy or update: warm the new pools, then swap atomically and drain the
old ones) and ``deactivate`` (delete). The API calls ``route`` on every invocation: a dict lookup, no I/O.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import itertools
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from zeroscale.background import Background
from zeroscale.errors import DeployError, RuntimeValidationError
from zeroscale.events import EventBus, VariantEvent
from zeroscale.metrics.load import PoolLoad
from zeroscale.metrics.registry import Metrics
from zeroscale.router.budget import MemoryBudget
from zeroscale.router.pool import VariantPool
from zeroscale.router.spec import PoolSpec, RouterSettings, Workers
from zeroscale.router.warmcache import Template, WarmCache


@dataclass
class EndpointRoute:
    name: str
    pools: list[VariantPool]  # every pool: the production variants', then the shadow variants'
    _cumulative: list[float]
    production: list[VariantPool]
    shadows: list[VariantPool]  # each gets a copy of its shadow_sampling share of the traffic

    @classmethod
    def of(cls, name: str, pools: list[VariantPool]) -> EndpointRoute:
        production = [p for p in pools if not p.spec.shadow_sampling]
        shadows = [p for p in pools if p.spec.shadow_sampling]
        weights = [max(0.0, p.spec.weight) for p in production]
        if sum(weights) <= 0:
            weights = [1.0] * len(production)
        return cls(name, pools, list(itertools.accumulate(weights)), production, shadows)

    def copies(self) -> list[VariantPool]:
        """The shadow pools this request is copied to (each by its sampling share)."""
        return [p for p in self.shadows if random.random() < p.spec.shadow_sampling]

    def choose(self, target_variant: str | None = None) -> VariantPool:
        if target_variant is not None:
            for pool in self.production:
                if pool.spec.variant == target_variant:
                    return pool
            raise RuntimeValidationError(f"Variant {target_variant} not found for endpoint {self.name}.")
        if len(self.production) == 1:
            return self.production[0]
        pick = random.random() * self._cumulative[-1]
        return self.production[bisect.bisect_right(self._cumulative, pick)]


class Fleet:
    def __init__(
        self,
        manager: Workers,
        settings: RouterSettings,
        metrics: Metrics,
        events: EventBus,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._manager = manager
        self.events = events
        self._wall = wall
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self.budget = MemoryBudget(settings.memory_budget_mb, self._evict)
        self.budget.on_release = self._serve_waiting
        self.cache = WarmCache(settings.warm_cache_mb, self.budget, self._close_template)
        self._routes: dict[str, EndpointRoute] = {}
        self._draining: set[VariantPool] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._background = Background("fleet")

    # ---- the invoke path ----
    def route(self, endpoint: str) -> EndpointRoute | None:
        return self._routes.get(endpoint.lower())

    # ---- control ----
    def pools(self) -> list[VariantPool]:
        return [p for r in self._routes.values() for p in r.pools] + list(self._draining)

    def set_memory_budget(self, total_mb: int) -> None:
        """The memory workers may hold changed (a cluster's nodes came or went)."""
        self.budget.total_mb = total_mb
        self._serve_waiting()

    def loads(self) -> list[PoolLoad]:
        """Every pool's current load (read-only), for the metrics gauges."""
        return [p.load() for p in self.pools()]

    async def activate(self, endpoint: str, specs: list[PoolSpec], *, warm: bool = True) -> None:
        """Build pools for ``specs``; with ``warm`` start one worker per variant and require a good /ping
        (raises DeployError, leaving the current route untouched). Then swap, and drain the old pools."""
        pools = [
            VariantPool(
                s,
                self._manager,
                self.budget,
                self._settings,
                self.events,
                self._clock,
                self._wall,
                self.cache,
            )
            for s in specs
        ]
        if not warm:
            # A restart brings endpoints back at zero: start their runtimes' zygotes now, in the background,
            # so the first cold start of each does not also pay for importing its framework.
            runtimes = tuple(sorted({s.runtime for s in specs if not s.command}))
            self._background.spawn(self._manager.prewarm(runtimes))
        if warm:
            results = await asyncio.gather(*(p.warm() for p in pools), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                await asyncio.gather(*(p.drain(timeout_s=1.0) for p in pools))
                self._forget_gone(pools)
                err = errors[0]
                if isinstance(err, DeployError):
                    raise err
                raise DeployError(f"{type(err).__name__}: {err}") from err
        old = self._routes.get(endpoint.lower())
        self._routes[endpoint.lower()] = EndpointRoute.of(endpoint, pools)
        if old is not None:
            for pool in old.pools:
                self._emit_variant(pool, "deactivated")
                self._spawn_drain(pool, self._settings.invocation_timeout_s + 5)
            self._discard_cached(old.pools)
        for pool in pools:
            self._emit_variant(pool, "activated")
            pool.scale()  # provisioned concurrency floor

    async def adjust(self, endpoint: str, specs: Mapping[str, PoolSpec], *, timeout_s: float) -> None:
        """New weights and capacities for some variants of a routed endpoint, same models
        (UpdateEndpointWeightsAndCapacities): the route takes the weights at once; each resized pool starts
        or stops workers, and this returns once every pool has its floor up (or ``timeout_s`` passed)."""
        route = self._routes.get(endpoint.lower())
        if route is None:
            raise DeployError(f"Endpoint {endpoint} is not routed.")
        resized = []
        for pool in route.pools:
            spec = specs.get(pool.spec.variant)
            if spec is None or spec == pool.spec:
                continue
            capacity_changed = (spec.max_concurrency, spec.provisioned) != (
                pool.spec.max_concurrency,
                pool.spec.provisioned,
            )
            if capacity_changed:
                self._emit_variant(pool, "deactivated")
            pool.resize(spec)
            if capacity_changed:
                self._emit_variant(pool, "activated")
                resized.append(pool)
        self._routes[endpoint.lower()] = EndpointRoute.of(route.name, route.pools)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(p.ready < p.spec.provisioned for p in resized) and loop.time() < deadline:
            await asyncio.sleep(0.02)

    async def deactivate(self, endpoint: str, *, timeout_s: float = 5.0) -> None:
        route = self._routes.pop(endpoint.lower(), None)
        if route is not None:
            # Pools an earlier update replaced may still be draining: they go now too.
            replaced = [p for p in self._draining if p.spec.endpoint.lower() == endpoint.lower()]
            pools = route.pools + replaced
            for pool in route.pools:
                self._emit_variant(pool, "deactivated")
            await asyncio.gather(*(p.drain(timeout_s) for p in pools))
            self._forget_gone(pools)
            self._discard_cached(pools)

    def resize(self, endpoint: str, variant: str, max_concurrency: int, provisioned: int) -> None:
        """Change a routed variant's MaxConcurrency and ProvisionedConcurrency in place (this front end's
        share changed): no new pool, its workers stay; scaling applies the new limits from now on."""
        route = self._routes.get(endpoint.lower())
        for pool in route.pools if route is not None else ():
            if pool.spec.variant == variant and (
                pool.spec.max_concurrency != max_concurrency or pool.spec.provisioned != provisioned
            ):
                self._emit_variant(pool, "deactivated")  # metering: the provisioned share is re-metered
                pool.resize(
                    dataclasses.replace(pool.spec, max_concurrency=max_concurrency, provisioned=provisioned)
                )
                self._emit_variant(pool, "activated")

    def _discard_cached(self, pools: list[VariantPool]) -> None:
        """Templates cached for these pools' models go, unless a pool still routed to uses the same model
        and environment (an update that changed only scaling, another endpoint of the same model)."""
        live = {p.template_key for r in self._routes.values() for p in r.pools}
        for key in {p.template_key for p in pools} - live:
            if key is not None:
                self.cache.discard(key)

    def _close_template(self, template: Template) -> None:
        self._background.spawn(template.close())

    def _emit_variant(self, pool: VariantPool, kind: str) -> None:
        s = pool.spec
        self.events.variant(
            VariantEvent(
                s.endpoint,
                s.variant,
                kind,
                self._wall(),
                memory_mb=s.memory_mb,
                max_concurrency=s.max_concurrency,
                provisioned=s.provisioned,
            )
        )

    def _spawn_drain(self, pool: VariantPool, timeout_s: float) -> None:
        self._draining.add(pool)

        async def run() -> None:
            try:
                await pool.drain(timeout_s)
            finally:
                self._draining.discard(pool)
                self._forget_gone([pool])

        self._background.spawn(run())

    def _forget_gone(self, pools: list[VariantPool]) -> None:
        """Drop the metric series of these pools' variants that no remaining pool serves (the old and new
        pools of an update share their series)."""
        remaining = {(p.spec.endpoint, p.spec.variant) for p in self.pools()}
        for key in {(p.spec.endpoint, p.spec.variant) for p in pools} - remaining:
            self._metrics.forget(*key)

    # ---- memory ----
    def _evict(self, deficit_mb: int, requester: object) -> int:
        """Stop idle workers of pools other than ``requester`` (any endpoint, another variant of the same
        one, an update's old pool), longest idle first, until ``deficit_mb`` is on its way back; the MB."""
        freed = self.cache.evict(deficit_mb)  # entries serve nothing: they give way before any worker
        if freed >= deficit_mb:
            return freed
        candidates = sorted(
            ((slot, pool) for pool in self.pools() if pool is not requester for slot in pool.evictable()),
            key=lambda item: item[0].idle_since,
        )
        for slot, pool in candidates:
            if freed >= deficit_mb:
                break
            freed += pool.evict(slot)
        return freed

    def _serve_waiting(self) -> None:
        for pool in self.pools():
            if pool.queued:
                pool.scale()

    # ---- the reconcile loop ----
    async def start(self, interval_s: float = 0.5) -> None:
        self._loop_task = asyncio.create_task(self._reconcile(interval_s))

    async def _reconcile(self, interval_s: float) -> None:
        """Scale-in and floors: pools at zero with nothing waiting are skipped, so endpoints at zero cost
        next to nothing however many there are."""
        while True:
            await asyncio.sleep(interval_s)
            for pool in self.pools():
                if not pool.quiet:
                    pool.scale()

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for name in list(self._routes):
            await self.deactivate(name, timeout_s=2.0)
        for pool in list(self._draining):
            await pool.drain(1.0)
        self.cache.clear()
        await self._background.join()
