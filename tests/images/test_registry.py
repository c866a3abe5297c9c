"""The image registry on disk: push a directory or a tarball, list, resolve, and refuse hostile archives."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from artifacts.tarballs import (
    Member,
    dir_member,
    file_member,
    hardlink_member,
    special_member,
    symlink_member,
    write_tar,
)
from zeroscale.cli.image_commands import pack
from zeroscale.images import ImageError, ImageRecord, ImageRegistry, parse_reference
from zeroscale.images.registry import RESOLVED_GRACE_S

MB = 1024 * 1024
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "byo-image"
MANIFEST = json.dumps({"entrypoint": ["./serve"], "env": {"A": "1"}}).encode()


@pytest.fixture
def registry(tmp_path: Path) -> ImageRegistry:
    return ImageRegistry(tmp_path / "images", max_bytes=10 * MB, max_files=50)


def leftovers(registry: ImageRegistry) -> list[str]:
    """Everything in the registry: must be empty after a refused push."""
    return sorted(str(p.relative_to(registry.root)) for p in registry.root.rglob("*"))


def test_push_a_directory_then_list_get_and_resolve(registry: ImageRegistry) -> None:
    record = registry.push("byo-demo", "1.0", EXAMPLE)
    assert (record.name, record.tag, record.ref) == ("byo-demo", "1.0", "byo-demo:1.0")
    assert record.manifest.entrypoint == ("./serve",)
    assert record.manifest.env["MODEL_FILE"] == "model.json"
    assert record.root == registry.root / "byo-demo" / "1.0" / record.digest
    assert record.workdir == record.root
    serve = record.root / "serve"
    assert serve.read_bytes() == (EXAMPLE / "serve").read_bytes()
    assert os.stat(serve).st_mode & stat.S_IXUSR  # still executable
    assert record.files == 2 and record.size > 1000
    assert registry.list() == [record]
    assert registry.get("byo-demo", "1.0") == record
    for ref in (
        "byo-demo:1.0",
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/byo-demo:1.0",
        "registry.example.com:5000/team/byo-demo:1.0@sha256:" + "0" * 64,
    ):
        assert registry.resolve(ref) == record, ref
    assert record.resolved == f"byo-demo:1.0@sha256:{record.digest}"
    assert registry.resolve("byo-demo") is None  # that is byo-demo:latest
    assert registry.resolve("byo-demo:2.0") is None
    assert registry.resolve("Not A Name") is None
    assert ImageRegistry(registry.root).list() == [record]  # it is all on disk


def test_a_directory_and_its_tarball_have_one_digest(registry: ImageRegistry, tmp_path: Path) -> None:
    archive = tmp_path / "image.tar.gz"
    archive.write_bytes(pack(EXAMPLE))
    assert pack(EXAMPLE) == archive.read_bytes()  # the CLI's archives are reproducible
    from_dir = registry.push("demo", "dir", EXAMPLE)
    from_tar = registry.push("demo", "tar", archive)
    from_bytes = registry.push_bytes("demo", "bytes", archive.read_bytes())
    assert from_dir.digest == from_tar.digest == from_bytes.digest
    assert [r.ref for r in registry.list()] == ["demo:bytes", "demo:dir", "demo:tar"]
    assert leftovers(registry).count(".tmp") == 1 and not list((registry.root / ".tmp").iterdir())


def test_pushing_a_tag_again_keeps_what_endpoints_already_run(
    registry: ImageRegistry, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src)
    first = registry.push("demo", "latest", src)
    assert registry.push("demo", "latest", src).digest == first.digest  # same content: nothing new
    running = {str(first.workdir)}
    registry.in_use = lambda: running  # a pool runs the first push
    (src / "extra.txt").write_text("v2")
    second = registry.push("demo", "latest", src)
    assert second.digest != first.digest
    assert registry.resolve("demo") == second
    assert (first.root / "serve").is_file()  # still there for workers deployed with the first push
    assert registry.list() == [second]
    running.clear()  # its pool is gone: the next collection removes it, and only it
    assert registry.collect() == 1
    assert not first.root.exists() and (second.root / "serve").is_file()


def test_a_version_pushed_over_goes_unless_resolved_lately(tmp_path: Path) -> None:
    """A deployment resolved the old version a moment ago (it is on its way into a pool): kept for the
    grace period, then removed; one nobody resolved goes at the push."""
    now = [1000.0]
    registry = ImageRegistry(tmp_path / "images", clock=lambda: now[0])
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src)
    first = registry.push("demo", "1", src)
    assert registry.resolve("demo:1") == first
    (src / "extra.txt").write_text("v2")
    second = registry.push("demo", "1", src)
    assert first.root.is_dir()
    now[0] += RESOLVED_GRACE_S + 1
    assert registry.collect() == 1 and not first.root.exists()
    (src / "extra.txt").write_text("v3")
    third = registry.push("demo", "1", src)
    assert not second.root.exists() and registry.list() == [third]


def test_delete_forgets_a_tag_and_its_files_once_unused(registry: ImageRegistry) -> None:
    record = registry.push("demo", "1", EXAMPLE)
    other = registry.push("demo", "2", EXAMPLE)
    running = {str(record.workdir)}
    registry.in_use = lambda: running
    deleted, kept = registry.delete("demo", "1")
    assert deleted == record and kept and record.root.is_dir()
    assert registry.resolve("demo:1") is None and registry.list() == [other]
    with pytest.raises(ImageError, match="Image demo:1 is not registered"):
        registry.delete("demo", "1")
    running.clear()
    assert registry.collect() == 1 and not (registry.root / "demo" / "1").exists()
    assert registry.delete("demo", "2") == (other, False)
    assert leftovers(registry) == [".tmp"]


def test_a_delete_of_one_push_keeps_a_push_taken_since(registry: ImageRegistry, tmp_path: Path) -> None:
    """What a front end forgets (a push deleted or pushed over elsewhere) is that push: one pushed here
    again since it was read stays."""
    old = registry.push("demo", "1", EXAMPLE)
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src)
    (src / "extra.txt").write_text("the second push")
    new = registry.push("demo", "1", src)
    with pytest.raises(ImageError, match=f"names sha256:{new.digest} now, not sha256:{old.digest}"):
        registry.delete("demo", "1", digest=old.digest)
    assert registry.get("demo", "1") == new
    assert registry.delete("demo", "1", digest=new.digest) == (new, False)


def test_a_push_refused_by_admit_leaves_the_registry_as_it_was(registry: ImageRegistry) -> None:
    """``admit`` (a user's quota) sees the push before it is in place; what it raises keeps nothing."""
    before = registry.push("demo", "1", EXAMPLE)
    files = leftovers(registry)

    def refuse(record: ImageRecord) -> None:
        assert record.ref == "demo:2" and not record.root.exists()
        raise ImageError("over the quota")

    with pytest.raises(ImageError, match="over the quota"):
        registry.push("demo", "2", EXAMPLE, admit=refuse)
    assert registry.list() == [before] and leftovers(registry) == files


def test_all_images_together_are_held_to_the_registrys_limit(tmp_path: Path) -> None:
    """Past max_total_bytes a push is refused by name and leaves nothing; a version that would be removed
    anyway does not count against the push that replaces it."""
    registry = ImageRegistry(tmp_path / "images", max_total_bytes=3 * MB)
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src)
    (src / "weights.bin").write_bytes(os.urandom(2 * MB))
    first = registry.push("demo", "1", src)
    (src / "weights.bin").write_bytes(os.urandom(2 * MB))
    with pytest.raises(ImageError, match=r"past 3 MB .*--images-max-mb.*zeroscale images delete"):
        registry.push("demo", "2", src)
    assert registry.list() == [first] and not (registry.root / "demo" / "2").exists()
    second = registry.push("demo", "1", src)  # replaces the first, which nothing runs
    assert registry.list() == [second] and not first.root.exists()
    assert 2 * MB < registry.total_bytes() < 3 * MB


