"""Who is calling and may they: every signed request (SageMaker, the runtime, CloudWatch Logs, IAM,
``/zeroscale/v1/``, and whatever service is added) is named as an IAM action on a resource ARN and checked
against the caller's inline policies. The admin credentials are allowed everything.

Actions: ``<signing name>:<Operation>`` for JSON and query services (``sagemaker:CreateModel``,
``logs:GetLogEvents``, ``iam:CreateUser``; CloudWatch signs as ``monitoring``: ``cloudwatch:PutMetricAlarm``
on ``arn:aws:cloudwatch:<region>:<account>:alarm:<name>``), ``sagemaker:InvokeEndpoint`` for the runtime,
and for zeroscale's own API ``zeroscale:GetUsage``, ``zeroscale:GetMetrics``, ``zeroscale:ListImages``,
``zeroscale:PushImage``, ``zeroscale:GetAuditEvents``. Resources: the ARNs zeroscale issues
(``arn:aws:sagemaker:<region>:<account>:endpoint/<lower-cased name>``, ``model/...``,
``endpoint-config/...``, ``model-package-group/<group>``, ``model-package/<group>/<version>`` (a new
version: ``model-package/<group>/*``); ``arn:aws:logs:...:log-group:<name>:*``;
``arn:aws:iam::<account>:user/<name>``;
``arn:aws:zeroscale:...:image/<name>``), or ``*`` where the call names none (List*).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeroscale.errors import ZeroscaleError
from zeroscale.iam.policy import evaluate
from zeroscale.iam.store import IamStore, User


class AccessDenied(ZeroscaleError):
    """JSON and REST protocols' AccessDeniedException (the query protocol's is AccessDenied)."""

    code = "AccessDeniedException"
    status = 400


@dataclass(frozen=True)
class Access:
    """A signed request, as the app saw it: enough to name its action and resource."""

    access_key_id: str
    kind: str  # "json" | "runtime" | "rest" | "query"
    signing_name: str  # sagemaker, logs, iam, ...
    operation: str = ""  # json: the X-Amz-Target operation; rest: the HTTP method
    path: str = ""  # runtime: the endpoint name; rest: the path after /zeroscale/v1/
    body: bytes = b""


@dataclass(frozen=True)
class Caller:
    access_key_id: str
    user: str  # "" for the admin
    arn: str


_SAGEMAKER_KINDS = (
    ("ModelPackageGroup", "model-package-group"),
    ("ModelPackage", "model-package"),
    ("EndpointConfig", "endpoint-config"),
    ("Endpoint", "endpoint"),
    ("Model", "model"),
)
_SAGEMAKER_NAMES = {
    "model-package-group": "ModelPackageGroupName",
    "model-package": "ModelPackageName",
    "endpoint-config": "EndpointConfigName",
    "endpoint": "EndpointName",
    "model": "ModelName",
}
# Services whose IAM actions are not named by their signing name (CloudWatch signs as "monitoring").
_ACTION_PREFIXES = {"monitoring": "cloudwatch"}
_REST_ACTIONS = {
    ("usage", "GET"): "GetUsage",
    ("metrics", "GET"): "GetMetrics",
    ("images", "GET"): "ListImages",
    ("images", "PUT"): "PushImage",
    ("audit", "GET"): "GetAuditEvents",
}


class Authorizer:
    def __init__(
        self, store: IamStore, admin_key_id: str, admin_secret: str, region: str, account_id: str
    ) -> None:
        self._store = store
        self._admin_key_id = admin_key_id
        self._admin_secret = admin_secret
        self._region = region
        self._account = account_id

    # ---- authentication: the secret SigV4 checks a signature with ----
    def lookup_secret(self, access_key_id: str) -> str | None:
        if access_key_id == self._admin_key_id:
            return self._admin_secret
        key = self._store.keys.get(access_key_id)
        if key is None or key.status != "Active":
            return None
        return key.secret

    def caller(self, access_key_id: str) -> Caller:
        if access_key_id == self._admin_key_id:
            return Caller(access_key_id, "", f"arn:aws:iam::{self._account}:root")
        key = self._store.keys[access_key_id]
        return Caller(access_key_id, key.user_name, self.user_arn(key.user_name))

    def user_arn(self, name: str, path: str = "/") -> str:
        return f"arn:aws:iam::{self._account}:user{path}{name}"

    # ---- authorization ----
    def authorize(self, access: Access) -> None:
        """Raises AccessDenied (with AWS's message) unless the caller's policies allow the request."""
        if access.access_key_id == self._admin_key_id:
            return
        key = self._store.keys.get(access.access_key_id)
        user: User | None = self._store.users.get(key.user_name) if key is not None else None
        action, resource = self.describe(access)
        decision = evaluate(user.compiled, action, resource) if user is not None else "implicit"
        if decision == "allow":
            return
        who = self.user_arn(user.name, user.path) if user is not None else access.access_key_id
        why = (
            "with an explicit deny in an identity-based policy"
            if decision == "deny"
            else f"because no identity-based policy allows the {action} action"
        )
        message = f"User: {who} is not authorized to perform: {action} on resource: {resource} {why}"
        if access.kind == "query":
            raise AccessDenied(message, code="AccessDenied", status=403)
        raise AccessDenied(message)

    def describe(self, access: Access) -> tuple[str, str]:
        """(action, resource) of a request."""
        if access.kind == "runtime":
            action = f"sagemaker:{access.operation or 'InvokeEndpoint'}"
            return action, self._sagemaker_arn("endpoint", access.path)
        if access.kind == "rest":
            first = access.path.split("/", 1)[0]
            action = "zeroscale:" + _REST_ACTIONS.get((first, access.operation), f"{access.operation}{first}")
            if first == "images" and access.operation == "PUT":
                name = access.path.split("/")[1] if access.path.count("/") >= 1 else ""
                return action, f"arn:aws:zeroscale:{self._region}:{self._account}:image/{name}"
            return action, "*"
        if access.kind == "query":
            form = _form(access.body)
            if access.signing_name != "iam":  # the SNS-style topics: a topic's ARN, where the call names one
                topic = form.get("TopicArn") or form.get("SubscriptionArn", "").rsplit(":", 1)[0]
                return f"{access.signing_name}:{form.get('Action', '')}", topic or "*"
            user = form.get("UserName")
            return f"iam:{form.get('Action', '')}", self.user_arn(user) if user else "*"
        params = _json(access.body)
        operation = access.operation
        action = f"{_ACTION_PREFIXES.get(access.signing_name, access.signing_name)}:{operation}"
        if access.signing_name == "sagemaker":
            for suffix, kind in _SAGEMAKER_KINDS:
                if operation.endswith((suffix, suffix + "s")) and not operation.startswith("List"):
                    found = params.get(_SAGEMAKER_NAMES[kind])
                    if (
                        kind == "model-package"
                    ):  # a version: by ARN or <group>/<version>; a new one: <group>/*
                        found = found or params.get("ModelPackageArn")
                        owner = params.get("ModelPackageGroupName")
                        if found is None and isinstance(owner, str):
                            found = owner.rsplit("/", 1)[-1] + "/*"
                    if isinstance(found, str):
                        if found.startswith("arn:"):
                            return action, found.lower()
                        return action, self._sagemaker_arn(kind, found)
                    break
        if access.signing_name == "logs" and isinstance(params.get("logGroupName"), str):
            group: str = params["logGroupName"]
            return action, f"arn:aws:logs:{self._region}:{self._account}:log-group:{group}:*"
        if access.signing_name == "monitoring" and isinstance(params.get("AlarmName"), str):
            return action, f"arn:aws:cloudwatch:{self._region}:{self._account}:alarm:{params['AlarmName']}"
        return action, "*"

    def _sagemaker_arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self._region}:{self._account}:{kind}/{name.lower()}"


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body) if body else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _form(body: bytes) -> dict[str, str]:
    try:
        return dict(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        return {}


AuthorizeHook = Callable[[Access], None]
