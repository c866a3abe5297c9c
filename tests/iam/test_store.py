"""The IAM store with real databases: policies stored by an older, laxer version; two front ends on one
database; one policy put through two front ends at once (PostgreSQL)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, select, update

from heldtx import beside_a_held_transaction
from pgserver import PostgresServer
from zeroscale.iam.policy import MalformedPolicyDocument, evaluate
from zeroscale.iam.secrets import KeyMismatch, SecretBox
from zeroscale.iam.store import IamStore, policies, state

EP = "arn:aws:sagemaker:us-east-1:000000000000:endpoint/e"
ALLOW = {"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"}


def test_a_stored_policy_the_checks_now_refuse_denies_everything_and_the_server_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'iam.db'}"
    box = SecretBox.load_or_create(tmp_path / "iam.key")
    store = IamStore(url, box)
    user = store.create_user("gina", "/")
    store.put_policy(user, "open", json.dumps({"Statement": [ALLOW]}))
    store.put_policy(user, "conditional", json.dumps({"Statement": [ALLOW]}))
    with pytest.raises(MalformedPolicyDocument):  # refused now, nothing stored
        store.put_policy(user, "bad", json.dumps({"Statement": [{**ALLOW, "condition": {}}]}))
    assert set(user.policies) == {"open", "conditional"}
    # What an older version accepted and stored: a misspelt condition, ignored then.
    laxer = json.dumps({"Statement": [{**ALLOW, "condition": {"Bool": {"aws:SecureTransport": "true"}}}]})
    with store._engine.begin() as conn:
        conn.execute(update(policies).where(policies.c.policy_name == "conditional").values(document=laxer))
    store.close()

    with caplog.at_level(logging.ERROR, logger="zeroscale.iam"):
        store = IamStore(url, box)  # starts all the same
    user = store.users["gina"]
    assert "IAM user gina: the stored policy conditional is refused" in caplog.text
    assert user.policies["conditional"] == laxer  # still readable with GetUserPolicy
    assert evaluate(user.compiled, "sagemaker:InvokeEndpoint", EP) == "deny"
    store.put_policy(user, "other", json.dumps({"Statement": [ALLOW]}))
    assert evaluate(user.compiled, "sagemaker:InvokeEndpoint", EP) == "deny"  # until it is fixed
    store.put_policy(user, "conditional", json.dumps({"Statement": [ALLOW]}))
    assert evaluate(user.compiled, "sagemaker:InvokeEndpoint", EP) == "allow"
    store.close()


def test_front_ends_on_one_database_see_each_others_writes_and_share_one_key(tmp_path: Path) -> None:
    """Two stores (two front ends) on one database: what one writes reaches the other's mirror at its next
    ``refresh`` (a key deleted there is gone here too); a store's own writes keep its mirror current
    without a reload; a store with another key is refused by name before it reads a secret."""
    url = f"sqlite:///{tmp_path / 'iam.db'}"
    key = tmp_path / "shared.key"
    a = IamStore(url, SecretBox.load_or_create(key))
    b = IamStore(url, SecretBox.load_or_create(key))
    user = a.create_user("hana", "/")
    a.put_policy(user, "all", json.dumps({"Statement": [ALLOW]}))
    made = a.create_key("hana")
    assert not a.refresh()  # its own writes: nothing to read again
    assert "hana" not in b.users
    assert b.refresh()
    assert b.keys[made.access_key_id].secret == made.secret
    assert evaluate(b.users["hana"].compiled, "sagemaker:InvokeEndpoint", EP) == "allow"
    assert not b.refresh()
    compiled = b.users["hana"].compiled
    a.create_user("other", "/")
    assert b.refresh() and b.users["hana"].compiled is compiled  # unchanged: not compiled again
    a.delete_key(made.access_key_id)
    a.delete_policy(a.users["hana"], "all")
    assert b.refresh()
    assert made.access_key_id not in b.keys
    assert evaluate(b.users["hana"].compiled, "sagemaker:InvokeEndpoint", EP) == "implicit"
    b.put_policy(b.users["hana"], "back", json.dumps({"Statement": [ALLOW]}))  # and the other way
    assert a.refresh() and set(a.users["hana"].policies) == {"back"}

    other = tmp_path / "other.key"
    with pytest.raises(KeyMismatch) as refused:
        IamStore(url, SecretBox.load_or_create(other), key_path=f"--iam-key-file {other}")
    assert str(refused.value).startswith(
        f"--iam-key-file {other} is not the key the database's IAM access keys were sealed with"
    )
    for store in (a, b):
        store.close()


def test_a_database_from_before_the_key_check_takes_the_key_its_secrets_open_with(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'iam.db'}"
    key = tmp_path / "iam.key"
    old = IamStore(url, SecretBox.load_or_create(key))
    old.create_user("ines", "/")
    secret = old.create_key("ines").secret
    with old._engine.begin() as conn:  # as a version that kept no check left it
        conn.execute(update(state).values(key_check=None))
    old.close()
    with pytest.raises(KeyMismatch):  # its secrets do not open with another key
        IamStore(url, SecretBox.load_or_create(tmp_path / "new.key"))
    again = IamStore(url, SecretBox.load_or_create(key))
    assert [k.secret for k in again.keys.values()] == [secret]
    again.close()
    with pytest.raises(KeyMismatch):  # the check is kept now, secrets or not
        IamStore(url, SecretBox.load_or_create(tmp_path / "new.key"))


def test_one_policy_put_at_once_through_two_front_ends_is_stored_not_refused(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """Two front ends on one PostgreSQL put the same new inline policy at the same moment: each finds no
    row to update and inserts one; the second insert waits for the first transaction, then meets its row.
    It is then an update (the last put wins, as on AWS), not an error."""
    url = postgres.create_database()
    key = tmp_path / "shared.key"
    a = IamStore(url, SecretBox.load_or_create(key))
    user = a.create_user("ines", "/")
    first = json.dumps({"Statement": [{**ALLOW, "Action": "sagemaker:Describe*"}]})
    second = json.dumps({"Statement": [ALLOW]})
    theirs = [insert(policies).values(user_name="ines", policy_name="p", document=first)]
    beside_a_held_transaction(url, theirs, lambda: a.put_policy(user, "p", second))
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(select(policies.c.document).where(policies.c.policy_name == "p")).scalar()
    assert stored == second and user.policies["p"] == second
    engine.dispose()
    a.close()
