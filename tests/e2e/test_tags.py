"""AddTags, DeleteTags and ListTags on a real server with real boto3: tags added, overwritten and removed
after creation, AWS's limits and reserved keys refused, and tags that outlive an update of the endpoint
and a restart of the server but not the resource they belong to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from zeroscale.testing import ServerProcess, deploy, wait_final

from .conftest import handler_model

ECHO = "def model_fn(model_dir):\n    return None\n\n\ndef predict_fn(data, model):\n    return data\n"
ARN = "arn:aws:sagemaker:us-east-1:000000000000"


def error(call: Callable[..., Any], **params: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as err:
        call(**params)
    return err.value.response["Error"]["Code"], err.value.response["Error"]["Message"]


def test_tags_added_overwritten_and_deleted_after_creation(server: ServerProcess, sm: Any) -> None:
    sm.create_model(
        ModelName="tagged",
        PrimaryContainer={"Image": "sklearn"},
        Tags=[{"Key": "team", "Value": "ml"}, {"Key": "stage", "Value": "dev"}],
    )
    arn = f"{ARN}:model/tagged"
    added = sm.add_tags(
        ResourceArn=arn, Tags=[{"Key": "stage", "Value": "prod"}, {"Key": "cost", "Value": ""}]
    )
    assert added["Tags"] == [{"Key": "stage", "Value": "prod"}, {"Key": "cost", "Value": ""}]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [
        {"Key": "team", "Value": "ml"},
        {"Key": "stage", "Value": "prod"},  # overwritten in place
        {"Key": "cost", "Value": ""},
    ]
    sm.delete_tags(ResourceArn=arn, TagKeys=["team", "not-there"])  # a key it lacks is no error
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [
        {"Key": "stage", "Value": "prod"},
        {"Key": "cost", "Value": ""},
    ]

    # Refused as AWS refuses them, and nothing is changed by a refused call.
    assert error(sm.add_tags, ResourceArn=arn, Tags=[{"Key": "aws:owner", "Value": "x"}]) == (
        "ValidationException",
        "Tag keys starting with 'aws:' are reserved for AWS use: aws:owner.",
    )
    # a setting zeroscale reads when the resource is created: changed later it would never apply (a probe's
    # AddTags of zeroscale:idle-timeout-s was listed and ignored)
    for call, kwargs in (
        (sm.add_tags, {"Tags": [{"Key": "zeroscale:idle-timeout-s", "Value": "30"}]}),
        (sm.delete_tags, {"TagKeys": ["zeroscale:idle-timeout-s"]}),
    ):
        code, message = error(call, ResourceArn=arn, **kwargs)
        assert code == "ValidationException" and "zeroscale reads such a tag when the resource is" in message
    many = [{"Key": f"k{i}", "Value": "v"} for i in range(49)]
    code, message = error(sm.add_tags, ResourceArn=arn, Tags=many)
    assert code == "ValidationException"
    assert message.startswith(
        f"Could not add 49 tag(s) to {arn}: it would have 51 tags; a resource has at most 50"
    )
    assert len(sm.list_tags(ResourceArn=arn)["Tags"]) == 2
    sm.add_tags(ResourceArn=arn, Tags=many[:48])
    assert len(sm.list_tags(ResourceArn=arn)["Tags"]) == 50
    assert error(sm.add_tags, ResourceArn=f"{ARN}:model/ghost", Tags=many[:1]) == (
        "ValidationException",
        f'Could not find model "{ARN}:model/ghost".',
    )
    assert error(sm.delete_tags, ResourceArn=f"{ARN}:training-job/x", TagKeys=["a"]) == (
        "ValidationException",
        f'Could not find resource "{ARN}:training-job/x".',
    )

    # A resource deleted and made again under its name has the tags of its new create call only.
    sm.delete_model(ModelName="tagged")
    sm.create_model(
        ModelName="tagged", PrimaryContainer={"Image": "sklearn"}, Tags=[{"Key": "new", "Value": "1"}]
    )
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "new", "Value": "1"}]
    sm.delete_model(ModelName="tagged")


def test_an_endpoints_tags_outlive_its_updates_and_a_restart(
    server_factory: Callable[..., ServerProcess], tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = server_factory()
    sm = server.client("sagemaker")
    url = handler_model(tmp_path_factory.mktemp("echo"), ECHO)
    assert deploy(sm, "kept", url)["EndpointStatus"] == "InService"
    arn = f"{ARN}:endpoint/kept"
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "owner", "Value": "alice"}])
    # An update rewrites the endpoint's record while it deploys: the tags are a row of their own.
    sm.create_endpoint_config(
        EndpointConfigName="kept-2",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "kept",
                "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 1},
            }
        ],
    )
    sm.update_endpoint(EndpointName="kept", EndpointConfigName="kept-2")
    assert wait_final(sm, "kept")["EndpointConfigName"] == "kept-2"
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "owner", "Value": "alice"}]
    server.stop()
    server.start()
    assert server.client("sagemaker").list_tags(ResourceArn=arn)["Tags"] == [
        {"Key": "owner", "Value": "alice"}
    ]
