"""The Prometheus text format (0.0.4) of ``Metrics``' per-variant series and gauges, written for its arrays.

It prints what prometheus_client's ``generate_latest`` prints for the collectors in ``registry``, byte for
byte (``tests/metrics/test_text.py``): the same families in the same order, HELP and TYPE lines, ``_total``
and ``_created`` samples, histograms' ``_bucket``, ``_count`` and ``_sum``, labels sorted by name. It costs
less in two ways:

- each variant's text is rendered once per change. A variant's lines are kept with the ``Series.version``
  they were rendered at, and a scrape renders again only the variants that changed since (the variants at
  zero are most of them on a big server); the rest is joining bytes;
- the work is split so that it can leave the event loop: ``snapshot`` runs on the loop (it copies the arrays
  of the variants that changed, a few microseconds each), and ``render`` is pure and may run in a thread.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import utils

from zeroscale.metrics.load import PoolLoad, by_variant
from zeroscale.metrics.series import (
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
Text = tuple[bytes, ...]  # one variant's lines: per family, its samples and then its _created samples


def escape(value: str) -> str:
    """A label value, as prometheus_client escapes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _help(name: str, doc: str) -> str:
    return "# HELP {} {}\n".format(name, doc.replace("\\", r"\\").replace("\n", r"\n"))


def _heads(name: str, doc: str, kind: str) -> tuple[bytes, bytes]:
    """A family's HELP and TYPE lines, and those of its ``_created`` samples (printed after the others)."""
    shown = f"{name}_total" if kind == "counter" else name
    return (
        f"{_help(shown, doc)}# TYPE {shown} {kind}\n".encode(),
        f"{_help(name + '_created', doc)}# TYPE {name}_created gauge\n".encode(),
    )


# Every family of the series, in the order registry._SeriesCollector yields them.
_FAMILIES: tuple[tuple[bytes, bytes], ...] = (
    *(_heads(name, doc, "counter") for name, doc, _ in COUNTERS),
    *(_heads(name, doc, "histogram") for name, doc, _ in HISTOGRAMS),
    *(_heads(name, doc, "counter") for name, doc, _ in MODEL_COUNTERS),
    *(_heads(name, doc, "histogram") for name, doc, _ in MODEL_HISTOGRAMS),
    *(_heads(name, doc, "counter") for name, doc, _ in LATER_COUNTERS),
    _heads(*EXITS, "counter"),
    *(_heads(name, doc, "counter") for name, doc, _ in PROVISIONED_COUNTERS),
)
_GAUGE_HEADS = tuple(f"{_help(name, doc)}# TYPE {name} gauge\n".encode() for name, doc in GAUGES)
_NONE = (b"", b"")
_SMALL = {float(i): floatToGoString(float(i)) for i in range(1000)}  # most counts


def number(value: float) -> str:
    """A sample's value, as prometheus_client prints it (Go's formatting of a float64)."""
    return _SMALL.get(value) or floatToGoString(value)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a variant's series held when the scrape began (copied on the event loop)."""

    series: Series
    version: int
    key: tuple[str, str]
    counts: array[float]
    models: array[float] | None
    exits: tuple[tuple[str, tuple[float, float]], ...]
    created: float
    shown: bool


def snapshot(every: Sequence[tuple[tuple[str, str], Series]]) -> list[Text | Snapshot]:
    """On the event loop: each variant's text when it is current, otherwise a copy of its figures."""
    rows: list[Text | Snapshot] = []
    for key, series in every:
        text = series.text
        if text is not None and text[0] == series.version:
            rows.append(text[1])
        else:
            models = series.models
            rows.append(
                Snapshot(
                    series,
                    series.version,
                    key,
                    series.counts[:],
                    models[:] if models is not None else None,
                    tuple(series.exits.items()),
                    series.created,
                    series.shown,
                )
            )
    return rows


