"""Test doubles shared by the control-plane tests."""

from __future__ import annotations

REGION = "us-west-2"
ACCOUNT = "123456789012"


class FakeClock:
    """A settable clock: each call returns ``now``; ``advance`` moves it."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def arn(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{name.lower()}"
