"""Good archives and local sources: correct content, URL forms, caching, concurrency."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from zeroscale.artifacts import ArtifactCache
from zeroscale.artifacts import cache as cache_module
from zeroscale.artifacts.fetch import s3_object_of_https
from zeroscale.errors import DeployError

from .tarballs import (
    dir_member,
    file_member,
    hardlink_member,
    model_tarball,
    symlink_member,
    tree,
    write_tar,
)

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def cache(tmp_path: Path) -> ArtifactCache:
    return ArtifactCache(tmp_path / "cache")


@pytest.fixture
def extractions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts real extractions (the real function still runs)."""
    calls: list[str] = []
    real: Callable[..., Any] = cache_module.extract_archive

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["source"])
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_module, "extract_archive", counting)
    return calls


def test_good_archive_content_and_modes(cache: ArtifactCache, tmp_path: Path) -> None:
    archive = write_tar(
        tmp_path / "model.tar.gz",
        [
            dir_member("code", mode=0o700),
            file_member("code/inference.py", b"print('hi')\n", mode=0o600),
            file_member("code/run.sh", b"#!/bin/sh\n", mode=0o6755),  # setuid + setgid
            file_member("weights/deep/model.bin", b"\x00\x01" * 1000),  # parents without dir entries
            symlink_member("latest", "weights/deep/model.bin"),
            symlink_member("weights/deep/again", "../deep/model.bin"),
            hardlink_member("copy.bin", "weights/deep/model.bin"),
            file_member("./dotted.txt", b"dotted"),
        ],
    )
    model = cache.prepare(str(archive))
    assert model.is_dir() and model.name == "model"
    assert model.parent.parent == cache.root
    assert tree(model) == {
        "code": "dir",
        "code/inference.py": b"print('hi')\n",
        "code/run.sh": b"#!/bin/sh\n",
        "copy.bin": b"\x00\x01" * 1000,
        "dotted.txt": b"dotted",
        "latest": "link -> weights/deep/model.bin",
        "weights": "dir",
        "weights/deep": "dir",
        "weights/deep/again": "link -> ../deep/model.bin",
        "weights/deep/model.bin": b"\x00\x01" * 1000,
    }
    assert (model / "latest").read_bytes() == b"\x00\x01" * 1000
    assert (model / "weights/deep/again").read_bytes() == b"\x00\x01" * 1000
    assert (model / "copy.bin").stat().st_ino == (model / "weights/deep/model.bin").stat().st_ino
    run_sh = (model / "code/run.sh").stat()
    assert stat.S_IMODE(run_sh.st_mode) == 0o755  # setuid/setgid stripped, still executable
    assert stat.S_IMODE((model / "code/inference.py").stat().st_mode) == 0o644
    assert stat.S_IMODE((model / "code").stat().st_mode) == 0o755
    for path in model.rglob("*"):
        assert path.lstat().st_uid == os.getuid()


@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz"])
def test_compression_detected_by_content(cache: ArtifactCache, tmp_path: Path, compression: str) -> None:
    archive = model_tarball(tmp_path / "misleading-name.zip", {"m.bin": b"abc"}, compression=compression)
    assert (cache.prepare(str(archive)) / "m.bin").read_bytes() == b"abc"


def test_second_prepare_reuses_without_extracting(
    cache: ArtifactCache, tmp_path: Path, extractions: list[str]
) -> None:
    archive = model_tarball(tmp_path / "model.tar.gz")
    first = cache.prepare(str(archive))
    marker_mtime = (first.parent / "complete").stat().st_mtime_ns
    second = cache.prepare(str(archive))
    assert second == first
    assert extractions == [str(archive)]
    assert (first.parent / "complete").stat().st_mtime_ns == marker_mtime
    # A new cache object on the same root (a restarted server) reuses it too, via the index.
    again = ArtifactCache(cache.root).prepare(f"file://{archive}")
    assert again == first
    assert len(extractions) == 1
    assert [p.name for p in cache.root.iterdir() if len(p.name) == 64] == [first.parent.name]


def test_url_forms_share_one_entry(
    cache: ArtifactCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extractions: list[str]
) -> None:
    archive = model_tarball(tmp_path / "my model.tar.gz")
    by_path = cache.prepare(str(archive))
    by_url = cache.prepare("file://" + str(archive).replace(" ", "%20"))
    by_localhost = cache.prepare("file://localhost" + str(archive))
    monkeypatch.chdir(tmp_path)
    by_relative = cache.prepare("my model.tar.gz")
    by_dot = cache.prepare("./my model.tar.gz")
    assert by_path == by_url == by_localhost == by_relative == by_dot
    assert len(extractions) == 1
    assert (by_relative / "model.bin").read_bytes() == b"weights"


