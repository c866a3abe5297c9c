"""The policy of a Ray node's unpacked images (``workers/imagecap.py``): what goes, what never does, and
when a new image does not fit."""

from __future__ import annotations

from zeroscale.workers.imagecap import NodeImage, Plan, plan

HOUR = 3600.0
NOW = 10 * HOUR


def _images(**used_ago: tuple[int, float]) -> dict[str, NodeImage]:
    """name=(bytes, seconds since its last use)."""
    return {name: NodeImage(size, NOW - ago) for name, (size, ago) in used_ago.items()}


def _plan(images: dict[str, NodeImage], held: set[str], cap: int, adding: int = 0) -> Plan:
    return plan(images, held, cap_bytes=cap, keep_s=HOUR, now=NOW, adding=adding)


def test_without_a_cap_only_images_unused_for_keep_s_go() -> None:
    images = _images(old=(500, HOUR), recent=(900, HOUR - 1), held_old=(700, 2 * HOUR))
    assert _plan(images, {"held_old"}, cap=0, adding=10**12) == Plan(["old"], True, 700)


def test_the_least_recently_used_unheld_images_go_until_the_new_one_fits() -> None:
    images = _images(a=(400, 30), b=(300, 20), c=(200, 10), running=(100, 40))
    # 1000 held of a cap of 1000; 250 more: a (the oldest unheld) is enough
    assert _plan(images, {"running"}, cap=1000, adding=250) == Plan(["a"], True, 100)
    # 650 more: a and b
    assert _plan(images, {"running"}, cap=1000, adding=650) == Plan(["a", "b"], True, 100)
    # exactly the cap left: nothing goes
    assert _plan(images, {"running"}, cap=1250) == Plan([], True, 100)
    # a periodic trim (nothing added) over the cap
    assert _plan(images, {"running"}, cap=700) == Plan(["a"], True, 100)


def test_expired_images_go_first_and_count_toward_the_room() -> None:
    images = _images(stale=(600, 2 * HOUR), a=(300, 20), b=(300, 10))
    assert _plan(images, set(), cap=1000, adding=400) == Plan(["stale"], True, 0)
    assert _plan(images, set(), cap=1000, adding=500) == Plan(["stale", "a"], True, 0)


def test_an_image_in_use_never_goes_and_a_new_one_that_cannot_fit_beside_them_is_refused() -> None:
    images = _images(x=(600, 2 * HOUR), y=(300, 10), idle=(50, 5), stale=(10, 2 * HOUR))
    held = {"x", "y"}
    # 900 held of 1000: 101 more cannot fit whatever goes; only the expired go, not the idle one
    assert _plan(images, held, cap=1000, adding=101) == Plan(["stale"], False, 900)
    # 100 more fit once the idle and stale ones go
    assert _plan(images, held, cap=1000, adding=100) == Plan(["stale", "idle"], True, 900)
    # held alone past the cap (a cap lowered since): they stay, every other goes
    assert _plan(images, held, cap=500) == Plan(["stale", "idle"], False, 900)


def test_an_image_larger_than_the_cap_alone_is_refused_on_an_empty_node() -> None:
    assert _plan({}, set(), cap=1000, adding=1001) == Plan([], False, 0)
    assert _plan({}, set(), cap=1000, adding=1000) == Plan([], True, 0)
