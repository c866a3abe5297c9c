"""``entry_source``: where a cache entry came from (what a cluster node fetches it from)."""

from __future__ import annotations

from pathlib import Path

from zeroscale.artifacts.cache import ArtifactCache, entry_source


def test_an_entry_names_its_sha_and_source(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.joblib").write_bytes(b"weights")
    cache = ArtifactCache(tmp_path / "cache")
    entry = cache.prepare(f"file://{model}")
    found = entry_source(entry)
    assert found is not None
    sha, source = found
    assert entry == tmp_path / "cache" / sha / "model"
    assert source == f"file://{model}"
    # Another cache (another node's) makes the same entry from that source.
    assert ArtifactCache(tmp_path / "node").prepare(source) == tmp_path / "node" / sha / "model"


def test_no_artifact_and_foreign_directories(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    assert entry_source(cache.prepare(None)) == ("empty", None)
    assert entry_source(tmp_path) is None
    assert entry_source(tmp_path / "x" / "model") is None
