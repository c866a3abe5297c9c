"""Which entries of the artifact cache go when it holds more than its capacity: a pure policy.

An entry in use (a pool's, a cached template's, a deployment's still starting) is never chosen, nor one kept
for a grace period (a directory handed to a caller without a hold, which has not yet made a pool of it). The
rest go least recently used first, until what is left fits; what is in use may alone exceed the capacity.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass


@dataclass
class Entry:
    """One cached model: the bytes of its files, when it was last handed out, and until when it is kept
    whatever uses it (wall-clock seconds)."""

    bytes: int
    used: float
    kept_until: float = 0.0


def victims(
    entries: Mapping[str, Entry],
    capacity_bytes: int,
    keep: Container[str],
    *,
    now: float,
) -> list[str]:
    """The entries (sha256s) to evict, least recently used first, so that the rest fit ``capacity_bytes``."""
    total = sum(entry.bytes for entry in entries.values())
    chosen: list[str] = []
    for sha, entry in sorted(entries.items(), key=lambda item: (item[1].used, item[0])):
        if total <= capacity_bytes:
            break
        if sha in keep or entry.kept_until > now:
            continue
        chosen.append(sha)
        total -= entry.bytes
    return chosen
