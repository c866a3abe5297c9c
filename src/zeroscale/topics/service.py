"""SNS-compatible topics: topics and their http/https subscriptions (stored as resources, so they survive
restarts), subscription confirmation, and publishing to confirmed subscribers through the ``Deliverer``.

Messages are SNS's HTTP/HTTPS JSON (``Type``, ``MessageId``, ``TopicArn``, ``Message``, ``Timestamp``, ...)
with SNS's ``x-amz-sns-*`` headers. They are not signed: ``Signature`` is empty (there is no AWS
certificate to sign with), so a subscriber must not require SNS signature verification.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from zeroscale.errors import InvalidParameter, TopicNotFound
from zeroscale.store.db import AlreadyExists, Record, Store
from zeroscale.topics.delivery import Deliverer, Delivery, forbidden

TOPIC, SUBSCRIPTION = "sns-topic", "sns-subscription"
PENDING = "pending confirmation"
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_PROTOCOLS = ("http", "https")


@dataclass(frozen=True)
class Subscription:
    arn: str
    topic_arn: str
    protocol: str
    endpoint: str
    owner: str
    confirmed: bool


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Topics:
    def __init__(
        self,
        store: Store,
        *,
        region: str,
        account_id: str,
        public_url: str,
        deliverer: Deliverer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._region = region
        self._account_id = account_id
        self._url = public_url.rstrip("/") + "/"
        self.deliverer = deliverer
        self._clock = clock

    # ---- names ----
    def _arn(self, name: str) -> str:
        return f"arn:aws:sns:{self._region}:{self._account_id}:{name}"

    def _topic_name(self, arn: str) -> str:
        prefix = self._arn("")
        name = arn[len(prefix) :] if arn.startswith(prefix) else ""
        if not _TOPIC_NAME.match(name):
            raise InvalidParameter(f"Invalid parameter: TopicArn ({arn})")
        return name

    def _topic(self, arn: str) -> Record:
        rec = self._store.get(TOPIC, self._topic_name(arn))
        if rec is None or rec.arn != arn:
            raise TopicNotFound("Topic does not exist")
        return rec

    # ---- topics ----
    def create_topic(self, name: str) -> str:
        if not _TOPIC_NAME.match(name or ""):
            raise InvalidParameter(
                "Invalid parameter: Topic Name (1-256 letters, digits, hyphens and underscores)"
            )
        arn = self._arn(name)
        existing = self._store.get(TOPIC, name)
        if existing is not None:
            if existing.arn != arn:
                raise InvalidParameter(f"Invalid parameter: a topic named {existing.name} already exists")
            return arn  # CreateTopic is idempotent
        now = self._clock()
        with contextlib.suppress(AlreadyExists):  # created meanwhile: the same topic
            self._store.insert(Record(TOPIC, name, arn, now, now, None, {}))
        return arn

    def delete_topic(self, arn: str) -> None:
        name = self._topic_name(arn)
        for sub in self.subscriptions(arn, must_exist=False):
            self._store.delete(SUBSCRIPTION, sub.arn.rsplit(":", 1)[1])
        self._store.delete(TOPIC, name)  # deleting a missing topic succeeds, as in SNS

    def list_topics(self) -> list[str]:
        return [r.arn for r in self._store.list(TOPIC)]

    # ---- subscriptions ----
    def subscribe(self, topic_arn: str, protocol: str, endpoint: str, *, return_arn: bool) -> str:
        self._topic(topic_arn)
        protocol = (protocol or "").lower()
        if protocol not in _PROTOCOLS:
            raise InvalidParameter(
                f"Invalid parameter: Protocol ({protocol}): zeroscale serves http and https"
            )
        parts = urllib.parse.urlsplit(endpoint or "")
        if parts.scheme != protocol or not parts.netloc or not parts.hostname:
            raise InvalidParameter(f"Invalid parameter: Endpoint must be a {protocol}:// URL")
        why = _forbidden_literal(parts.hostname)
        if why is not None:
            raise InvalidParameter(f"Invalid parameter: Endpoint: {why}; zeroscale sends nothing there")
        for sub in self.subscriptions(topic_arn):
            if sub.protocol == protocol and sub.endpoint == endpoint:
                return sub.arn if sub.confirmed or return_arn else PENDING
        sub_id = str(uuid.uuid4())
        arn = f"{topic_arn}:{sub_id}"
        token = secrets.token_hex(64)
        now = self._clock()
        doc = {"TopicArn": topic_arn, "Protocol": protocol, "Endpoint": endpoint, "Token": token}
        self._store.insert(Record(SUBSCRIPTION, sub_id, arn, now, now, "pending", doc))
        query = urllib.parse.urlencode(
            {"Action": "ConfirmSubscription", "TopicArn": topic_arn, "Token": token}
        )
        message = {
            "Type": "SubscriptionConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": topic_arn,
            "Message": (
                f"You have chosen to subscribe to the topic {topic_arn}.\n"
                "To confirm the subscription, visit the SubscribeURL included in this message."
            ),
            "SubscribeURL": f"{self._url}?{query}",
            "Timestamp": _iso(now),
            "SignatureVersion": "1",
            "Signature": "",
            "SigningCertURL": "",
        }
        self._send(message, endpoint, arn, include_subscription=False)
        return arn if return_arn else PENDING

    def confirm(self, topic_arn: str, token: str) -> str:
        self._topic(topic_arn)
        for rec in self._store.list(SUBSCRIPTION):
            if rec.doc.get("TopicArn") == topic_arn and secrets.compare_digest(
                str(rec.doc.get("Token", "")), token or ""
            ):
                if rec.status != "confirmed":
                    rec.status, rec.modified_at = "confirmed", self._clock()
                    self._store.update(rec)
                return rec.arn
        raise InvalidParameter("Invalid token")

    def unsubscribe(self, arn: str) -> None:
        sub_id = arn.rsplit(":", 1)[-1]
        rec = self._store.get(SUBSCRIPTION, sub_id)
        if rec is None or rec.arn != arn:
            raise TopicNotFound("Subscription does not exist")
        self._store.delete(SUBSCRIPTION, sub_id)

    def subscriptions(self, topic_arn: str, *, must_exist: bool = True) -> list[Subscription]:
        if must_exist:
            self._topic(topic_arn)
        return [
            Subscription(
                arn=r.arn,
                topic_arn=r.doc["TopicArn"],
                protocol=r.doc["Protocol"],
                endpoint=r.doc["Endpoint"],
                owner=self._account_id,
                confirmed=r.status == "confirmed",
            )
            for r in self._store.list(SUBSCRIPTION)
            if r.doc.get("TopicArn") == topic_arn
        ]

    # ---- publishing ----
    def publish(self, topic_arn: str, message: str, subject: str | None = None) -> str:
        """Deliver to every confirmed subscriber (in the background); the MessageId."""
        self._topic(topic_arn)
        message_id = str(uuid.uuid4())
        for sub in self.subscriptions(topic_arn):
            if not sub.confirmed:
                continue
            body: dict[str, Any] = {
                "Type": "Notification",
                "MessageId": message_id,
                "TopicArn": topic_arn,
            }
            if subject:
                body["Subject"] = subject
            unsubscribe = urllib.parse.urlencode({"Action": "Unsubscribe", "SubscriptionArn": sub.arn})
            body.update(
                {
                    "Message": message,
                    "Timestamp": _iso(self._clock()),
                    "SignatureVersion": "1",
                    "Signature": "",
                    "SigningCertURL": "",
                    "UnsubscribeURL": f"{self._url}?{unsubscribe}",
                }
            )
            self._send(body, sub.endpoint, sub.arn, include_subscription=True)
        return message_id

    def notify(self, topic_arn: str, message: dict[str, Any]) -> None:
        """The asynchronous queue's notifier: publish ``message`` as JSON (raises TopicNotFound)."""
        self.publish(topic_arn, json.dumps(message))

    def _send(self, message: dict[str, Any], url: str, sub_arn: str, *, include_subscription: bool) -> None:
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": message["Type"],
            "x-amz-sns-message-id": message["MessageId"],
            "x-amz-sns-topic-arn": message["TopicArn"],
            "User-Agent": "Amazon Simple Notification Service Agent",
        }
        if include_subscription:
            headers["x-amz-sns-subscription-arn"] = sub_arn
        self.deliverer.send(
            Delivery(
                url,
                json.dumps(message).encode(),
                headers,
                f"{message['Type']} {message['MessageId']} to {sub_arn}",
            )
        )


def _forbidden_literal(host: str) -> str | None:
    """Why an IP address written in a subscription's URL is refused (``delivery.forbidden``); a name is
    looked up at each delivery instead."""
    try:
        return forbidden(host)
    except ValueError:
        return None  # a name, not an address
