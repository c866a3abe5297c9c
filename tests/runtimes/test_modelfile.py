"""The default model_fn's file lookup, shared by the onnx, pytorch and xgboost runtimes."""

from __future__ import annotations

from pathlib import Path

import pytest

from zeroscale.runtimes.modelfile import find_model_file


def onnx(name: str) -> bool:
    return name.endswith(".onnx")


def test_a_named_file_wins_in_the_order_given(tmp_path: Path) -> None:
    for name in ("model.pth", "model.pt", "other.onnx"):
        (tmp_path / name).write_bytes(b"x")
    assert find_model_file(str(tmp_path), ("model.pt", "model.pth"), onnx, "-") == str(tmp_path / "model.pt")


def test_else_the_only_candidate(tmp_path: Path) -> None:
    (tmp_path / "net.onnx").write_bytes(b"x")
    (tmp_path / "notes.txt").write_bytes(b"x")
    (tmp_path / "dir.onnx").mkdir()
    assert find_model_file(str(tmp_path), ("model.onnx",), onnx, "-") == str(tmp_path / "net.onnx")


def test_none_or_several_candidates_name_what_was_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"^No model\.onnx in .* \(found no \.onnx file\) and code/"):
        find_model_file(str(tmp_path), ("model.onnx",), onnx, "no .onnx file")
    (tmp_path / "b.onnx").write_bytes(b"x")
    (tmp_path / "a.onnx").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"^No a or b in .* \(found a\.onnx, b\.onnx\) "):
        find_model_file(str(tmp_path), ("a", "b"), onnx, "-")
