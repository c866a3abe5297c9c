"""Cutting an input stream into records and mini-batches: lines, RecordIO (multi-part records kept whole),
MultiRecord packing within MaxPayloadInMB, and a record over the limit failing its file."""

from __future__ import annotations

import io

import pytest

from zeroscale.batch.runner import MB, RECORDIO_MAGIC, FileFailed, _batches, _count, _line_batches, _records


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
