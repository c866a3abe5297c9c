"""The Prometheus text format (0.0.4) of ``Metrics``' per-variant series and gauges, written for its arrays.

It prints what prometheus_client's ``generate_latest`` prints for the collectors in ``registry``, byte for
byte (``tests/metrics/test_text.py``): the same families in the same order, HELP and TYPE lines, ``_total``
and ``_created`` samples, histograms' ``_bucket``, ``_count`` and ``_sum``, labels sorted by name. It is
about ten times cheaper: each variant's label strings are escaped once per scrape, a histogram is one
``str.format`` of a template made once per family, and a histogram with no observation (most of them on a
server with many idle endpoints) takes its values from a constant.

The work is split so that the formatting can leave the event loop: ``snapshot`` (on the loop) copies one
variant's figures, a microsecond or two; ``render`` reads nothing but its arguments and may run in a thread.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeAlias

from prometheus_client import utils

from zeroscale.metrics.load import PoolLoad, by_variant
from zeroscale.metrics.series import (
    BATCH_COUNTERS,
    BATCHED,
    BUCKETS,
    COUNTERS,
    EXITS,
    GAUGES,
    HISTOGRAMS,
    LATER_COUNTERS,
    MODEL_COUNTERS,
    MODEL_HISTOGRAMS,
    PROVISIONED_COUNTERS,
    UPPER,
    Series,
    gauge_values,
)

floatToGoString: Callable[[float], str] = utils.floatToGoString  # how prometheus_client prints a value


# What a variant's series held when the scrape took it (copied on the event loop): its key, its counts and
# its multi-model figures as bytes, its exits (reason, (count, created)), created, shown. A tuple of strings,
# numbers and bytes only, which the garbage collector stops tracking at its first pass (an array would keep it
# tracked), so that a big scrape's copies do not pile up in the collector's oldest generation and bring on a
# full collection, which holds the interpreter for 100 ms or more on a server with 10,000 endpoints.
Exits: TypeAlias = tuple[tuple[str, tuple[float, float]], ...]
Snapshot: TypeAlias = tuple[tuple[str, str], bytes, bytes | None, Exits, float, bool]
# A pool's load as a plain tuple of PoolLoad's fields (endpoint and variant first), for the same reason.
LoadRow: TypeAlias = tuple[Any, ...]
_FIELDS = operator.attrgetter(*(field.name for field in dataclasses.fields(PoolLoad)))


def load_row(load: PoolLoad) -> LoadRow:
    row: LoadRow = _FIELDS(load)
    return row


def escape(value: str) -> str:
    """A label value, as prometheus_client escapes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _help(name: str, doc: str) -> str:
    return "# HELP {} {}\n".format(name, doc.replace("\\", r"\\").replace("\n", r"\n"))


def _heads(name: str, doc: str, kind: str) -> tuple[str, str]:
    """A family's HELP and TYPE lines, and those of its ``_created`` samples (printed after the others)."""
    shown = f"{name}_total" if kind == "counter" else name
    return (
        f"{_help(shown, doc)}# TYPE {shown} {kind}\n",
        f"{_help(name + '_created', doc)}# TYPE {name}_created gauge\n",
    )


# Every family of the series, in the order registry._SeriesCollector yields them.
_FAMILIES: tuple[tuple[str, str], ...] = (
    *(_heads(name, doc, "counter") for name, doc, _ in COUNTERS),
    *(_heads(name, doc, "histogram") for name, doc, _ in HISTOGRAMS),
    *(_heads(name, doc, "counter") for name, doc, _ in MODEL_COUNTERS),
    *(_heads(name, doc, "histogram") for name, doc, _ in MODEL_HISTOGRAMS),
    *(_heads(name, doc, "counter") for name, doc, _ in LATER_COUNTERS),
    _heads(*EXITS, "counter"),
    *(_heads(name, doc, "counter") for name, doc, _ in PROVISIONED_COUNTERS),
    *(_heads(name, doc, "counter") for name, doc, _ in BATCH_COUNTERS),
)
_GAUGE_HEADS = tuple(f"{_help(name, doc)}# TYPE {name} gauge\n" for name, doc in GAUGES)
_ENCODE_CHUNK = 1000  # lines (a histogram's: one per variant, about 2 KB) encoded at a time
_SMALL = {float(i): floatToGoString(float(i)) for i in range(1000)}  # most counts


def number(value: float) -> str:
    """A sample's value, as prometheus_client prints it (Go's formatting of a float64)."""
    return _SMALL.get(value) or floatToGoString(value)


def _histogram_template(name: str) -> str:
    """A histogram's lines for one variant, for ``str.format``: its labels as ``e`` and ``v`` (endpoint and
    variant, escaped), the cumulative buckets as 0-17, then the count and the sum."""
    lines = [f'{name}_bucket{{{{{{e}},le="{le}",{{v}}}}}} {{{i}}}\n' for i, le in enumerate(UPPER)]
    lines.append(name + "_count{{{e},{v}}} {" + str(BUCKETS) + "}\n")
    lines.append(name + "_sum{{{e},{v}}} {" + str(BUCKETS + 1) + "}\n")
    return "".join(lines)


_TEMPLATES = {name: _histogram_template(name) for name, _, _ in (*HISTOGRAMS, *MODEL_HISTOGRAMS)}
_EMPTY = ("0.0",) * (BUCKETS + 1)  # the buckets and the count of a histogram with no observation


