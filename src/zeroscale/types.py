"""Small shared types: lifecycle enums carry the exact AWS strings."""

from __future__ import annotations

from enum import StrEnum


class EndpointStatus(StrEnum):
    OUT_OF_SERVICE = "OutOfService"
    CREATING = "Creating"
    UPDATING = "Updating"
    SYSTEM_UPDATING = "SystemUpdating"
    ROLLING_BACK = "RollingBack"
    IN_SERVICE = "InService"
    DELETING = "Deleting"
    FAILED = "Failed"
    UPDATE_ROLLBACK_FAILED = "UpdateRollbackFailed"


class WorkerState(StrEnum):
    """A worker's place in its pool (see router/slots.py for the legal moves)."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    GONE = "gone"


SERVERLESS_MEMORY_SIZES_MB = (1024, 2048, 3072, 4096, 5120, 6144)


# The router key of a transform job's workers (no endpoint name contains a colon).
TRANSFORM_ROUTE_PREFIX = "transform-job:"
ENDPOINT_LOG_GROUP_PREFIX = "/aws/sagemaker/Endpoints/"
TRANSFORM_LOG_GROUP = "/aws/sagemaker/TransformJobs"  # every job: streams <job name>/<worker>


def log_group_name(route: str) -> str:
    """The CloudWatch log group of a router key: an endpoint's own, or the one of every transform job (as
    SageMaker's: the sagemaker SDK reads a job's logs there, streams ``<job name>/...``)."""
    if route.startswith(TRANSFORM_ROUTE_PREFIX):
        return TRANSFORM_LOG_GROUP
    return ENDPOINT_LOG_GROUP_PREFIX + route


def log_group_route(group: str) -> str | None:
    """The endpoint whose logs a group holds; None for a name that is no endpoint's group (the transform
    jobs' group holds several router keys: ``logs.store.LogStore.group``)."""
    if group.startswith(ENDPOINT_LOG_GROUP_PREFIX):
        endpoint = group[len(ENDPOINT_LOG_GROUP_PREFIX) :]
        return None if ":" in endpoint else endpoint
    return None
