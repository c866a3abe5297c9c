"""manifest.json: what an image must say, and the messages that say what is wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from zeroscale.images import ImageError, Manifest, parse_manifest
from zeroscale.images.manifest import from_json


def image(root: Path, manifest: Any, files: dict[str, tuple[bytes, int]] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    (root / "manifest.json").write_bytes(raw)
    for name, (data, mode) in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, mode)
    return root


def test_a_full_manifest_is_read(tmp_path: Path) -> None:
    root = image(
        tmp_path / "img",
        {
            "entrypoint": ["./bin/serve", "--verbose"],
            "env": {"A": "1", "_B2": ""},
            "workdir": "app/./",
            "content_types": ["text/csv"],
        },
        {"app/bin/serve": (b"#!/bin/sh\n", 0o755)},
    )
    manifest = parse_manifest(root)
    assert manifest == Manifest(("./bin/serve", "--verbose"), {"A": "1", "_B2": ""}, "app", ("text/csv",))
    assert manifest.to_json()["workdir"] == "app"


def test_defaults_and_host_programs(tmp_path: Path) -> None:
    # A bare name is looked up on PATH and an absolute path is the host's: neither must be in the image.
    assert parse_manifest(image(tmp_path / "a", {"entrypoint": ["python3", "serve.py"]})) == Manifest(
        ("python3", "serve.py"), {}, ".", ()
    )
    assert parse_manifest(image(tmp_path / "b", {"entrypoint": ["/usr/bin/env"]})).workdir == "."


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ([], "the manifest must be a JSON object"),
        ({}, "'entrypoint' is required"),
        ({"entrypoint": []}, "'entrypoint' must not be empty"),
        ({"entrypoint": "./serve"}, "'entrypoint' must be a list of strings"),
        ({"entrypoint": ["./serve", 1]}, "'entrypoint' must be a list of strings"),
        ({"entrypoint": [""]}, "'entrypoint' starts with an empty string"),
        ({"entrypoint": ["a\x00b"]}, "'entrypoint' has a NUL byte"),
        ({"entrypoint": ["x"], "cmd": ["y"]}, "unknown key(s) 'cmd'; the keys are entrypoint, env, workdir"),
        ({"entrypoint": ["x"], "env": ["A=1"]}, "'env' must be an object"),
        ({"entrypoint": ["x"], "env": {"1A": "x"}}, "'env' name '1A' is not a valid environment variable"),
        ({"entrypoint": ["x"], "env": {"A-B": "x"}}, "'env' name 'A-B' is not a valid"),
        ({"entrypoint": ["x"], "env": {"N": 1}}, "'env' value of N must be a string (quote numbers"),
        ({"entrypoint": ["x"], "workdir": "/opt/program"}, "must be relative to the image root"),
        ({"entrypoint": ["x"], "workdir": "a/../.."}, "'workdir' 'a/../..' leaves the image"),
        ({"entrypoint": ["x"], "workdir": ""}, "'workdir' must be a non-empty string"),
        ({"entrypoint": ["x"], "content_types": "text/csv"}, "'content_types' must be a list of strings"),
    ],
)
def test_bad_manifests_say_what_to_fix(doc: Any, expected: str) -> None:
    with pytest.raises(ImageError) as err:
        from_json(doc)
    message = err.value.message
    assert message.startswith("manifest.json: ")
    assert expected in message
    assert '"entrypoint": ["./serve"]' in message  # every error shows what a manifest looks like
    assert err.value.code == "ValidationException"


@pytest.mark.parametrize(
    ("manifest", "files", "expected"),
    [
        (None, {}, "The image has no manifest.json at its top level"),
        (b"{not json", {}, "manifest.json: not valid JSON"),
        ({"entrypoint": ["x"], "workdir": "app"}, {}, "'workdir' 'app' is not a directory in the image"),
        ({"entrypoint": ["./serve"]}, {}, "'entrypoint' './serve' is not a file in the image"),
        ({"entrypoint": ["./serve"]}, {"serve": (b"#!/bin/sh\n", 0o644)}, "'./serve' is not executable"),
        ({"entrypoint": ["../outside"]}, {}, "'entrypoint' '../outside' leaves the image"),
        ({"entrypoint": ["./bin"]}, {"bin/x": (b"", 0o755)}, "'entrypoint' './bin' is not a regular file"),
    ],
)
def test_manifest_checked_against_the_image(
    tmp_path: Path, manifest: Any, files: dict[str, tuple[bytes, int]], expected: str
) -> None:
    root = tmp_path / "img"
    if manifest is None:
        root.mkdir()
        (root / "serve").write_text("x")
    else:
        image(root, manifest, files)
    (tmp_path / "outside").write_text("#!/bin/sh\n")
    os.chmod(tmp_path / "outside", 0o755)
    with pytest.raises(ImageError) as err:
        parse_manifest(root)
    assert expected in err.value.message


def test_a_workdir_symlink_out_of_the_image_is_refused(tmp_path: Path) -> None:
    root = image(tmp_path / "img", {"entrypoint": ["x"], "workdir": "link"})
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(ImageError) as err:
        parse_manifest(root)
    assert "'workdir' 'link' is not a directory in the image" in err.value.message
