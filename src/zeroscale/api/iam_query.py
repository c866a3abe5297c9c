"""IAM's query protocol on the server's one URL: a form-encoded ``POST /`` (``Action=CreateUser&...``)
signed with the service name ``iam``, answered in IAM's XML. The operations of users, access keys and
inline user policies; a secret access key is shown once, in CreateAccessKey's answer."""

from __future__ import annotations

import datetime
import re
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any
from xml.sax.saxutils import escape

from zeroscale.api.wire import Send, respond
from zeroscale.errors import ZeroscaleError
from zeroscale.iam.authz import Authorizer
from zeroscale.iam.policy import Statement, evaluate
from zeroscale.iam.store import MAX_KEYS_PER_USER, AccessKey, IamStore, User

XMLNS = "https://iam.amazonaws.com/doc/2010-05-08/"
_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
_POLICY_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")
_PATH = re.compile(r"^/([\x21-\x7e]*/)?$")
_MAX_POLICY_CHARS = 2048


class IamError(ZeroscaleError):
    pass


# SimulatePrincipalPolicy's members zeroscale's simulator does not serve: refused by name, never ignored.
_SIMULATE_UNSERVED = frozenset(
    {
        "PolicyInputList",
        "PermissionsBoundaryPolicyInputList",
        "ContextEntries",
        "ResourcePolicy",
        "ResourceOwner",
        "CallerArn",
        "ResourceHandlingOption",
        "PolicyExclusionList",
    }
)
# Each operation's members zeroscale serves (a list member by its name before the first "."); any other
# member of a request is refused by name, never ignored: CreateUser's PermissionsBoundary or Tags would
# leave a user without the bound or tags its creator meant.
_SERVED: dict[str, frozenset[str]] = {
    "CreateUser": frozenset({"UserName", "Path"}),
    "GetUser": frozenset({"UserName"}),
    "ListUsers": frozenset({"PathPrefix", "Marker", "MaxItems"}),
    "DeleteUser": frozenset({"UserName"}),
    "CreateAccessKey": frozenset({"UserName"}),
    "ListAccessKeys": frozenset({"UserName", "Marker", "MaxItems"}),
    "UpdateAccessKey": frozenset({"UserName", "AccessKeyId", "Status"}),
    "DeleteAccessKey": frozenset({"UserName", "AccessKeyId"}),
    "PutUserPolicy": frozenset({"UserName", "PolicyName", "PolicyDocument"}),
    "GetUserPolicy": frozenset({"UserName", "PolicyName"}),
    "ListUserPolicies": frozenset({"UserName", "Marker", "MaxItems"}),
    "DeleteUserPolicy": frozenset({"UserName", "PolicyName"}),
    # the members it does not serve are refused by its own check, with the simulator's words
    "SimulatePrincipalPolicy": frozenset(
        {"PolicySourceArn", "ActionNames", "ResourceArns", "MaxItems", "Marker"}
    )
    | _SIMULATE_UNSERVED,
}
_ENVELOPE = frozenset({"Action", "Version"})
MAX_USERS = 5000  # IAM's quota: users in an account
_DECISIONS = {"allow": "allowed", "deny": "explicitDeny", "implicit": "implicitDeny"}


def _members(params: dict[str, str], name: str) -> list[str]:
    """A query-protocol list (``Name.member.1``, ``Name.member.2``, ...), in order."""
    found = []
    n = 1
    while (value := params.get(f"{name}.member.{n}")) is not None:
        found.append(value)
        n += 1
    return found


def _err(code: str, status: int, message: str) -> IamError:
    return IamError(message, code=code, status=status)


def _page(items: list[Any], params: dict[str, str]) -> tuple[list[Any], dict[str, Any]]:
    """IAM's pagination: ``MaxItems`` (1 to 1000, 100 when not given) from ``Marker`` (what the page before
    answered); the page and the members that say whether there is more."""
    marker, most = params.get("Marker"), params.get("MaxItems", "100")
    if not most.isdigit() or not 1 <= int(most) <= 1000:
        raise _err("ValidationError", 400, f"MaxItems {most!r} must be an integer from 1 to 1000.")
    if marker is not None and not (marker.isdigit() and int(marker) <= len(items)):
        raise _err("ValidationError", 400, f"Marker {marker!r} is not one this server answered.")
    start = int(marker or 0)
    page = items[start : start + int(most)]
    if start + len(page) < len(items):
        return page, {"IsTruncated": True, "Marker": str(start + len(page))}
    return page, {"IsTruncated": False}


