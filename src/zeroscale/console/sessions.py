"""Console sign-in sessions, kept in the server's database (``console_sessions``), so that every front end on
it knows them: a browser signed in through one may be sent to another, and a sign-out through one ends the
session on all of them. A restart keeps them.

A session is created by proving an access key's secret; the browser holds only a random id in an HttpOnly
cookie, and the database only that id's SHA-256 (and the secret's, to see it rotated): reading the table
gives no session. Each session has its own CSRF token that every change must echo in a header. A session
ends when it has been idle for ``idle_s``, ``absolute_s`` after sign-in, on sign-out, or as soon as its
access key is no longer known or its secret has changed. Every call here is blocking (a database
transaction): the console calls them off the event loop. Failed sign-ins are counted per front end."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    select,
    update,
)

from zeroscale.store.engine import make_engine
from zeroscale.store.migrations import upgrade

SecretLookup = Callable[[str], str | None]

IDLE_S = 3600.0
ABSOLUTE_S = 12 * 3600.0
MAX_SESSIONS = 1000
# Sessions one access key holds at most: its next sign-in ends its own oldest. At MAX_SESSIONS, the key
# holding the most loses its oldest: signing in again and again ends no other key's session.
MAX_SESSIONS_PER_KEY = 20
# A session's last use is written at most this often (each console call would write it otherwise).
TOUCH_EVERY_S = 1.0
# Wrong secrets allowed per client address and access key, and window, before sign-in answers "too many
# attempts" (per address alone, a client guessing one key locked every key out from that address: behind
# a reverse proxy, everyone's, the admin's included).
MAX_FAILURES = 10
FAILURE_WINDOW_S = 60.0


@dataclass
class Session:
    access_key_id: str
    csrf_token: str
    created_at: float
    last_seen: float
    secret_digest: bytes  # of the secret proven at sign-in: a rotated secret ends the session

    def expires_at(self, idle_s: float, absolute_s: float) -> float:
        return min(self.last_seen + idle_s, self.created_at + absolute_s)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


metadata = MetaData()
rows = Table(
    "console_sessions",
    metadata,
    Column("id_digest", String(64), primary_key=True),  # SHA-256 of the cookie's value, hex
    Column("access_key_id", String(128), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_seen", Double, nullable=False),
    Column("secret_digest", String(64), nullable=False),  # SHA-256 of the secret proven at sign-in, hex
    # orders sign-ins within one clock reading (this process's count: the least recently used goes first)
    Column("seq", BigInteger, nullable=False),
    Index("ix_console_sessions_key", "access_key_id", "last_seen"),
    Index("ix_console_sessions_seen", "last_seen"),
)


def _session(row: Any) -> Session:
    return Session(
        row.access_key_id,
        row.csrf_token,
        float(row.created_at),
        float(row.last_seen),
        bytes.fromhex(row.secret_digest),
    )


class SignInRefused(Exception):
    def __init__(self, message: str, *, throttled: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.throttled = throttled


WRONG_CREDENTIALS = "The access key ID or the secret access key is not correct."
TOO_MANY = "Too many failed sign-in attempts. Wait a minute, then try again."


class Sessions:
    def __init__(
        self,
        lookup_secret: SecretLookup,
        db_url: str,
        *,
        idle_s: float = IDLE_S,
        absolute_s: float = ABSOLUTE_S,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lookup = lookup_secret
        self.idle_s = idle_s
        self.absolute_s = absolute_s
        self._max = max_sessions
        self._clock = clock
        self._engine = make_engine(db_url)
        upgrade(self._engine, "console", metadata)
        self._lock = threading.Lock()  # this front end's sign-ins, one at a time; the failures below
        self._seq = itertools.count()
        self._failures: dict[tuple[str, str], list[float]] = {}  # (client, access key) -> times

    def __len__(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(rows)).scalar_one())

    def close(self) -> None:
        self._engine.dispose()

    def sign_in(self, access_key_id: str, secret: str, client: str = "") -> tuple[str, Session]:
        """Check the key and secret; returns the new session's id (the cookie value) and the session."""
        with self._lock:
            now = self._clock()
            who = (client, access_key_id)
            recent = [t for t in self._failures.get(who, []) if t > now - FAILURE_WINDOW_S]
            if len(recent) >= MAX_FAILURES:
                self._failures[who] = recent
                raise SignInRefused(TOO_MANY, throttled=True)
            known = self._lookup(access_key_id) if access_key_id else None
            # Compare against something even for an unknown key, so timing tells nothing about which keys
            # exist.
            expected = _digest(known if known is not None else secrets.token_hex(16))
            if not (hmac.compare_digest(expected, _digest(secret)) and known is not None):
                recent.append(now)
                self._failures[who] = recent
                if len(self._failures) > 4 * self._max:  # forget what is past its window: bounded memory
                    self._failures = {
                        k: v for k, v in self._failures.items() if v[-1] > now - FAILURE_WINDOW_S
                    }
                raise SignInRefused(WRONG_CREDENTIALS)
            self._failures.pop(who, None)
            session_id = secrets.token_urlsafe(32)
            session = Session(access_key_id, secrets.token_urlsafe(32), now, now, expected)
            with self._engine.begin() as conn:
                self._make_room(conn, access_key_id, now)
                conn.execute(
                    insert(rows).values(
                        id_digest=_digest(session_id).hex(),
                        access_key_id=access_key_id,
                        csrf_token=session.csrf_token,
                        created_at=now,
                        last_seen=now,
                        secret_digest=expected.hex(),
                        seq=next(self._seq),
                    )
                )
            return session_id, session

    def _make_room(self, conn: Any, access_key_id: str, now: float) -> None:
        """Before a sign-in: the expired sessions go; then the key's least recently used beyond its limit
        but one; then, at the server's limit, the least recently used of the key holding the most."""
        gone = (rows.c.last_seen <= now - self.idle_s) | (rows.c.created_at <= now - self.absolute_s)
        conn.execute(delete(rows).where(gone))
        mine = select(rows.c.id_digest).where(rows.c.access_key_id == access_key_id)
        held = [r[0] for r in conn.execute(mine.order_by(rows.c.last_seen, rows.c.seq))]
        for old in held[: max(0, len(held) - MAX_SESSIONS_PER_KEY + 1)]:
            conn.execute(delete(rows).where(rows.c.id_digest == old))
        while conn.execute(select(func.count()).select_from(rows)).scalar_one() >= self._max:
            count = func.count().label("n")
            largest = conn.execute(
                select(rows.c.access_key_id, count)
                .group_by(rows.c.access_key_id)
                .order_by(count.desc(), rows.c.access_key_id)
                .limit(1)
            ).first()
            oldest = select(rows.c.id_digest).where(rows.c.access_key_id == largest[0])
            victim = conn.execute(oldest.order_by(rows.c.last_seen, rows.c.seq).limit(1)).scalar_one()
            conn.execute(delete(rows).where(rows.c.id_digest == victim))

    def known(self, access_key_id: str) -> bool:
        """Whether a key of that id exists and is active."""
        return self._lookup(access_key_id) is not None

    def get(self, session_id: str | None) -> Session | None:
        """The live session for a cookie value (its idle clock restarts), or None."""
        if not session_id:
            return None
        key = _digest(session_id).hex()
        with self._engine.connect() as conn:
            row = conn.execute(select(rows).where(rows.c.id_digest == key)).first()
        if row is None:
            return None
        session = _session(row)
        now = self._clock()
        secret = self._lookup(session.access_key_id)
        if (
            now >= session.expires_at(self.idle_s, self.absolute_s)
            or secret is None
            or not hmac.compare_digest(_digest(secret), session.secret_digest)
        ):
            with self._engine.begin() as conn:
                conn.execute(delete(rows).where(rows.c.id_digest == key))
            return None
        if now - session.last_seen >= TOUCH_EVERY_S:
            with self._engine.begin() as conn:
                conn.execute(update(rows).where(rows.c.id_digest == key).values(last_seen=now))
        session.last_seen = now
        return session

    def end_for_key(self, access_key_id: str) -> None:
        """Every session of a key that no longer signs anything (made inactive, or deleted) ends now:
        otherwise one unused meanwhile would live again if the key were made active again."""
        with self._engine.begin() as conn:
            conn.execute(delete(rows).where(rows.c.access_key_id == access_key_id))

    def sign_out(self, session_id: str | None) -> None:
        if session_id:
            with self._engine.begin() as conn:
                conn.execute(delete(rows).where(rows.c.id_digest == _digest(session_id).hex()))

    @staticmethod
    def csrf_ok(session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(session.csrf_token.encode(), (token or "").encode())
