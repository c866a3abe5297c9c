"""Policy evaluation and sealed secrets as units."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import pytest

from zeroscale.iam.policy import MalformedPolicyDocument, Wildcard, evaluate, parse, principal
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


def _regex(pattern: str, *, ignore_case: bool) -> re.Pattern[str]:
    """The backtracking translation the matcher replaced (with DOTALL: ``*`` is any characters)."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def test_the_wildcard_matcher_agrees_with_a_regex_on_random_patterns() -> None:
    rng = random.Random(20240611)
    pattern_chars = "ab*?:-A"
    value_chars = "abAB:-\n"
    for _ in range(20000):
        pattern = "".join(rng.choice(pattern_chars) for _ in range(rng.randint(0, 8)))
        value = "".join(rng.choice(value_chars) for _ in range(rng.randint(0, 12)))
        for ignore_case in (False, True):
            expected = _regex(pattern, ignore_case=ignore_case).fullmatch(value) is not None
            got = Wildcard.compile(pattern, ignore_case=ignore_case).matches(value)
            assert got == expected, (pattern, value, ignore_case)


def test_a_wildcard_matches_any_characters_newlines_included() -> None:
    st = parse(doc({"Effect": "Deny", "Action": "sagemaker:*", "Resource": "*"}))
    assert evaluate(st, "sagemaker:DeleteEndpoint", EP + "a\nb") == "deny"
    assert Wildcard.compile("a?b", ignore_case=False).matches("a\nb")