@pytest.mark.parametrize(
    ("name", "tag", "expected"),
    [
        ("Demo", "1", "Image name 'Demo' is not valid"),
        ("de mo", "1", "Image name 'de mo' is not valid"),
        ("../x", "1", "Image name '../x' is not valid"),
        ("a" * 129, "1", "is not valid"),
        ("demo", ".hidden", "Image tag '.hidden' is not valid"),
        ("demo", "a/b", "Image tag 'a/b' is not valid"),
    ],
)
def test_bad_names_and_tags(registry: ImageRegistry, name: str, tag: str, expected: str) -> None:
    with pytest.raises(ImageError) as err:
        registry.push(name, tag, EXAMPLE)
    assert expected in err.value.message
    assert leftovers(registry) == [".tmp"]


def test_parse_reference() -> None:
    assert parse_reference("demo") == ("demo", "latest")
    assert parse_reference(" demo:v1 ") == ("demo", "v1")
    assert parse_reference("host:5000/ns/demo:v1") == ("demo", "v1")
    assert parse_reference("host:5000/ns/demo") == ("demo", "latest")
    assert parse_reference("UPPER:1") is None
    assert parse_reference("") is None


HOSTILE: dict[str, tuple[list[Member], str]] = {
    "absolute path": ([file_member("/etc/evil", b"x")], "member '/etc/evil' has an absolute path"),
    "dot-dot": ([file_member("../../evil", b"x")], "member '../../evil' escapes the image"),
    "symlink out": ([symlink_member("link", "../../../etc")], "member 'link' is a symlink to '../../../etc'"),
    "symlink then write through it": (
        [dir_member("d"), symlink_member("d/up", ".."), file_member("d/up/../../evil", b"x")],
        "escapes the image",
    ),
    "hardlink out": ([hardlink_member("hl", "/etc/passwd")], "member 'hl' has an absolute path"),
    "device": ([special_member("null", tarfile.CHRTYPE)], "member 'null' is a device file"),
    "fifo": ([special_member("pipe", tarfile.FIFOTYPE)], "member 'pipe' is a FIFO"),
    "too many files": (
        [file_member(f"f{i}", b"x") for i in range(51)],
        "Image archive has more than 50 members",
    ),
    "too big": ([file_member("zeros", b"\0" * (11 * MB))], "over the limit of 10 MB (10485760 bytes"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_tarballs_are_refused(registry: ImageRegistry, tmp_path: Path, case: str) -> None:
    members, expected = HOSTILE[case]
    archive = write_tar(tmp_path / "image.tar.gz", [file_member("manifest.json", MANIFEST), *members])
    with pytest.raises(ImageError) as err:
        registry.push("evil", "1", archive)
    message = err.value.message
    assert message.startswith("Image evil:1: ")
    assert expected in message
    assert leftovers(registry) == [".tmp"]
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"this is not a tarball at all, just bytes" * 10, "is not a valid tar.gz archive"),
        (b"", "is not a valid tar.gz archive"),
    ],
)
def test_garbage_is_refused(registry: ImageRegistry, body: bytes, expected: str) -> None:
    with pytest.raises(ImageError) as err:
        registry.push_bytes("junk", "1", body)
    assert expected in err.value.message
    assert leftovers(registry) == [".tmp"]


