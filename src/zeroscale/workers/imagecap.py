"""Which of a Ray node's unpacked bring-your-own images go: a pure policy (``nodeimages.py`` applies it).

An image a worker holds (any front end's agent on the node) is never chosen. Of the others, those no worker
has started with for ``keep_s`` go whatever the room; then, with a cap, the least recently used go until
what stays, and the image about to be unpacked (``adding`` bytes), fit the cap. When a new image cannot fit
even with every unheld image gone (the held ones, with it, are past the cap), nothing more is removed for it
(that would free room for a refusal) and the plan says it does not fit: the caller refuses the new image
rather than overfill the node's disk. A trim with nothing to add removes every unheld image when the held
ones alone are past the cap (a cap lowered since they started), and says it does not fit.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass

from zeroscale.artifacts.eviction import Entry, victims


@dataclass(frozen=True)
class NodeImage:
    """One unpacked image: the bytes of its files, and when a worker last started with it (wall-clock s)."""

    bytes: int
    used: float


@dataclass(frozen=True)
class Plan:
    remove: list[str]  # the images to remove (content digests): the expired first, then least recently used
    fits: bool  # whether what stays, with the image being added, is within the cap
    held_bytes: int  # what the images in use take (they stay)


def plan(
    images: Mapping[str, NodeImage],
    held: Container[str],
    *,
    cap_bytes: int,
    keep_s: float,
    now: float,
    adding: int = 0,
) -> Plan:
    """What to remove of ``images`` (by digest) so that, with ``adding`` more bytes, they fit ``cap_bytes``
    (0: no cap), never one in ``held``; and those unused for ``keep_s``."""
    expired = sorted(d for d, image in images.items() if d not in held and now - image.used >= keep_s)
    staying = {d: Entry(image.bytes, image.used) for d, image in images.items() if d not in expired}
    held_bytes = sum(image.bytes for d, image in images.items() if d in held)
    if not cap_bytes:
        return Plan(expired, True, held_bytes)
    if adding and held_bytes + adding > cap_bytes:  # refused whatever goes: no room is made for it
        return Plan(expired, False, held_bytes)
    evicted = victims(staying, cap_bytes - adding, held, now=now)
    left = sum(entry.bytes for d, entry in staying.items() if d not in evicted)
    return Plan(expired + evicted, left + adding <= cap_bytes, held_bytes)
