"""The SNS-compatible topic API in the AWS query protocol, as botocore's ``sns`` client speaks it: ``POST /``
with a form body (``Action=CreateTopic&Version=2010-03-31&...``), signed with the service name ``sns``;
answers in SNS's XML. ``GET /?Action=ConfirmSubscription&TopicArn=...&Token=...`` (the SubscribeURL a
subscriber visits) and ``GET /?Action=Unsubscribe&SubscriptionArn=...`` (the UnsubscribeURL) are unsigned,
as in SNS: the token, or the subscription's random id, is the secret."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any
from xml.sax.saxutils import escape

import botocore.session

from zeroscale.api.wire import Headers, Send, respond
from zeroscale.errors import InvalidParameter, MalformedQueryString, NotImplementedOperation, ZeroscaleError
from zeroscale.topics.service import Topics

NS = "http://sns.amazonaws.com/doc/2010-03-31/"
SIGNING_NAME = "sns"
UNSIGNED_ACTIONS = frozenset({"ConfirmSubscription", "Unsubscribe"})
PAGE = 100
Params = Mapping[str, str]
# The request members each served operation reads; any other member is refused by name, not ignored.
SERVED: dict[str, frozenset[str]] = {
    "CreateTopic": frozenset({"Name"}),
    "DeleteTopic": frozenset({"TopicArn"}),
    "ListTopics": frozenset({"NextToken"}),
    "Subscribe": frozenset({"TopicArn", "Protocol", "Endpoint", "ReturnSubscriptionArn"}),
    "ConfirmSubscription": frozenset({"TopicArn", "Token"}),
    "Unsubscribe": frozenset({"SubscriptionArn"}),
    "ListSubscriptionsByTopic": frozenset({"TopicArn", "NextToken"}),
    "Publish": frozenset({"TopicArn", "Message", "Subject"}),
}
_ENVELOPE = frozenset({"Action", "Version"})


def is_query_request(method: str, path: str, headers: Headers, target: str) -> bool:
    if path != "/" or target:
        return False
    if method == "GET":
        return True
    content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
    return method == "POST" and content_type.startswith(b"application/x-www-form-urlencoded")


def parse(body: bytes) -> dict[str, str]:
    """A query-protocol request's parameters (a form body or a query string), parsed once: the policy
    check and the handler read the same ones. Bytes that are not UTF-8 are refused, never replaced: a
    reading that differs between the two would check one call and run another."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedQueryString("The request's parameters are not UTF-8 form encoding.") from None
    return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))


def _member(tag: str, value: str) -> str:
    return f"<{tag}>{escape(value)}</{tag}>"


def _required(params: Params, name: str) -> str:
    value = params.get(name)
    if not value:
        raise InvalidParameter(f"Invalid parameter: {name} is required")
    return value


def _page(items: list[Any], token: str | None) -> tuple[list[Any], str | None]:
    """A page of ``items`` from ``token`` (what the page before answered); a token this server did not give
    is refused rather than read as the first page."""
    if token is not None and not (token.isdigit() and int(token) <= len(items)):
        raise InvalidParameter(f"Invalid parameter: NextToken {token[:64]!r} is not one this server answered")
    start = int(token or 0)
    end = start + PAGE
    return items[start:end], (str(end) if end < len(items) else None)


class QueryService:
    signing_name = SIGNING_NAME

    def __init__(self, topics: Topics) -> None:
        self._topics = topics
        self._known = frozenset(botocore.session.get_session().get_service_model("sns").operation_names)
        self._ops: dict[str, Callable[[Params], str | None]] = {
            "CreateTopic": self._create_topic,
            "DeleteTopic": self._delete_topic,
            "ListTopics": self._list_topics,
            "Subscribe": self._subscribe,
            "ConfirmSubscription": self._confirm,
            "Unsubscribe": self._unsubscribe,
            "ListSubscriptionsByTopic": self._list_subscriptions,
            "Publish": self._publish,
        }

    async def handle(self, send: Send, request_id: str, params: Params) -> None:
        action = params.get("Action", "")
        if action not in self._known:
            raise ZeroscaleError(
                f"Could not find operation {action or '(no Action)'}", code="InvalidAction", status=400
            )
        op = self._ops.get(action)
        if op is None:
            raise NotImplementedOperation(f"The SNS operation {action} is not implemented by zeroscale yet.")
        for key in params:
            member = key.split(".", 1)[0]
            if member not in _ENVELOPE and member not in SERVED[action]:
                raise InvalidParameter(f"Invalid parameter: {member} is not served by zeroscale for {action}")
        result = op(params)
        inner = "" if result is None else f"<{action}Result>{result}</{action}Result>"
        body = (
            f'<?xml version="1.0"?>\n<{action}Response xmlns="{NS}">{inner}'
            f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
        )
        await respond(send, 200, body.encode(), self._headers(request_id))

    async def error(self, send: Send, request_id: str, err: ZeroscaleError) -> None:
        kind = "Sender" if err.status < 500 else "Receiver"
        body = (
            f'<?xml version="1.0"?>\n<ErrorResponse xmlns="{NS}"><Error><Type>{kind}</Type>'
            f"{_member('Code', err.code)}{_member('Message', err.message)}</Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        await respond(send, err.status, body.encode(), self._headers(request_id))

    @staticmethod
    def _headers(request_id: str) -> Headers:
        return [(b"content-type", b"text/xml"), (b"x-amzn-requestid", request_id.encode())]

    # ---- operations: each returns the inside of <ActionResult>, or None when there is none ----
    def _create_topic(self, p: Params) -> str:
        return _member("TopicArn", self._topics.create_topic(_required(p, "Name")))

    def _delete_topic(self, p: Params) -> None:
        self._topics.delete_topic(_required(p, "TopicArn"))

    def _list_topics(self, p: Params) -> str:
        arns, token = _page(self._topics.list_topics(), p.get("NextToken"))
        members = "".join(f"<member>{_member('TopicArn', a)}</member>" for a in arns)
        return f"<Topics>{members}</Topics>" + (_member("NextToken", token) if token else "")

    def _subscribe(self, p: Params) -> str:
        arn = self._topics.subscribe(
            _required(p, "TopicArn"),
            _required(p, "Protocol"),
            p.get("Endpoint", ""),
            return_arn=p.get("ReturnSubscriptionArn", "").lower() == "true",
        )
        return _member("SubscriptionArn", arn)

    def _confirm(self, p: Params) -> str:
        arn = self._topics.confirm(_required(p, "TopicArn"), _required(p, "Token"))
        return _member("SubscriptionArn", arn)

    def _unsubscribe(self, p: Params) -> None:
        self._topics.unsubscribe(_required(p, "SubscriptionArn"))

    def _list_subscriptions(self, p: Params) -> str:
        subs, token = _page(self._topics.subscriptions(_required(p, "TopicArn")), p.get("NextToken"))
        members = "".join(
            "<member>"
            + _member("TopicArn", s.topic_arn)
            + _member("Protocol", s.protocol)
            + _member("SubscriptionArn", s.arn if s.confirmed else "PendingConfirmation")
            + _member("Owner", s.owner)
            + _member("Endpoint", s.endpoint)
            + "</member>"
            for s in subs
        )
        return f"<Subscriptions>{members}</Subscriptions>" + (_member("NextToken", token) if token else "")

    def _publish(self, p: Params) -> str:
        message_id = self._topics.publish(_required(p, "TopicArn"), _required(p, "Message"), p.get("Subject"))
        return _member("MessageId", message_id)
