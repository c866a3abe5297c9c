"""The endpoint state machine around CreateEndpoint and UpdateEndpoint's bounded wait for their deployment:
a quick one is done when the call answers, a slow one answers Creating / Updating and finishes later, a
failing one is Failed, a delete cancels it. The deployer and the fleet are fakes with controllable delays;
the store, models and configurations are real (tests/e2e covers the real deployments)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from zeroscale.artifacts.holds import Hold, Holds
from zeroscale.control import Arns, EndpointConfigs, Models, variant_specs
from zeroscale.control.endpoints import Endpoints
from zeroscale.errors import DeployError, ValidationException
from zeroscale.router.spec import PoolSpec
from zeroscale.store import Store
from zeroscale.store.db import Record

from .fakes import FakeClock

SETTLE_S = 0.2


class FakeDeployer:
    def __init__(self) -> None:
        self.delay_s = 0.0
        self.error: str | None = None
        self.started = 0
        self.holds: list[Hold] = []  # each deployment's (the real one keeps its artifacts in the cache)

    def hold(self) -> Hold:
        self.holds.append(Holds().hold())
        return self.holds[-1]

    async def pool_specs(
        self, endpoint: str, config: Record, models: Any = None, hold: Hold | None = None
    ) -> list[PoolSpec]:
        assert hold is not None and hold in self.holds and not hold.closed  # open while the specs are made
        self.started += 1
        await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise DeployError(self.error)
        return [
            PoolSpec(endpoint, v.name, "sklearn", "sklearn", "/m", 1024, 2, 0, 60.0)
            for v in variant_specs(config.doc)
        ]


class FakeFleet:
    def __init__(self) -> None:
        self.routes: dict[str, list[PoolSpec]] = {}
        self.adjusting = asyncio.Event()
        self.adjusting.set()  # clear it to hold UpdateEndpointWeightsAndCapacities' application

    def route(self, endpoint: str) -> Any:
        specs = self.routes.get(endpoint.lower())
        return None if specs is None else SimpleNamespace(pools=[SimpleNamespace(spec=s) for s in specs])

    async def adjust(self, endpoint: str, specs: dict[str, PoolSpec], *, timeout_s: float) -> None:
        await self.adjusting.wait()
        self.routes[endpoint.lower()] = [specs.get(s.variant, s) for s in self.routes[endpoint.lower()]]

    async def activate(self, endpoint: str, specs: list[PoolSpec], *, warm: bool = True) -> None:
        self.routes[endpoint.lower()] = specs

    async def deactivate(self, endpoint: str, *, timeout_s: float = 5.0) -> None:
        self.routes.pop(endpoint.lower(), None)


@pytest.fixture
def deployer() -> FakeDeployer:
    return FakeDeployer()


@pytest.fixture
def fleet() -> FakeFleet:
    return FakeFleet()


@pytest.fixture
def settle_s() -> float:
    return SETTLE_S


@pytest.fixture
def endpoints(
    settle_s: float,
    store: Store,
    arns: Arns,
    models: Models,
    configs: EndpointConfigs,
    deployer: FakeDeployer,
    fleet: FakeFleet,
    clock: FakeClock,
) -> Endpoints:
    models.create({"ModelName": "m", "PrimaryContainer": {"Image": "sklearn"}})
    sc = {"MemorySizeInMB": 1024, "MaxConcurrency": 2}
    for name in ("c1", "c2"):
        configs.create(
            {
                "EndpointConfigName": name,
                "ProductionVariants": [
                    {"VariantName": "AllTraffic", "ModelName": "m", "ServerlessConfig": sc}
                ],
            }
        )
    return Endpoints(store, arns, models, configs, deployer, fleet, clock, settle_s=settle_s)


def _status(endpoints: Endpoints, name: str = "ep") -> str:
    return str(endpoints.describe(name)["EndpointStatus"])


async def _timed(coro: Any) -> tuple[Any, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    out = await coro
    return out, loop.time() - started


# A settle time no loaded machine reaches by itself: create answering before it shows it answered when the
# deployment was done (a 0.2 s settle took 0.68 s once in a CI run on a busy 2-core machine).
PATIENT_S = 20.0


@pytest.mark.parametrize("settle_s", [PATIENT_S])
async def test_a_quick_deployment_is_in_service_when_create_answers(
    endpoints: Endpoints, fleet: FakeFleet, deployer: FakeDeployer
) -> None:
    out, took = await _timed(endpoints.create({"EndpointName": "ep", "EndpointConfigName": "c1"}))
    assert out["EndpointArn"].endswith(":endpoint/ep")
    assert took < PATIENT_S / 2
    assert _status(endpoints) == "InService"
    assert endpoints.describe("ep")["ProductionVariants"][0]["VariantName"] == "AllTraffic"
    assert "ep" in fleet.routes
    assert [h.closed for h in deployer.holds] == [True]  # its artifacts' hold, closed once routed
    await endpoints.close()


async def test_a_slow_deployment_answers_creating_and_finishes_later(
    endpoints: Endpoints, deployer: FakeDeployer
) -> None:
    deployer.delay_s = 3 * SETTLE_S
    _, took = await _timed(endpoints.create({"EndpointName": "ep", "EndpointConfigName": "c1"}))
    assert SETTLE_S * 0.9 <= took < deployer.delay_s
    assert _status(endpoints) == "Creating"
    await asyncio.sleep(3 * SETTLE_S)
    assert _status(endpoints) == "InService"
    await endpoints.close()


async def test_a_failing_deployment_is_failed_when_create_answers(
    endpoints: Endpoints, deployer: FakeDeployer, fleet: FakeFleet
) -> None:
    deployer.error = "Variant AllTraffic (model m): no model data"
    await endpoints.create({"EndpointName": "ep", "EndpointConfigName": "c1"})
    desc = endpoints.describe("ep")
    assert (desc["EndpointStatus"], desc["FailureReason"]) == ("Failed", deployer.error)
    assert fleet.routes == {}
    assert [h.closed for h in deployer.holds] == [True]
    # A Failed endpoint is never updated (it would never become InService to wait for): deleted only.
    for update in (
        endpoints.update({"EndpointName": "ep", "EndpointConfigName": "c2"}),
        endpoints.update_weights_and_capacities(
            {
                "EndpointName": "ep",
                "DesiredWeightsAndCapacities": [{"VariantName": "AllTraffic", "DesiredWeight": 1}],
            }
        ),
    ):
        with pytest.raises(ValidationException, match=r'^Cannot update failed endpoint ".*/ep": delete it'):
            await update
    await endpoints.close()


async def test_delete_cancels_a_deployment_in_progress(
    endpoints: Endpoints, deployer: FakeDeployer, fleet: FakeFleet
) -> None:
    deployer.delay_s = 10 * SETTLE_S
    await endpoints.create({"EndpointName": "ep", "EndpointConfigName": "c1"})
    endpoints.delete("ep")
    assert _status(endpoints) == "Deleting"
    await asyncio.sleep(SETTLE_S)
    with pytest.raises(ValidationException, match="Could not find endpoint"):
        endpoints.describe("ep")
    assert fleet.routes == {}
    assert [h.closed for h in deployer.holds] == [True]  # a cancelled deployment's too
    await endpoints.close()


async def test_update_waits_the_same_way(endpoints: Endpoints, deployer: FakeDeployer) -> None:
    await endpoints.create({"EndpointName": "ep", "EndpointConfigName": "c1"})
    await endpoints.update({"EndpointName": "ep", "EndpointConfigName": "c2"})
    assert (_status(endpoints), endpoints.describe("ep")["EndpointConfigName"]) == ("InService", "c2")

    deployer.delay_s = 3 * SETTLE_S
    await endpoints.update({"EndpointName": "ep", "EndpointConfigName": "c1"})
    assert (_status(endpoints), endpoints.describe("ep")["EndpointConfigName"]) == ("Updating", "c2")
    with pytest.raises(ValidationException, match="Cannot update in-progress endpoint"):
        await endpoints.update({"EndpointName": "ep", "EndpointConfigName": "c2"})
    await asyncio.sleep(3 * SETTLE_S)
    assert (_status(endpoints), endpoints.describe("ep")["EndpointConfigName"]) == ("InService", "c1")
    await endpoints.close()


async def test_a_failed_update_keeps_serving_the_old_configuration(
    endpoints: Endpoints, deployer: FakeDeployer, fleet: FakeFleet
) -> None:
    await endpoints.create({"EndpointName": "ep", "EndpointConfigName": "c1"})
    deployer.error = "no"
    await endpoints.update({"EndpointName": "ep", "EndpointConfigName": "c2"})
    desc = endpoints.describe("ep")
    assert (desc["EndpointStatus"], desc["EndpointConfigName"], desc["FailureReason"]) == (
        "InService",
        "c1",
        "no",
    )
    assert "ep" in fleet.routes
    await endpoints.close()


async def test_a_model_deleted_while_its_endpoint_deploys_leaves_it_in_service(
    endpoints: Endpoints, deployer: FakeDeployer, models: Models
) -> None:
    # SageMaker allows deleting a model in use; the deployment read it again when done and died there,
    # leaving the endpoint Creating (or Updating) for good.
    deployer.delay_s = 3 * SETTLE_S
    await endpoints.create({"EndpointName": "ep", "EndpointConfigName": "c1"})
    models.delete("m")
    await asyncio.sleep(3 * SETTLE_S)
    desc = endpoints.describe("ep")
    assert (desc["EndpointStatus"], desc.get("FailureReason")) == ("InService", None)
    assert desc["ProductionVariants"][0]["DeployedImages"][0]["SpecifiedImage"] == "sklearn"

    models.create({"ModelName": "m", "PrimaryContainer": {"Image": "sklearn"}})
    await endpoints.update({"EndpointName": "ep", "EndpointConfigName": "c2"})
    models.delete("m")
    await asyncio.sleep(3 * SETTLE_S)
    desc = endpoints.describe("ep")
    assert (desc["EndpointStatus"], desc["EndpointConfigName"]) == ("InService", "c2")
    await endpoints.close()


async def test_a_deployment_that_breaks_unexpectedly_ends_failed_not_creating(
    endpoints: Endpoints, fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(endpoint: str, specs: list[PoolSpec], *, warm: bool = True) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(fleet, "activate", broken)
    await endpoints.create({"EndpointName": "ep", "EndpointConfigName": "c1"})
    desc = endpoints.describe("ep")
    assert desc["EndpointStatus"] == "Failed"
    assert "RuntimeError" in desc["FailureReason"] and "server log" in desc["FailureReason"]
    await endpoints.close()


async def test_a_long_failure_keeps_its_first_line_and_whole_lines_of_its_end(
    endpoints: Endpoints, deployer: FakeDeployer
) -> None:
    frames = "\n".join(
        f'  File "/srv/m{i}.py", line {i}, in load\n    weights = state.pop()' for i in range(60)
    )
    deployer.error = (
        f"Worker failed to start: the worker process exited with code 3.\n{frames}\nIndexError: x"
    )
    await endpoints.create({"EndpointName": "ep", "EndpointConfigName": "c1"})
    reason = endpoints.describe("ep")["FailureReason"]
    assert len(reason) <= 1024  # botocore's FailureReason
    assert reason.startswith("Worker failed to start: the worker process exited with code 3.\n...\n")
    assert reason.endswith("\nIndexError: x")
    kept = reason.split("\n...\n", 1)[1].splitlines()
    assert all(line in deployer.error.splitlines() for line in kept)  # whole lines, none cut
    await endpoints.close()


async def test_close_cancels_what_is_still_deploying(endpoints: Endpoints, deployer: FakeDeployer) -> None:
    deployer.delay_s = 100.0
    await endpoints.create({"EndpointName": "ep", "EndpointConfigName": "c1"})
    _, took = await _timed(endpoints.close())
    assert took < 1.0
    assert _status(endpoints) == "Creating"  # a restarted server resumes it


async def test_weights_and_capacities_show_desired_at_once_and_current_once_applied(
    endpoints: Endpoints, fleet: FakeFleet
) -> None:
    await endpoints.create({"EndpointName": "ep", "EndpointConfigName": "c1"})
    fleet.adjusting.clear()
    update = {"MaxConcurrency": 5, "ProvisionedConcurrency": 1}
    await endpoints.update_weights_and_capacities(
        {
            "EndpointName": "ep",
            "DesiredWeightsAndCapacities": [
                {"VariantName": "AllTraffic", "DesiredWeight": 2.0, "ServerlessUpdateConfig": update}
            ],
        }
    )
    desc = endpoints.describe("ep")
    variant = desc["ProductionVariants"][0]
    assert desc["EndpointStatus"] == "Updating"
    assert (variant["CurrentWeight"], variant["DesiredWeight"]) == (1.0, 2.0)
    assert variant["CurrentServerlessConfig"] == {"MemorySizeInMB": 1024, "MaxConcurrency": 2}
    assert variant["DesiredServerlessConfig"] == {"MemorySizeInMB": 1024, **update}
    assert variant["VariantStatus"][0]["Status"] == "Updating"
    with pytest.raises(ValidationException, match="Cannot update in-progress endpoint"):
        await endpoints.update_weights_and_capacities(
            {"EndpointName": "ep", "DesiredWeightsAndCapacities": [{"VariantName": "AllTraffic"}]}
        )
    fleet.adjusting.set()
    await asyncio.sleep(0.05)
    desc = endpoints.describe("ep")
    variant = desc["ProductionVariants"][0]
    assert desc["EndpointStatus"] == "InService" and "VariantStatus" not in variant
    assert (variant["CurrentWeight"], variant["DesiredWeight"]) == (2.0, 2.0)
    assert variant["CurrentServerlessConfig"] == variant["DesiredServerlessConfig"]
    assert fleet.routes["ep"][0].max_concurrency == 5 and fleet.routes["ep"][0].provisioned == 1
    await endpoints.close()


async def test_weights_and_capacities_survive_a_restart_and_an_update_drops_them(
    endpoints: Endpoints, fleet: FakeFleet
) -> None:
    await endpoints.create({"EndpointName": "ep", "EndpointConfigName": "c1"})
    await endpoints.update_weights_and_capacities(
        {
            "EndpointName": "ep",
            "DesiredWeightsAndCapacities": [
                {"VariantName": "AllTraffic", "ServerlessUpdateConfig": {"MaxConcurrency": 7}}
            ],
        }
    )
    assert fleet.routes["ep"][0].max_concurrency == 7
    fleet.routes.clear()  # a restart: the fleet is empty, the store is not
    await endpoints.resume()
    assert fleet.routes["ep"][0].max_concurrency == 7
    assert endpoints.describe("ep")["ProductionVariants"][0]["CurrentServerlessConfig"]["MaxConcurrency"] == 7
    await endpoints.update({"EndpointName": "ep", "EndpointConfigName": "c2"})
    assert fleet.routes["ep"][0].max_concurrency == 2  # the new configuration's own
    await endpoints.close()


Restart = Callable[[], tuple[Endpoints, "FakeFleet"]]


@pytest.fixture
def restart(
    store: Store,
    arns: Arns,
    models: Models,
    configs: EndpointConfigs,
    deployer: FakeDeployer,
    clock: FakeClock,
) -> Restart:
    """Another server on the same store (the first one was SIGKILLed), with a fleet of its own."""

    def make() -> tuple[Endpoints, FakeFleet]:
        fleet = FakeFleet()
        after = Endpoints(
            store, arns, models, configs, deployer, fleet, clock, settle_s=SETTLE_S, frontend="after"
        )
        return after, fleet

    return make


async def test_a_resize_that_died_with_its_front_end_is_described_as_what_serves(
    endpoints: Endpoints, fleet: FakeFleet, restart: Restart
) -> None:
    """UpdateEndpointWeightsAndCapacities in progress when its server is SIGKILLed: after the restart the
    endpoint is InService, serves the new capacities (stored as overrides) and describes them as current,
    with no variant left Updating."""
    await endpoints.create({"EndpointName": "ep", "EndpointConfigName": "c1"})
    fleet.adjusting.clear()  # the application hangs: the server dies in the middle of it
    await endpoints.update_weights_and_capacities(
        {
            "EndpointName": "ep",
            "DesiredWeightsAndCapacities": [
                {"VariantName": "AllTraffic", "ServerlessUpdateConfig": {"MaxConcurrency": 7}}
            ],
        }
    )
    assert _status(endpoints) == "Updating"
    restarted, restarted_fleet = restart()
    await restarted.resume()
    variant = restarted.describe("ep")["ProductionVariants"][0]
    assert _status(restarted) == "InService"
    assert "VariantStatus" not in variant, variant
    assert variant["CurrentServerlessConfig"] == variant["DesiredServerlessConfig"], variant
    assert variant["CurrentServerlessConfig"]["MaxConcurrency"] == 7
    assert restarted_fleet.routes["ep"][0].max_concurrency == 7
    fleet.adjusting.set()
    await endpoints.close()
    await restarted.close()


@pytest.mark.parametrize("config_deleted", [False, True])
async def test_an_update_that_died_with_its_front_end_runs_again(
    endpoints: Endpoints,
    configs: EndpointConfigs,
    deployer: FakeDeployer,
    restart: Restart,
    config_deleted: bool,
) -> None:
    """UpdateEndpoint in progress when its server is SIGKILLed: after the restart the old configuration
    serves while the update runs again to its end; when it can no longer run (its configuration deleted
    meanwhile), the endpoint is InService on the old one with a FailureReason that says so."""
    await endpoints.create({"EndpointName": "ep", "EndpointConfigName": "c1"})
    deployer.delay_s = 60.0  # the new deployment hangs: the server dies in the middle of it
    await endpoints.update({"EndpointName": "ep", "EndpointConfigName": "c2"})
    assert _status(endpoints) == "Updating"
    if config_deleted:
        configs.delete("c2")
    deployer.delay_s = 0.0
    restarted, restarted_fleet = restart()
    await restarted.resume()
    assert "ep" in restarted_fleet.routes  # the serving deployment, at once
    for _ in range(100):
        if _status(restarted) != "Updating":
            break
        await asyncio.sleep(0.02)
    desc = restarted.describe("ep")
    if config_deleted:
        assert (desc["EndpointStatus"], desc["EndpointConfigName"]) == ("InService", "c1")
        assert "The update to endpoint configuration c2 stopped with the server" in desc["FailureReason"]
    else:
        assert (desc["EndpointStatus"], desc["EndpointConfigName"]) == ("InService", "c2")
        assert "FailureReason" not in desc
    await endpoints.close()
    await restarted.close()
