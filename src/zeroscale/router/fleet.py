"""Every endpoint's routing table and variant pools, the shared memory budget, and the reconcile loop.

The control plane calls ``activate`` (deploy or update: warm the new pools, then swap atomically and drain the
old ones) and ``deactivate`` (delete). The API calls ``route`` on every invocation: a dict lookup, no I/O.

Pools at zero cost nothing while idle, however many: a pool tells the fleet when it stops being quiet (a
worker starting, a request waiting, a provisioned floor), the reconcile loop and the samplers
(``active_loads``) visit only those, and the loop sleeps on an event while there are none.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import itertools
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from zeroscale.background import Background
from zeroscale.errors import DeployError, RuntimeValidationError
from zeroscale.events import EventBus, VariantEvent
from zeroscale.metrics.load import PoolLoad
from zeroscale.metrics.registry import Metrics
from zeroscale.router.batching import Batcher
from zeroscale.router.budget import MemoryBudget
from zeroscale.router.containermodels import ContainerModelsPool
from zeroscale.router.multimodel import MultiModelPool, TargetFiles
from zeroscale.router.pipeline import Pipeline, container_specs, is_lead
from zeroscale.router.pool import VariantPool
from zeroscale.router.spec import PoolSpec, RouterSettings, Workers
from zeroscale.router.warmcache import Template, WarmCache

PROVEN_KEPT = 10_000  # pool specs remembered as proven (a few hundred bytes each)
# Fewer provisioned workers up than a variant's ProvisionedConcurrency for this long (not a crashed one's
# moment to start again) is metered as such: what is billed is what runs.
PROVISIONED_SHORT_S = 10.0

# What a request is sent to: a variant's pool, or the pools of a model's several containers.
Variant = VariantPool | Pipeline


def _variants(pools: list[VariantPool]) -> list[Variant]:
    """``pools`` with the pools of each multi-container variant gathered into one Pipeline, in order."""
    out: list[Variant] = []
    gathered: dict[str, list[VariantPool]] = {}
    for pool in pools:
        if not pool.spec.containers:
            out.append(pool)
        elif pool.spec.variant in gathered:
            gathered[pool.spec.variant].append(pool)
        else:
            gathered[pool.spec.variant] = [pool]
            out.append(Pipeline(gathered[pool.spec.variant]))
    return out


def _cumulative(weights: list[float]) -> list[float]:
    """The running shares of ``weights`` (a positive, finite sum), the last one infinite: ``choose``'s pick
    in [0, 1) then always lands on a variant, whatever the rounding of the sums (a variant of weight 0
    is never picked: its share equals the one before it, and ``bisect_right`` passes over it)."""
    running = list(itertools.accumulate(weights))
    total = running[-1]
    shares = [w / total for w in running]
    shares[-1] = math.inf
    return shares


@dataclass
class EndpointRoute:
    name: str
    pools: list[VariantPool]  # every pool: the production variants', then the shadow variants'
    _cumulative: list[float]
    production: list[Variant]
    shadows: list[Variant]  # each gets a copy of its shadow_sampling share of the traffic
    # A guarded deployment in progress: the new fleet ("green", its own route) takes ``canary_share`` of
    # the traffic; this route's pools are the old fleet ("blue").
    canary: EndpointRoute | None = None
    canary_share: float = 0.0

    @classmethod
    def of(
        cls, name: str, pools: list[VariantPool], canary: EndpointRoute | None = None, share: float = 0.0
    ) -> EndpointRoute:
        variants = _variants(pools)
        production = [p for p in variants if not p.spec.shadow_sampling]
        shadows = [p for p in variants if p.spec.shadow_sampling]
        weights = [max(0.0, p.spec.weight) for p in production]
        if not 0 < sum(weights) < math.inf:
            weights = [1.0] * len(production)
        return cls(name, pools, _cumulative(weights), production, shadows, canary, share)

    def every_pool(self) -> list[VariantPool]:
        return self.pools if self.canary is None else self.pools + self.canary.pools

    def copies(self) -> list[Variant]:
        """The shadow variants this request is copied to (each by its sampling share)."""
        return [p for p in self.shadows if random.random() < p.spec.shadow_sampling]

    def shares(self) -> list[tuple[str, float]]:
        """Each production variant's name and its share of the traffic, as ``choose`` picks them (the
        native data plane picks by the same shares)."""
        out: list[tuple[str, float]] = []
        before = 0.0
        for pool, upto in zip(self.production, self._cumulative, strict=True):
            upto = 1.0 if upto == math.inf else upto
            out.append((pool.spec.variant, upto - before))
            before = upto
        return out

    def choose(self, target_variant: str | None = None) -> Variant:
        canary = self.canary
        # a guarded deployment: the new fleet's share, unless it lacks the targeted variant (the old answers)
        if (
            canary is not None
            and random.random() < self.canary_share
            and (target_variant is None or any(p.spec.variant == target_variant for p in canary.production))
        ):
            return canary.choose(target_variant)
        if target_variant is not None:
            for pool in self.production:
                if pool.spec.variant == target_variant:
                    return pool
            raise RuntimeValidationError(f"Variant {target_variant} not found for endpoint {self.name}.")
        if len(self.production) == 1:
            return self.production[0]
        return self.production[bisect.bisect_right(self._cumulative, random.random())]


class Fleet:
    def __init__(
        self,
        manager: Workers,
        settings: RouterSettings,
        metrics: Metrics,
        events: EventBus,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        targets: TargetFiles | None = None,
    ) -> None:
        """``targets``: where multi-model variants' target models come from."""
        self._manager = manager
        self._targets = targets
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
        # Pools that were not quiet when last seen (insertion-ordered); the loop drops those gone quiet.
        self._active: dict[VariantPool, None] = {}
        # Provisioned workers the metering was told are up (at activation: all), and since when fewer are.
        self._provisioned_told: dict[VariantPool, tuple[int, float | None]] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background = Background("fleet")
        # Pool specs (``PoolSpec.proof_key``) a worker of which started and became ready on this host since
        # the server started, most recent last: a deployment of one again needs no deploy-time worker (the
        # check would prove what is known; skipping it is what lets a host deploy hundreds of endpoints of
        # one model a second). Bounded: the oldest are forgotten, and then checked again.
        self._proven: dict[tuple[object, ...], None] = {}
        # This front end's share of a spec's concurrency now (control/cluster.py), asked again when new pools
        # are routed: the share they were built with may be stale, as members came or went while they warmed.
        self.current_share: Callable[[PoolSpec], PoolSpec] | None = None

    # ---- the invoke path ----
    def route(self, endpoint: str) -> EndpointRoute | None:
        return self._routes.get(endpoint.lower())

    def provisioned_up(self, endpoint: str) -> dict[str, int]:
        """This front end's always-warm workers of each variant of ``endpoint`` with any, as the metering
        was told (``_meter_provisioned``: all of them from activation, fewer once fewer were up for
        ``PROVISIONED_SHORT_S``): what it bills now, ahead of the ledger's next write."""
        route = self._routes.get(endpoint.lower())
        if route is None:
            return {}
        return {
            pool.spec.variant: self._provisioned_told.get(pool, (pool.spec.provisioned, None))[0]
            for pool in route.pools
            if pool.spec.provisioned and is_lead(pool.spec)
        }

    # ---- control ----
    def pools(self) -> list[VariantPool]:
        """Every pool, routed or draining. Safe from another thread (a sampler's): the routes and the draining
        set are copied first, each copy atomic under the GIL, so a deploy meanwhile cannot break the walk."""
        routes, draining = list(self._routes.values()), list(self._draining)
        return [p for r in routes for p in r.every_pool()] + draining

    def model_dirs(self) -> set[str]:
        """Every directory a pool's workers or a cached template read: what the artifact cache must keep.
        Safe from another thread (the artifact cache's, which asks while it trims)."""
        return {d for pool in self.pools() for d in pool.model_dirs()} | set(self.cache.model_dirs())

    def image_dirs(self) -> set[str]:
        """The working directories of the images pools run (inside the image registry's directories):
        what the registry must keep. Safe from another thread."""
        return {
            d
            for pool in self.pools()
            for d in (pool.spec.workdir, *(c.workdir for c in pool.spec.containers))
            if d
        }

    def set_memory_budget(self, total_mb: int) -> None:
        """The memory workers may hold changed (a cluster's nodes came or went)."""
        self.budget.total_mb = total_mb
        self._serve_waiting()

    def loads(self) -> list[PoolLoad]:
        """Every pool's current load (read-only), for the metrics gauges."""
        return [p.load() for p in self.pools()]

    def active_loads(self) -> list[PoolLoad]:
        """The loads of the variants with a pool that is not quiet (workers, requests waiting, a floor) or
        draining, each with all of its pools: what the samplers record (a variant at zero records nothing),
        at a cost that does not grow with the endpoints at zero."""
        busy = {(p.spec.endpoint.lower(), p.spec.variant) for p in (*self._active, *self._draining)}
        pools: dict[VariantPool, None] = {}
        for endpoint, variant in busy:
            route = self._routes.get(endpoint)
            for pool in route.pools if route is not None else ():
                if pool.spec.variant == variant:
                    pools[pool] = None
        for pool in (*self._active, *self._draining):
            pools[pool] = None
        return [p.load() for p in pools]

    def _activated(self, pool: VariantPool) -> None:
        """A pool is no longer quiet: the reconcile loop visits it from now until it is quiet again."""
        if pool not in self._active:
            self._active[pool] = None
            self._wake.set()

    async def activate(self, endpoint: str, specs: list[PoolSpec], *, warm: bool = True) -> None:
        """Build pools for ``specs``; with ``warm`` start one worker per variant and require it ready
        (raises DeployError, leaving the current route untouched). Then swap, and drain the old pools."""
        pools = [self._pool(s) for spec in specs for s in container_specs(spec)]
        if not warm:
            # A restart brings endpoints back at zero: start their runtimes' zygotes now, in the background,
            # so the first cold start of each does not also pay for importing its framework.
            runtimes = tuple(sorted({p.spec.runtime for p in pools if not p.spec.command}))
            self._background.spawn(self._manager.prewarm(runtimes))
        if warm:
            # A new endpoint of a model proven on this host skips the check; an update always warms its new
            # pools, which take the endpoint's traffic at once.
            await self._warm(pools, skip_proven=endpoint.lower() not in self._routes)
        self._reshare(pools)
        old = self._routes.get(endpoint.lower())
        self._routes[endpoint.lower()] = EndpointRoute.of(endpoint, pools)
        if old is not None:
            for pool in old.every_pool():
                self._emit_variant(pool, "deactivated")
                self._spawn_drain(pool, self._settings.invocation_timeout_s + 5)
            self._discard_cached(old.every_pool())
        for pool in pools:
            self._emit_variant(pool, "activated")
            pool.scale()  # provisioned concurrency floor

    # ---- guarded deployments: a new fleet beside the old, traffic shifted between them ----
    async def stage(self, endpoint: str, specs: list[PoolSpec]) -> None:
        """Build and warm the new fleet for ``specs`` beside the routed one (raises DeployError, leaving the
        route untouched); it takes no traffic until ``shift``."""
        route = self._routes.get(endpoint.lower())
        if route is None:
            raise DeployError(f"Endpoint {endpoint} is not routed.")
        pools = [self._pool(s) for spec in specs for s in container_specs(spec)]
        await self._warm(pools)
        self._reshare(pools)
        route = self._routes.get(endpoint.lower()) or route
        staged = EndpointRoute.of(route.name, pools)
        self._routes[endpoint.lower()] = EndpointRoute.of(route.name, route.pools, staged)
        for pool in pools:
            self._emit_variant(pool, "activated")
            pool.scale()

    def shift(self, endpoint: str, share: float) -> None:
        """Send ``share`` (0..1) of the endpoint's traffic to the staged fleet."""
        route = self._routes.get(endpoint.lower())
        if route is None or route.canary is None:
            raise DeployError(f"Endpoint {endpoint} has no staged fleet.")
        self._routes[endpoint.lower()] = EndpointRoute.of(route.name, route.pools, route.canary, share)

    def promote(self, endpoint: str) -> list[asyncio.Task[None]]:
        """The staged fleet takes all the traffic; the old one drains (the tasks draining it)."""
        return self._finish_stage(endpoint, keep_new=True)

    def rollback(self, endpoint: str) -> list[asyncio.Task[None]]:
        """The old fleet takes all the traffic back at once; the staged one drains (the tasks draining it)."""
        return self._finish_stage(endpoint, keep_new=False)

    def _finish_stage(self, endpoint: str, *, keep_new: bool) -> list[asyncio.Task[None]]:
        route = self._routes.get(endpoint.lower())
        if route is None or route.canary is None:
            raise DeployError(f"Endpoint {endpoint} has no staged fleet.")
        kept, gone = (route.canary.pools, route.pools) if keep_new else (route.pools, route.canary.pools)
        self._routes[endpoint.lower()] = EndpointRoute.of(route.name, kept)
        drains = []
        for pool in gone:
            self._emit_variant(pool, "deactivated")
            drains.append(self._spawn_drain(pool, self._settings.invocation_timeout_s + 5))
        self._discard_cached(gone)
        return drains

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
            if spec is not None and pool.spec.container:
                spec = next((c for c in container_specs(spec) if c.container == pool.spec.container), None)
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
        self._routes[endpoint.lower()] = EndpointRoute.of(
            route.name, route.pools, route.canary, route.canary_share
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(p.ready < p.spec.provisioned for p in resized) and loop.time() < deadline:
            await asyncio.sleep(0.02)

    def _pool(self, spec: PoolSpec) -> VariantPool:
        if spec.multi_model:
            if self._targets is None:
                raise DeployError("This server cannot fetch the models of a multi-model endpoint.")
            # an image that loads its models itself (the multi-model container API), or zeroscale's runtimes
            kind = ContainerModelsPool if spec.command else MultiModelPool
            return kind(
                spec,
                self._manager,
                self.budget,
                self._settings,
                self.events,
                self._targets,
                self._clock,
                self._wall,
                self._activated,
            )
        pool = VariantPool(
            spec,
            self._manager,
            self.budget,
            self._settings,
            self.events,
            self._clock,
            self._wall,
            self.cache,
            self._activated,
        )
        if spec.batching is not None and not spec.containers:
            pool.batcher = Batcher(pool, spec.batching)
        return pool

    async def _warm(self, pools: list[VariantPool], *, skip_proven: bool = False) -> None:
        """One worker per pool, ready, or DeployError (the pools drained and forgotten). With
        ``skip_proven``, pools of a spec proven on this host already are not checked again (their runtimes'
        zygotes are started)."""
        keyed = [(p, p.spec.proof_key()) for p in pools]
        todo = [(p, k) for p, k in keyed if not (skip_proven and k is not None and k in self._proven)]
        if len(todo) < len(pools):
            checked = {p for p, _ in todo}
            skipped = [p for p in pools if p not in checked and not p.spec.command]
            runtimes = tuple(sorted({p.spec.runtime for p in skipped}))
            self._background.spawn(self._manager.prewarm(runtimes))
        results = await asyncio.gather(*(p.warm() for p, _ in todo), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await asyncio.gather(*(p.drain(timeout_s=1.0) for p in pools))
            self._forget_gone(pools)
            err = errors[0]
            if isinstance(err, DeployError):
                raise err
            raise DeployError(f"{type(err).__name__}: {err}") from err
        for _, key in todo:
            self._prove(key)

    def _prove(self, key: tuple[object, ...] | None) -> None:
        if key is None:
            return
        self._proven.pop(key, None)
        self._proven[key] = None
        while len(self._proven) > PROVEN_KEPT:
            del self._proven[next(iter(self._proven))]

    async def deactivate(self, endpoint: str, *, timeout_s: float = 5.0, deleted: bool = True) -> None:
        """Stop routing ``endpoint`` and drain its pools (``deleted``: it was deleted, or no longer serves,
        and the requests the drain leaves unserved are told it is not found; False: the server is shutting
        down)."""
        route = self._routes.pop(endpoint.lower(), None)
        if route is not None:
            # Pools an earlier update replaced may still be draining: they go now too.
            replaced = [p for p in self._draining if p.spec.endpoint.lower() == endpoint.lower()]
            pools = route.every_pool() + replaced
            for pool in route.every_pool():
                self._emit_variant(pool, "deactivated")
            await asyncio.gather(*(p.drain(timeout_s, deleted=deleted) for p in pools))
            self._forget_gone(pools)
            self._discard_cached(pools)

    def resize(self, endpoint: str, variant: str, max_concurrency: int, provisioned: int) -> None:
        """Change a routed variant's MaxConcurrency and ProvisionedConcurrency in place (this front end's
        share changed): no new pool, its workers stay; scaling applies the new limits from now on. A pool not
        routed yet takes its share when it is (``current_share``)."""
        route = self._routes.get(endpoint.lower())
        for pool in route.every_pool() if route is not None else ():
            if pool.spec.variant == variant and (
                pool.spec.max_concurrency != max_concurrency or pool.spec.provisioned != provisioned
            ):
                self._emit_variant(pool, "deactivated")  # metering: the provisioned share is re-metered
                pool.resize(
                    dataclasses.replace(pool.spec, max_concurrency=max_concurrency, provisioned=provisioned)
                )
                self._emit_variant(pool, "activated")

    def _reshare(self, pools: list[VariantPool]) -> None:
        """New pools, about to be routed, take this front end's share as it is now."""
        if self.current_share is None:
            return
        for pool in pools:
            mine = self.current_share(pool.spec)
            if mine != pool.spec:
                pool.resize(mine)

    def _discard_cached(self, pools: list[VariantPool]) -> None:
        """Templates cached for these pools' models go, unless a pool still routed to uses the same model
        and environment (an update that changed only scaling, another endpoint of the same model)."""
        live = {p.template_key for r in self._routes.values() for p in r.every_pool()}
        for key in {p.template_key for p in pools} - live:
            if key is not None:
                self.cache.discard(key)

    def _close_template(self, template: Template) -> None:
        self._background.spawn(template.close())

    def _meter_provisioned(self, pool: VariantPool) -> None:
        """Tell the metering how many of a variant's provisioned workers are up, once that differs from
        what it was told (at activation: all of them) for ``PROVISIONED_SHORT_S`` (a rise at once)."""
        s = pool.spec
        if pool.draining or not is_lead(s):
            return
        told, since = self._provisioned_told.get(pool, (s.provisioned, None))
        up = min(s.provisioned, pool.ready)
        now = self._clock()
        if up == told:
            self._provisioned_told[pool] = (told, None)
            return
        if up < told and (since is None or now - since < PROVISIONED_SHORT_S):
            self._provisioned_told[pool] = (told, now if since is None else since)
            return
        self._provisioned_told[pool] = (up, None)
        self.events.variant(
            VariantEvent(
                s.endpoint,
                s.variant,
                "provisioned",
                self._wall(),
                memory_mb=s.memory_mb,
                max_concurrency=s.max_concurrency,
                provisioned=up,
                wanted=s.provisioned,
            )
        )

    def _emit_variant(self, pool: VariantPool, kind: str) -> None:
        s = pool.spec
        self._provisioned_told.pop(pool, None)  # activated: all its provisioned workers are metered
        if not is_lead(s):  # a model's several containers: the variant is told of once, by the first
            return
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

    def _spawn_drain(self, pool: VariantPool, timeout_s: float) -> asyncio.Task[None]:
        self._draining.add(pool)

        async def run() -> None:
            try:
                await pool.drain(timeout_s)
            finally:
                self._draining.discard(pool)
                self._forget_gone([pool])

        return self._background.spawn(run())

    def _forget_gone(self, pools: list[VariantPool]) -> None:
        """Drop the metric series of these pools' variants that no remaining pool serves (the old and new
        pools of an update share their series)."""
        names = {p.spec.endpoint.lower() for p in pools}
        candidates = [p for n in names if (r := self._routes.get(n)) is not None for p in r.pools]
        candidates += [p for p in self._draining if p.spec.endpoint.lower() in names]
        remaining = {(p.spec.endpoint, p.spec.variant) for p in candidates}
        for key in {(p.spec.endpoint, p.spec.variant) for p in pools} - remaining:
            self._metrics.forget(*key)

    # ---- memory ----
    def _evict(self, deficit_mb: int, requester: object) -> int:
        """Stop idle workers of pools other than ``requester`` (any endpoint, another variant of the same
        one, an update's old pool), longest idle first, until ``deficit_mb`` is on its way back; the MB."""
        freed = self.cache.evict(deficit_mb)  # entries serve nothing: they give way before any worker
        if freed >= deficit_mb:
            return freed
        # a pool with a worker is never quiet: the active pools (and those draining) are every candidate
        busy = self._busy_pools()
        candidates = sorted(
            ((slot, pool) for pool in busy if pool is not requester for slot in pool.evictable()),
            key=lambda item: item[0].idle_since,
        )
        for slot, pool in candidates:
            if freed >= deficit_mb:
                break
            freed += pool.evict(slot)
        return freed

    def _serve_waiting(self) -> None:
        for pool in self._busy_pools():  # a pool with requests waiting is never quiet
            if pool.queued:
                pool.scale()

    def _busy_pools(self) -> list[VariantPool]:
        return list(dict.fromkeys((*self._active, *self._draining)))

    def artifacts_evicted(self, model_dirs: list[str]) -> None:
        """The artifact cache let these directories go (told from the thread that trimmed it): the pools hear
        it on the event loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._artifacts_evicted, set(model_dirs))

    def _artifacts_evicted(self, model_dirs: set[str]) -> None:
        for pool in self.pools():
            pool.artifacts_evicted(model_dirs)

    # ---- the reconcile loop ----
    async def start(self, interval_s: float = 0.5) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_task = asyncio.create_task(self._reconcile(interval_s))

    async def _reconcile(self, interval_s: float) -> None:
        """Scale-in and floors, for the pools that are not quiet (and those draining); a pool that has gone
        quiet leaves the set until it tells the fleet again. With none, the loop waits for one."""
        while True:
            if not self._active and not self._draining:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(interval_s)
            for pool in list(self._active):
                if pool.quiet:
                    del self._active[pool]
                else:
                    pool.scale()
                    if pool.spec.provisioned:
                        self._meter_provisioned(pool)
            for pool in list(self._draining):
                if pool not in self._active and not pool.quiet:
                    pool.scale()

    async def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for name in list(self._routes):
            await self.deactivate(name, timeout_s=2.0, deleted=False)
        for pool in list(self._draining):
            await pool.drain(1.0)
        self.cache.clear()
        await self._background.join()