def test_same_content_elsewhere_is_not_extracted_twice(
    cache: ArtifactCache, tmp_path: Path, extractions: list[str]
) -> None:
    a = model_tarball(tmp_path / "a.tar.gz")
    b = tmp_path / "b.tar.gz"
    b.write_bytes(a.read_bytes())
    assert cache.prepare(str(a)) == cache.prepare(str(b))
    assert len(extractions) == 1


def test_changed_file_is_fetched_again(cache: ArtifactCache, tmp_path: Path) -> None:
    archive = model_tarball(tmp_path / "model.tar.gz", {"v.txt": b"one"})
    first = cache.prepare(str(archive))
    model_tarball(archive, {"v.txt": b"two"})
    second = cache.prepare(str(archive))
    assert second != first
    assert (first / "v.txt").read_bytes() == b"one"
    assert (second / "v.txt").read_bytes() == b"two"


def test_no_artifact_gives_an_empty_directory(cache: ArtifactCache) -> None:
    for url in (None, "", "   "):
        model = cache.prepare(url)
        assert model.is_dir()
        assert list(model.iterdir()) == []


@pytest.mark.parametrize("url", ["http://x/y", "ftp://host/model.tar.gz", "gs://b/k"])
def test_unsupported_scheme(cache: ArtifactCache, url: str) -> None:
    with pytest.raises(DeployError) as info:
        cache.prepare(url)
    message = str(info.value)
    assert url in message
    assert "not supported" in message
    assert "s3://bucket/key" in message and "file:///" in message


def test_https_urls_must_be_s3_objects(cache: ArtifactCache) -> None:
    for url in ("https://example.com/model.tar.gz", "https://s3.amazonaws.com/bucket-only"):
        with pytest.raises(DeployError, match="must be an S3 object URL") as info:
            cache.prepare(url)
        assert url in str(info.value)


@pytest.mark.parametrize(
    ("url", "endpoint", "found"),
    [
        ("https://my-bucket.s3.us-east-1.amazonaws.com/a/b.tar.gz", None, ("my-bucket", "a/b.tar.gz")),
        ("https://my-bucket.s3.amazonaws.com/k", None, ("my-bucket", "k")),
        ("https://my.bucket.s3-eu-west-1.amazonaws.com/k%20x", None, ("my.bucket", "k x")),
        ("https://s3.eu-west-1.amazonaws.com/my-bucket/a/b", None, ("my-bucket", "a/b")),
        ("https://s3.dualstack.us-west-2.amazonaws.com/b/k", None, ("b", "k")),
        ("https://127.0.0.1:8333/b/k", "http://127.0.0.1:8333", ("b", "k")),
        ("https://127.0.0.1:8333/b/k", "http://127.0.0.1:9000", None),
        ("https://example.com/b/k", None, None),
        ("https://my-bucket.s3.amazonaws.com/", None, None),
        ("https://s3.amazonaws.com/b/k?versionId=1", None, None),
        ("http://my-bucket.s3.amazonaws.com/k", None, None),
        ("https://evil.com/.s3.amazonaws.com/b/k", None, None),
    ],
)
def test_s3_object_of_https(url: str, endpoint: str | None, found: tuple[str, str] | None) -> None:
    assert s3_object_of_https(url, endpoint) == found


@pytest.mark.parametrize("url", ["s3://", "s3://bucket-only", "s3://bucket/", "file://relative/path"])
def test_malformed_urls(cache: ArtifactCache, url: str) -> None:
    with pytest.raises(DeployError, match="Invalid model artifact URL"):
        cache.prepare(url)


def test_directory_holding_the_cache_is_refused(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "data" / "artifacts")
    with pytest.raises(DeployError, match="contains zeroscale's own directory"):
        cache.prepare(str(tmp_path))


def swap_when_checked(monkeypatch: pytest.MonkeyPatch, swapped: Path, target: Path) -> None:
    """``swapped`` becomes a symlink to ``target`` once the cache has resolved and checked it, before it
    opens it (the cache takes the file's fingerprint in that window): the race a local user could win."""
    fingerprint = cache_module.file_fingerprint

    def swap(path: Path) -> Any:
        if path == swapped and not path.is_symlink():
            path.unlink()
            path.symlink_to(target)
        return fingerprint(path)

    monkeypatch.setattr(cache_module, "file_fingerprint", swap)


