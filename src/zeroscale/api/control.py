"""The SageMaker control-plane operations zeroscale implements, as a JSON 1.1 operation table."""

from __future__ import annotations

from dataclasses import dataclass

from zeroscale.api.jsonrpc import Operation
from zeroscale.control.endpoint_configs import EndpointConfigs
from zeroscale.control.endpoints import Endpoints
from zeroscale.control.models import Models
from zeroscale.control.tags import ResourceTags


@dataclass
class ControlPlane:
    models: Models
    configs: EndpointConfigs
    endpoints: Endpoints

    def operations(self) -> dict[str, Operation]:
        m, c, e = self.models, self.configs, self.endpoints
        tags = ResourceTags({"model": m, "endpoint-config": c, "endpoint": e})
        return {
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
            "DeleteEndpoint": lambda p: e.delete(p["EndpointName"]),
            "ListTags": tags.list,
        }
