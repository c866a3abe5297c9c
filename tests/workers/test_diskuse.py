"""What a scratch directory holds on disk (real files): blocks, not lengths; links not followed; a nested
worker's directory left to its own count; the walk gives up past its entries."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

from zeroscale.workers.diskuse import MAX_ENTRIES, Usage, held_removed, over_limit, usage

MB = 1024 * 1024


def test_blocks_are_counted_not_lengths_and_links_are_not_followed(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    (scratch / "deep" / "er").mkdir(parents=True)
    (scratch / "deep" / "er" / "data.bin").write_bytes(os.urandom(3 * MB))
    with open(scratch / "sparse.bin", "wb") as f:  # 1 GB long, one block held
        f.seek(1024 * MB - 1)
        f.write(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big.bin").write_bytes(os.urandom(5 * MB))
    (scratch / "link").symlink_to(outside)
    used = usage(str(scratch))
    assert 3 * MB <= used.bytes < 3 * MB + 256 * 1024  # the data, the sparse file's block, the directories
    assert used.entries == 5 and not used.too_many
    assert over_limit("Worker w", used, 2 * MB) is not None
    assert over_limit("Worker w", used, 4 * MB) is None


def test_a_nested_directory_in_skip_is_not_counted(tmp_path: Path) -> None:
    template = tmp_path / "template-1"
    (template / "w-2").mkdir(parents=True)
    (template / "w-2" / "replica.bin").write_bytes(os.urandom(2 * MB))
    (template / "own.bin").write_bytes(os.urandom(MB))
    assert usage(str(template)).bytes >= 3 * MB
    assert usage(str(template), skip=frozenset({str(template / "w-2")})).bytes < 2 * MB
    assert usage(str(tmp_path / "missing")) == Usage(0, 0)


def test_the_walk_gives_up_past_its_entries(tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / f"f{i}").touch()
    assert usage(str(tmp_path), max_entries=20).entries == 21
    many = Usage(0, MAX_ENTRIES + 1)
    assert many.too_many
    why = over_limit("Worker w", many, MB)
    assert why is not None and f"more than {MAX_ENTRIES} files and directories" in why


def _map(path: Path) -> tuple[int, int]:
    """(address, length) of ``path`` mapped with no descriptor left open (Python's mmap keeps a duplicate)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    length = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    finally:
        os.close(fd)
    assert address not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
    return int(address), length


def test_files_removed_but_held_count_once_open_or_mapped(tmp_path: Path) -> None:
    """Removed from the directory, their blocks still taken: counted while this process holds them (each
    once), mappings only when asked (they cost more to read), files elsewhere never."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "mapped.bin").write_bytes(os.urandom(2 * MB))
    address, length = _map(scratch / "mapped.bin")
    os.remove(scratch / "mapped.bin")  # only the mapping holds it
    me = [os.getpid()]
    elsewhere = tmp_path / "elsewhere.bin"
    try:
        with open(scratch / "open.bin", "wb") as held, open(elsewhere, "wb") as other:
            held.write(os.urandom(3 * MB))
            held.flush()
            other.write(os.urandom(MB))
            other.flush()
            with open(scratch / "open.bin", "rb"):  # the same file twice: counted once
                os.remove(scratch / "open.bin")
                os.remove(elsewhere)
                assert usage(str(scratch)).bytes < 64 * 1024
                assert 3 * MB <= held_removed(me, str(scratch), maps=False) < 3 * MB + 64 * 1024
                assert 5 * MB <= held_removed(me, str(scratch), maps=True) < 5 * MB + 64 * 1024
                assert held_removed(me, str(tmp_path / "scr"), maps=True) == 0  # a sibling's prefix
        assert 2 * MB <= held_removed(me, str(scratch), maps=True) < 2 * MB + 64 * 1024
    finally:
        ctypes.CDLL(None).munmap(ctypes.c_void_p(address), ctypes.c_size_t(length))
    assert held_removed(me, str(scratch), maps=True) == 0
