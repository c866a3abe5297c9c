"""The control plane's rate per access key (``api/throttle.py``): a token bucket per key, with the clock
passed in."""

from __future__ import annotations

import pytest

from zeroscale.api.throttle import KeyRates
from zeroscale.errors import Throttling


def test_a_burst_then_the_rate() -> None:
    rates = KeyRates(rate=2.0, burst=3)
    assert [rates.wait_s("k", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rates.wait_s("k", 100.0) == pytest.approx(0.5)  # the next token in half a second
    assert rates.wait_s("k", 100.25) == pytest.approx(0.25)  # a refused call takes nothing
    assert rates.wait_s("k", 100.5) == 0.0
    assert rates.wait_s("k", 100.5) > 0.0
    # Idle for long, a key has its burst again, never more.
    assert [rates.wait_s("k", 1000.0) for _ in range(4)][-2:] == [0.0, pytest.approx(0.5)]


def test_keys_are_counted_apart_and_the_exempt_never_waits() -> None:
    rates = KeyRates(rate=1.0, burst=1, exempt={"admin"})
    assert rates.wait_s("a", 0.0) == 0.0
    assert rates.wait_s("a", 0.0) > 0.0
    assert rates.wait_s("b", 0.0) == 0.0
    assert all(rates.wait_s("admin", 0.0) == 0.0 for _ in range(1000))


def test_sustained_calls_at_the_rate_all_pass_and_faster_ones_are_held_to_it() -> None:
    rates = KeyRates(rate=10.0, burst=1)
    assert all(rates.wait_s("k", i * 0.1) == 0.0 for i in range(100))
    passed = sum(rates.wait_s("k", 10.0 + i * 0.01) == 0.0 for i in range(1000))  # 100 a second for 10 s
    assert 99 <= passed <= 101


def test_the_refusal_says_what_and_when() -> None:
    rates = KeyRates(rate=5.0, burst=1)
    rates.check("AKIAEXAMPLE", 0.0)
    with pytest.raises(Throttling) as err:
        rates.check("AKIAEXAMPLE", 0.0, code="Throttling")
    assert err.value.code == "Throttling" and err.value.status == 400
    assert err.value.message.startswith("Rate exceeded: access key AKIAEXAMPLE may make 5 control-plane")
    assert "retry in 0.20 s" in err.value.message
