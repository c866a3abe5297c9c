"""Console sign-in sessions, held in the server's memory (a restart signs everyone out).

A session is created by proving an access key's secret; the browser holds only a random id in an HttpOnly
cookie. Each session has its own CSRF token that every change must echo in a header. A session ends when
it has been idle for ``idle_s``, ``absolute_s`` after sign-in, on sign-out, or as soon as its access key
is no longer known or its secret has changed."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

SecretLookup = Callable[[str], str | None]

IDLE_S = 3600.0
ABSOLUTE_S = 12 * 3600.0
MAX_SESSIONS = 1000
# Sessions one access key holds at most: its next sign-in ends its own oldest. At MAX_SESSIONS, the key
# holding the most loses its oldest: signing in again and again ends no other key's session.
MAX_SESSIONS_PER_KEY = 20
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
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()  # by digest of the cookie's id
        self._failures: dict[tuple[str, str], list[float]] = {}  # (client, access key) -> times

    def __len__(self) -> int:
        return len(self._sessions)

    def sign_in(self, access_key_id: str, secret: str, client: str = "") -> tuple[str, Session]:
        """Check the key and secret; returns the new session's id (the cookie value) and the session."""
        now = self._clock()
        who = (client, access_key_id)
        recent = [t for t in self._failures.get(who, []) if t > now - FAILURE_WINDOW_S]
        if len(recent) >= MAX_FAILURES:
            self._failures[who] = recent
            raise SignInRefused(TOO_MANY, throttled=True)
        known = self._lookup(access_key_id) if access_key_id else None
        # Compare against something even for an unknown key, so timing tells nothing about which keys exist.
        expected = _digest(known if known is not None else secrets.token_hex(16))
        if not (hmac.compare_digest(expected, _digest(secret)) and known is not None):
            recent.append(now)
            self._failures[who] = recent
            if len(self._failures) > 4 * self._max:  # forget what is past its window: bounded memory
                self._failures = {k: v for k, v in self._failures.items() if v[-1] > now - FAILURE_WINDOW_S}
            raise SignInRefused(WRONG_CREDENTIALS)
        self._failures.pop(who, None)
        session_id = secrets.token_urlsafe(32)
        session = Session(access_key_id, secrets.token_urlsafe(32), now, now, expected)
        mine = [k for k, s in self._sessions.items() if s.access_key_id == access_key_id]  # oldest first
        for old in mine[: max(0, len(mine) - MAX_SESSIONS_PER_KEY + 1)]:
            del self._sessions[old]
        if len(self._sessions) >= self._max:
            self._evict_from_the_largest_holder()
        self._sessions[_digest(session_id)] = session
        return session_id, session

    def _evict_from_the_largest_holder(self) -> None:
        held: dict[str, list[bytes]] = {}
        for key, session in self._sessions.items():  # least recently used first
            held.setdefault(session.access_key_id, []).append(key)
        largest = max(held.values(), key=len)
        del self._sessions[largest[0]]

    def get(self, session_id: str | None) -> Session | None:
        """The live session for a cookie value (its idle clock restarts), or None."""
        if not session_id:
            return None
        key = _digest(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._clock()
        secret = self._lookup(session.access_key_id)
        if (
            now >= session.expires_at(self.idle_s, self.absolute_s)
            or secret is None
            or not hmac.compare_digest(_digest(secret), session.secret_digest)
        ):
            del self._sessions[key]
            return None
        session.last_seen = now
        self._sessions.move_to_end(key)
        return session

    def sign_out(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(_digest(session_id), None)

    @staticmethod
    def csrf_ok(session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(session.csrf_token.encode(), (token or "").encode())
