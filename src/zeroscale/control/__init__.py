"""Control plane: SageMaker resources (models, endpoint configurations, ...) and their rules."""

from zeroscale.control.arns import Arns
from zeroscale.control.endpoint_configs import (
    EndpointConfigs,
    ServerlessSpec,
    VariantSpec,
    idle_timeout_override,
    variant_specs,
)
from zeroscale.control.listing import paginate
from zeroscale.control.models import Models

__all__ = [
    "Arns",
    "EndpointConfigs",
    "Models",
    "ServerlessSpec",
    "VariantSpec",
    "idle_timeout_override",
    "paginate",
    "variant_specs",
]