def test_no_file_url_reads_the_servers_own_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data directory (credentials, database, other models' files) is out of a file:// model's reach:
    named directly, as a directory within it, or through a symlink in a model directory (to a file in it,
    to a directory in it, or to a directory holding it), and a file swapped for a link into it after it
    was resolved."""
    data = tmp_path / "data"
    cache = ArtifactCache(data / "artifacts", protected=(data,))
    (data / "credentials").write_text("secret")
    (data / "artifacts" / "index" / "x.json").write_text("{}")
    archive = write_tar(tmp_path / "ok.tar.gz", [file_member("model.bin", b"ok")])
    (data / "kept.tar.gz").write_bytes(archive.read_bytes())
    for url in (f"file://{data / 'kept.tar.gz'}", str(data / "artifacts" / "index"), str(data)):
        with pytest.raises(DeployError, match="zeroscale's own directory"):
            cache.prepare(url)
    for name, target in (("c", data / "credentials"), ("idx", data / "artifacts"), ("up", tmp_path)):
        model = tmp_path / f"model-{name}"
        model.mkdir()
        (model / "model.bin").write_bytes(b"weights")
        (model / name).symlink_to(target)
        with pytest.raises(DeployError, match=f"{name}.* leads into zeroscale's own directory"):
            cache.prepare(str(model))
    swapped = tmp_path / "swapped.tar.gz"
    swapped.write_bytes(archive.read_bytes())
    swap_when_checked(monkeypatch, swapped, data / "kept.tar.gz")
    with pytest.raises(DeployError, match="zeroscale's own directory"):
        cache.prepare(f"file://{swapped}")
    assert (cache.prepare(str(archive)) / "model.bin").read_bytes() == b"ok"  # elsewhere: served


def test_a_models_reads_are_checked_where_each_file_leads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``reads`` (a model's creator's rights) is asked about every file and directory read for the model,
    where it resolved: the model data, each entry of a directory (a link to a file or to a directory, and
    what is under that), a file swapped for a link after it was resolved; and before an entry the cache
    holds already (from a model allowed to read it) is handed out."""
    cache = ArtifactCache(tmp_path / "artifacts")
    mine, other = tmp_path / "mine", tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "sub" / "weights.bin").write_bytes(b"theirs")
    archive = write_tar(tmp_path / "ok.tar.gz", [file_member("model.bin", b"ok")])
    mine.mkdir()
    (mine / "model.tar.gz").write_bytes(archive.read_bytes())
    asked: list[Path] = []

    def reads(real: Path) -> str | None:
        asked.append(real)
        return None if mine in real.parents or real == mine else "not hers"

    assert (cache.prepare(str(mine / "model.tar.gz"), reads=reads) / "model.bin").read_bytes() == b"ok"
    assert asked == [mine / "model.tar.gz"] * 2  # resolved, then as opened
    model = mine / "dir"
    model.mkdir()
    (model / "model.bin").write_bytes(b"weights")
    for name, target in (("file", other / "sub" / "weights.bin"), ("folder", other / "sub")):
        (model / name).symlink_to(target)
        assert (cache.prepare(str(model)) / name).exists()  # the admin's model: read as before
        with pytest.raises(DeployError) as refused:  # from the cache or not: refused
            cache.prepare(str(model), reads=reads)
        assert str(refused.value) == f"Model directory {model}: {name!r} leads to {target}: not hers"
        (model / name).unlink()
    (model / "own").symlink_to(mine / "model.tar.gz")  # a link that stays in her directory
    assert (cache.prepare(str(model), reads=reads) / "own").read_bytes() == archive.read_bytes()
    swapped = mine / "swapped.tar.gz"
    swapped.write_bytes(archive.read_bytes())
    (other / "theirs.tar.gz").write_bytes(archive.read_bytes())
    swap_when_checked(monkeypatch, swapped, other / "theirs.tar.gz")
    with pytest.raises(DeployError, match=f"Model data {swapped} leads to {other}/theirs.tar.gz: not hers"):
        cache.prepare(str(swapped), reads=reads)


def test_nul_byte_in_path(cache: ArtifactCache) -> None:
    with pytest.raises(DeployError, match="Invalid model artifact URL"):
        cache.prepare("model\x00.tar.gz")


def test_missing_local_file(cache: ArtifactCache, tmp_path: Path) -> None:
    missing = tmp_path / "nope.tar.gz"
    with pytest.raises(DeployError, match=r"Model artifact .*nope.tar.gz not found"):
        cache.prepare(str(missing))
    with pytest.raises(DeployError, match="not found"):
        cache.prepare(f"file://{missing}")