def snapshot(key: tuple[str, str], series: Series) -> Snapshot:
    """On the event loop: a copy of one variant's figures."""
    models = series.models
    copied = models.tobytes() if models is not None else None
    return (key, series.counts.tobytes(), copied, tuple(series.exits.items()), series.created, series.shown)


def render(rows: Iterable[Snapshot], loads: Iterable[LoadRow], tail: bytes = b"") -> bytes:
    """The series' families, then the gauges', then ``tail`` (in any thread: it reads nothing but its
    arguments). The text is encoded a few megabytes at a time and joined as bytes, which lets the event loop
    run meanwhile: bytes.join of large buffers releases the GIL, one join and encode of it all would not."""
    lines: list[list[str]] = [[] for _ in range(2 * len(_FAMILIES))]
    for row in rows:
        _render_series(row, lines)
    parts: list[bytes] = []
    for i, (head, created_head) in enumerate(_FAMILIES):
        parts.append(head.encode())
        parts += _encoded(lines[2 * i])
        if lines[2 * i + 1]:
            parts.append(created_head.encode())
            parts += _encoded(lines[2 * i + 1])
    parts += _encoded(render_gauges(loads))
    parts.append(tail)
    return b"".join(parts)


def _encoded(lines: list[str]) -> Iterator[bytes]:
    for start in range(0, len(lines), _ENCODE_CHUNK):
        yield "".join(lines[start : start + _ENCODE_CHUNK]).encode()


def _render_series(s: Snapshot, out: list[list[str]]) -> None:
    """One variant's lines, appended to each family's samples and _created samples (``out``, in pairs)."""
    (endpoint, variant), counts_bytes, models_bytes, exits, since, shown = s
    counts = _floats(counts_bytes)
    models = _floats(models_bytes) if models_bytes is not None else None
    e = f'endpoint_name="{escape(endpoint)}"'
    v = f'variant_name="{escape(variant)}"'
    labels = f"{{{e},{v}}}"
    created = f"_created{labels} {floatToGoString(since)}\n"
    at_family = iter(out)
    for name, _, at in COUNTERS:
        next(at_family).append(f"{name}_total{labels} {number(counts[at])}\n")
        next(at_family).append(name + created)
    for name, _, at in HISTOGRAMS:
        next(at_family).append(_histogram(name, e, v, counts, at))
        next(at_family).append(name + created)
    for name, _, at in MODEL_COUNTERS:
        samples, created_samples = next(at_family), next(at_family)
        if models is not None:
            samples.append(f"{name}_total{labels} {number(models[at])}\n")
            created_samples.append(name + created)
    for name, _, at in MODEL_HISTOGRAMS:
        samples, created_samples = next(at_family), next(at_family)
        if models is not None:
            samples.append(_histogram(name, e, v, models, at))
            created_samples.append(name + created)
    for name, _, at in LATER_COUNTERS:
        next(at_family).append(f"{name}_total{labels} {number(counts[at])}\n")
        next(at_family).append(name + created)
    name = EXITS[0]
    samples, created_samples = next(at_family), next(at_family)
    for reason, (count, when) in exits:
        reason_labels = f'{{{e},reason="{escape(reason)}",{v}}}'
        samples.append(f"{name}_total{reason_labels} {number(count)}\n")
        created_samples.append(f"{name}_created{reason_labels} {floatToGoString(when)}\n")
    for name, _, at in PROVISIONED_COUNTERS:
        samples, created_samples = next(at_family), next(at_family)
        if shown:
            samples.append(f"{name}_total{labels} {number(counts[at])}\n")
            created_samples.append(name + created)
    batched = counts[BATCHED] > 0
    for name, _, at in BATCH_COUNTERS:
        samples, created_samples = next(at_family), next(at_family)
        if batched:
            samples.append(f"{name}_total{labels} {number(counts[at])}\n")
            created_samples.append(name + created)


def _floats(figures: bytes) -> array[float]:
    out = array("d")
    out.frombytes(figures)
    return out


def _histogram(name: str, e: str, v: str, counts: array[float], at: int) -> str:
    if counts[at + BUCKETS + 1]:
        values = [number(total) for total in itertools.accumulate(counts[at : at + BUCKETS])]
        values.append(values[-1])  # the count is the +Inf bucket, as prometheus_client prints it
    else:
        values = list(_EMPTY)
    values.append(number(counts[at + BUCKETS]))
    return _TEMPLATES[name].format(*values, e=e, v=v)


def render_gauges(loads: Iterable[LoadRow]) -> list[str]:
    """The gauges of what the pools are doing now, one per variant (summed over its pools): their lines.
    Each variant's PoolLoads and VariantLoad are made and dropped in turn, for the garbage collector."""
    groups: dict[tuple[str, str], tuple[LoadRow, ...]] = {}
    for row in loads:
        key = (row[0], row[1])
        groups[key] = (*groups.get(key, ()), row)
    families: list[list[str]] = [[] for _ in GAUGES]
    for group in groups.values():
        (load,) = by_variant([PoolLoad(*row) for row in group])
        labels = f'{{endpoint_name="{escape(load.endpoint)}",variant_name="{escape(load.variant)}"}}'
        for (name, _), lines, value in zip(GAUGES, families, gauge_values(load), strict=True):
            if value is not None:
                lines.append(f"{name}{labels} {number(value)}\n")
    out: list[str] = []
    for head, lines in zip(_GAUGE_HEADS, families, strict=True):
        out.append(head)
        out += lines
    return out
