"""The SageMaker control-plane operations zeroscale implements, as a JSON 1.1 operation table."""

from __future__ import annotations

from dataclasses import dataclass

from zeroscale.api.jsonrpc import Operation
from zeroscale.control.endpoint_configs import EndpointConfigs
from zeroscale.control.endpoints import Endpoints
from zeroscale.control.models import Models
from zeroscale.control.tags import ResourceTags
from zeroscale.control.transform_jobs import TransformJobs


@dataclass
class ControlPlane:
    models: Models
    configs: EndpointConfigs
    endpoints: Endpoints
    transforms: TransformJobs | None = None

    def operations(self) -> dict[str, Operation]:
        m, c, e = self.models, self.configs, self.endpoints
        tags = ResourceTags({"model": m, "endpoint-config": c, "endpoint": e})
        return self._transform_operations() | {
            "CreateModel": m.create,
            "DescribeModel": lambda p: m.describe(p["ModelName"]),
            "ListModels": m.list,
            "DeleteModel": lambda p: m.delete(p["ModelName"]),
            "CreateEndpointConfig": c.create,
            "DescribeEndpointConfig": lambda p: c.describe(p["EndpointConfigName"]),
            "ListEndpointConfigs": c.list,
            "DeleteEndpointConfig": lambda p: c.delete(p["EndpointConfigName"]),
            "CreateEndpoint": e.create,
            "DescribeEndpoint": lambda p: e.describe(p["EndpointName"]),
            "ListEndpoints": e.list,
            "UpdateEndpoint": e.update,
            "UpdateEndpointWeightsAndCapacities": e.update_weights_and_capacities,
            "DeleteEndpoint": lambda p: e.delete(p["EndpointName"]),
            "ListTags": tags.list,
        }

    def _transform_operations(self) -> dict[str, Operation]:
        t = self.transforms
        if t is None:
            return {}
        return {
            "CreateTransformJob": t.create,
            "DescribeTransformJob": lambda p: t.describe(p["TransformJobName"]),
            "ListTransformJobs": t.list,
            "StopTransformJob": lambda p: t.stop(p["TransformJobName"]),
        }
