"""The server's side of the sandbox: what a worker's policy grants, and the start-up report on a host that
cannot enforce everything."""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import subprocess
from pathlib import Path

import pytest

from zeroscale.workers import sandbox, seccomp
from zeroscale.workers.confinement import SCRATCH_AHEAD, Confinement, SandboxSettings


def test_a_policy_grants_the_model_and_prepared_code_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    model = data / "artifacts" / "abc" / "model"
    code = data / "artifacts" / "def" / "src"
    pyenv = data / "pyenvs" / "123" / "lib"
    for d in (model, code, pyenv):
        d.mkdir(parents=True)
    conf = Confinement(SandboxSettings(data), data / "workers")
    try:
        env = {"SAGEMAKER_SUBMIT_DIRECTORY": str(code), "ZEROSCALE_PYTHONPATH": str(pyenv)}
        policy = conf.policy(model_dir=str(model), env=env, scratch=conf.scratch("w1"))
        assert {str(model), str(code), str(pyenv)} <= set(policy.read)
        assert not any(sandbox.inside(str(data), Path(p)) for p in policy.read)  # nothing holds the data dir
        assert policy.write == (str(data / "workers" / "scratch" / "w1"),)
        hostile = {"SAGEMAKER_SUBMIT_DIRECTORY": "/etc", "ZEROSCALE_PYTHONPATH": str(data)}
        policy = conf.policy(model_dir=str(model), env=hostile, scratch=conf.scratch("w2"))
        assert "/etc" not in policy.read and str(data) not in policy.read
        assert sandbox.decode(sandbox.encode(policy)) == policy
        # The prepared roots themselves, and a link beneath one to elsewhere, are not code directories.
        (data / "artifacts" / "link").symlink_to("/etc")
        for named in (data / "artifacts", data / "pyenvs", data / "artifacts" / "link"):
            env = {"SAGEMAKER_SUBMIT_DIRECTORY": str(named)}
            policy = conf.policy(model_dir=str(model), env=env, scratch=conf.scratch("w3"))
            assert str(named) not in policy.read
        # Code beneath the model is the model's rule (no rule of its own); a sibling whose name starts
        # with the model's is not beneath it.
        (model / "code").mkdir()
        sibling = data / "artifacts" / "abc" / "model-src"
        sibling.mkdir()
        policy = conf.policy(model_dir=str(model), env={}, scratch=conf.scratch("w4"))
        assert str(model / "code") not in policy.read and str(model) in policy.read
        env = {"SAGEMAKER_SUBMIT_DIRECTORY": str(sibling)}
        policy = conf.policy(model_dir=str(model), env=env, scratch=conf.scratch("w5"))
        assert str(sibling) in policy.read
        # The first ``common`` paths are the server's own, the same for every worker (a spare prepares them).
        assert str(model) not in policy.read[: policy.common] and str(model) in policy.read[policy.common :]
    finally:
        conf.close()


def test_shared_writable_paths_never_hold_the_data_directory(tmp_path: Path) -> None:
    data, shared = tmp_path / "data", tmp_path / "cache"
    shared.mkdir()
    settings = SandboxSettings(data, writable=(shared, tmp_path, tmp_path / "missing"))
    conf = Confinement(settings, data / "workers")
    try:
        policy = conf.policy(model_dir=str(data), env={}, scratch=conf.scratch("w"))
        assert policy.write == (str(data / "workers" / "scratch" / "w"), str(shared))
        warnings = [line for line in conf.announce() if line.startswith("WARNING: workers may not write")]
        assert len(warnings) == 2
    finally:
        conf.close()


@pytest.mark.skipif(not seccomp.probe(), reason="needs seccomp filters")
def test_forked_workers_make_no_memfd_or_sysv_memory_outbound_or_not(tmp_path: Path) -> None:
    """Memory no resident set shows (``seccomp.py``): refused to every forked worker and template, also with
    outbound access (where it is their only filter); an image's server keeps memfd_create."""
    for outbound in (False, True):
        conf = Confinement(SandboxSettings(tmp_path, outbound=outbound), tmp_path / "workers")
        try:
            policy = conf.policy(model_dir=str(tmp_path), env={}, scratch=conf.scratch("w"))
            assert policy.deny_shmem is True and policy.deny_connect is not outbound
            image = conf.image_policy(str(tmp_path), str(tmp_path), {}, conf.scratch("i"), uid=0)
            assert image.deny_shmem is False
            assert "memfd and SysV shared memory refused" in conf.announce()[0]
        finally:
            conf.close()


def test_a_host_without_landlock_says_so_loudly(tmp_path: Path) -> None:
    conf = Confinement(SandboxSettings(tmp_path), tmp_path / "workers")
    try:
        conf.support = dataclasses.replace(
            conf.support, landlock_abi=0, problems=("Landlock is not available: workers can read ...",)
        )
        lines = conf.announce()
        assert lines[0].startswith("sandbox: Landlock ABI 0")
        assert "WARNING: sandbox incomplete on this host: Landlock is not available" in "\n".join(lines)
        assert conf.policy(model_dir=str(tmp_path), env={}, scratch=conf.scratch("w")).landlock is False
    finally:
        conf.close()


