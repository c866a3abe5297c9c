"""The Prometheus text format (0.0.4) of ``Metrics``' per-variant series and gauges, written for its arrays.

It prints what prometheus_client's ``generate_latest`` prints for the collectors in ``registry``, byte for
byte (``tests/metrics/test_text.py``): the same families in the same order, HELP and TYPE lines, ``_total``
and ``_created`` samples, histograms' ``_bucket``, ``_count`` and ``_sum``, labels sorted by name. It is
about ten times cheaper: each variant's label strings are escaped once per scrape, a histogram is one
``str.format`` of a template made once per family, and a histogram with no observation (most of them on a
server with many idle endpoints) takes its values from a constant.

The work is split so that the formatting can leave the event loop: ``snapshot`` (on the loop) copies one
variant's figures, a microsecond or two; ``pieces`` reads nothing but its arguments, may run in a thread,
and prints the text a piece at a time (a scrape holds a piece, not the whole text: 87 MB at 10,000
endpoints).
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
import struct
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
ROWS_AT_ONCE = 1000  # variants printed into one string of a family's samples (a histogram's: ~2 KB each)
PIECE_CHARS = 1 << 20  # the text is handed on in pieces of about this many characters
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
    """The whole text at once (``pieces`` joined)."""
    return b"".join(pieces(rows, loads, tail))


def pieces(rows: Iterable[Snapshot], loads: Iterable[LoadRow], tail: bytes = b"") -> Iterator[bytes]:
    """The text in pieces of about ``PIECE_CHARS`` (in any thread: it reads nothing but its arguments, and
    does nothing until its first piece is asked for): the
    series' families, then the gauges', then ``tail``. Printed a family at a time over ``ROWS_AT_ONCE``
    variants at a time, so that what a scrape holds at once does not grow with the endpoints: the whole
    text of 10,000 endpoints (87 MB, and its lines as strings) built at once left the server's resident
    set 130 MB larger after each of its first scrapes, kept by the allocator of the thread that printed it."""
    variants = [_variant(row) for row in rows]
    yield from _joined(itertools.chain(_series_text(variants), render_gauges(loads)), tail)


def _joined(texts: Iterable[str], tail: bytes) -> Iterator[bytes]:
    held: list[str] = []
    size = 0
    for text in texts:
        held.append(text)
        size += len(text)
        if size >= PIECE_CHARS:
            yield "".join(held).encode()
            held.clear()
            size = 0
    yield "".join(held).encode() + tail


def _series_text(variants: list[_Variant]) -> Iterator[str]:
    for (head, created_head), (samples, created) in zip(_FAMILIES, _PRINTERS, strict=True):
        yield head
        printed = False  # a family's _created samples (and their heads) are there when its samples are
        for start in range(0, len(variants), ROWS_AT_ONCE):
            text = "".join([samples(each) for each in variants[start : start + ROWS_AT_ONCE]])
            printed = printed or bool(text)
            yield text
        if printed:
            yield created_head
            for start in range(0, len(variants), ROWS_AT_ONCE):
                yield "".join([created(each) for each in variants[start : start + ROWS_AT_ONCE]])


# One variant's snapshot, ready to print: its labels escaped once (endpoint_name="...", variant_name="...",
# both in braces, and the _created sample's tail), then the snapshot's counts, models, exits and shown. A
# plain tuple of strings, bytes and numbers, as the snapshot is: a scrape of 10,000 endpoints holds one each
# while it prints, and 10,000 objects that the garbage collector keeps tracking (a named tuple, a
# memoryview) brought on collections that held the event loop for 80 ms.
_Variant: TypeAlias = tuple[str, str, str, str, bytes, bytes | None, Exits, bool]


def _variant(s: Snapshot) -> _Variant:
    (endpoint, variant), counts, models, exits, since, shown = s
    e = f'endpoint_name="{escape(endpoint)}"'
    v = f'variant_name="{escape(variant)}"'
    labels = f"{{{e},{v}}}"
    return (e, v, labels, f"_created{labels} {floatToGoString(since)}\n", counts, models, exits, shown)


_VALUE = struct.Struct("d")
_HISTOGRAM = struct.Struct(f"{BUCKETS + 2}d")  # a histogram's figures: its buckets, sum and count


def _value(figures: bytes, at: int) -> float:
    value: float = _VALUE.unpack_from(figures, 8 * at)[0]
    return value


# How a family prints one variant: its samples, and its _created samples ("" for none).
Printer: TypeAlias = Callable[[_Variant], str]


def _counter(name: str, at: int, when: Callable[[_Variant], bool] | None = None) -> tuple[Printer, Printer]:
    def samples(x: _Variant) -> str:
        return f"{name}_total{x[2]} {number(_value(x[4], at))}\n" if when is None or when(x) else ""

    def created(x: _Variant) -> str:
        return name + x[3] if when is None or when(x) else ""

    return samples, created


def _model_counter(name: str, at: int) -> tuple[Printer, Printer]:
    def samples(x: _Variant) -> str:
        models = x[5]
        return f"{name}_total{x[2]} {number(_value(models, at))}\n" if models is not None else ""

    def created(x: _Variant) -> str:
        return name + x[3] if x[5] is not None else ""

    return samples, created


def _histograms(name: str, at: int, *, models: bool) -> tuple[Printer, Printer]:
    def samples(x: _Variant) -> str:
        figures = x[5] if models else x[4]
        return "" if figures is None else _histogram(name, x[0], x[1], figures, at)

    def created(x: _Variant) -> str:
        return name + x[3] if not models or x[5] is not None else ""

    return samples, created


def _exits(name: str) -> tuple[Printer, Printer]:
    def labels(x: _Variant, reason: str) -> str:
        return f'{{{x[0]},reason="{escape(reason)}",{x[1]}}}'

    def samples(x: _Variant) -> str:
        return "".join(f"{name}_total{labels(x, r)} {number(count)}\n" for r, (count, _) in x[6])

    def created(x: _Variant) -> str:
        return "".join(f"{name}_created{labels(x, r)} {floatToGoString(when)}\n" for r, (_, when) in x[6])

    return samples, created


def _shown(x: _Variant) -> bool:
    return x[7]


def _batched(x: _Variant) -> bool:
    return _value(x[4], BATCHED) > 0


# Each family's printers, in the order of ``_FAMILIES``.
_PRINTERS: tuple[tuple[Printer, Printer], ...] = (
    *(_counter(name, at) for name, _, at in COUNTERS),
    *(_histograms(name, at, models=False) for name, _, at in HISTOGRAMS),
    *(_model_counter(name, at) for name, _, at in MODEL_COUNTERS),
    *(_histograms(name, at, models=True) for name, _, at in MODEL_HISTOGRAMS),
    *(_counter(name, at) for name, _, at in LATER_COUNTERS),
    _exits(EXITS[0]),
    *(_counter(name, at, _shown) for name, _, at in PROVISIONED_COUNTERS),
    *(_counter(name, at, _batched) for name, _, at in BATCH_COUNTERS),
)


def _histogram(name: str, e: str, v: str, figures: bytes, at: int) -> str:
    counts = _HISTOGRAM.unpack_from(figures, 8 * at)
    if counts[BUCKETS + 1]:
        values = [number(total) for total in itertools.accumulate(counts[:BUCKETS])]
        values.append(values[-1])  # the count is the +Inf bucket, as prometheus_client prints it
    else:
        values = list(_EMPTY)
    values.append(number(counts[BUCKETS]))
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
