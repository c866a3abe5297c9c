"""Scoped credentials with real boto3, as an attacker would try them: IAM users, access keys and inline
policies through IAM's own API on the server's URL; every API refuses what a user's policy does not allow,
with AWS's AccessDenied message; an explicit Deny wins; the admin keeps full access; secrets are not in the
database; a deactivated key is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess, deploy, wait_final

from .conftest import handler_model

ECHO = "def model_fn(model_dir):\n    return None\n\n\ndef predict_fn(data, model):\n    return data\n"
ACCOUNT = "000000000000"
SERVERLESS = {"MemorySizeInMB": 1024, "MaxConcurrency": 1}


def client(server: ServerProcess, service: str, key: dict[str, str]) -> Any:
    return server.client(service, key=key)


def error(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as err:
        call(*args, **kwargs)
    response: dict[str, Any] = err.value.response
    return response["Error"]


@pytest.fixture(scope="module")
def iam(server: ServerProcess) -> Any:
    return server.client("iam")


@pytest.fixture(scope="module")
def endpoints(sm: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    url = handler_model(tmp_path_factory.mktemp("echo"), ECHO)
    for name in ("open-echo", "secret-echo"):
        assert deploy(sm, name, url)["EndpointStatus"] == "InService"


@pytest.fixture(scope="module")
def alice(iam: Any, endpoints: None) -> dict[str, str]:
    """May invoke open-* endpoints and describe anything of SageMaker's, must never delete."""
    iam.create_user(UserName="alice")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["sagemaker:Invoke*", "sagemaker:Describe*", "sagemaker:List*"],
                "Resource": [f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/open-*", "*"],
            },
            {
                "Effect": "Deny",
                "Action": "sagemaker:InvokeEndpoint",
                "NotResource": "arn:aws:sagemaker:*:*:endpoint/open-*",
            },
            {"Effect": "Deny", "Action": "sagemaker:Delete*", "Resource": "*"},
        ],
    }
    iam.put_user_policy(UserName="alice", PolicyName="invoke-open", PolicyDocument=json.dumps(policy))
    key: dict[str, str] = iam.create_access_key(UserName="alice")["AccessKey"]
    return key


def test_the_policy_simulator_decides_as_the_authorizer(
    iam: Any, server: ServerProcess, alice: dict[str, str]
) -> None:
    """SimulatePrincipalPolicy with boto3: a user's decisions (allowed, implicit and explicit denies), the
    root's, a role's NoSuchEntity (the sagemaker SDK's execution-role check goes on without failing), and
    members zeroscale does not serve refused by name."""
    alice_arn = f"arn:aws:iam::{ACCOUNT}:user/alice"
    open_ep = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/open-echo"
    secret_ep = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/secret-echo"
    out = iam.simulate_principal_policy(
        PolicySourceArn=alice_arn,
        ActionNames=["sagemaker:InvokeEndpoint", "sagemaker:DeleteEndpoint", "sagemaker:CreateModel"],
        ResourceArns=[open_ep, secret_ep],
    )
    decisions = {
        (r["EvalActionName"], r["EvalResourceName"]): r["EvalDecision"] for r in out["EvaluationResults"]
    }
    assert decisions == {
        ("sagemaker:InvokeEndpoint", open_ep): "allowed",
        ("sagemaker:InvokeEndpoint", secret_ep): "explicitDeny",
        ("sagemaker:DeleteEndpoint", open_ep): "explicitDeny",
        ("sagemaker:DeleteEndpoint", secret_ep): "explicitDeny",
        ("sagemaker:CreateModel", open_ep): "implicitDeny",
        ("sagemaker:CreateModel", secret_ep): "implicitDeny",
    }
    assert out["IsTruncated"] is False
    paged = iam.get_paginator("simulate_principal_policy").paginate(
        PolicySourceArn=alice_arn, ActionNames=["sagemaker:ListModels"] * 3, PaginationConfig={"PageSize": 2}
    )
    assert [len(p["EvaluationResults"]) for p in paged] == [2, 1]
    root = iam.simulate_principal_policy(
        PolicySourceArn=f"arn:aws:iam::{ACCOUNT}:root", ActionNames=["sagemaker:DeleteEndpoint"]
    )
    assert root["EvaluationResults"][0]["EvalDecision"] == "allowed"
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.simulate_principal_policy(
            PolicySourceArn=f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole", ActionNames=["s3:GetObject"]
        )
    with pytest.raises(iam.exceptions.InvalidInputException, match="ContextEntries"):
        iam.simulate_principal_policy(
            PolicySourceArn=alice_arn,
            ActionNames=["sagemaker:ListModels"],
            ContextEntries=[
                {"ContextKeyName": "aws:SourceIp", "ContextKeyValues": ["1.2.3.4"], "ContextKeyType": "ip"}
            ],
        )
    as_alice = client(server, "iam", alice)  # her policies allow no iam:* action
    assert (
        error(as_alice.simulate_principal_policy, PolicySourceArn=alice_arn, ActionNames=["s3:x"])["Code"]
        == "AccessDenied"
    )


