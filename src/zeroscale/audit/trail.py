"""The audit trail: one row per control-plane call (every signed or unsigned request except invocations):
time, access key, user, source address, action, resource, outcome and error code. Recorded on the event
loop into a queue, written in batches by a thread (every half second, and on close); kept in the store's
database (table ``audit_events``) for ``--audit-retention-days`` (the writer deletes older rows). Requests
refused before their caller was known are recorded at most 60 a minute (``budget.py``), the rest as one
row a minute that counts them. ``GET /zeroscale/v1/audit?since=...&user=...&limit=...`` reads it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
)

from zeroscale.audit.budget import RefusalBudget
from zeroscale.errors import UnknownOperationException, ValidationException
from zeroscale.iam.authz import Access, Authorizer
from zeroscale.metering.reports import parse_time
from zeroscale.store.engine import make_engine
from zeroscale.store.migrations import upgrade

log = logging.getLogger("zeroscale.audit")
_ID = BigInteger().with_variant(Integer, "sqlite")

metadata = MetaData()
events = Table(
    "audit_events",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("at", Double, nullable=False),
    Column("access_key_id", String(128), nullable=False),
    Column("user", String(64), nullable=False),  # "admin" for the admin credentials, "" when unknown
    Column("source", String(64), nullable=False),
    Column("action", String(128), nullable=False),
    Column("resource", String(512), nullable=False),
    Column("outcome", String(16), nullable=False),  # Success | Denied | Failed
    Column("error_code", String(128), nullable=False),
    Index("ix_audit_events_at", "at"),
)
_COLUMNS = [c.name for c in events.columns if c.name != "id"]
DEFAULT_LIMIT = 1000
# A row that stands for the refused requests of a minute the trail did not record one by one.
UNRECORDED = "UnrecordedRefusals"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    at: float
    access_key_id: str
    user: str
    source: str
    action: str
    resource: str
    outcome: str
    error_code: str


class AuditTrail:
    def __init__(
        self,
        db_url: str,
        authz: Authorizer,
        *,
        flush_interval_s: float = 0.5,
        retention_s: float = 0.0,
        budget: RefusalBudget | None = None,
    ) -> None:
        """``retention_s``: rows older than this are deleted (0 keeps them all)."""
        self._engine = make_engine(db_url)
        upgrade(self._engine, "audit", metadata)
        self._authz = authz
        self._retention_s = retention_s
        self._next_prune = 0.0
        self._budget = budget or RefusalBudget()
        self._pending: deque[AuditEvent] = deque()
        self._interval = flush_interval_s
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---- the app's hook: on the event loop, never blocks ----
    def record(self, access: Access | None, scope: Mapping[str, Any], target: str, error_code: str) -> None:
        try:
            self._record(access, scope, target, error_code)
        except Exception:  # the answer is sent; a bug here must not surface as a failed request
            log.exception("audit: cannot record a call")

    def _record(self, access: Access | None, scope: Mapping[str, Any], target: str, error_code: str) -> None:
        client = scope.get("client")
        source = str(client[0]) if client else ""
        now = time.time()
        self._unrecorded(now)
        if access is None and not self._budget.admit(now):
            return  # counted: recorded as one row when the minute is over
        if access is None:  # refused before the caller was known (bad or missing signature)
            action = target or f"{scope.get('method', '')} {scope.get('path', '')}"
            key, user, resource = _claimed_key(scope), "", "*"
        else:
            action, resource = self._authz.describe(access)
            key = access.access_key_id
            user = self._authz.caller(access.access_key_id).user or "admin" if self._known(key) else ""
        outcome = (
            "Success" if not error_code else "Denied" if error_code.startswith("AccessDenied") else "Failed"
        )
        self._pending.append(AuditEvent(now, key, user, source, action, resource, outcome, error_code))

    def _unrecorded(self, now: float) -> None:
        """A row for each minute over whose refused requests were not all recorded."""
        for end, count in self._budget.ended(now):
            self._pending.append(
                AuditEvent(
                    end, "", "", "", UNRECORDED, f"{count} request(s)", "Failed",
                    f"{count} requests refused in the minute before were not recorded one by one",
                )
            )  # fmt: skip

    def _known(self, key: str) -> bool:
        return self._authz.lookup_secret(key) is not None

    # ---- lifecycle ----
    def start(self) -> None:
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="zeroscale-audit", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
        self._engine.dispose()

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(self._interval)
            try:
                self._unrecorded(time.time())
                self.flush()
                self.prune()
            except Exception:
                log.exception("audit: writing events failed; will retry")

    def prune(self, now: float | None = None) -> int:
        """Delete the rows older than the retention (at most every tenth of it, or every hour); how many."""
        if self._retention_s <= 0:
            return 0
        now = time.time() if now is None else now
        if now < self._next_prune:
            return 0
        self._next_prune = now + min(3600.0, self._retention_s / 10)
        with self._engine.begin() as conn:
            gone = conn.execute(delete(events).where(events.c.at < now - self._retention_s)).rowcount
        if gone:
            log.info("audit: deleted %d event(s) older than %g days", gone, self._retention_s / 86400)
        return int(gone or 0)

    def flush(self) -> int:
        with self._lock:
            batch: list[AuditEvent] = []
            try:
                while True:
                    batch.append(self._pending.popleft())
            except IndexError:
                pass
            if not batch:
                return 0
            try:
                with self._engine.begin() as conn:
                    conn.execute(insert(events), [asdict(e) for e in batch])
            except BaseException:
                self._pending.extendleft(reversed(batch))
                raise
            return len(batch)

    # ---- reading ----
    def query(self, since: float | None, user: str | None, limit: int) -> list[AuditEvent]:
        self.flush()
        q = select(events)
        if since is not None:
            q = q.where(events.c.at >= since)
        if user is not None:
            q = q.where(events.c.user == user)
        q = q.order_by(events.c.at.desc(), events.c.id.desc()).limit(limit)
        with self._engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [AuditEvent(**{c: row[c] for c in _COLUMNS}) for row in reversed(rows)]


def _claimed_key(scope: Mapping[str, Any]) -> str:
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            text = value.decode("latin-1")
            start = text.find("Credential=")
            if start >= 0:
                return str(text[start + len("Credential=") :].split("/", 1)[0][:128])
    return ""


class AuditApi:
    """``GET /zeroscale/v1/audit?since=ISO|30m&user=NAME&limit=N``: events, oldest first, as JSON."""

    def __init__(self, trail: AuditTrail) -> None:
        self._trail = trail

    async def __call__(self, request: Any) -> tuple[int, str, bytes]:
        if request.path.rstrip("/") != "audit" or request.method != "GET":
            raise UnknownOperationException(f"No operation at {request.method} /zeroscale/v1/{request.path}.")
        query: Mapping[str, list[str]] = request.query
        unknown = sorted(set(query) - {"since", "user", "limit"})
        if unknown:
            raise ValidationException(f"Unknown query parameter(s) {unknown}; accepted: since, user, limit.")
        since = _since(query.get("since", [""])[0])
        user = query.get("user", [""])[0] or None
        try:
            limit = int(query.get("limit", [str(DEFAULT_LIMIT)])[0])
        except ValueError:
            raise ValidationException("limit must be an integer.") from None
        if not 1 <= limit <= 10_000:
            raise ValidationException("limit must be between 1 and 10000.")
        found = await asyncio.to_thread(self._trail.query, since, user, limit)
        body = json.dumps({"Events": [asdict(e) for e in found]}).encode()
        return 200, "application/json", body


def _since(text: str) -> float | None:
    if not text:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1] in units and text[:-1].isdigit():
        return time.time() - int(text[:-1]) * units[text[-1]]
    with contextlib.suppress(ValueError):
        epoch = float(text)  # epoch seconds (what `zeroscale audit --since` sends, whatever it was given)
        if epoch >= 1e9 and math.isfinite(epoch):
            return epoch
    try:
        return parse_time(text)
    except ValueError:
        raise ValidationException(
            f"since must be an ISO date-time, epoch seconds or a duration like 30m, not {text!r}."
        ) from None
