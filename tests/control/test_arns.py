from __future__ import annotations

import dataclasses

import pytest

from zeroscale.control import Arns


@pytest.mark.parametrize(
    ("kind", "name", "expected"),
    [
        ("model", "MyModel", "arn:aws:sagemaker:eu-west-1:111122223333:model/mymodel"),
        ("endpoint-config", "Cfg-1", "arn:aws:sagemaker:eu-west-1:111122223333:endpoint-config/cfg-1"),
        ("endpoint", "EP", "arn:aws:sagemaker:eu-west-1:111122223333:endpoint/ep"),
        ("transform-job", "Job-A", "arn:aws:sagemaker:eu-west-1:111122223333:transform-job/job-a"),
    ],
)
def test_arn(kind: str, name: str, expected: str) -> None:
    assert Arns("eu-west-1", "111122223333").arn(kind, name) == expected


def test_frozen() -> None:
    arns = Arns("us-east-1", "000000000000")
    with pytest.raises(dataclasses.FrozenInstanceError):
        arns.region = "x"  # type: ignore[misc]