def test_user_lifecycle_and_the_secret_shown_once(
    iam: Any, server: ServerProcess, alice: dict[str, str]
) -> None:
    user = iam.get_user(UserName="alice")["User"]
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/alice" and user["UserId"].startswith("AIDA")
    assert "alice" in [u["UserName"] for u in iam.list_users()["Users"]]
    listed = iam.list_access_keys(UserName="alice")["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in listed] == [alice["AccessKeyId"]]
    assert "SecretAccessKey" not in listed[0]
    assert iam.list_user_policies(UserName="alice")["PolicyNames"] == ["invoke-open"]
    doc = iam.get_user_policy(UserName="alice", PolicyName="invoke-open")["PolicyDocument"]
    assert doc["Statement"][2]["Effect"] == "Deny"  # botocore decoded IAM's URL-encoded JSON
    raw = (server.data_dir / "zeroscale.db").read_bytes()
    assert alice["SecretAccessKey"].encode() not in raw  # stored sealed
    assert error(iam.create_user, UserName="alice")["Code"] == "EntityAlreadyExists"
    assert error(iam.delete_user, UserName="alice")["Code"] == "DeleteConflict"
    assert error(iam.get_user, UserName="nobody")["Code"] == "NoSuchEntity"
    bad = '{"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]}'
    assert error(iam.put_user_policy, UserName="alice", PolicyName="x", PolicyDocument=bad)["Code"] == (
        "MalformedPolicyDocument"
    )


def test_policies_decide_every_api(server: ServerProcess, alice: dict[str, str]) -> None:
    smr, sm = client(server, "sagemaker-runtime", alice), client(server, "sagemaker", alice)
    assert smr.invoke_endpoint(EndpointName="open-echo", Body=b"[1]", ContentType="application/json")[
        "Body"
    ].read()
    denied = error(
        smr.invoke_endpoint, EndpointName="secret-echo", Body=b"[1]", ContentType="application/json"
    )
    assert denied["Code"] == "AccessDeniedException"
    assert denied["Message"] == (
        f"User: arn:aws:iam::{ACCOUNT}:user/alice is not authorized to perform: sagemaker:InvokeEndpoint on "
        f"resource: arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/secret-echo with an explicit deny in an "
        "identity-based policy"
    )
    # Response streams are authorized as sagemaker:InvokeEndpoint on the endpoint, as on AWS.
    streamed = smr.invoke_endpoint_with_response_stream(
        EndpointName="open-echo", Body=b"[1]", ContentType="application/json"
    )
    assert [e["PayloadPart"]["Bytes"] for e in streamed["Body"]]
    denied_stream = error(
        smr.invoke_endpoint_with_response_stream,
        EndpointName="secret-echo",
        Body=b"[1]",
        ContentType="application/json",
    )
    assert denied_stream == denied
    assert sm.describe_endpoint(EndpointName="secret-echo")["EndpointStatus"] == "InService"
    assert len(sm.list_endpoints()["Endpoints"]) == 2
    create = error(sm.create_model, ModelName="m", PrimaryContainer={"Image": "sklearn"})
    assert create["Code"] == "AccessDeniedException"
    assert "because no identity-based policy allows the sagemaker:CreateModel action" in create["Message"]
    assert f"resource: arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/m" in create["Message"]
    delete = error(sm.delete_endpoint, EndpointName="open-echo")
    assert "explicit deny" in delete["Message"]
    logs = client(server, "logs", alice)
    assert error(logs.describe_log_groups)["Code"] == "AccessDeniedException"
    iam_as_alice = client(server, "iam", alice)
    refused = error(iam_as_alice.create_user, UserName="mallory")
    assert refused["Code"] == "AccessDenied"  # the query protocol's code
    assert "iam:CreateUser on resource: arn:aws:iam::000000000000:user/mallory" in refused["Message"]
    assert rest_status(server, alice, "usage") == 400  # zeroscale:GetUsage is not allowed either


def test_a_model_on_the_servers_disk_needs_its_own_permission(
    iam: Any, server: ServerProcess, tmp_path: Path
) -> None:
    """The server reads a file:// model with its own rights, and a model's untrusted code reads what it
    read: a tenant allowed every SageMaker action still may not name /etc/passwd, or a path that climbs or
    links out of the directory it was given, as its model data."""
    iam.create_user(UserName="tenant")
    everything = {"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"}
    iam.put_user_policy(
        UserName="tenant", PolicyName="sm", PolicyDocument=json.dumps({"Statement": [everything]})
    )
    key = iam.create_access_key(UserName="tenant")["AccessKey"]
    sm, smr = client(server, "sagemaker", key), client(server, "sagemaker-runtime", key)
    files = f"arn:aws:zeroscale:{REGION}:{ACCOUNT}:file"

    def create(name: str, url: str, **container: Any) -> dict[str, Any]:
        return error(
            sm.create_model,
            ModelName=name,
            PrimaryContainer={"Image": "sklearn", "ModelDataUrl": url, **container},
            ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/r",
        )

    denied = create("steal", "file:///etc/passwd")
    assert denied["Code"] == "AccessDeniedException"
    assert denied["Message"] == (
        f"User: arn:aws:iam::{ACCOUNT}:user/tenant is not authorized to perform: zeroscale:ReadLocalFile on "
        f"resource: {files}/etc/passwd because no identity-based policy allows the "
        "zeroscale:ReadLocalFile action"
    )
    assert f"{files}/etc/*" in create("steal-mme", "file:///etc/", Mode="MultiModel")["Message"]

    mine = tmp_path / "tenant"
    mine.mkdir()
    (mine / "escape").symlink_to("/etc")
    url = handler_model(mine, ECHO)
    allow = {"Effect": "Allow", "Action": "zeroscale:ReadLocalFile", "Resource": f"{files}{mine}/*"}
    iam.put_user_policy(
        UserName="tenant", PolicyName="own", PolicyDocument=json.dumps({"Statement": [allow]})
    )
    assert (
        f"resource: {files}/etc/passwd "
        in create("climb", f"file://{mine}{'/..' * 12}/etc/passwd")["Message"]
    )
    assert f"resource: {files}/etc/passwd " in create("link", f"file://{mine}/escape/passwd")["Message"]
    assert deploy(sm, "tenant-echo", url)["EndpointStatus"] == "InService"
    answer = smr.invoke_endpoint(EndpointName="tenant-echo", Body=b"[7]", ContentType="application/json")
    assert json.loads(answer["Body"].read()) == [7]
    sm.delete_endpoint(EndpointName="tenant-echo")  # the module's other tests count its endpoints:
    sm.get_waiter("endpoint_deleted").wait(EndpointName="tenant-echo", WaiterConfig={"Delay": 0.2})  # gone
    sm.delete_endpoint_config(EndpointConfigName="tenant-echo")
    sm.delete_model(ModelName="tenant-echo")


def test_a_tenants_model_reads_with_its_creators_rights_when_deployed(
    iam: Any, server: ServerProcess, sm: Any, tmp_path: Path
) -> None:
    """CreateModel checks where a path leads when it is called; the server reads the data later, at
    deployment, and follows every symlink in a model directory. What it reads then is checked against
    the creator's policy again, where each file leads: a link inside a directory, a file swapped for a
    link after CreateModel, a multi-model target that links out. The admin's models follow links as before."""
    iam.create_user(UserName="lessee")
    files = f"arn:aws:zeroscale:{REGION}:{ACCOUNT}:file"
    mine, other = tmp_path / "lessee", tmp_path / "other"
    (mine / "mme").mkdir(parents=True)
    (mine / "dir" / "code").mkdir(parents=True)
    other.mkdir()
    allowed = [
        {"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"},
        {"Effect": "Allow", "Action": "zeroscale:ReadLocalFile", "Resource": f"{files}{mine}/*"},
    ]
    policy = json.dumps({"Statement": allowed})
    iam.put_user_policy(UserName="lessee", PolicyName="p", PolicyDocument=policy)
    key = iam.create_access_key(UserName="lessee")["AccessKey"]
    lessee, smr = client(server, "sagemaker", key), client(server, "sagemaker-runtime", key)
    secret = other / "weights.bin"
    secret.write_bytes(b"another tenant's weights")
    (mine / "dir" / "code" / "inference.py").write_text(ECHO)
    (mine / "dir" / "weights.bin").symlink_to(secret)
    made: list[str] = []

    def serve(client: Any, name: str, url: str, **container: Any) -> dict[str, Any]:
        """The endpoint ``name`` of a model made first (``url``: None when it is there already)."""
        made.append(name)
        if url:
            model = {"Image": "sklearn", "ModelDataUrl": url, **container}
            client.create_model(ModelName=name, PrimaryContainer=model)
        serverless = {"MemorySizeInMB": 2048, "MaxConcurrency": 2}
        variant = {"VariantName": "AllTraffic", "ModelName": name, "ServerlessConfig": serverless}
        client.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
        client.create_endpoint(EndpointName=name, EndpointConfigName=name)
        return wait_final(client, name)

    def refused(desc: dict[str, Any], leads: Path) -> str:
        assert desc["EndpointStatus"] == "Failed"
        reason: str = desc["FailureReason"]
        who = f"User: arn:aws:iam::{ACCOUNT}:user/lessee"
        assert f"leads to {leads}: {who} is not authorized to perform: zeroscale:ReadLocalFile " in reason
        assert f"on resource: {files}{leads} because no identity-based policy allows" in reason
        return reason

    # a directory whose file links out: CreateModel sees only the directory
    reason = refused(serve(lessee, "lessee-dir", f"file://{mine}/dir"), secret)
    assert f"Model directory file://{mine}/dir: 'weights.bin' leads to" in reason
    # a file swapped for a link after CreateModel allowed it
    url = handler_model(mine, ECHO)
    lessee.create_model(ModelName="lessee-swap", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": url})
    (mine / "model.tar.gz").rename(other / "model.tar.gz")
    (mine / "model.tar.gz").symlink_to(other / "model.tar.gz")
    reason = refused(serve(lessee, "lessee-swap", ""), other / "model.tar.gz")
    assert reason.startswith(f"Variant AllTraffic (model lessee-swap): Model data {url} leads to")
    # the admin's models read through the same links
    assert serve(sm, "admin-swap", url)["EndpointStatus"] == "InService"
    assert serve(sm, "admin-dir", f"file://{mine}/dir")["EndpointStatus"] == "InService"
    # a multi-model target that links out is refused; one in place is served
    (mine / "mme" / "out.tar.gz").symlink_to(other / "model.tar.gz")
    handler_model(mine / "mme", ECHO)
    mme = serve(lessee, "lessee-mme", f"file://{mine}/mme/", Mode="MultiModel")
    assert mme["EndpointStatus"] == "InService"

    def invoke(target: str) -> Any:
        return smr.invoke_endpoint(
            EndpointName="lessee-mme", TargetModel=target, Body=b"[5]", ContentType="application/json"
        )

    failure = error(invoke, "out.tar.gz")
    assert failure["Code"] == "ValidationError"
    assert f"leads to {other}/model.tar.gz: User: arn:aws:iam::{ACCOUNT}:user/lessee" in failure["Message"]
    assert json.loads(invoke("model.tar.gz")["Body"].read()) == [5]
    for name in made:  # the module's other tests count its endpoints
        sm.delete_endpoint(EndpointName=name)
        sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig={"Delay": 0.2})


def test_not_action_and_the_admin(iam: Any, server: ServerProcess, sm: Any, endpoints: None) -> None:
    iam.create_user(UserName="bob")
    everything_but_iam = {"Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="bob", PolicyName="p", PolicyDocument=json.dumps(everything_but_iam))
    bob = iam.create_access_key(UserName="bob")["AccessKey"]
    assert len(client(server, "sagemaker", bob).list_endpoints()["Endpoints"]) == 2
    assert rest_status(server, bob, "usage") == 200
    assert error(client(server, "iam", bob).list_users)["Code"] == "AccessDenied"
    # The admin is never refused, whatever users exist.
    assert len(sm.list_endpoints()["Endpoints"]) == 2
    assert {"alice", "bob"} <= {u["UserName"] for u in iam.list_users()["Users"]}


def test_a_deactivated_or_deleted_key_is_refused(iam: Any, server: ServerProcess) -> None:
    iam.create_user(UserName="carol")
    iam.put_user_policy(
        UserName="carol",
        PolicyName="p",
        PolicyDocument=json.dumps(
            {"Statement": {"Effect": "Allow", "Action": "sagemaker:List*", "Resource": "*"}}
        ),
    )
    key = iam.create_access_key(UserName="carol")["AccessKey"]
    sm = client(server, "sagemaker", key)
    assert sm.list_models()["Models"] is not None
    iam.update_access_key(UserName="carol", AccessKeyId=key["AccessKeyId"], Status="Inactive")
    assert error(sm.list_models)["Code"] == "UnrecognizedClientException"
    iam.update_access_key(UserName="carol", AccessKeyId=key["AccessKeyId"], Status="Active")
    assert sm.list_models()["Models"] is not None
    last = key["SecretAccessKey"][-1]
    wrong = {**key, "SecretAccessKey": key["SecretAccessKey"][:-1] + ("y" if last == "x" else "x")}
    assert error(client(server, "sagemaker", wrong).list_models)["Code"] == "InvalidSignatureException"
    iam.delete_access_key(UserName="carol", AccessKeyId=key["AccessKeyId"])
    iam.delete_user_policy(UserName="carol", PolicyName="p")
    iam.delete_user(UserName="carol")
    assert error(sm.list_models)["Code"] == "UnrecognizedClientException"


def test_users_and_policies_survive_a_restart(
    iam: Any, server: ServerProcess, alice: dict[str, str], tmp_path: Path
) -> None:
    server.restart()
    smr = client(server, "sagemaker-runtime", alice)
    assert smr.invoke_endpoint(EndpointName="open-echo", Body=b"[2]", ContentType="application/json")[
        "Body"
    ].read()
    assert error(smr.invoke_endpoint, EndpointName="secret-echo", Body=b"[1]", ContentType="application/json")


def rest_status(server: ServerProcess, key: dict[str, str], route: str) -> int:
    url = f"{server.url}/zeroscale/v1/{route}"
    req = AWSRequest("GET", url)
    SigV4Auth(Credentials(key["AccessKeyId"], key["SecretAccessKey"]), "sagemaker", REGION).add_auth(req)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=dict(req.headers)), timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_a_tenant_reads_its_own_endpoints_metrics_and_workers_only(
    iam: Any, server: ServerProcess, endpoints: None
) -> None:
    """zeroscale's own reads about one endpoint (``?endpoint=``) are authorized on that endpoint's ARN, so a
    tenant may be allowed its own endpoints' without every endpoint's; the parameter is read as the
    handlers read it (its last value)."""
    iam.create_user(UserName="watcher")
    reads = ["zeroscale:GetMetrics", "zeroscale:ListWorkers", "zeroscale:GetAsyncRequests"]
    own = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/open-*"
    policy = json.dumps({"Statement": [{"Effect": "Allow", "Action": reads, "Resource": own}]})
    iam.put_user_policy(UserName="watcher", PolicyName="own", PolicyDocument=policy)
    key = iam.create_access_key(UserName="watcher")["AccessKey"]
    for route in ("metrics", "workers", "async"):
        assert rest_status(server, key, f"{route}?endpoint=open-echo") == 200, route
        assert rest_status(server, key, f"{route}?endpoint=secret-echo") == 400, route  # AccessDenied
    assert rest_status(server, key, "workers") == 400  # every endpoint's
    assert rest_status(server, key, "workers?endpoint=secret-echo&endpoint=open-echo") == 200
    assert rest_status(server, key, "workers?endpoint=open-echo&endpoint=secret-echo") == 400
    assert rest_status(server, key, "async/some-id?endpoint=open-echo") == 400  # any endpoint's request


def test_the_audit_trail_names_who_did_what(server: ServerProcess, alice: dict[str, str]) -> None:
    """Calls from before the restart above and after it, read with `zeroscale audit` as a user runs it."""
    stranger = {"AccessKeyId": "AKIASTRANGER00000000", "SecretAccessKey": "x" * 40}
    spoofer = client(server, "sagemaker", stranger)

    def spoof(request: Any, **_: Any) -> None:  # a source address any local process could claim
        request.headers["X-Forwarded-For"] = "203.0.113.9"

    spoofer.meta.events.register("before-send", spoof)
    assert error(spoofer.list_models)["Code"] == "UnrecognizedClientException"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    zeroscale = Path(sys.executable).parent / "zeroscale"

    def audit(*args: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            [str(zeroscale), "audit", *args, "--json", "--endpoint-url", server.url],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        events: list[dict[str, Any]] = json.loads(out.stdout)
        return events

    mine = audit("--user", "alice", "--since", "1h")
    assert audit("--user", "alice", "--since", str(int(time.time()) - 3600)) == mine  # epoch seconds too
    seen = {(e["action"], e["resource"].rsplit("/", 1)[-1], e["outcome"]) for e in mine}
    assert ("sagemaker:DescribeEndpoint", "secret-echo", "Success") in seen
    assert ("sagemaker:DeleteEndpoint", "open-echo", "Denied") in seen
    assert ("iam:CreateUser", "mallory", "Denied") in seen
    assert all(e["access_key_id"] == alice["AccessKeyId"] and e["source"] == "127.0.0.1" for e in mine)
    assert not any(
        e["action"] == "sagemaker:InvokeEndpoint" for e in mine
    )  # invocations are metered, not audited
    everyone = audit()
    refused = [e for e in everyone if e["access_key_id"] == stranger["AccessKeyId"]]
    assert (
        refused and refused[-1]["error_code"] == "UnrecognizedClientException" and refused[-1]["user"] == ""
    )
    assert refused[-1]["source"] == "127.0.0.1"  # the connection's peer, not X-Forwarded-For
    assert any(e["user"] == "admin" and e["action"] == "iam:CreateUser" for e in everyone)
    table = subprocess.run(
        [str(zeroscale), "audit", "--user", "alice", "--endpoint-url", server.url],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert table.splitlines()[0].split() == [
        "TIME",
        "USER",
        "ACCESS_KEY",
        "SOURCE",
        "ACTION",
        "RESOURCE",
        "OUTCOME",
        "ERROR",
    ]
    nobody = subprocess.run(
        [str(zeroscale), "audit", "--user", "nobody", "--since", "1h", "--endpoint-url", server.url],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert nobody.stdout == ""  # not a header over nothing
    assert "No control-plane calls by user 'nobody' recorded since 1h" in nobody.stderr, nobody.stderr


def _signed(server: ServerProcess, key: dict[str, str], service: str, method: str, url: str, body: bytes,
            headers: dict[str, str]) -> tuple[int, bytes]:  # fmt: skip
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    SigV4Auth(Credentials(key["AccessKeyId"], key["SecretAccessKey"]), service, REGION).add_auth(request)
    prepared = request.prepare()
    req = urllib.request.Request(
        prepared.url, data=body or None, headers=dict(prepared.headers), method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_a_model_cannot_be_handed_the_servers_own_records(iam: Any, server: ServerProcess) -> None:
    """What the server keeps in a model's document beside the request (the IAM user who made it, a model
    package's containers) cannot be sent in the request: a tenant naming another creator, or containers
    that were never authorized, is refused by name."""
    iam.create_user(UserName="forger")
    allow = {"Statement": [{"Effect": "Allow", "Action": ["sagemaker:*", "s3:GetObject"], "Resource": "*"}]}
    iam.put_user_policy(UserName="forger", PolicyName="sm", PolicyDocument=json.dumps(allow))
    key = iam.create_access_key(UserName="forger")["AccessKey"]
    stolen = {"Image": "sklearn", "ModelDataUrl": "file:///etc/shadow"}
    for member, value in (("ReadAs", ["", ""]), ("ResolvedContainers", [stolen])):
        body = {
            "ModelName": f"forged-{member.lower()}",
            "PrimaryContainer": {"Image": "sklearn", "ModelDataUrl": "s3://bucket/model.tar.gz"},
            member: value,
        }
        headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "SageMaker.CreateModel"}
        raw = json.dumps(body).encode()
        status, answer = _signed(server, key, "sagemaker", "POST", server.url + "/", raw, headers)
        assert status == 400, answer
        assert json.loads(answer)["message"] == f"zeroscale does not support {member} yet.", answer


def test_a_deny_holds_however_the_request_is_written(iam: Any, server: ServerProcess, sm: Any) -> None:
    """Each of these was checked on another action or resource than the one the handler ran (an invalid
    byte, a GET query, a double slash, an operation not named after its resource, another region's ARN,
    an identifier instead of a name, a list of names, no UserName): an explicit Deny did not hold."""
    iam.create_user(UserName="mallory")
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
    deny = [
        "iam:PutUserPolicy",
        "sns:DeleteTopic",
        "sns:Subscribe",
        f"{arn}:endpoint/secret-echo",
        f"{arn}:model-package-group/guarded",
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/secret-echo:*",
        f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:prod-*",
        f"arn:aws:zeroscale:{REGION}:{ACCOUNT}:image/prod-*",
    ]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "Action": [a for a in deny if not a.startswith("arn:")], "Resource": "*"},
            {"Effect": "Deny", "Action": "*", "Resource": [a for a in deny if a.startswith("arn:")]},
            {
                "Effect": "Deny",
                "Action": "iam:CreateAccessKey",
                "Resource": f"arn:aws:iam::{ACCOUNT}:user/mallory",
            },
        ],
    }
    iam.put_user_policy(UserName="mallory", PolicyName="all-but", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="mallory")["AccessKey"]  # the admin's call
    sns_admin = server.client("sns")
    topic = sns_admin.create_topic(Name="guarded-topic")["TopicArn"]
    sm.create_model_package_group(ModelPackageGroupName="guarded")
    dimensions = [
        {"Name": "EndpointName", "Value": "secret-echo"},
        {"Name": "VariantName", "Value": "AllTraffic"},
    ]
    server.client("cloudwatch").put_metric_alarm(
        AlarmName="prod-errors", Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors",
        Dimensions=dimensions, Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=0,
        ComparisonOperator="GreaterThanThreshold",
    )  # fmt: skip

    # IAM's form with a byte that is not UTF-8: refused as malformed, never run as "iam:" on "*"
    form = b"Action=PutUserPolicy&Version=2010-05-08&UserName=mallory&PolicyName=p&PolicyDocument=x&x=\xff"
    status, answer = _signed(server, key, "iam", "POST", server.url + "/", form,
                             {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert (status, b"MalformedQueryString" in answer) == (400, True)
    # the topics' query protocol as a signed GET: checked on its Action and topic
    query = urllib.parse.urlencode({"Action": "DeleteTopic", "TopicArn": topic})
    status, answer = _signed(server, key, "sns", "GET", f"{server.url}/?{query}", b"", {})
    assert (status, b"AccessDenied" in answer) == (403, True)
    assert topic in [t["TopicArn"] for t in sns_admin.list_topics()["Topics"]]
    # an image path with an empty part: no image named ""
    push = server.url + "/zeroscale/v1/images//prod-base/1.0"
    gzip = {"Content-Type": "application/gzip"}
    status, answer = _signed(server, key, "sagemaker", "PUT", push, b"x", gzip)
    assert status == 400 and b"empty parts" in answer, answer

    mine = client(server, "sagemaker", key)
    denied = [
        lambda: mine.update_endpoint_weights_and_capacities(
            EndpointName="secret-echo",
            DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredWeight": 0.25}],
        ),
        lambda: mine.list_tags(ResourceArn=f"{arn}:endpoint/secret-echo"),
        lambda: mine.describe_model_package_group(
            ModelPackageGroupName="arn:aws:sagemaker:us-west-2:999999999999:model-package-group/guarded"
        ),
        lambda: client(server, "logs", key).describe_log_streams(
            logGroupIdentifier=f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/secret-echo"
        ),
        lambda: client(server, "cloudwatch", key).delete_alarms(AlarmNames=["other", "prod-errors"]),
        lambda: client(server, "iam", key).create_access_key(),  # no UserName: the caller's own
    ]
    for call in denied:
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.response["Error"]["Code"] in ("AccessDeniedException", "AccessDenied"), err.value
        assert "with an explicit deny" in err.value.response["Error"]["Message"]
    assert [a["AlarmName"] for a in server.client("cloudwatch").describe_alarms()["MetricAlarms"]] == [
        "prod-errors"
    ]


def test_a_huge_name_against_a_wildcard_policy_answers_at_once(iam: Any, server: ServerProcess) -> None:
    """The audit's repro: 40,000 separators took 5.9 s of the event loop (every other request waited)."""
    iam.create_user(UserName="hank")
    policy = {
        "Version": "2012-10-17",
        "Statement": {
            "Effect": "Allow",
            "Action": "logs:*",
            "Resource": "arn:aws:logs:*:*:log-group:/aws/sagemaker/Endpoints/open-*",
        },
    }
    iam.put_user_policy(UserName="hank", PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="hank")["AccessKey"]
    logs = boto3.client(
        "logs",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        config=Config(retries={"total_max_attempts": 1}, parameter_validation=False),
    )
    for n in (40_000, 400_000):
        started = time.monotonic()
        refused = error(logs.describe_log_streams, logGroupName="x" + ":" * n)
        assert refused["Code"] == "AccessDeniedException"
        assert time.monotonic() - started < 2.0, n  # before the fix: 5.9 s at 40,000, minutes at 400,000


def test_policy_documents_are_checked_as_strictly_as_aws(iam: Any) -> None:
    """What was ignored (a misspelt Condition, a second Effect) is refused by name; nothing is stored."""
    iam.create_user(UserName="gina")
    allow = {"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"}
    refused = {
        json.dumps(
            {"Version": "2012-10-17", "Statement": [{**allow, "condition": {}}]}
        ): 'unknown element "condition"',
        '{"Statement":[{"Effect":"Deny","Action":"sagemaker:*","Resource":"*","Effect":"Allow"}]}': (
            '"Effect" appears more than once'
        ),
        json.dumps({"Version": "2099-01-01", "Statement": [allow]}): "Version must be",
        json.dumps({"Statement": [{**allow, "Action": "*:*"}]}): "must be",
        json.dumps({"Statement": [{**allow, "Resource": "foo"}]}): 'Resource "foo" must be in ARN format',
        json.dumps(
            {"Statement": [{**allow, "Resource": f"arn:aws:iam::{ACCOUNT}:user/${{aws:username}}"}]}
        ): ("Policy variables"),
    }
    for document, reason in refused.items():
        answer = error(iam.put_user_policy, UserName="gina", PolicyName="p", PolicyDocument=document)
        assert answer["Code"] == "MalformedPolicyDocument" and reason in answer["Message"], answer
    assert iam.list_user_policies(UserName="gina")["PolicyNames"] == []
    iam.put_user_policy(UserName="gina", PolicyName="p", PolicyDocument=json.dumps({"Statement": allow}))
    iam.delete_user_policy(UserName="gina", PolicyName="p")
    iam.delete_user(UserName="gina")


def test_policy_variables_name_the_callers_own_resources(iam: Any, server: ServerProcess, sm: Any) -> None:
    """The policy AWS's documentation gives for "manage your own access keys": one document, attached to two
    users, lets each act on himself and on no one else (``${aws:username}``), and a SageMaker prefix per user
    (``${aws:username, 'nobody'}``); it survives a restart, compiled again for each user."""
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["iam:CreateAccessKey", "iam:ListAccessKeys", "iam:GetUser"],
                    "Resource": f"arn:aws:iam::{ACCOUNT}:user/${{aws:username}}",
                },
                {
                    "Effect": "Allow",
                    "Action": "sagemaker:DescribeEndpoint",
                    "Resource": f"arn:aws:sagemaker:*:{ACCOUNT}:endpoint/${{aws:UserName, 'nobody'}}-*",
                },
            ],
        }
    )
    keys = {}
    for name in ("vic", "walt"):
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="self", PolicyDocument=policy)
        keys[name] = iam.create_access_key(UserName=name)["AccessKey"]
    for _ in range(2):  # and again after a restart: the stored document is compiled for each user
        vic = client(server, "iam", keys["vic"])
        assert vic.list_access_keys(UserName="vic")["AccessKeyMetadata"]
        assert vic.get_user(UserName="vic")["User"]["UserName"] == "vic"
        for call, kwargs in (
            (vic.list_access_keys, {"UserName": "walt"}),
            (vic.create_access_key, {"UserName": "walt"}),
        ):
            assert error(call, **kwargs)["Code"] == "AccessDenied"
        walt = client(server, "iam", keys["walt"])
        assert walt.list_access_keys(UserName="walt")["AccessKeyMetadata"]
        assert error(walt.get_user, UserName="vic")["Code"] == "AccessDenied"
        vic_sm = client(server, "sagemaker", keys["vic"])
        assert error(vic_sm.describe_endpoint, EndpointName="vic-none")["Code"] == "ValidationException"
        assert error(vic_sm.describe_endpoint, EndpointName="walt-none")["Code"] == "AccessDeniedException"
        server.restart()


