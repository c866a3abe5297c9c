"""The IAM store with a real SQLite database: policies stored by an older, laxer version."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from sqlalchemy import update

from zeroscale.iam.policy import MalformedPolicyDocument, evaluate
from zeroscale.iam.secrets import SecretBox
from zeroscale.iam.store import IamStore, policies

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