def test_an_image_without_a_good_manifest_is_not_registered(registry: ImageRegistry, tmp_path: Path) -> None:
    no_manifest = write_tar(tmp_path / "a.tar.gz", [file_member("serve", b"#!/bin/sh\n", 0o755)])
    with pytest.raises(ImageError) as err:
        registry.push("demo", "1", no_manifest)
    assert "The image has no manifest.json at its top level" in err.value.message
    not_exec = write_tar(
        tmp_path / "b.tar.gz", [file_member("manifest.json", MANIFEST), file_member("serve")]
    )
    with pytest.raises(ImageError) as err:
        registry.push("demo", "1", not_exec)
    assert "'./serve' is not executable" in err.value.message
    assert leftovers(registry) == [".tmp"]
    assert registry.list() == []


def test_a_directory_holding_the_registry_is_refused(tmp_path: Path) -> None:
    registry = ImageRegistry(tmp_path / "data" / "images")
    with pytest.raises(ImageError) as err:
        registry.push("demo", "1", tmp_path)
    assert "contains the image registry" in err.value.message


def test_stale_staging_of_dead_pushers_is_removed(tmp_path: Path) -> None:
    registry = ImageRegistry(tmp_path / "images")
    stale = registry.root / ".tmp" / "999999999-abc"
    (stale / "image").mkdir(parents=True)
    ours = registry.root / ".tmp" / f"{os.getpid()}-def"
    ours.mkdir()
    ImageRegistry(tmp_path / "images")
    assert not stale.exists()
    assert ours.exists()
