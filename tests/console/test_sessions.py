"""Console sessions in a real SQLite database, with a fake clock: sign-in, expiry (idle and absolute), rotated
secrets, sign-out, throttled guessing, CSRF tokens; and two front ends on one database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from zeroscale.console.sessions import MAX_FAILURES, MAX_SESSIONS_PER_KEY, Sessions, SignInRefused, rows

KEY, SECRET = "AKIDCONSOLE", "console-secret"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def secrets_() -> dict[str, str]:
    return {KEY: SECRET}


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sessions.db'}"


@pytest.fixture
def sessions(clock: Clock, secrets_: dict[str, str], db: str) -> Sessions:
    return Sessions(secrets_.get, db, idle_s=60, absolute_s=300, max_sessions=3, clock=clock)


def test_sign_in_with_the_right_secret_gives_a_session(sessions: Sessions) -> None:
    sid, session = sessions.sign_in(KEY, SECRET)
    assert session.access_key_id == KEY
    found = sessions.get(sid)
    assert found is not None and found.csrf_token == session.csrf_token
    assert len(sid) >= 40 and len(session.csrf_token) >= 40


@pytest.mark.parametrize(
    ("key", "secret"), [(KEY, "wrong"), ("AKIDUNKNOWN", SECRET), ("", SECRET), (KEY, "")]
)
def test_wrong_key_or_secret_is_refused_with_one_message(sessions: Sessions, key: str, secret: str) -> None:
    with pytest.raises(SignInRefused) as refused:
        sessions.sign_in(key, secret)
    assert refused.value.message == "The access key ID or the secret access key is not correct."
    assert len(sessions) == 0


def test_idle_expiry_and_activity_keeps_it_alive(sessions: Sessions, clock: Clock) -> None:
    sid, _ = sessions.sign_in(KEY, SECRET)
    clock.now += 50
    assert sessions.get(sid) is not None  # activity restarts the idle clock
    clock.now += 50
    assert sessions.get(sid) is not None
    clock.now += 61
    assert sessions.get(sid) is None
    assert len(sessions) == 0


def test_absolute_expiry_despite_activity(sessions: Sessions, clock: Clock) -> None:
    sid, _ = sessions.sign_in(KEY, SECRET)
    for _ in range(5):
        clock.now += 59
        session = sessions.get(sid)
        assert session is not None
    assert session.expires_at(60, 300) == session.created_at + 300
    clock.now += 6
    assert sessions.get(sid) is None


def test_sign_out_ends_the_session(sessions: Sessions) -> None:
    sid, _ = sessions.sign_in(KEY, SECRET)
    sessions.sign_out(sid)
    assert sessions.get(sid) is None
    sessions.sign_out(sid)  # twice is fine
    sessions.sign_out(None)


def test_a_removed_or_rotated_key_ends_its_sessions(sessions: Sessions, secrets_: dict[str, str]) -> None:
    sid, _ = sessions.sign_in(KEY, SECRET)
    secrets_[KEY] = "rotated"
    assert sessions.get(sid) is None
    sid, _ = sessions.sign_in(KEY, "rotated")
    del secrets_[KEY]
    assert sessions.get(sid) is None


def test_unknown_or_missing_cookie_values(sessions: Sessions) -> None:
    assert sessions.get(None) is None
    assert sessions.get("") is None
    assert sessions.get("not-a-session") is None


def test_oldest_sessions_go_beyond_the_limit(sessions: Sessions) -> None:
    ids = [sessions.sign_in(KEY, SECRET)[0] for _ in range(4)]
    assert len(sessions) == 3
    assert sessions.get(ids[0]) is None
    assert all(sessions.get(sid) is not None for sid in ids[1:])


def test_signing_in_again_and_again_ends_only_the_same_keys_sessions(
    clock: Clock, secrets_: dict[str, str], db: str, tmp_path: Path
) -> None:
    """A key that signs in over and over (any holder of a valid key can) ends its own oldest sessions,
    never another key's: at the server's limit the key holding the most loses its oldest."""
    secrets_["AKIDADMIN"] = "admin-secret"
    sessions = Sessions(secrets_.get, db, max_sessions=50, clock=clock)
    admin, _ = sessions.sign_in("AKIDADMIN", "admin-secret")
    floods = [sessions.sign_in(KEY, SECRET)[0] for _ in range(MAX_SESSIONS_PER_KEY + 500)]
    assert sessions.get(admin) is not None
    assert len(sessions) == MAX_SESSIONS_PER_KEY + 1
    assert sessions.get(floods[-1]) is not None and sessions.get(floods[0]) is None
    other_db = f"sqlite:///{tmp_path / 'crowd.db'}"
    crowd = Sessions(
        secrets_.get, other_db, max_sessions=3, clock=clock
    )  # the server's limit below the key's
    admin, _ = crowd.sign_in("AKIDADMIN", "admin-secret")
    for _ in range(10):
        crowd.sign_in(KEY, SECRET)
    assert crowd.get(admin) is not None and len(crowd) == 3


def test_guessing_one_key_does_not_lock_the_other_keys_out_from_that_address(
    sessions: Sessions, secrets_: dict[str, str]
) -> None:
    # behind a reverse proxy every user comes from its address: the admin was locked out with the guesser
    secrets_["AKIDADMIN"] = "admin-secret"
    for _ in range(MAX_FAILURES + 2):
        with pytest.raises(SignInRefused):
            sessions.sign_in(KEY, "guess", client="10.0.0.1")
    sessions.sign_in("AKIDADMIN", "admin-secret", client="10.0.0.1")


def test_repeated_wrong_secrets_are_throttled_per_client(sessions: Sessions, clock: Clock) -> None:
    for _ in range(MAX_FAILURES):
        with pytest.raises(SignInRefused):
            sessions.sign_in(KEY, "guess", client="10.0.0.9")
    with pytest.raises(SignInRefused) as refused:
        sessions.sign_in(KEY, SECRET, client="10.0.0.9")  # even the right secret, for now
    assert refused.value.throttled
    sessions.sign_in(KEY, SECRET, client="127.0.0.1")  # another client is not affected
    clock.now += 61
    sessions.sign_in(KEY, SECRET, client="10.0.0.9")


def test_csrf_token_check(sessions: Sessions) -> None:
    _, session = sessions.sign_in(KEY, SECRET)
    assert Sessions.csrf_ok(session, session.csrf_token)
    assert not Sessions.csrf_ok(session, None)
    assert not Sessions.csrf_ok(session, "")
    assert not Sessions.csrf_ok(session, session.csrf_token[:-1] + "x")


def test_front_ends_on_one_database_share_sessions(clock: Clock, secrets_: dict[str, str], db: str) -> None:
    """A browser signed in through one front end is signed in on the other; a sign-out through either ends
    it on both; activity on one keeps it alive on the other; nothing in the table is a usable cookie."""
    a = Sessions(secrets_.get, db, idle_s=60, absolute_s=300, clock=clock)
    b = Sessions(secrets_.get, db, idle_s=60, absolute_s=300, clock=clock)
    sid, session = a.sign_in(KEY, SECRET)
    on_b = b.get(sid)
    assert on_b is not None and on_b.csrf_token == session.csrf_token
    for _ in range(3):
        clock.now += 50
        assert (a if _ % 2 else b).get(sid) is not None  # each use restarts the idle clock for both
    with a._engine.connect() as conn:
        stored = [row[0] for row in conn.execute(select(rows.c.id_digest))]
    assert sid not in stored and len(stored) == 1  # the cookie's value is not kept, only its digest
    b.sign_out(sid)
    assert a.get(sid) is None
