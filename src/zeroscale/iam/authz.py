"""Who is calling and may they: every signed request (SageMaker, the runtime, CloudWatch Logs, IAM,
``/zeroscale/v1/``, and whatever service is added) is named as an IAM action on a resource ARN and checked
against the caller's inline policies. The admin credentials are allowed everything.

Actions: ``<signing name>:<Operation>`` for JSON and query services (``sagemaker:CreateModel``,
``logs:GetLogEvents``, ``iam:CreateUser``; CloudWatch signs as ``monitoring``: ``cloudwatch:PutMetricAlarm``
on ``arn:aws:cloudwatch:<region>:<account>:alarm:<name>``), ``sagemaker:InvokeEndpoint`` for the runtime,
and for zeroscale's own API ``zeroscale:GetUsage``, ``zeroscale:GetMetrics``, ``zeroscale:ListImages``,
``zeroscale:PushImage``, ``zeroscale:DeleteImage``, ``zeroscale:GetAuditEvents``, ``zeroscale:ListWorkers``,
``zeroscale:GetAsyncRequests``, ``zeroscale:GetTransformProgress`` (a read about one endpoint, named by its
``?endpoint=``, is on that endpoint's ARN). Resources: the ARNs
zeroscale issues (``arn:aws:sagemaker:<region>:<account>:endpoint/<lower-cased name>``, ``model/...``,
``endpoint-config/...``, ``model-package-group/<group>``, ``model-package/<group>/<version>`` (a new
version: ``model-package/<group>/*``); ``arn:aws:logs:...:log-group:<name>:*``;
``arn:aws:iam::<account>:user/<name>``;
``arn:aws:zeroscale:...:image/<name>``), or ``*`` where the call names none (List*).

A call that makes the server read or write for its caller (``data.py``: model data on the server's disk or
in S3, asynchronous outputs and their topics, a transform job's input and output, an asynchronous
request's InputLocation) also needs each of those allowed: ``zeroscale:ReadLocalFile`` on
``arn:aws:zeroscale:<region>:<account>:file/<absolute path>``, ``s3:GetObject`` / ``s3:PutObject`` on
``arn:aws:s3:::<bucket>/<key>``, ``sns:Publish`` on the topic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from zeroscale import safejson
from zeroscale.errors import AccessDenied, ZeroscaleError
from zeroscale.iam import data
from zeroscale.iam.policy import evaluate
from zeroscale.iam.store import IamStore, User

# Who the request being handled is authorized for: (IAM user name, user id), ("", "") for the admin. Set by
# ``authorize`` for the rest of the request's task; read by what remembers who made something (a model reads
# its data on the server's disk with its creator's rights: ``local_reads``).
CALLER: ContextVar[tuple[str, str]] = ContextVar("zeroscale_caller", default=("", ""))


def caller_id() -> str:
    """The IAM user id the request being handled is for ("" for the admin, and outside any request): what
    per-user quotas count a new record, alarm or asynchronous request against."""
    return CALLER.get()[1]


@dataclass(frozen=True)
class Access:
    """A signed request, as the app saw it: enough to name its action and resource."""

    access_key_id: str
    kind: str  # "json" | "runtime" | "rest" | "query"
    signing_name: str  # sagemaker, logs, iam, ...
    operation: str = ""  # json: the X-Amz-Target operation; rest: the HTTP method
    path: str = ""  # runtime: the endpoint name; rest: the path after /zeroscale/v1/
    body: bytes = b""  # json: the call's body
    params: Mapping[str, str] | None = None  # query: the parameters, as parsed for the handler
    input_location: str = ""  # runtime: InvokeEndpointAsync's InputLocation, which the server reads

    @cached_property
    def document(self) -> Any:
        """json: the body's value (``safejson``; JsonRejected when it is not JSON it accepts), parsed once
        for all who read it (authorization, the handler, the audit trail): 4 ms of the event loop for a
        body of 500 GetMetricData queries. A reader must not change it (handlers take a Mapping)."""
        return safejson.loads(self.body) if self.body else {}


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
# Operations whose resource is not named after the operation: (ARN kind, the member naming it); kind ""
# is a ResourceArn of any kind.
_SAGEMAKER_OPERATIONS = {
    "UpdateEndpointWeightsAndCapacities": ("endpoint", "EndpointName"),
    "ListTags": ("", "ResourceArn"),
    "AddTags": ("", "ResourceArn"),
    "DeleteTags": ("", "ResourceArn"),
    "CreateTransformJob": ("transform-job", "TransformJobName"),
    "DescribeTransformJob": ("transform-job", "TransformJobName"),
    "StopTransformJob": ("transform-job", "TransformJobName"),
}
_SAGEMAKER_ARN = re.compile(r"arn:aws[a-z-]*:sagemaker:[^:]*:[^:]*:(?P<kind>[a-z-]+)/(?P<name>.+)")
# IAM calls that act on the caller when they name no UserName.
_IAM_SELF = frozenset(
    {"GetUser", "CreateAccessKey", "ListAccessKeys", "UpdateAccessKey", "DeleteAccessKey", "ListUserPolicies"}
)
# What deploys an endpoint configuration: the caller needs the action on the configuration too, as on AWS (the
# Service Authorization Reference lists both resources), or a tenant could run another's models with them.
_DEPLOYS = frozenset({"CreateEndpoint", "UpdateEndpoint"})
# What names models to run (a configuration's variants, a transform job): the caller needs the action on each
# model too. AWS checks only the configuration or job; its tenants are accounts apart, and a model's rights
# are its execution role's. zeroscale's tenants are IAM users of one account, and a model reads its data
# with its creator's rights, so without this a tenant could deploy, invoke and batch another tenant's model.
_RUNS_MODELS = frozenset({"CreateEndpointConfig", "CreateTransformJob"})
# Services whose IAM actions are not named by their signing name (CloudWatch signs as "monitoring").
_ACTION_PREFIXES = {"monitoring": "cloudwatch"}
_REST_ACTIONS = {
    ("usage", "GET"): "GetUsage",
    ("metrics", "GET"): "GetMetrics",
    ("images", "GET"): "ListImages",
    ("images", "PUT"): "PushImage",
    ("images", "DELETE"): "DeleteImage",
    ("audit", "GET"): "GetAuditEvents",
    ("workers", "GET"): "ListWorkers",
    ("async", "GET"): "GetAsyncRequests",
    ("transform", "GET"): "GetTransformProgress",
}
# zeroscale API reads about one endpoint when ``?endpoint=`` names it (async: when no InferenceId does).
_ENDPOINT_READS = frozenset({"metrics", "workers", "async"})


class Authorizer:
    def __init__(
        self,
        store: IamStore,
        admin_key_id: str,
        admin_secret: str,
        region: str,
        account_id: str,
        s3_endpoint_url: str | None = None,
        package_containers: Callable[[str], list[dict[str, Any]]] | None = None,
    ) -> None:
        """``package_containers``: the containers a ModelPackageName deploys (CreateModel from a package reads
        its model data for the caller, who must be allowed that too)."""
        self._store = store
        self._s3_endpoint_url = s3_endpoint_url
        self._package_containers = package_containers
        self._admin_key_id = admin_key_id
        self._admin_secret = admin_secret
        self._region = region
        self._account = account_id

    @property
    def generation(self) -> int:
        """Moves whenever users, keys or policies may have changed (``IamStore.generation``)."""
        return self._store.generation

    def on_change(self, callback: Callable[[], None]) -> None:
        """``callback`` is called whenever ``generation`` moves, on the thread that moved it."""
        self._store.changed.append(callback)

    # ---- authentication: the secret SigV4 checks a signature with ----
    def lookup_secret(self, access_key_id: str) -> str | None:
        if access_key_id == self._admin_key_id:
            return self._admin_secret
        key = self._store.keys.get(access_key_id)
        if key is None or key.status != "Active":
            return None
        return key.secret

    def caller(self, access_key_id: str) -> Caller:
        """The admin (user ""), or the IAM user of a key the request was signed with; a key deleted since
        (through another front end, read in between) is named by its id."""
        if access_key_id == self._admin_key_id:
            return Caller(access_key_id, "", f"arn:aws:iam::{self._account}:root")
        key = self._store.keys.get(access_key_id)
        name = key.user_name if key is not None else f"(deleted key {access_key_id})"
        return Caller(access_key_id, name, self.user_arn(name))

    def user_arn(self, name: str, path: str = "/") -> str:
        return f"arn:aws:iam::{self._account}:user{path}{name}"

    # ---- authorization ----
    def authorize(self, access: Access) -> None:
        """Raises AccessDenied (with AWS's message) unless the caller's policies allow the request on every
        resource it names, and on everything it makes the server read or write for it (``data.py``)."""
        if access.access_key_id == self._admin_key_id:
            CALLER.set(("", ""))
            return
        user = self._caller(access.access_key_id)
        params = _json(access) if access.kind == "json" else {}  # parsed once, for both
        action, resources = self._resources(access, params)
        needed = [(action, resource) for resource in resources]
        needed += [(use.action, self._data_arn(use)) for use in self._uses(access, params)]
        for action, resource in needed:
            message = self._refusal(user, access.access_key_id, action, resource)
            if message is None:
                continue
            if access.kind == "query":
                raise AccessDenied(message, code="AccessDenied", status=403)
            raise AccessDenied(message)
        if user is not None:  # (always: a request without a user is allowed nothing)
            CALLER.set((user.name, user.user_id))

    def check_endpoint(self, action: str, endpoint: str) -> None:
        """Raises AccessDenied unless this request's caller (``CALLER``, as ``authorize`` set it) may
        ``action`` on ``endpoint``: for a handler that learns which endpoint a request is about only when it
        looks up what the request names (an asynchronous request by its InferenceId)."""
        caller = CALLER.get()
        if not caller[0]:
            return  # the admin
        gone = f"IAM user {caller[0]} no longer exists."
        message = self._refusal_of(caller, gone, action, self._sagemaker_arn("endpoint", endpoint))
        if message is not None:
            raise AccessDenied(message)

    def local_reads(self, creator: tuple[str, str]) -> Callable[[Path], str | None] | None:
        """What a model made by ``creator`` (``CALLER`` as it was) may read on the server's disk: where its
        data's files and directories lead, as ``zeroscale:ReadLocalFile`` allows them to that user when
        they are read (a symlink inside a model directory, or swapped in after CreateModel, leads nowhere
        the user may not read). None for the admin's models: anything."""
        may = self._rights_of(creator, "the model")
        if may is None:
            return None
        return lambda real: may(data.Use(data.LOCAL_READ, str(real)))

    def object_reads(self, creator: tuple[str, str]) -> Callable[[str, str], str | None] | None:
        """What a transform job made by ``creator`` may read in S3, (bucket, key) -> None or why not: the
        objects its manifest names, which are known only when the job reads the manifest. None for the
        admin's jobs: anything."""
        may = self._rights_of(creator, "the transform job")
        if may is None:
            return None
        return lambda bucket, key: may(data.Use(data.S3_READ, f"{bucket}/{key}"))

    def s3_may(self, user_id: str | None, action: str, url: str) -> str | None:
        """Why the IAM user ``user_id`` (None or "": the admin, anything) may not ``action`` the S3 object
        at ``url`` as its policies are now (None: it may): what the server does for a user later, with its
        own credentials (an asynchronous request's input, read when it runs; its output and failure, written
        for the endpoint configuration's creator)."""
        if not user_id:
            return None
        user = next((u for u in list(self._store.users.values()) if u.user_id == user_id), None)
        if user is None:
            return f"the IAM user (id {user_id}) it is done for no longer exists"
        for use in data.object_use(action, url, self._s3_endpoint_url):
            message = self._refusal(user, "", use.action, self._data_arn(use))
            if message is not None:
                return message
        return None

    def _rights_of(self, creator: tuple[str, str], what: str) -> Callable[[data.Use], str | None] | None:
        """A use -> None, or why ``creator`` (who made ``what``) may not, by the policies as they are when
        asked (the user deleted, or another made under the name since: nothing)."""
        if not creator[0]:
            return None
        gone = f"IAM user {creator[0]}, who created {what}, no longer exists to read it"
        return lambda use: self._refusal_of(creator, gone, use.action, self._data_arn(use))

    def _refusal_of(self, user_ref: tuple[str, str], gone: str, action: str, resource: str) -> str | None:
        """``_refusal`` for the IAM user (name, user id), as its policies are now; ``gone`` when the user
        was deleted, or another made under the name since (nothing is allowed)."""
        name, user_id = user_ref
        user = self._store.users.get(name)
        if user is None or user.user_id != user_id:
            return gone
        return self._refusal(user, "", action, resource)

    def _refusal(self, user: User | None, key: str, action: str, resource: str) -> str | None:
        """AWS's message refusing ``user`` (None: the one of access key ``key`` is gone) ``action`` on
        ``resource``; None when its policies allow it."""
        decision = evaluate(user.compiled, action, resource) if user is not None else "implicit"
        if decision == "allow":
            return None
        who = self.user_arn(user.name, user.path) if user is not None else key
        why = (
            "with an explicit deny in an identity-based policy"
            if decision == "deny"
            else f"because no identity-based policy allows the {action} action"
        )
        return f"User: {who} is not authorized to perform: {action} on resource: {resource} {why}"

    def describe(self, access: Access) -> tuple[str, str]:
        """(action, resource) of a request, for the audit trail (several resources joined by commas)."""
        action, resources = self.resources(access)
        return action, ",".join(resources)

    def resources(self, access: Access) -> tuple[str, list[str]]:
        """The action of a request and every resource it acts on (``_resources``)."""
        return self._resources(access, _json(access) if access.kind == "json" else {})

    def _resources(self, access: Access, params: dict[str, Any]) -> tuple[str, list[str]]:
        """The action of a request and every resource it acts on (``["*"]`` where it names none). Read from
        the parameters the handler runs with (``Access.params`` for the query protocol; the JSON services
        refuse what ``safejson`` would read otherwise); a name given as an ARN is this server's resource of
        that name, as the handlers resolve it, whatever region or account the ARN says."""
        if access.kind == "runtime":
            action = f"sagemaker:{access.operation or 'InvokeEndpoint'}"
            return action, [self._sagemaker_arn("endpoint", access.path)]
        if access.kind == "rest":
            first = access.path.split("/", 1)[0]
            action = "zeroscale:" + _REST_ACTIONS.get((first, access.operation), f"{access.operation}{first}")
            if first == "images" and access.operation in ("PUT", "DELETE"):
                name = access.path.split("/")[1] if access.path.count("/") >= 1 else ""
                return action, [f"arn:aws:zeroscale:{self._region}:{self._account}:image/{name}"]
            _, _, below = access.path.partition("/")
            endpoint = (access.params or {}).get("endpoint")
            if first in _ENDPOINT_READS and endpoint is not None and (not below or first == "async"):
                # (an asynchronous request by its InferenceId on the endpoint named: that endpoint's)
                return action, [self._sagemaker_arn("endpoint", endpoint)]
            if first == "transform" and below:
                return action, [self._sagemaker_arn("transform-job", below)]
            return action, ["*"]
        if access.kind == "query":
            form = access.params or {}
            if access.signing_name != "iam":  # the SNS-style topics: a topic's ARN, where the call names one
                topic = form.get("TopicArn") or form.get("SubscriptionArn", "").rsplit(":", 1)[0]
                return f"{access.signing_name}:{form.get('Action', '')}", [topic or "*"]
            action = f"iam:{form.get('Action', '')}"
            if form.get("Action") == "SimulatePrincipalPolicy" and form.get("PolicySourceArn"):
                return action, [form["PolicySourceArn"]]
            user = form.get("UserName")
            if user:
                return action, [self._named_user_arn(user, form)]
            if form.get("Action") in _IAM_SELF:  # no UserName: the caller's own (AWS's rule)
                return action, [self._own_arn(access.access_key_id)]
            return action, ["*"]
        operation = access.operation
        action = f"{_ACTION_PREFIXES.get(access.signing_name, access.signing_name)}:{operation}"
        if access.signing_name == "sagemaker":
            resources = [self._sagemaker_resource(operation, params)]
            config = params.get("EndpointConfigName")
            if operation in _DEPLOYS and isinstance(config, str):  # the configuration deployed, too
                resources.append(self._sagemaker_named("endpoint-config", config))
            if operation in _RUNS_MODELS:
                resources += [self._sagemaker_named("model", name) for name in _models_named(params)]
            return action, list(dict.fromkeys(resources))
        if access.signing_name == "logs":
            names = [params.get("logGroupName"), params.get("logGroupIdentifier")]
            names += _list(params.get("logGroupIdentifiers"))
            groups = [self._log_group(n) for n in names if isinstance(n, str)]
            streams = _log_streams(params)
            if streams is not None and len(groups) == 1:  # those streams of the group only
                group = groups[0].removesuffix(":*")
                return action, [f"{group}:log-stream:{stream}" for stream in streams]
            return action, groups or ["*"]
        if access.signing_name == "monitoring":
            endpoints = _metric_endpoints(operation, params)
            if endpoints is not None:  # a metric read: the endpoints whose metrics it reads, "*" for others
                return action, [self._sagemaker_arn("endpoint", e) if e != "*" else "*" for e in endpoints]
            alarms = [params.get("AlarmName"), *_list(params.get("AlarmNames"))]
            arns = [
                f"arn:aws:cloudwatch:{self._region}:{self._account}:alarm:{a}"
                for a in alarms
                if isinstance(a, str)
            ]
            return action, arns or ["*"]
        return action, ["*"]

    def _sagemaker_resource(self, operation: str, params: dict[str, Any]) -> str:
        special = _SAGEMAKER_OPERATIONS.get(operation)
        if special is not None:
            kind, member = special
            value = params.get(member)
            if isinstance(value, str):
                return self._sagemaker_named(kind, value)
            return "*"
        if operation.startswith("List"):
            return "*"
        for suffix, kind in _SAGEMAKER_KINDS:
            if not operation.endswith((suffix, suffix + "s")):
                continue
            found = params.get(_SAGEMAKER_NAMES[kind])
            if kind == "model-package":  # a version: by ARN or <group>/<version>; a new one: <group>/*
                found = found or params.get("ModelPackageArn")
                owner = params.get("ModelPackageGroupName")
                if found is None and isinstance(owner, str):
                    found = _name_of(owner, "model-package-group") + "/*"
            return self._sagemaker_named(kind, found) if isinstance(found, str) else "*"
        return "*"

    def _sagemaker_named(self, kind: str, value: str) -> str:
        """This server's ARN of ``kind`` named ``value`` (a name, or an ARN of any region and account: the
        handlers take its name; ``ListTags``' ARN names its own kind)."""
        if kind == "":  # a ResourceArn: its own kind
            m = _SAGEMAKER_ARN.fullmatch(value)
            if m is None:
                return value.lower()
            kind, value = m.group("kind"), m.group("name")
        return self._sagemaker_arn(kind, _name_of(value, kind))

    def _log_group(self, identifier: str) -> str:
        prefix = f"arn:aws:logs:{self._region}:{self._account}:log-group:"
        if identifier.startswith("arn:"):
            name = identifier.split(":log-group:", 1)[-1].removesuffix(":*")
        else:
            name = identifier
        return f"{prefix}{name}:*"

    def _named_user_arn(self, name: str, form: Mapping[str, str]) -> str:
        """The ARN of the user a call names, with its path, as GetUser shows it: a policy that denies
        ``user/admins/*`` holds for every call naming a user under /admins/. A user to be created has the
        path the call gives it; a user that does not exist (the call fails: NoSuchEntity), the root path."""
        user = self._store.users.get(name)
        if user is not None:
            return self.user_arn(user.name, user.path)
        path = form.get("Path", "/") if form.get("Action") == "CreateUser" else "/"
        return self.user_arn(name, path)

    def _own_arn(self, access_key_id: str) -> str:
        user = self._caller(access_key_id)
        return self.user_arn(user.name, user.path) if user is not None else "*"

    def _caller(self, access_key_id: str) -> User | None:
        key = self._store.keys.get(access_key_id)
        return self._store.users.get(key.user_name) if key is not None else None

    def _sagemaker_arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self._region}:{self._account}:{kind}/{name.lower()}"

    def _uses(self, access: Access, params: dict[str, Any]) -> list[data.Use]:
        if access.kind == "runtime" and access.input_location:
            return data.input_location(access.input_location, self._s3_endpoint_url)
        if access.kind == "json" and access.signing_name == "monitoring":
            return data.alarm_actions(params) if access.operation == "PutMetricAlarm" else []
        if access.kind == "json" and access.signing_name == "application-autoscaling":
            return data.scaling(access.operation, params)
        if access.kind != "json" or access.signing_name != "sagemaker":
            return []
        found = data.uses(params, self._s3_endpoint_url)
        resolve = self._package_containers
        if resolve is None:
            return found
        for container in data.containers(params):
            name = container.get("ModelPackageName")
            if not isinstance(name, str):
                continue
            try:
                inner = resolve(name)
            except ZeroscaleError:  # no such package: the handler says so
                continue
            found += data.uses({"Containers": inner}, self._s3_endpoint_url)
        return found

    def _data_arn(self, use: data.Use) -> str:
        if use.action == data.LOCAL_READ:
            return f"arn:aws:zeroscale:{self._region}:{self._account}:file{use.target}"
        if use.action == data.PUBLISH:
            return use.target
        if use.action == data.SCALE:
            return self._sagemaker_arn("endpoint", use.target)
        if use.action == data.USE_IMAGE:
            return f"arn:aws:zeroscale:{self._region}:{self._account}:image/{use.target}"
        return f"arn:aws:s3:::{use.target}"


