"""Cutting an input stream into records and mini-batches: lines, RecordIO (multi-part records kept whole),
MultiRecord packing within MaxPayloadInMB, and a record over the limit failing its file."""

from __future__ import annotations

import dataclasses
import io

import pytest

from zeroscale.batch.runner import (
    EXECUTION_PARAMETERS,
    MB,
    RECORDIO_MAGIC,
    FileFailed,
    JobSpec,
    _batches,
    _count,
    _line_batches,
    _records,
    container_parameters,
)


def _recordio(data: bytes, cflag: int = 0) -> bytes:
    head = RECORDIO_MAGIC.to_bytes(4, "little") + (len(data) | (cflag << 29)).to_bytes(4, "little")
    return head + data + b"\0" * (-len(data) % 4)


def test_lines_keep_their_newline_and_skip_blanks() -> None:
    stream = io.BytesIO(b"a,1\n\nb,2\nc,3")
    assert list(_records(stream, "Line")) == [b"a,1\n", b"b,2\n", b"c,3\n"]
    assert list(_records(io.BytesIO(b"whole\nfile"), "None")) == [b"whole\nfile"]


def test_recordio_records_and_multipart() -> None:
    one, two = _recordio(b"abcde"), _recordio(b"xyz1")
    parts = _recordio(b"first", cflag=1) + _recordio(b"mid", cflag=2) + _recordio(b"last", cflag=3)
    assert list(_records(io.BytesIO(one + parts + two), "RecordIO")) == [one, parts, two]
    with pytest.raises(FileFailed, match="not a RecordIO file"):
        list(_records(io.BytesIO(b"plain text here"), "RecordIO"))
    with pytest.raises(FileFailed, match="ends inside"):
        list(_records(io.BytesIO(one[:-4]), "RecordIO"))


def test_batches() -> None:
    records = [b"x" * 400_000 + b"\n"] * 5
    multi = list(_batches(iter(records), True, MB))
    assert [len(b) for b in multi] == [2, 2, 1]  # whole records, at most 1 MB each
    assert [len(b) for b in _batches(iter(records), False, MB)] == [1] * 5
    assert [len(b) for b in _batches(iter(records), True, 0)] == [5]  # 0: no limit
    with pytest.raises(FileFailed, match="larger than MaxPayloadInMB"):
        list(_batches(iter([b"y" * (MB + 1)]), True, MB))


def test_line_batches_cut_in_bulk() -> None:
    data = b"".join(b"%06d,x\n" % i for i in range(100_000))  # 900 kB of 9-byte lines
    batches = list(_line_batches(io.BytesIO(data + b"\n\nlast"), 256 * 1024))
    assert b"".join(b[0] for b in batches) == data + b"\n\nlast\n"
    assert all(len(b[0]) <= 256 * 1024 and b[0].endswith(b"\n") for b in batches)
    assert sum(_count(b, True) for b in batches) == 100_001
    with pytest.raises(FileFailed, match="larger than MaxPayloadInMB"):
        list(_line_batches(io.BytesIO(b"z" * (2 * MB)), MB))


def _job(**unset_and_values: object) -> JobSpec:
    unset = unset_and_values.pop("unset", frozenset(EXECUTION_PARAMETERS))
    base = JobSpec(
        name="j",
        model_name="m",
        instance_type="ml.m5.large",
        instance_count=1,
        max_concurrent=1,
        max_payload_mb=6,
        strategy="SingleRecord",
        timeout_s=60.0,
        max_retries=0,
        environment={},
        data_type="S3Prefix",
        input_uri="s3://b/in/",
        content_type=None,
        gzip=False,
        split="Line",
        output_path="s3://b/out",
        accept=None,
        assemble_lines=True,
        unset=frozenset(unset),  # type: ignore[arg-type]
    )
    return dataclasses.replace(base, **unset_and_values)  # type: ignore[arg-type]


def test_execution_parameters_fill_only_what_the_job_left_out() -> None:
    """GET /execution-parameters: the container's values for the settings the job did not give (its own
    win), in SageMaker's spelling or the API's; anything invalid is refused by name."""
    answer = {"MaxConcurrentTransforms": 4, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 20}
    chosen = container_parameters(_job(), answer)
    assert (chosen.max_concurrent, chosen.strategy, chosen.max_payload_mb) == (4, "MultiRecord", 20)
    assert chosen.unset == frozenset()
    kept = container_parameters(_job(unset={"BatchStrategy"}, max_concurrent=2), answer)
    assert (kept.max_concurrent, kept.strategy, kept.max_payload_mb) == (2, "MultiRecord", 6)
    assert container_parameters(_job(), {}).strategy == "SingleRecord"
    for bad, message in (
        ([1], "not a JSON object"),
        ({"BatchStrategy": "ALL"}, "BatchStrategy 'ALL'"),
        ({"MaxConcurrentTransforms": 0}, "MaxConcurrentTransforms 0"),
        ({"MaxPayloadInMB": "6"}, "MaxPayloadInMB '6' is not an integer"),
        ({"MaxConcurrentTransforms": True}, "is not an integer"),
        ({"MaxConcurrentTransforms": 11, "MaxPayloadInMB": 10}, "is over 100"),
    ):
        with pytest.raises(ValueError, match=message):
            container_parameters(_job(), bad)