# ---- local directories ----
def test_directory_is_copied_and_cached(cache: ArtifactCache, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "model.bin").write_bytes(b"weights")
    (src / "sub" / "run.sh").write_bytes(b"#!/bin/sh\n")
    (src / "sub" / "run.sh").chmod(0o4755)
    outside = tmp_path / "blob"
    outside.write_bytes(b"blob content")
    (src / "linked.bin").symlink_to(outside)  # like a Hugging Face snapshot: followed, copied

    model = cache.prepare(str(src))
    assert model != src and model.parent.parent == cache.root
    assert tree(model) == {
        "linked.bin": b"blob content",
        "model.bin": b"weights",
        "sub": "dir",
        "sub/run.sh": b"#!/bin/sh\n",
    }
    assert stat.S_IMODE((model / "sub" / "run.sh").stat().st_mode) == 0o755
    assert cache.prepare(f"file://{src}") == model  # unchanged: same entry

    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.bin").write_bytes(b"weights")
    (copy / "sub").mkdir()
    (copy / "sub" / "run.sh").write_bytes(b"#!/bin/sh\n")
    (copy / "sub" / "run.sh").chmod(0o755)
    (copy / "linked.bin").write_bytes(b"blob content")
    assert cache.prepare(str(copy)) == model  # keyed by content, not by place

    (src / "model.bin").write_bytes(b"new weights")
    changed = cache.prepare(str(src))
    assert changed != model
    assert (changed / "model.bin").read_bytes() == b"new weights"
    assert (model / "model.bin").read_bytes() == b"weights"


def test_a_directory_is_refused_where_only_an_archive_may_be_named(
    cache: ArtifactCache, tmp_path: Path
) -> None:
    """A multi-model endpoint's TargetModel names one archive under its prefix, as an S3 key names one
    object: a directory there is refused by what it is (it had been taken as a model directory, and the
    model's load failed instead)."""
    src = tmp_path / "models" / "small"
    src.mkdir(parents=True)
    (src / "model.bin").write_bytes(b"weights")
    with pytest.raises(DeployError, match=r"small is a directory, not a model archive \(a .tar.gz\)"):
        cache.prepare(f"file://{src}", archive_only=True)
    cache.prepare(f"file://{src}")  # a ModelDataUrl may name one


def test_directory_limits_and_special_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(b"x" * 10)
    small = ArtifactCache(tmp_path / "c1", max_extracted_files=3)
    with pytest.raises(DeployError, match="more than 3 entries"):
        small.prepare(str(src))
    tiny = ArtifactCache(tmp_path / "c2", max_extracted_bytes=25)
    with pytest.raises(DeployError, match="larger than the limit of 25 bytes"):
        tiny.prepare(str(src))
    (src / "loop").symlink_to(src)
    with pytest.raises(DeployError, match="'loop' is a symlink loop"):
        ArtifactCache(tmp_path / "c3").prepare(str(src))
    (src / "loop").unlink()
    (src / "dangling").symlink_to(tmp_path / "missing")
    with pytest.raises(DeployError, match="'dangling' is a broken symlink"):
        ArtifactCache(tmp_path / "c4").prepare(str(src))
    (src / "dangling").unlink()
    os.mkfifo(src / "pipe")
    with pytest.raises(DeployError, match="'pipe' is not a regular file or directory"):
        ArtifactCache(tmp_path / "c5").prepare(str(src))


# ---- robustness ----
def test_concurrent_threads_extract_once(
    cache: ArtifactCache, tmp_path: Path, extractions: list[str]
) -> None:
    archive = model_tarball(tmp_path / "model.tar.gz", {f"f{i}": os.urandom(20_000) for i in range(30)})
    results: list[Path] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(cache.prepare(str(archive)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1
    assert len(extractions) == 1
    assert list((cache.root / "tmp").iterdir()) == []


def test_concurrent_processes_agree(tmp_path: Path) -> None:
    archive = model_tarball(tmp_path / "model.tar.gz", {f"f{i}": os.urandom(50_000) for i in range(40)})
    root = tmp_path / "cache"
    script = (
        "import sys; from pathlib import Path; from zeroscale.artifacts import ArtifactCache; "
        "print(ArtifactCache(Path(sys.argv[1])).prepare(sys.argv[2]))"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(root), str(archive)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    outputs = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outputs) == 1
    model = Path(outputs.pop())
    assert len(list(model.iterdir())) == 40
    assert list((root / "tmp").iterdir()) == []
    assert json.loads((model.parent / "complete").read_text())["members"] == 40


def test_debris_and_stale_temporaries_are_cleaned(tmp_path: Path) -> None:
    archive = model_tarball(tmp_path / "model.tar.gz")
    root = tmp_path / "cache"
    model = ArtifactCache(root).prepare(str(archive))
    # A half-written entry (no marker) and leftovers of a dead process (pid far above pid_max).
    (model.parent / "complete").unlink()
    (model / "model.bin").write_bytes(b"half")
    stale = root / "tmp" / "999999999-deadbeef.staging"
    (stale / "model").mkdir(parents=True)
    (root / "tmp" / "999999999-cafe.download").write_bytes(b"partial")
    for index in (root / "index").iterdir():
        index.write_text("{not json")

    cache = ArtifactCache(root)
    assert list((root / "tmp").iterdir()) == []
    assert cache.prepare(str(archive)) == model
    assert (model / "model.bin").read_bytes() == b"weights"
    assert (model.parent / "complete").is_file()