def test_iam_refuses_what_it_would_ignore_and_pages_its_lists(iam: Any) -> None:
    """A permissions boundary or tags given to CreateUser would leave a user without them: refused by name,
    nothing made. ListUsers, ListAccessKeys and ListUserPolicies page by MaxItems and Marker, as boto3's
    paginators ask; the simulator refuses PolicyExclusionList."""
    boundary = "arn:aws:iam::aws:policy/ReadOnlyAccess"
    refused = error(iam.create_user, UserName="bounded", PermissionsBoundary=boundary)
    assert (refused["Code"], refused["Message"]) == (
        "ValidationError",
        "CreateUser does not take PermissionsBoundary on zeroscale: its IAM serves users, access keys and "
        "inline user policies only (no tags, permissions boundaries or managed policies).",
    )
    assert (
        "Tags" in error(iam.create_user, UserName="tagged", Tags=[{"Key": "team", "Value": "a"}])["Message"]
    )
    names = {u["UserName"] for u in iam.list_users()["Users"]}
    assert not names & {"bounded", "tagged"}

    for n in range(5):
        iam.create_user(UserName=f"paged-{n}", Path="/paged/")
    first = iam.list_users(PathPrefix="/paged/", MaxItems=2)
    assert [u["UserName"] for u in first["Users"]] == ["paged-0", "paged-1"] and first["IsTruncated"]
    pages = iam.get_paginator("list_users").paginate(PathPrefix="/paged/", PaginationConfig={"PageSize": 2})
    assert [[u["UserName"] for u in p["Users"]] for p in pages] == [
        ["paged-0", "paged-1"],
        ["paged-2", "paged-3"],
        ["paged-4"],
    ]
    assert error(iam.list_users, Marker="not-a-marker")["Code"] == "ValidationError"
    for n in range(3):
        iam.put_user_policy(
            UserName="paged-0",
            PolicyName=f"p{n}",
            PolicyDocument=json.dumps(
                {"Statement": [{"Effect": "Allow", "Action": "logs:*", "Resource": "*"}]}
            ),
        )
    pages = iam.get_paginator("list_user_policies").paginate(
        UserName="paged-0", PaginationConfig={"PageSize": 2}
    )
    assert [p["PolicyNames"] for p in pages] == [["p0", "p1"], ["p2"]]
    iam.create_access_key(UserName="paged-1")
    iam.create_access_key(UserName="paged-1")
    one = iam.list_access_keys(UserName="paged-1", MaxItems=1)
    assert len(one["AccessKeyMetadata"]) == 1 and one["IsTruncated"]
    simulated = error(
        iam.simulate_principal_policy,
        PolicySourceArn=f"arn:aws:iam::{ACCOUNT}:user/paged-0",
        ActionNames=["logs:GetLogEvents"],
        PolicyExclusionList=[{"PolicyArn": "arn:aws:iam::aws:policy/x"}],
    )
    assert simulated["Code"] == "InvalidInput" and "PolicyExclusionList" in simulated["Message"]


