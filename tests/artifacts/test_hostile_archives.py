"""Archives that must be refused, each with a message naming the member and the rule, leaving nothing."""

from __future__ import annotations

import gzip
import tarfile
import time
from pathlib import Path

import pytest

from zeroscale.artifacts import ArtifactCache
from zeroscale.errors import DeployError

from .tarballs import (
    Member,
    cached_entries,
    dir_member,
    file_member,
    hardlink_member,
    model_tarball,
    special_member,
    symlink_member,
    write_tar,
)

MB = 1024 * 1024


@pytest.fixture
def cache(tmp_path: Path) -> ArtifactCache:
    return ArtifactCache(tmp_path / "cache", max_extracted_bytes=10 * MB, max_extracted_files=50)


def refuse(cache: ArtifactCache, archive: Path) -> str:
    with pytest.raises(DeployError) as info:
        cache.prepare(str(archive))
    assert cached_entries(cache.root) == [], "a rejected archive left something in the cache"
    return str(info.value)


HOSTILE: dict[str, tuple[list[Member], str]] = {
    "absolute path": (
        [file_member("ok.txt", b"x"), file_member("/tmp/zeroscale-evil", b"pwned")],
        "Model archive member '/tmp/zeroscale-evil' has an absolute path, which escapes the model directory",
    ),
    "dot-dot": (
        [file_member("../evil", b"pwned")],
        "Model archive member '../evil' escapes the model directory",
    ),
    "dot-dot in the middle": (
        [file_member("a/../../evil", b"pwned")],
        "Model archive member 'a/../../evil' escapes the model directory",
    ),
    "symlink to /etc/passwd": (
        [symlink_member("passwd", "/etc/passwd")],
        "Model archive member 'passwd' is a symlink to '/etc/passwd', which escapes the model directory",
    ),
    "symlink out via ..": (
        [dir_member("sub"), symlink_member("sub/up", "../../outside")],
        "Model archive member 'sub/up' is a symlink to '../../outside', which escapes the model directory",
    ),
    "symlink out through another symlink": (
        # 'here' -> '.' is harmless alone, and 'here/../outside' looks inside when read as text,
        # but on disk it resolves to the parent of the model directory.
        [symlink_member("here", "."), symlink_member("sneaky", "here/../outside")],
        "Model archive member 'sneaky' is a symlink to 'here/../outside', which escapes the model directory",
    ),
    "symlink redirected by a later symlink": (
        # 'late' is checked while 'y' does not exist yet (so it looks inside); 'y' -> '.' then makes
        # 'late' point at the parent of the model directory. Caught by the final pass over links.
        [symlink_member("late", "y/../outside"), symlink_member("y", ".")],
        "Model archive member 'late' is a symlink whose target escapes the model directory",
    ),
    "write through a symlinked directory": (
        [symlink_member("inner", "."), file_member("inner/file.txt", b"x")],
        "Model archive member 'inner/file.txt' is inside a symlinked directory",
    ),
    "hardlink escape via ..": (
        [hardlink_member("hl", "../../../../etc/passwd")],
        "Model archive member 'hl' escapes the model directory",
    ),
    "hardlink to absolute path": (
        [hardlink_member("hl", "/etc/passwd")],
        "Model archive member 'hl' has an absolute path, which escapes the model directory",
    ),
    "hardlink to a missing member": (
        [hardlink_member("hl", "nothing-here")],
        "Model archive member 'hl' is a hardlink to 'nothing-here', which is not an earlier file",
    ),
    "character device": (
        [file_member("ok.txt", b"x"), special_member("null", tarfile.CHRTYPE)],
        "Model archive member 'null' is a device file",
    ),
    "block device": (
        [special_member("disk", tarfile.BLKTYPE)],
        "Model archive member 'disk' is a device file",
    ),
    "fifo": (
        [special_member("pipe", tarfile.FIFOTYPE)],
        "Model archive member 'pipe' is a FIFO",
    ),
    "nested 2100 levels deep": (
        # ENAMETOOLONG half-way through, then RecursionError in the clean-up, before (audit finding 5)
        [file_member("code/inference.py", b"x"), file_member("d/" * 2100 + "f", b"x")],
        "/d/d/d/f' is nested 2101 levels deep (the limit is 128)",
    ),
    "a directory nested too deep": (
        [dir_member("a/" * 129)],
        "is nested 129 levels deep (the limit is 128)",
    ),
    "a name longer than 255 bytes": (
        [file_member("dir/" + "n" * 256, b"x")],
        "has a name of 256 bytes in its path (the limit is 255 bytes)",
    ),
    "a path longer than 1024 bytes": (
        [file_member("/".join(["p" * 200] * 6), b"x")],
        "has a path of 1205 bytes (the limit is 1024 bytes)",
    ),
    "a hardlink to a path nested too deep": (
        [file_member("ok.txt", b"x"), hardlink_member("hl", "a/" * 200 + "b")],
        "Model archive member 'hl' is a link to a target that is nested 201 levels deep (the limit is 128)",
    ),
    "a symlink with a target longer than 1024 bytes": (
        [symlink_member("sl", "./" * 600 + "ok.txt")],
        "Model archive member 'sl' is a symlink to a target of 1206 bytes (the limit is 1024 bytes)",
    ),
    "too many files": (
        [file_member(f"f{i}.txt", b"x") for i in range(51)],
        "Model archive has more than 50 members (the max_extracted_files limit)",
    ),
    "too many bytes over many files": (
        [file_member(f"part{i}.bin", b"\0" * MB) for i in range(11)],
        "Model archive member 'part10.bin' would bring the extracted size over the limit of 10 MB (10485760 "
        "bytes, zeroscale serve --max-extracted-mb)",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archive_is_refused(cache: ArtifactCache, tmp_path: Path, case: str) -> None:
    members, expected = HOSTILE[case]
    archive = write_tar(tmp_path / "model.tar.gz", members)
    message = refuse(cache, archive)
    assert expected in message
    assert str(archive) in message  # the artifact is named too
    assert not (tmp_path / "outside").exists()
    assert not (tmp_path / "evil").exists()


def test_gzip_bomb_is_stopped_early(cache: ArtifactCache, tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "bomb.tar.gz", [file_member("zeros.bin", b"\0" * (50 * MB))])
    assert archive.stat().st_size < MB  # a small download...
    started = time.monotonic()
    message = refuse(cache, archive)  # ...that would extract to 50 MB against a 10 MB limit
    assert time.monotonic() - started < 2
    assert "Model archive member 'zeros.bin' would bring the extracted size over the limit" in message
    assert "--max-extracted-mb" in message


def test_truncated_gzip(cache: ArtifactCache, tmp_path: Path) -> None:
    good = model_tarball(tmp_path / "good.tar.gz", {"a.bin": bytes(range(256)) * 4000})
    data = good.read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])
    message = refuse(cache, truncated)
    assert f"Model artifact {truncated} is not a valid tar.gz archive:" in message


