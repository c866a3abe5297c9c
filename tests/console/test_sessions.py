"""Console sessions with a fake clock: sign-in, expiry (idle and absolute), rotated secrets, sign-out,
throttled guessing, CSRF tokens."""

from __future__ import annotations

import pytest

from zeroscale.console.sessions import MAX_FAILURES, MAX_SESSIONS_PER_KEY, Sessions, SignInRefused

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
def sessions(clock: Clock, secrets_: dict[str, str]) -> Sessions:
    return Sessions(secrets_.get, idle_s=60, absolute_s=300, max_sessions=3, clock=clock)


def test_sign_in_with_the_right_secret_gives_a_session(sessions: Sessions) -> None:
    sid, session = sessions.sign_in(KEY, SECRET)
    assert session.access_key_id == KEY
    assert sessions.get(sid) is session
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
    sid, session = sessions.sign_in(KEY, SECRET)
    for _ in range(5):
        clock.now += 59
        assert sessions.get(sid) is not None
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
    clock: Clock, secrets_: dict[str, str]
) -> None:
    """A key that signs in over and over (any holder of a valid key can) ends its own oldest sessions,
    never another key's: at the server's limit the key holding the most loses its oldest."""
    secrets_["AKIDADMIN"] = "admin-secret"
    sessions = Sessions(secrets_.get, max_sessions=50, clock=clock)
    admin, _ = sessions.sign_in("AKIDADMIN", "admin-secret")
    floods = [sessions.sign_in(KEY, SECRET)[0] for _ in range(MAX_SESSIONS_PER_KEY + 500)]
    assert sessions.get(admin) is not None
    assert len(sessions) == MAX_SESSIONS_PER_KEY + 1
    assert sessions.get(floods[-1]) is not None and sessions.get(floods[0]) is None
    crowd = Sessions(secrets_.get, max_sessions=3, clock=clock)  # the server's limit below the key's
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