def test_a_users_inline_policies_are_held_to_2048_characters_together(iam: Any) -> None:
    """IAM's quota is the aggregate of a user's inline policies: many small ones cannot grow a user without
    end. Replacing a policy counts its new size, not both."""
    iam.create_user(UserName="hoarder")
    actions = [f"logs:Action{n:03}" for n in range(40)]  # about 800 characters each
    document = json.dumps({"Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]})
    iam.put_user_policy(UserName="hoarder", PolicyName="a", PolicyDocument=document)
    iam.put_user_policy(UserName="hoarder", PolicyName="b", PolicyDocument=document)
    iam.put_user_policy(UserName="hoarder", PolicyName="b", PolicyDocument=document)  # replaced, not added
    over = error(iam.put_user_policy, UserName="hoarder", PolicyName="c", PolicyDocument=document)
    assert (over["Code"], over["Message"]) == (
        "LimitExceeded",
        "Maximum policy size of 2048 bytes exceeded for user hoarder",
    )
    assert iam.list_user_policies(UserName="hoarder")["PolicyNames"] == ["a", "b"]
    for name in ("a", "b"):
        iam.delete_user_policy(UserName="hoarder", PolicyName=name)
    iam.delete_user(UserName="hoarder")


def test_a_deny_holds_on_what_a_call_reaches_through_another_name(
    iam: Any, server: ServerProcess, sm: Any, endpoints: None
) -> None:
    """A security review's findings: each call reached what an explicit Deny named, because the authorizer
    checked another resource than the one the call acted on: a user under a path checked as if at the root;
    an endpoint deployed from a configuration that was never checked, and a configuration or transform job
    naming another tenant's model; a topic published to by an alarm whose
    creator may not publish; a call whose JSON nests too deep, which failed inside the authorizer (500) and
    left no audit record."""
    iam.create_user(UserName="opsadmin", Path="/admins/")
    iam.create_user(UserName="helpdesk")
    topic = server.client("sns").create_topic(Name="ops-pager")["TopicArn"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["sagemaker:*", "cloudwatch:*"], "Resource": "*"},
            {"Effect": "Allow", "Action": "iam:*AccessKey*", "Resource": f"arn:aws:iam::{ACCOUNT}:user/*"},
            {"Effect": "Deny", "Action": "iam:*", "Resource": f"arn:aws:iam::{ACCOUNT}:user/admins/*"},
            {
                "Effect": "Deny",
                "Action": "sagemaker:*",
                "Resource": [
                    f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/secret-*",
                    f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/secret-*",
                ],
            },
            {"Effect": "Deny", "Action": "sns:*", "Resource": "*"},
        ],
    }
    iam.put_user_policy(UserName="helpdesk", PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="helpdesk")["AccessKey"]

    # a user's ARN has its path: user/admins/opsadmin, not user/opsadmin
    denied = error(client(server, "iam", key).create_access_key, UserName="opsadmin")
    assert denied["Code"] == "AccessDenied", denied
    assert (
        f"on resource: arn:aws:iam::{ACCOUNT}:user/admins/opsadmin with an explicit deny" in denied["Message"]
    )
    assert iam.list_access_keys(UserName="opsadmin")["AccessKeyMetadata"] == []
    assert client(server, "iam", key).list_access_keys(UserName="helpdesk")["AccessKeyMetadata"]

    # the configuration an endpoint deploys, as AWS checks it
    mine = client(server, "sagemaker", key)
    config_arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/secret-echo"
    for call, name in ((mine.create_endpoint, "borrowed"), (mine.update_endpoint, "open-echo")):
        denied = error(call, EndpointName=name, EndpointConfigName="secret-echo")
        assert denied["Code"] == "AccessDeniedException", denied
        assert f"on resource: {config_arn} with an explicit deny" in denied["Message"]
    assert error(sm.describe_endpoint, EndpointName="borrowed")["Code"] == "ValidationException"
    assert sm.describe_endpoint(EndpointName="open-echo")["EndpointConfigName"] == "open-echo"
    # the models a configuration or a transform job names: another tenant's model is not the caller's to run
    model_arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/secret-echo"
    variant = {"VariantName": "AllTraffic", "ModelName": "open-echo", "ServerlessConfig": SERVERLESS}
    shadow = dict(variant, VariantName="Shadow", ModelName="secret-echo")
    for call, kwargs in (
        (mine.create_endpoint_config, {"ProductionVariants": [dict(variant, ModelName="secret-echo")]}),
        (
            mine.create_endpoint_config,
            {"ProductionVariants": [variant], "ShadowProductionVariants": [shadow]},
        ),
        (
            mine.create_transform_job,
            {
                "TransformJobName": "borrowed",
                "ModelName": "secret-echo",
                "TransformInput": {
                    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in"}}
                },
                "TransformOutput": {"S3OutputPath": "s3://b/out"},
                "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
            },
        ),
    ):
        named = {"EndpointConfigName": "borrowed"} if call == mine.create_endpoint_config else {}
        denied = error(call, **named, **kwargs)
        assert f"on resource: {model_arn} with an explicit deny" in denied["Message"], denied

    # an alarm's topic: publishing to it is what the server does for the alarm's creator
    denied = error(
        client(server, "cloudwatch", key).put_metric_alarm,
        AlarmName="forged-page", Namespace="AWS/SageMaker", MetricName="Invocations", Statistic="Sum",
        Period=60, EvaluationPeriods=1, Threshold=0, ComparisonOperator="GreaterThanThreshold",
        AlarmActions=[topic],
    )  # fmt: skip
    assert f"perform: sns:Publish on resource: {topic}" in denied["Message"], denied
    assert server.client("cloudwatch").describe_alarms(AlarmNames=["forged-page"])["MetricAlarms"] == []

    # JSON nested past any handler's depth: refused as the handler refuses it, and recorded
    nested = b'{"EndpointName": "secret-echo", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "SageMaker.DeleteEndpoint"}
    status, answer = _signed(server, key, "sagemaker", "POST", server.url + "/", nested, headers)
    assert status == 400 and b"SerializationException" in answer, (status, answer[:300])
    assert sm.describe_endpoint(EndpointName="secret-echo")["EndpointStatus"] == "InService"
    url = f"{server.url}/zeroscale/v1/audit?user=helpdesk"
    req = AWSRequest("GET", url)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION).add_auth(req)
    with urllib.request.urlopen(urllib.request.Request(url, headers=dict(req.headers)), timeout=30) as r:
        events = json.loads(r.read())
    events = events["Events"]
    assert any(
        e["action"] == "sagemaker:DeleteEndpoint" and e["error_code"] == "SerializationException"
        for e in events
    ), events