def _models_named(params: dict[str, Any]) -> list[str]:
    """The ModelName of a transform job, and of every production and shadow variant of a configuration."""
    variants = [*_list(params.get("ProductionVariants")), *_list(params.get("ShadowProductionVariants"))]
    found = [params.get("ModelName"), *(v.get("ModelName") for v in variants if isinstance(v, dict))]
    return [name for name in found if isinstance(name, str)]


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    """A member read before its handler checks its shape: a list, else nothing (the handler refuses it)."""
    return value if isinstance(value, list) else []


_METRIC_READS = frozenset({"GetMetricStatistics", "GetMetricData", "ListMetrics"})


def _metric_endpoints(operation: str, params: Mapping[str, Any]) -> list[str] | None:
    """The endpoints a CloudWatch metric read reads (``EndpointName`` in its dimensions; ``*`` where one of
    its metrics names none: every endpoint's, or none's), None for a call that is no metric read. So a tenant
    can be allowed ``cloudwatch:GetMetricData`` on its own endpoints' ARNs (its calls naming them), as
    ``zeroscale:GetMetrics`` is; a grant on ``*`` reads them all, as before."""
    if operation not in _METRIC_READS:
        return None
    if operation == "GetMetricData":
        metrics = [
            _dict(_dict(q).get("MetricStat")).get("Metric") for q in _list(params.get("MetricDataQueries"))
        ]
        dimension_lists = [_dict(m).get("Dimensions") for m in metrics] or [None]
    else:
        dimension_lists = [params.get("Dimensions")]
    found: list[str] = []
    for dimensions in dimension_lists:
        named: list[str] = [
            d["Value"]
            for d in _list(dimensions)
            if isinstance(d, dict) and d.get("Name") == "EndpointName" and isinstance(d.get("Value"), str)
        ]
        found.append(named[0] if len(named) == 1 else "*")
    return list(dict.fromkeys(found))