@pytest.mark.parametrize("n", [40_000, 400_000])
def test_a_long_name_costs_linear_time_not_quadratic(n: int) -> None:
    """The audit's case: ``*`` against a name of one repeated separator took 5.9 s at 40,000 characters."""
    st = parse(
        doc(
            {
                "Effect": "Allow",
                "Action": "logs:*",
                "Resource": "arn:aws:logs:*:*:log-group:/aws/sagemaker/Endpoints/open-*",
            }
        )
    )
    hostile = f"arn:aws:logs:us-east-1:000000000000:log-group:x{':' * n}:*"
    started = time.perf_counter()
    assert evaluate(st, "logs:DescribeLogStreams", hostile) == "implicit"
    assert evaluate(st, "logs:" + "Describe" * (n // 8), hostile) == "implicit"
    assert time.perf_counter() - started < 0.1
    near_miss = Wildcard.compile("*a?*a*b", ignore_case=True)
    started = time.perf_counter()
    assert not near_miss.matches("a" * n)
    assert near_miss.matches("a" * n + "B")
    assert time.perf_counter() - started < 0.1
    good = f"arn:aws:logs:us-east-1:000000000000:log-group:/aws/sagemaker/Endpoints/open-{'x' * n}:*"
    assert evaluate(st, "logs:DescribeLogStreams", good) == "allow"


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


ALLOW = {"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"}


REFUSED = [
    # A misspelt element was ignored: the conditional Allow became unconditional.
    (
        doc({**ALLOW, "condition": {"Bool": {"aws:SecureTransport": "true"}}}),
        'unknown element "condition"',
    ),
    (
        doc({**ALLOW, "Conditions": {"Bool": {"aws:SecureTransport": "true"}}}),
        "Condition is not supported",
    ),
    (doc({**ALLOW, "effect": "Deny"}), "did you mean Effect?"),
    (doc({**ALLOW, "Resources": "*"}), "did you mean Resource?"),
    (json.dumps({"Version": "2012-10-17", "Bogus": 1, "Statement": [ALLOW]}), 'unknown element "Bogus"'),
    (json.dumps({"version": "2012-10-17", "Statement": [ALLOW]}), "did you mean Version?"),
    (json.dumps({"Version": "2099-01-01", "Statement": [ALLOW]}), "Version must be 2012-10-17 or"),
    (json.dumps({"Version": 20121017, "Statement": [ALLOW]}), "Version must be"),
    (json.dumps({"Id": 7, "Statement": [ALLOW]}), "Id must be a string"),
    (doc({**ALLOW, "Sid": {"x": 1}}), "Sid must be a string"),
    # Duplicate keys: the stored text said Deny, evaluation used the last one (Allow).
    (
        '{"Statement":[{"Effect":"Deny","Action":"sagemaker:*","Resource":"*","Effect":"Allow"}]}',
        '"Effect" appears more than once',
    ),
    (
        '{"Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}],'
        '"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}',
        '"Statement" appears more than once',
    ),
    ('{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Sid":NaN}]}', "NaN"),
    (doc({**ALLOW, "Action": "*:*"}), 'Action "*:*" must be "*" or "<service>:<action>"'),
    (doc({**ALLOW, "Action": "DescribeEndpoint"}), "must be"),
    (doc({**ALLOW, "Action": "sagemaker:"}), "must be"),
    (doc({**ALLOW, "Action": "sage*:Describe*"}), "must be"),
    (doc({**ALLOW, "Action": None, "NotAction": "iam:*"}), "Action must be a string or a list"),
    (doc({**ALLOW, "Action": ["sagemaker:List*", "iam"]}), 'Action "iam" must be'),
    (doc({**ALLOW, "Resource": "foo"}), 'Resource "foo" must be in ARN format or "*"'),
    (doc({**ALLOW, "Resource": "*:aws:sagemaker:*"}), "must be in ARN format"),
    (
        doc({**ALLOW, "NotResource": ["arn:aws:iam::*", "x"], "Resource": None}),
        "Resource must be a string",
    ),
    (doc({"Effect": "Allow", "Action": "*", "NotResource": "endpoint/x"}), "must be in ARN format"),
    (
        json.dumps(
            {
                "Statement": {
                    "Effect": "Deny",
                    "Action": "iam:*",
                    "NotResource": "arn:aws:iam::000000000000:user/${aws:username}",
                }
            }
        ),
        'Policy variables need "Version": "2012-10-17"',
    ),
    (doc({**ALLOW, "Resource": EP + "${aws:SourceIp}"}), 'Policy variable "${aws:SourceIp}" in Resource'),
    (doc({**ALLOW, "Resource": EP + "a${*}"}), 'Policy variable "${*}" in Resource is not supported'),
    (doc({**ALLOW, "Resource": EP + "${aws:username"}), 'Policy variable "${aws:username" in'),
    (doc({**ALLOW, "Action": "sagemaker:${aws:username}"}), "may only be used in a Resource"),
]


@pytest.mark.parametrize(("bad", "reason"), REFUSED, ids=[reason for _, reason in REFUSED])
def test_what_aws_refuses_is_refused_not_ignored(bad: str, reason: str) -> None:
    with pytest.raises(MalformedPolicyDocument) as refused:
        parse(bad)
    assert reason in str(refused.value)
    assert refused.value.code == "MalformedPolicyDocument"


@pytest.mark.parametrize(
    "good",
    [
        json.dumps({"Statement": ALLOW}),  # no Version: AWS takes it as 2008-10-17
        json.dumps({"Version": "2008-10-17", "Id": "p1", "Statement": [{**ALLOW, "Sid": "Any thing"}]}),
        doc({"Sid": "", "Effect": "Deny", "NotAction": ["*"], "NotResource": ["arn:aws:s3:::b/*", "*"]}),
        doc({"Effect": "Allow", "Action": ["SageMaker:Invoke*", "zeroscale:Get?sage"], "Resource": "arn:*"}),
        doc({"Effect": "Allow", "Action": "application-autoscaling:*", "Resource": "*"}),
    ],
)
def test_well_formed_documents_are_still_accepted(good: str) -> None:
    assert parse(good)


def test_sealed_secrets_round_trip_and_detect_tampering(tmp_path: Path) -> None:
    box = SecretBox.load_or_create(tmp_path / "iam.key")
    assert oct((tmp_path / "iam.key").stat().st_mode & 0o777) == "0o600"
    sealed = box.seal("s3cr3t/KEY+value")
    assert "s3cr3t" not in sealed and box.open(sealed) == "s3cr3t/KEY+value"
    assert SecretBox.load_or_create(tmp_path / "iam.key").open(sealed) == "s3cr3t/KEY+value"
    flipped = sealed[:30] + ("A" if sealed[30] != "A" else "B") + sealed[31:]
    with pytest.raises(ValueError):
        box.open(flipped)


def test_policy_variables_are_the_callers_values() -> None:
    iam = "arn:aws:iam::000000000000:user/"
    document = doc(
        {"Effect": "Allow", "Action": "iam:*AccessKey*", "Resource": iam + "${aws:username}"},
        {"Effect": "Allow", "Action": "sagemaker:*", "Resource": EP + "${AWS:UserName, 'x'}-*"},
        {"Effect": "Deny", "Action": "sagemaker:Delete*", "NotResource": EP + "${aws:userid}-scratch"},
    )
    gina = parse(document, principal("gina", "AIDAGINA"))
    assert evaluate(gina, "iam:CreateAccessKey", iam + "gina") == "allow"
    assert evaluate(gina, "iam:CreateAccessKey", iam + "bob") == "implicit"
    assert evaluate(gina, "iam:CreateAccessKey", iam + "${aws:username}") == "implicit"  # never as text
    assert evaluate(gina, "sagemaker:InvokeEndpoint", EP + "gina-1") == "allow"
    assert evaluate(gina, "sagemaker:DeleteEndpoint", EP + "gina-1") == "deny"
    assert evaluate(gina, "sagemaker:DeleteEndpoint", EP + "AIDAGINA-scratch") == "implicit"
    bob = parse(document, principal("bob", "AIDABOB"))
    assert evaluate(bob, "iam:CreateAccessKey", iam + "bob") == "allow"
    assert evaluate(bob, "sagemaker:InvokeEndpoint", EP + "gina-1") == "implicit"
    parse(document)  # checked without a caller (nothing is substituted)
    with pytest.raises(MalformedPolicyDocument, match="no usable value"):
        parse(document, principal("a*", "AIDA"))  # a value would be a wildcard