def _policy_chars(document: str) -> int:
    """A policy's size as IAM counts it: its characters, whitespace left out."""
    return len("".join(document.split()))


def _date(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _xml(value: Any) -> str:
    """dict -> elements, list -> <member>s, anything else -> escaped text."""
    if isinstance(value, dict):
        return "".join(f"<{k}>{_xml(v)}</{k}>" for k, v in value.items() if v is not None)
    if isinstance(value, list):
        return "".join(f"<member>{_xml(v)}</member>" for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value))


class IamQueryService:
    signing_name = "iam"

    def __init__(self, store: IamStore, authz: Authorizer) -> None:
        self._store = store
        self._authz = authz
        self._ops: dict[str, Callable[[dict[str, str], str], dict[str, Any] | None]] = {
            "CreateUser": self.create_user,
            "GetUser": self.get_user,
            "ListUsers": self.list_users,
            "DeleteUser": self.delete_user,
            "CreateAccessKey": self.create_access_key,
            "ListAccessKeys": self.list_access_keys,
            "UpdateAccessKey": self.update_access_key,
            "DeleteAccessKey": self.delete_access_key,
            "PutUserPolicy": self.put_user_policy,
            "GetUserPolicy": self.get_user_policy,
            "ListUserPolicies": self.list_user_policies,
            "DeleteUserPolicy": self.delete_user_policy,
            "SimulatePrincipalPolicy": self.simulate_principal_policy,
        }

    @staticmethod
    def claims(headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """Whether a request is signed for IAM (its credential scope names the service ``iam``)."""
        for name, value in headers:
            if name.lower() == b"authorization":
                return b"/iam/aws4_request" in value
        return False

    # ---- the wire ----
    async def handle(self, send: Send, request_id: str, params: dict[str, str], access_key_id: str) -> None:
        """``params``: the request's form, parsed once (``api/query.parse``), as it was authorized."""
        action = params.get("Action", "")
        op = self._ops.get(action)
        if op is None:
            raise _err("InvalidAction", 400, f"Could not find operation {action or '(no Action)'}.")
        unserved = sorted({key.split(".", 1)[0] for key in params} - _SERVED[action] - _ENVELOPE)
        if unserved:
            raise _err(
                "ValidationError",
                400,
                f"{action} does not take {', '.join(unserved)} on zeroscale: its IAM serves users, access "
                "keys and inline user policies only (no tags, permissions boundaries or managed policies).",
            )
        result = op(params, access_key_id)
        inner = f"<{action}Result>{_xml(result)}</{action}Result>" if result is not None else ""
        xml = (
            f'<{action}Response xmlns="{XMLNS}">{inner}'
            f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
        )
        headers = [(b"content-type", b"text/xml"), (b"x-amzn-requestid", request_id.encode())]
        await respond(send, 200, xml.encode(), headers)

    @staticmethod
    async def error(send: Send, request_id: str, err: ZeroscaleError) -> None:
        code = "AccessDenied" if err.code == "AccessDeniedException" else err.code
        kind = "Receiver" if err.status >= 500 else "Sender"
        xml = (
            f'<ErrorResponse xmlns="{XMLNS}"><Error><Type>{kind}</Type><Code>{escape(code)}</Code>'
            f"<Message>{escape(err.message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        headers = [(b"content-type", b"text/xml"), (b"x-amzn-requestid", request_id.encode())]
        await respond(send, err.status, xml.encode(), headers)

    # ---- helpers ----
    def _user(self, params: dict[str, str], caller: str, *, required: bool = True) -> User:
        name = params.get("UserName")
        if not name:
            if required:
                raise _err("ValidationError", 400, "1 validation error detected: UserName must not be null")
            name = self._authz.caller(caller).user
        user = self._store.users.get(name)
        if user is None:
            raise _err("NoSuchEntity", 404, f"The user with name {name} cannot be found.")
        return user

    def _user_doc(self, user: User) -> dict[str, Any]:
        return {
            "Path": user.path,
            "UserName": user.name,
            "UserId": user.user_id,
            "Arn": self._authz.user_arn(user.name, user.path),
            "CreateDate": _date(user.created_at),
        }

    def _key(self, user: User, akid: str) -> AccessKey:
        key = self._store.keys.get(akid)
        if key is None or key.user_name != user.name:
            raise _err("NoSuchEntity", 404, f"The Access Key with id {akid} cannot be found.")
        return key

    # ---- users ----
    def create_user(self, params: dict[str, str], caller: str) -> dict[str, Any]:
        name = params.get("UserName", "")
        path = params.get("Path", "/")
        if not _NAME.match(name):
            raise _err("ValidationError", 400, f"The specified value for userName is invalid: {name!r}")
        if not _PATH.match(path) or len(path) > 512:
            raise _err("ValidationError", 400, "The specified value for path is invalid.")
        if name.lower() in {n.lower() for n in self._store.users}:
            raise _err("EntityAlreadyExists", 409, f"User with name {name} already exists.")
        if len(self._store.users) >= MAX_USERS:
            raise _err("LimitExceeded", 409, f"Cannot exceed quota for UsersPerAccount: {MAX_USERS}")
        return {"User": self._user_doc(self._store.create_user(name, path))}

    def get_user(self, params: dict[str, str], caller: str) -> dict[str, Any]:
        if not params.get("UserName") and not self._authz.caller(caller).user:
            who = self._authz.caller(caller)
            return {"User": {"UserId": caller, "Arn": who.arn, "CreateDate": _date(0)}}
        return {"User": self._user_doc(self._user(params, caller, required=False))}

    def list_users(self, params: dict[str, str], caller: str) -> dict[str, Any]:
        prefix = params.get("PathPrefix", "/")
        found = [u for _, u in sorted(self._store.users.items()) if u.path.startswith(prefix)]
        page, more = _page(found, params)
        return {"Users": [self._user_doc(u) for u in page], **more}

    def delete_user(self, params: dict[str, str], caller: str) -> None:
        user = self._user(params, caller)
        if self._store.user_keys(user.name) or user.policies:
            raise _err(
                "DeleteConflict", 409, "Cannot delete entity, must delete access keys and policies first."
            )
        self._store.delete_user(user.name)

    # ---- access keys ----
    def create_access_key(self, params: dict[str, str], caller: str) -> dict[str, Any]:
        user = self._user(params, caller, required=False)
        if len(self._store.user_keys(user.name)) >= MAX_KEYS_PER_USER:
            raise _err(
                "LimitExceeded", 409, f"Cannot exceed quota for AccessKeysPerUser: {MAX_KEYS_PER_USER}"
            )
        key = self._store.create_key(user.name)
        return {
            "AccessKey": {
                "UserName": user.name,
                "AccessKeyId": key.access_key_id,
                "Status": key.status,
                "SecretAccessKey": key.secret,  # the only time it is shown
                "CreateDate": _date(key.created_at),
            }
        }

    def list_access_keys(self, params: dict[str, str], caller: str) -> dict[str, Any]:
        user = self._user(params, caller, required=False)
        found = [
            {
                "UserName": user.name,
                "AccessKeyId": k.access_key_id,
                "Status": k.status,
                "CreateDate": _date(k.created_at),
            }
            for k in self._store.user_keys(user.name)
        ]
        page, more = _page(found, params)
        return {"AccessKeyMetadata": page, **more}

    def update_access_key(self, params: dict[str, str], caller: str) -> None:
        user = self._user(params, caller, required=False)
        key = self._key(user, params.get("AccessKeyId", ""))
        status = params.get("Status", "")
        if status not in ("Active", "Inactive"):
            raise _err("ValidationError", 400, "Status must be Active or Inactive.")
        self._store.set_key_status(key.access_key_id, status)

    def delete_access_key(self, params: dict[str, str], caller: str) -> None:
        user = self._user(params, caller, required=False)
        self._store.delete_key(self._key(user, params.get("AccessKeyId", "")).access_key_id)

    # ---- inline policies ----
    def put_user_policy(self, params: dict[str, str], caller: str) -> None:
        user = self._user(params, caller)
        name, document = params.get("PolicyName", ""), params.get("PolicyDocument", "")
        if not _POLICY_NAME.match(name):
            raise _err("ValidationError", 400, f"The specified value for policyName is invalid: {name!r}")
        # IAM's quota is the user's inline policies together, not each (so no user holds them without end)
        others = sum(_policy_chars(d) for n, d in user.policies.items() if n != name)
        if others + _policy_chars(document) > _MAX_POLICY_CHARS:
            raise _err(
                "LimitExceeded",
                409,
                f"Maximum policy size of {_MAX_POLICY_CHARS} bytes exceeded for user {user.name}",
            )
        self._store.put_policy(user, name, document)

    def get_user_policy(self, params: dict[str, str], caller: str) -> dict[str, Any]:
        user = self._user(params, caller)
        name = params.get("PolicyName", "")
        document = user.policies.get(name)
        if document is None:
            raise _err("NoSuchEntity", 404, f"The user policy with name {name} cannot be found.")
        # URL-encoded, as IAM answers it (botocore decodes it into a dict).
        return {"UserName": user.name, "PolicyName": name, "PolicyDocument": urllib.parse.quote(document)}

    def list_user_policies(self, params: dict[str, str], caller: str) -> dict[str, Any]:
        user = self._user(params, caller)
        page, more = _page(sorted(user.policies), params)
        return {"PolicyNames": page, **more}

    # ---- the policy simulator ----
    def simulate_principal_policy(self, params: dict[str, str], caller: str) -> dict[str, Any]:
        """Each action on each resource (``*`` when none is given) as the user's policies decide it (the
        account's root: allowed). zeroscale has no roles: a role's ARN is NoSuchEntity, as IAM answers for
        a role that does not exist (the sagemaker SDK checks its execution role this way)."""
        unserved = sorted({key.split(".", 1)[0] for key in params} & _SIMULATE_UNSERVED)
        if unserved:
            raise _err(
                "InvalidInput", 400, f"zeroscale's policy simulator does not take {', '.join(unserved)}."
            )
        source = params.get("PolicySourceArn", "")
        actions = _members(params, "ActionNames")
        if not source or not actions:
            raise _err("ValidationError", 400, "PolicySourceArn and ActionNames are required.")
        resources = _members(params, "ResourceArns") or ["*"]
        statements = self._simulated(source)
        results = []
        for action in actions:
            for resource in resources:
                decision = "allow" if statements is None else evaluate(statements, action, resource)
                results.append(
                    {
                        "EvalActionName": action,
                        "EvalResourceName": resource,
                        "EvalDecision": _DECISIONS[decision],
                        "MatchedStatements": [],
                        "MissingContextValues": [],
                    }
                )
        page, more = _page(results, params)
        return {"EvaluationResults": page, **more}

    def _simulated(self, arn: str) -> list[Statement] | None:
        """The statements the ARN's policies hold (None for the account's root: everything allowed)."""
        parts = arn.split(":", 5)
        if len(parts) != 6 or parts[:3] != ["arn", "aws", "iam"]:
            raise _err("InvalidInput", 400, f"Invalid ARN {arn!r}: not an IAM user or role ARN.")
        kind, _, rest = parts[5].partition("/")
        if parts[5] == "root":
            return None
        name = rest.rsplit("/", 1)[-1]
        if kind == "user":
            user = self._store.users.get(name)
            if user is not None:
                return user.compiled
            raise _err("NoSuchEntity", 404, f"The user with name {name} cannot be found.")
        if kind == "role":
            raise _err("NoSuchEntity", 404, f"The role with name {name} cannot be found.")
        raise _err("InvalidInput", 400, f"Invalid ARN {arn!r}: not an IAM user or role ARN.")

    def delete_user_policy(self, params: dict[str, str], caller: str) -> None:
        user = self._user(params, caller)
        name = params.get("PolicyName", "")
        if name not in user.policies:
            raise _err("NoSuchEntity", 404, f"The user policy with name {name} cannot be found.")
        self._store.delete_policy(user, name)