def _log_streams(params: Mapping[str, Any]) -> list[str] | None:
    """The streams a CloudWatch Logs call reads (a prefix ends with ``*``), None for every stream of its
    group: so one group many tenants write (``/aws/sagemaker/TransformJobs``, a stream per job) can be
    granted stream by stream (``log-group:NAME:log-stream:my-job/*``), as AWS grants GetLogEvents. A
    policy on the group (``log-group:NAME:*``) covers every stream of it."""
    name, names, prefix = (
        params.get("logStreamName"),
        params.get("logStreamNames"),
        params.get("logStreamNamePrefix"),
    )
    if isinstance(name, str):
        return [name]
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return list(names)
    if isinstance(prefix, str) and prefix:
        return [prefix + "*"]
    return None


def _name_of(value: str, kind: str) -> str:
    """A resource's name from its name or its ARN (``arn:...:<kind>/<name>``)."""
    if value.startswith("arn:"):
        marker = f":{kind}/"
        return value.split(marker, 1)[1] if marker in value else value.rsplit("/", 1)[-1]
    return value


def _json(access: Access) -> dict[str, Any]:
    """The call's parameters as its handler reads them (``safejson``: a body nested past its depth, which
    ``json`` would recurse on until RecursionError, is refused there, and names nothing here)."""
    try:
        value = access.document
    except ValueError:  # JsonRejected: the handler answers with its own error
        return {}
    return value if isinstance(value, dict) else {}


AuthorizeHook = Callable[[Access], None]
