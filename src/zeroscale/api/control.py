"""The SageMaker control-plane operations zeroscale implements, as a JSON 1.1 operation table."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from zeroscale.api.jsonrpc import Operation
from zeroscale.control.endpoint_configs import EndpointConfigs
from zeroscale.control.endpoints import Endpoints
from zeroscale.control.model_packages import ModelPackages
from zeroscale.control.models import Models, check_container
from zeroscale.control.tags import ResourceTags, Tagged, TagStore, check_tags
from zeroscale.control.transform_jobs import TransformJobs
from zeroscale.iam.authz import CALLER


@dataclass
class ControlPlane:
    models: Models
    configs: EndpointConfigs
    endpoints: Endpoints
    tags: TagStore
    transforms: TransformJobs | None = None
    packages: ModelPackages | None = None

    def operations(self) -> dict[str, Operation]:
        m, c, e = self.models, self.configs, self.endpoints
        kinds: dict[str, Tagged] = {"model": m, "endpoint-config": c, "endpoint": e}
        if self.packages is not None:
            kinds |= {"model-package": self.packages, "model-package-group": self.packages.groups}
        tags = ResourceTags(kinds, self.tags)
        table = self._extra_operations() | {
            # in a thread: it looks at model data on the server's disk, which may be a mount that hangs; the
            # model remembers who made it (its data is read with that user's rights)
            "CreateModel": lambda p: asyncio.to_thread(m.create, p, CALLER.get()),
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
            "ListTags": tags.list_tags,
            "AddTags": tags.add_tags,
            "DeleteTags": tags.delete_tags,
        }
        return {name: _tags_checked(op) if name.startswith("Create") else op for name, op in table.items()}

    def _extra_operations(self) -> dict[str, Operation]:
        return self._transform_operations() | self._package_operations()

    def _package_operations(self) -> dict[str, Operation]:
        k = self.packages
        if k is None:
            return {}
        return {
            "CreateModelPackageGroup": k.create_group,
            "DescribeModelPackageGroup": lambda p: k.describe_group(p["ModelPackageGroupName"]),
            "ListModelPackageGroups": k.list_groups,
            "DeleteModelPackageGroup": lambda p: k.delete_group(p["ModelPackageGroupName"]),
            # in a thread, as CreateModel: it looks at model data on the server's disk, and writes a document
            # of up to 0.5 MB (15 containers of 32 KB of environment: 8 ms on the event loop)
            "CreateModelPackage": lambda p: asyncio.to_thread(k.create, p, check_container),
            "DescribeModelPackage": lambda p: k.describe(p["ModelPackageName"]),
            "ListModelPackages": k.list,
            "UpdateModelPackage": k.update,
            "DeleteModelPackage": lambda p: k.delete(p["ModelPackageName"]),
        }

    def _transform_operations(self) -> dict[str, Operation]:
        t = self.transforms
        if t is None:
            return {}
        return {
            "CreateTransformJob": lambda p: t.create(p, CALLER.get()),  # reads what it names as the caller
            "DescribeTransformJob": lambda p: t.describe(p["TransformJobName"]),
            "ListTransformJobs": t.list,
            "StopTransformJob": lambda p: t.stop(p["TransformJobName"]),
        }


def _tags_checked(op: Operation) -> Operation:
    def checked(params: Any) -> Any:
        check_tags(params)
        return op(params)

    return checked
