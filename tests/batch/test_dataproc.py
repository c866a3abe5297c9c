"""DataProcessing in SageMaker's JSONPath subset: inclusive slices, CSV rows as arrays, JoinSource Input."""

from __future__ import annotations

import pytest

from zeroscale.dataproc import DataProcessing, Path, ProcessingError


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("$", [1, 2], [1, 2]),
        ("$[1:3]", ["a", "b", "c", "d", "e"], ["b", "c", "d"]),  # inclusive
        ("$[2:]", [0, 1, 2, 3], [2, 3]),
        ("$[:1]", [0, 1, 2, 3], [0, 1]),
        ("$[0,2]", [0, 1, 2], [0, 2]),
        ("$[-1]", [0, 1, 2], 2),
        ("$.features", {"id": 1, "features": [3, 4]}, [3, 4]),
        ("$.features[0]", {"features": [3, 4]}, 3),
        (
            "$['id','SageMakerOutput']",
            {"id": 1, "x": 2, "SageMakerOutput": 9},
            {"id": 1, "SageMakerOutput": 9},
        ),
        ("$[*]", {"a": 1, "b": 2}, [1, 2]),
        ("$[0,5:]", list(range(8)), [0, 5, 6, 7]),  # botocore's own OutputFilter example: a union
        ("$[1:2,0,-1]", ["a", "b", "c", "d"], ["b", "c", "a", "d"]),
    ],
)
def test_paths(path: str, value: object, expected: object) -> None:
    assert Path.parse(path, "InputFilter").apply(value) == expected


def test_bad_paths_and_records() -> None:
    for text in ("features", "$[a", "$[1:x]", "$..x", "$[0,x]", "$[0,'a']"):
        with pytest.raises(ValueError):
            Path.parse(text, "InputFilter")
    with pytest.raises(ProcessingError):
        Path.parse("$.x", "OutputFilter").apply([1])
    with pytest.raises(ProcessingError):
        Path.parse("$[5]", "OutputFilter").apply([1])


def test_csv_filter_join_and_output_filter() -> None:
    proc = DataProcessing.of(
        {"InputFilter": "$[1:2]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"}, "text/csv", "text/csv"
    )
    assert proc is not None
    records = [b"7,0.1,0.2\n", b"8,0.3,0.4\n"]
    assert [proc.filter_input(r) for r in records] == [b"0.1,0.2\n", b"0.3,0.4\n"]
    assert proc.finish(records, b"1\n0\n") == b"7,1\n8,0\n"
    with pytest.raises(ProcessingError, match="one answer line per record"):
        proc.finish(records, b"[1, 0]")


def test_json_join() -> None:
    proc = DataProcessing.of({"JoinSource": "Input"}, "application/jsonlines", "application/jsonlines")
    assert proc is not None
    out = proc.finish([b'{"id": 1, "x": [1]}\n', b"[2]\n"], b'{"score": 0.5}\n{"score": 0.7}\n')
    assert out.splitlines() == [
        b'{"id":1,"x":[1],"SageMakerOutput":{"score":0.5}}',
        b'{"SageMakerInput":[2],"SageMakerOutput":{"score":0.7}}',
    ]
    assert (
        DataProcessing.of({"InputFilter": "$", "OutputFilter": "$", "JoinSource": "None"}, None, None) is None
    )