def render(rows: Sequence[Text | Snapshot], loads: Sequence[PoolLoad]) -> bytes:
    """The series' families, then the gauges' (any thread: reads nothing but its arguments, and stores each
    variant's new text on its series for the next scrape)."""
    texts: list[Text] = []
    for row in rows:
        if isinstance(row, Snapshot):
            text = render_series(row)
            row.series.text = (row.version, text)  # an older version than the series has is rendered again
            texts.append(text)
        else:
            texts.append(row)
    parts: list[bytes] = []
    for i, (head, created_head) in enumerate(_FAMILIES):
        parts.append(head)
        parts.append(b"".join([text[2 * i] for text in texts]))
        created = b"".join([text[2 * i + 1] for text in texts])
        if created:
            parts.append(created_head)
            parts.append(created)
    parts.append(render_gauges(loads))
    return b"".join(parts)


def render_series(s: Snapshot) -> Text:
    """One variant's lines, per family: its samples, then its _created samples."""
    e = f'endpoint_name="{escape(s.key[0])}"'
    v = f'variant_name="{escape(s.key[1])}"'
    labels = f"{{{e},{v}}}"
    created = f"{labels} {floatToGoString(s.created)}\n".encode()
    counts, models = s.counts, s.models
    out: list[bytes] = []
    for name, _, at in COUNTERS:
        out += (_sample(f"{name}_total", labels, counts[at]), name.encode() + b"_created" + created)
    for name, _, at in HISTOGRAMS:
        out += (_histogram(name, e, v, labels, counts, at), name.encode() + b"_created" + created)
    for name, _, at in MODEL_COUNTERS:
        if models is not None:
            out += (_sample(f"{name}_total", labels, models[at]), name.encode() + b"_created" + created)
        else:
            out += _NONE
    for name, _, at in MODEL_HISTOGRAMS:
        if models is not None:
            out += (_histogram(name, e, v, labels, models, at), name.encode() + b"_created" + created)
        else:
            out += _NONE
    for name, _, at in LATER_COUNTERS:
        out += (_sample(f"{name}_total", labels, counts[at]), name.encode() + b"_created" + created)
    name = EXITS[0]
    exits = [(f'{{{e},reason="{escape(reason)}",{v}}}', count, since) for reason, (count, since) in s.exits]
    out += (
        "".join([f"{name}_total{labels} {number(count)}\n" for labels, count, _ in exits]).encode(),
        "".join([f"{name}_created{labels} {floatToGoString(at)}\n" for labels, _, at in exits]).encode(),
    )
    for name, _, at in PROVISIONED_COUNTERS:
        if s.shown:
            out += (_sample(f"{name}_total", labels, counts[at]), name.encode() + b"_created" + created)
        else:
            out += _NONE
    return tuple(out)


def _sample(name: str, labels: str, value: float) -> bytes:
    return f"{name}{labels} {number(value)}\n".encode()


def _histogram(name: str, e: str, v: str, labels: str, counts: array[float], at: int) -> bytes:
    lines = []
    total = 0.0
    for i, upper in enumerate(UPPER):
        total += counts[at + i]
        lines.append(f'{name}_bucket{{{e},le="{upper}",{v}}} {number(total)}\n')
    lines.append(f"{name}_count{labels} {number(total)}\n")
    lines.append(f"{name}_sum{labels} {number(counts[at + BUCKETS])}\n")
    return "".join(lines).encode()


def render_gauges(loads: Sequence[PoolLoad]) -> bytes:
    """The gauges of what the pools are doing now, one per variant (summed over its pools)."""
    families: list[list[str]] = [[] for _ in GAUGES]
    for load in by_variant(loads):
        labels = f'{{endpoint_name="{escape(load.endpoint)}",variant_name="{escape(load.variant)}"}}'
        for (name, _), lines, value in zip(GAUGES, families, gauge_values(load), strict=True):
            if value is not None:
                lines.append(f"{name}{labels} {number(value)}\n")
    heads = zip(_GAUGE_HEADS, families, strict=True)
    return b"".join(head + "".join(lines).encode() for head, lines in heads)
