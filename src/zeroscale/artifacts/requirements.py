"""What a model's ``requirements.txt`` may ask of the server's pip.

pip runs at deploy time, outside any worker's sandbox, as the server's user. So a model's requirements are
held to what installs without running the model author's code on the server and without pointing the
server's network at hosts of the author's choosing:

- wheels only (``pip install --only-binary=:all:``, ``pyenv.py``): a source distribution's build
  (``setup.py``, a build backend) is code, and would run here; a wheel is unpacked, never run;
- packages by name from the index the server is configured with (``PIP_INDEX_URL``, pip's own
  configuration), or wheels shipped in the model's code directory by relative path;
- no other index or link source (``--index-url``, ``--extra-index-url``, ``--find-links``,
  ``--trusted-host``), no URL or VCS requirement (``pkg @ https://...``, ``git+...``), no editable
  install (``-e``), and ``-r`` / ``-c`` only to files in the same directory tree, held to the same rules.

``vet`` refuses anything else by line, with DeployError (the endpoint's FailureReason).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from zeroscale.errors import DeployError

_NESTED = {"-r", "--requirement", "-c", "--constraint"}
_ALLOWED_OPTIONS = {"--hash", "--pre", "--no-index"}  # each narrows what pip takes
_REFUSED_OPTIONS = {
    "-e": "an editable install (its build runs the author's code)",
    "--editable": "an editable install (its build runs the author's code)",
    "-i": "another package index",
    "--index-url": "another package index",
    "--extra-index-url": "another package index",
    "-f": "another link source",
    "--find-links": "another link source",
    "--trusted-host": "an untrusted host",
    "--no-binary": "a source build (its build runs the author's code)",
    "--only-binary": "a choice of binaries (only wheels are installed)",
}
_MAX_FILES = 32


def vet(requirements_file: Path) -> None:
    """Refuse, naming the file and line, what the module docstring excludes. ``requirements_file`` and
    the files it nests must lie under its directory."""
    root = requirements_file.parent.resolve()
    seen: set[Path] = set()
    todo = [requirements_file.resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if len(seen) > _MAX_FILES:
            raise DeployError(f"{requirements_file.name} nests more than {_MAX_FILES} requirements files.")
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise DeployError(f"Cannot read {path.name}: {exc.strerror or exc}") from exc
        for number, line in enumerate(_logical_lines(text), start=1):
            for nested in _vet_line(line, f"{path.relative_to(root)} line {number}"):
                target = (path.parent / nested).resolve()
                if not target.is_relative_to(root) or not target.is_file():
                    raise DeployError(
                        f"{path.relative_to(root)} line {number}: {nested} is not a file beside the "
                        "requirements (nested files must be in the model's code directory)."
                    )
                todo.append(target)


def _logical_lines(text: str) -> list[str]:
    """pip's lines: comments dropped, backslash continuations joined (numbered by logical line)."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0] if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending)
    return out


def _vet_line(line: str, where: str) -> list[str]:
    """The files ``line`` nests (``-r`` / ``-c``); DeployError for what it may not ask. A line is
    ``requirement [; marker] [options]``: the marker is pip's business, the options and the requirement
    (its tokens joined: ``numpy >= 1.2``) are checked."""
    requirement, _, marker = line.partition(";")
    try:
        tokens = shlex.split(requirement) + [t for t in shlex.split(marker) if t.startswith("-")]
    except ValueError:
        raise DeployError(f"{where}: cannot be read as a requirement ({line.strip()!r}).") from None
    nested: list[str] = []
    words: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("-"):
            words.append(token)
            continue
        name, eq, value = token.partition("=")
        option = name if token.startswith("--") else token[:2]
        if option in _REFUSED_OPTIONS:
            raise DeployError(
                f"{where}: {option} asks for {_REFUSED_OPTIONS[option]}; a model's requirements may name "
                "packages from the server's index, or wheels in the model's code directory."
            )
        if option in _NESTED:
            if eq:
                nested.append(value)
            elif token.startswith("--") or len(token) == 2:
                if i >= len(tokens):
                    raise DeployError(f"{where}: {option} names no file.")
                nested.append(tokens[i])
                i += 1
            else:  # -rfile
                nested.append(token[2:])
        elif option not in _ALLOWED_OPTIONS:
            raise DeployError(f"{where}: the option {option} is not accepted in a model's requirements.")
    if words:
        _vet_requirement(" ".join(words), where)
    return nested


def _vet_requirement(token: str, where: str) -> None:
    if "://" in token or token.startswith(("git+", "hg+", "svn+", "bzr+")) or "@" in token:
        raise DeployError(
            f"{where}: {token!r} is a URL or direct reference; name the package (the server's index), or "
            "ship the wheel in the model's code directory and name it by relative path."
        )
    looks_like_path = os.sep in token or token.startswith(".") or token.endswith((".whl", ".zip", ".tar.gz"))
    if looks_like_path and not token.endswith(".whl"):
        raise DeployError(
            f"{where}: {token!r} is a local source (its build would run the author's code); ship a wheel."
        )
    if looks_like_path and (token.startswith("/") or ".." in Path(token).parts):
        raise DeployError(
            f"{where}: {token!r} must be a wheel in the model's code directory (a relative path)."
        )
