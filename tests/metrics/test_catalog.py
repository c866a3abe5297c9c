"""How each outcome counts under SageMaker's Invocation4XXErrors / Invocation5XXErrors."""

from __future__ import annotations

import pytest

from metrics.builders import model_error, record, throttled
from zeroscale.metrics.catalog import BY_NAME, CATALOG, error_family


@pytest.mark.parametrize(
    ("rec", "family"),
    [
        (record(), 0),
        (model_error(500), 5),  # the model raised: the container answered 500, the client got 424
        (model_error(503), 5),
        (model_error(400), 4),  # the model rejected its input
        (model_error(415), 4),  # unsupported content type, answered by the container
        (model_error(0), 5),  # no answer at all: timed out, crashed, killed for memory
        (throttled(), 4),
        (record(status=400, error_code="ValidationError", worker_id="", model_status=0), 4),
        (record(status=500, error_code="InternalFailure", model_status=0), 5),
    ],
)
def test_error_family(rec: object, family: int) -> None:
    assert error_family(rec) == family  # type: ignore[arg-type]


def test_catalog_has_sagemakers_serverless_set_with_units() -> None:
    units = {m.name: m.unit for m in CATALOG if m.sagemaker}
    assert units == {
        "Invocations": "None",
        "Invocation4XXErrors": "None",
        "Invocation5XXErrors": "None",
        "ModelLatency": "Microseconds",
        "OverheadLatency": "Microseconds",
        "ModelSetupTime": "Microseconds",
        "MemoryUtilization": "Percent",
        "ServerlessConcurrentExecutionsUtilization": "None",
        "ApproximateBacklogSize": "Count",
        "ApproximateBacklogSizePerInstance": "Count",
        "ApproximateAgeOfOldestRequest": "Seconds",
        "HasBacklogWithoutCapacity": "Count",
        "ServerlessProvisionedConcurrencyExecutions": "None",
        "ServerlessProvisionedConcurrencyUtilization": "None",
        "ServerlessProvisionedConcurrencyInvocations": "None",
        "ServerlessProvisionedConcurrencySpilloverInvocations": "None",
        # multi-model endpoints
        "ModelLoadingWaitTime": "Microseconds",
        "ModelDownloadingTime": "Microseconds",
        "ModelLoadingTime": "Microseconds",
        "ModelUnloadingTime": "Microseconds",
        "ModelCacheHit": "None",
        "LoadedModelCount": "None",
    }
    assert len(BY_NAME) == len(CATALOG)
    assert all(m.prometheus.startswith("zeroscale_") for m in CATALOG)
