"""A transform job's ``DataProcessing``: InputFilter, JoinSource and OutputFilter, per record.

SageMaker's JSONPath subset: ``$`` (the whole record), ``.name`` and ``['name', ...]`` (object members),
``[i]``, ``[i, j, ...]`` and ``[i:j]`` (array elements; a slice is INCLUSIVE of j, and either end may be
left out), their unions (``[0,5:]``), ``[*]``; steps chain (``$.features[0:2]``). A CSV record is an
array of its fields, so ``$[1:3]`` keeps columns 2 to 4. JoinSource ``Input`` appends the output's fields
to a CSV record's, and puts the output under ``SageMakerOutput`` in a JSON object record
(``{"SageMakerInput": ..., "SageMakerOutput": ...}`` for any other JSON value).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Any

_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\[([^\]]*)\]")
_INT = re.compile(r"^-?\d+$")


class ProcessingError(Exception):
    """A record the filters or the join cannot handle."""


@dataclass(frozen=True)
class Path:
    steps: tuple[
        tuple[str, Any], ...
    ]  # ("key", [names]) | ("index", [ints]) | ("slice", (a, b)) | ("all", None)

    @classmethod
    def parse(cls, text: str, field: str) -> Path:
        text = text.strip()
        if not text.startswith("$"):
            raise ValueError(f"{field} {text!r} must start with $")
        steps: list[tuple[str, Any]] = []
        pos = 1
        while pos < len(text):
            match = _STEP.match(text, pos)
            if match is None:
                raise ValueError(f"{field} {text!r}: cannot read it from {text[pos:]!r}")
            pos = match.end()
            if match.group(1) is not None:
                steps.append(("key", [match.group(1)]))
                continue
            inner = match.group(2).strip()
            if inner == "*":
                steps.append(("all", None))
            else:
                parts = [p.strip() for p in inner.split(",")]
                if all(len(p) >= 2 and p[0] == p[-1] and p[0] in "'\"" for p in parts):
                    steps.append(("key", [p[1:-1] for p in parts]))
                    continue
                picks = [_pick(p, field, text) for p in parts]  # indices and slices, as $[0,5:]
                if len(picks) == 1 and picks[0][0] == "slice":
                    steps.append(picks[0])
                elif all(kind == "index" for kind, _ in picks):
                    steps.append(("index", [n for _, n in picks]))
                else:
                    steps.append(("pick", picks))
        return cls(tuple(steps))

    def apply(self, value: Any) -> Any:
        for kind, arg in self.steps:
            value = _step(value, kind, arg)
        return value


def _pick(part: str, field: str, text: str) -> tuple[str, Any]:
    """One member of ``[...]``: an index, or a slice (inclusive; either end may be left out)."""
    if _INT.match(part):
        return ("index", int(part))
    if ":" not in part:
        raise ValueError(f"{field} {text!r}: cannot read {part!r} (an index, a slice i:j, or 'names')")
    low, _, high = (p.strip() for p in part.partition(":"))
    if (low and not _INT.match(low)) or (high and not _INT.match(high)):
        raise ValueError(f"{field} {text!r}: a slice takes integers")
    return ("slice", (int(low) if low else None, int(high) if high else None))


def _step(value: Any, kind: str, arg: Any) -> Any:
    try:
        if kind == "all":
            return list(value.values()) if isinstance(value, dict) else list(value)
        if kind == "key":
            if not isinstance(value, dict):
                raise ProcessingError(f"members {arg} of a value that is not a JSON object")
            return value[arg[0]] if len(arg) == 1 else {k: value[k] for k in arg}
        if not isinstance(value, list):
            raise ProcessingError("array elements of a value that is not an array")
        if kind == "index":
            return value[arg[0]] if len(arg) == 1 else [value[i] for i in arg]
        if kind == "pick":  # a union: each index's element and each slice's, in the order given
            out: list[Any] = []
            for part, bounds in arg:
                out += [value[bounds]] if part == "index" else _slice(value, bounds)
            return out
        return _slice(value, arg)
    except (KeyError, IndexError, TypeError) as exc:
        raise ProcessingError(f"the filter does not match the record: {exc!r}") from exc


def _slice(value: list[Any], bounds: tuple[int | None, int | None]) -> list[Any]:
    low, high = bounds
    end = None if high is None else (high + 1 if high != -1 else None)  # inclusive
    return value[low:end]


def _csv_row(text: str) -> list[str]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0] if rows else []


def _csv_text(value: Any) -> str:
    out = io.StringIO()
    row = value if isinstance(value, list) else [value]
    csv.writer(out, lineterminator="").writerow(["" if v is None else v for v in row])
    return out.getvalue()


@dataclass(frozen=True)
class DataProcessing:
    input_filter: Path | None
    output_filter: Path | None
    join: bool
    csv_in: bool  # the input records are CSV (else JSON)
    csv_out: bool  # the model's answers are CSV (else JSON)

    @classmethod
    def of(
        cls, doc: dict[str, Any] | None, content_type: str | None, accept: str | None
    ) -> DataProcessing | None:
        """None when the job has no processing to do (absent, or every member at its default)."""
        doc = doc or {}
        inp = doc.get("InputFilter") or "$"
        out = doc.get("OutputFilter") or "$"
        join = doc.get("JoinSource", "None") == "Input"
        if inp.strip() == "$" and out.strip() == "$" and not join:
            return None
        return cls(
            input_filter=None if inp.strip() == "$" else Path.parse(inp, "InputFilter"),
            output_filter=None if out.strip() == "$" else Path.parse(out, "OutputFilter"),
            join=join,
            csv_in="csv" in (content_type or "").lower(),
            csv_out="csv" in (accept or content_type or "").lower(),
        )

    def _parse(self, text: str, is_csv: bool) -> Any:
        if is_csv:
            return _csv_row(text)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ProcessingError(f"a record is not JSON: {exc}") from exc

    def _dump(self, value: Any, is_csv: bool) -> str:
        return _csv_text(value) if is_csv else json.dumps(value, separators=(",", ":"))

    def filter_input(self, record: bytes) -> bytes:
        if self.input_filter is None:
            return record
        text = record.decode("utf-8").rstrip("\r\n")
        value = self.input_filter.apply(self._parse(text, self.csv_in))
        return (self._dump(value, self.csv_in) + "\n").encode()

    def finish(self, records: list[bytes], answer: bytes) -> bytes:
        """Join each input record with its answer (one answer line per record) and apply OutputFilter."""
        lines = [line for line in answer.decode("utf-8").splitlines() if line.strip()]
        if len(lines) != len(records):
            raise ProcessingError(
                f"the model answered {len(lines)} line(s) for {len(records)} record(s); JoinSource and "
                "OutputFilter need one answer line per record (AssembleWith Line, a line-per-record Accept)"
            )
        out: list[str] = []
        for record, line in zip(records, lines, strict=True):
            value = self._parse(line, self.csv_out)
            is_csv = self.csv_out
            if self.join:
                source = self._parse(record.decode("utf-8").rstrip("\r\n"), self.csv_in)
                if self.csv_in:
                    value = source + (value if isinstance(value, list) else [value])
                    is_csv = True
                elif isinstance(source, dict):
                    value = {**source, "SageMakerOutput": value}
                    is_csv = False
                else:
                    value = {"SageMakerInput": source, "SageMakerOutput": value}
                    is_csv = False
            if self.output_filter is not None:
                value = self.output_filter.apply(value)
            out.append(self._dump(value, is_csv) + "\n")
        return "".join(out).encode()