def test_a_tenant_reaches_no_other_tenants_data_image_or_capacity_through_a_wider_name(
    iam: Any, server: ServerProcess, endpoints: None
) -> None:
    """A second review's findings: a transform job naming a bucket alone was checked against nothing (the
    server then read every object in the bucket with its own credentials); Application Auto Scaling was
    checked on ``*`` only (another tenant's endpoint sized, or its target deregistered); any tenant's model
    could run another's pushed image, and its code read the image's files."""
    iam.create_user(UserName="wider")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["sagemaker:*", "application-autoscaling:*"], "Resource": "*"},
            {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::shared/mallory/*"},
            {
                "Effect": "Allow",
                "Action": "zeroscale:UseImage",
                "Resource": f"arn:aws:zeroscale:{REGION}:{ACCOUNT}:image/mallory-*",
            },
            {
                "Effect": "Deny",
                "Action": "sagemaker:*",
                "Resource": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/secret-*",
            },
        ],
    }
    iam.put_user_policy(UserName="wider", PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="wider")["AccessKey"]
    mine = client(server, "sagemaker", key)

    for uri in ("s3://shared", "s3://shared/"):
        denied = error(
            mine.create_transform_job,
            TransformJobName="whole-bucket",
            ModelName="open-echo",
            TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}}},
            TransformOutput={"S3OutputPath": "s3://shared/mallory/out"},
            TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
        )
        assert "perform: s3:GetObject on resource: arn:aws:s3:::shared/*" in denied["Message"], denied

    scaling = client(server, "application-autoscaling", key)
    variant = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": "endpoint/secret-echo/variant/AllTraffic",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
    }
    endpoint_arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/secret-echo"
    for call, kwargs in (
        (scaling.register_scalable_target, {"MinCapacity": 2, "MaxCapacity": 2}),
        (scaling.deregister_scalable_target, {}),
        (
            scaling.put_scaling_policy,
            {
                "PolicyName": "p",
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": {
                    "TargetValue": 1.0,
                    "PredefinedMetricSpecification": {
                        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                    },
                },
            },
        ),
    ):
        denied = error(call, **variant, **kwargs)
        assert denied["Code"] == "AccessDeniedException", denied
        assert (
            f"perform: sagemaker:UpdateEndpointWeightsAndCapacities on resource: {endpoint_arn}"
            in denied["Message"]
        ), denied
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []

    for image in ("alices-image:1.0", "123456789012.dkr.ecr.us-east-1.amazonaws.com/alices-image:1.0"):
        denied = error(mine.create_model, ModelName="borrowed-image", PrimaryContainer={"Image": image})
        image_arn = f"arn:aws:zeroscale:{REGION}:{ACCOUNT}:image/alices-image"
        assert f"perform: zeroscale:UseImage on resource: {image_arn}" in denied["Message"], denied
    mine.create_model(ModelName="own-image", PrimaryContainer={"Image": "mallory-image:1.0"})
    sklearn = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
    mine.create_model(ModelName="framework-image", PrimaryContainer={"Image": sklearn})