def test_a_host_without_bubblewrap_says_images_see_its_sockets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = Confinement(SandboxSettings(tmp_path), tmp_path / "workers")
    try:
        monkeypatch.setenv("PATH", str(tmp_path))
        assert "no bubblewrap (bwrap): images' servers see the host's file system" in "\n".join(
            conf.announce()
        )
        outbound = Confinement(SandboxSettings(tmp_path, outbound=True), tmp_path / "workers")
        assert "bubblewrap" not in "\n".join(outbound.announce())  # they see it anyway
        outbound.close()
    finally:
        conf.close()


def test_an_images_policy_is_tcp_only_unless_outbound(tmp_path: Path) -> None:
    for outbound in (False, True):
        conf = Confinement(SandboxSettings(tmp_path, outbound=outbound), tmp_path / "workers")
        try:
            policy = conf.image_policy(str(tmp_path), str(tmp_path), {}, conf.scratch("w"), 0)
            want = conf.support.seccomp and not outbound
            assert bool(policy.seccomp_filter) is want
            assert not policy.deny_connect  # an image keeps connect (its own Unix sockets)
            if want:
                assert bytes.fromhex(policy.seccomp_filter) == seccomp.program(
                    deny_connect=False, id_range=None, tcp_only=True
                )
        finally:
            conf.close()


def test_a_worker_takes_a_scratch_directory_made_ahead_else_makes_its_own(tmp_path: Path) -> None:
    conf = Confinement(SandboxSettings(tmp_path / "data"), tmp_path / "workers")
    root = tmp_path / "workers" / "scratch"
    try:
        conf.stock_scratch()
        ahead = sorted(str(p) for p in root.iterdir())
        assert len(ahead) == SCRATCH_AHEAD and not conf.stock_low
        assert all(Path(p).stat().st_mode & 0o777 == 0o700 and not any(Path(p).iterdir()) for p in ahead)
        taken = sorted(conf.worker_scratch(f"w{i}") for i in range(SCRATCH_AHEAD))
        assert taken == ahead and conf.stock_low  # no directory made on the way
        made = conf.worker_scratch("w9")  # none waits: made now, named for its worker
        assert made == str(root / "w9") and Path(made).stat().st_mode & 0o777 == 0o700
        assert conf.scratch("template-t") == str(root / "template-t")  # a template's is always its own
        conf.stock_scratch()
        assert len(list(root.iterdir())) == 2 * SCRATCH_AHEAD + 2
    finally:
        conf.close()
    assert sorted(str(p) for p in root.iterdir()) == sorted([*taken, made, str(root / "template-t")])


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands out worker uids")
def test_close_kills_every_process_left_with_one_of_the_servers_uids(tmp_path: Path) -> None:
    """Whether or not the server still counts the uid as in use: a replica takes its uid at its own
    ``setuid``, after the server may have let that uid go (no process had it)."""
    conf = Confinement(SandboxSettings(tmp_path / "data"), tmp_path / "workers")
    handed = conf.uid()
    conf.release({handed})  # no process had it: let go
    block = conf.template_block()
    uids = [handed, block[1] if block else handed + 1]
    stray = [
        subprocess.Popen(["sleep", "60"], preexec_fn=functools.partial(_become_uid, uid)) for uid in uids
    ]
    other = subprocess.Popen(["sleep", "60"], preexec_fn=functools.partial(_become_uid, handed + 100_000))
    try:
        conf.close()
        assert [p.wait(timeout=5) for p in stray] == [-signal.SIGKILL] * len(stray)
        assert other.poll() is None  # another server's range: not this one's to kill
    finally:
        for p in [*stray, other]:
            p.kill()
            p.wait()


def _become_uid(uid: int) -> None:
    os.setgid(uid)
    os.setuid(uid)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands out template uid blocks")
def test_a_retired_block_goes_to_no_template_while_a_process_holds_one_of_its_uids(tmp_path: Path) -> None:
    """A template's model may start a process under any uid of the template's block: when the template
    ends, those uids stay taken until nothing has them, and so does the block's own, so that the next
    template (another tenant's) never shares a uid with what the last one left."""
    conf = Confinement(SandboxSettings(tmp_path / "data"), tmp_path / "workers")
    try:
        block = conf.template_block()
        assert block is not None
        replica = conf.uid(block)  # a live replica keeps its uid: released when it exits
        stray = subprocess.Popen(["sleep", "60"], preexec_fn=functools.partial(_become_uid, block[1]))
        try:
            retired = conf.retire_block(block)
            assert replica not in retired and block[1] in retired and len(retired) == block[1] - block[0] - 1
            assert conf.release({block[0]}) == set()  # the template's own: nothing has it now
            other = conf.template_block()
            assert other is not None and other != block  # the stray's uid is still taken
            assert conf.release(retired) == {block[1]}  # killed; found with it this pass
            assert stray.wait(timeout=5) == -signal.SIGKILL
            assert conf.release(retired) == set()
            conf.release({replica})
            assert conf.template_block() == block  # all its uids free again
        finally:
            stray.kill()
            stray.wait()
    finally:
        conf.close()
