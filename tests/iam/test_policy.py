"""Policy evaluation and sealed secrets as units."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zeroscale.iam.policy import MalformedPolicyDocument, evaluate, parse
from zeroscale.iam.secrets import SecretBox

EP = "arn:aws:sagemaker:us-east-1:000000000000:endpoint/"


def doc(*statements: dict[str, object]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def test_wildcards_case_and_default_deny() -> None:
    st = parse(doc({"Effect": "Allow", "Action": "SageMaker:Invoke*", "Resource": EP + "prod-?"}))
    assert evaluate(st, "sagemaker:InvokeEndpoint", EP + "prod-1") == "allow"
    assert evaluate(st, "sagemaker:InvokeEndpoint", EP + "prod-12") == "implicit"  # ? is one character
    assert evaluate(st, "sagemaker:CreateModel", EP + "prod-1") == "implicit"
    assert evaluate(st, "sagemaker:InvokeEndpoint", EP + "PROD-1") == "implicit"  # resources keep their case
    assert evaluate([], "sagemaker:ListModels", "*") == "implicit"


def test_explicit_deny_wins_and_not_action_not_resource() -> None:
    st = parse(
        doc(
            {"Effect": "Allow", "NotAction": ["iam:*"], "Resource": "*"},
            {"Effect": "Deny", "Action": "sagemaker:Delete*", "NotResource": EP + "scratch-*"},
        )
    )
    assert evaluate(st, "sagemaker:DeleteEndpoint", EP + "prod") == "deny"
    assert evaluate(st, "sagemaker:DeleteEndpoint", EP + "scratch-1") == "allow"
    assert evaluate(st, "iam:CreateUser", "*") == "implicit"
    assert evaluate(st, "logs:GetLogEvents", "*") == "allow"


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "{}",
        doc({"Effect": "Allow", "Action": "*"}),
        doc({"Effect": "Permit", "Action": "*", "Resource": "*"}),
        doc({"Effect": "Allow", "Action": [], "Resource": "*"}),
        doc({"Effect": "Allow", "Action": "*", "NotAction": "x", "Resource": "*"}),
        doc({"Effect": "Allow", "Action": "*", "Resource": "*", "Principal": "*"}),
        doc({"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {}}),
    ],
)
def test_malformed_documents_are_refused(bad: str) -> None:
    with pytest.raises(MalformedPolicyDocument):
        parse(bad)


def test_sealed_secrets_round_trip_and_detect_tampering(tmp_path: Path) -> None:
    box = SecretBox.load_or_create(tmp_path / "iam.key")
    assert oct((tmp_path / "iam.key").stat().st_mode & 0o777) == "0o600"
    sealed = box.seal("s3cr3t/KEY+value")
    assert "s3cr3t" not in sealed and box.open(sealed) == "s3cr3t/KEY+value"
    assert SecretBox.load_or_create(tmp_path / "iam.key").open(sealed) == "s3cr3t/KEY+value"
    flipped = sealed[:30] + ("A" if sealed[30] != "A" else "B") + sealed[31:]
    with pytest.raises(ValueError):
        box.open(flipped)