def test_gzip_missing_only_its_trailer(cache: ArtifactCache, tmp_path: Path) -> None:
    """The tar stream is complete but the gzip CRC/length trailer is gone: still refused."""
    good = model_tarball(tmp_path / "good.tar.gz")
    truncated = tmp_path / "no-trailer.tar.gz"
    truncated.write_bytes(good.read_bytes()[:-8])
    assert "is not a valid tar.gz archive" in refuse(cache, truncated)


def test_gzip_with_corrupt_crc(cache: ArtifactCache, tmp_path: Path) -> None:
    data = bytearray(model_tarball(tmp_path / "good.tar.gz").read_bytes())
    data[-8] ^= 0xFF  # first byte of the CRC32 trailer
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(bytes(data))
    assert "is not a valid tar.gz archive" in refuse(cache, corrupt)


def test_not_an_archive(cache: ArtifactCache, tmp_path: Path) -> None:
    text = tmp_path / "model.tar.gz"
    text.write_bytes(b"this is just some text, not a tarball\n" * 100)
    assert f"Model artifact {text} is not a valid tar.gz archive: " in refuse(cache, text)


def test_gzip_of_something_that_is_not_tar(cache: ArtifactCache, tmp_path: Path) -> None:
    gz = tmp_path / "model.tar.gz"
    gz.write_bytes(gzip.compress(b"a gzip file, but no tar inside\n" * 100))
    assert "is not a valid tar.gz archive" in refuse(cache, gz)


def test_empty_file(cache: ArtifactCache, tmp_path: Path) -> None:
    empty = tmp_path / "model.tar.gz"
    empty.write_bytes(b"")
    assert "is not a valid tar.gz archive: empty file" in refuse(cache, empty)


def test_deep_but_allowed_paths_are_extracted(cache: ArtifactCache, tmp_path: Path) -> None:
    deep = "/".join(["level"] * 127) + "/file.txt"  # 128 levels, 767 bytes: within both limits
    long_name = "n" * 255
    archive = write_tar(tmp_path / "ok.tar.gz", [file_member(deep, b"deep"), file_member(long_name, b"long")])
    model = cache.prepare(str(archive))
    assert (model / deep).read_bytes() == b"deep"
    assert (model / long_name).read_bytes() == b"long"


def test_deep_member_is_named_in_short(cache: ArtifactCache, tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "deep.tar.gz", [file_member("d/" * 2100 + "f", b"x")])
    message = refuse(cache, archive)
    assert message.startswith("Model archive member 'd/d/d/d/") and "d/d/.../d/d" in message
    assert len(message) < 400 + len(str(archive))  # a FailureReason holds 1024 characters


def test_deep_local_directory_is_refused_by_name(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    source = tmp_path / "model-dir"
    (source / ("x/" * 130)).mkdir(parents=True)
    with pytest.raises(DeployError) as info:
        cache.prepare(f"file://{source}")
    assert f"Model directory file://{source}: 'x/x/x/" in str(info.value)
    assert "is nested 129 levels deep (the limit is 128)" in str(info.value)
    assert cached_entries(cache.root) == []


def test_rejection_then_good_archive_still_works(cache: ArtifactCache, tmp_path: Path) -> None:
    bad = write_tar(tmp_path / "bad.tar.gz", [file_member("fine.txt", b"x"), file_member("../evil", b"x")])
    refuse(cache, bad)
    model = cache.prepare(str(model_tarball(tmp_path / "good.tar.gz")))
    assert (model / "model.bin").read_bytes() == b"weights"
