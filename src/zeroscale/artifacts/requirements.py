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

``vet`` refuses anything else by line, with DeployError (the endpoint's FailureReason), and returns what
it accepted: pip never reads the author's files. It reads one that zeroscale writes from what ``vet``
parsed (``Vetted.lines``: each requirement, its marker and hashes; wheels by absolute path; nested files
flattened), so no difference between how ``vet`` and pip read a file (pip honours a UTF-16 byte-order mark
or a ``# -*- coding: utf-7 -*-`` line, and would find options ``vet`` never saw) can reach pip. A file
that is not UTF-8 text is refused.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement

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
_WHEEL_PATH = re.compile(r"[A-Za-z0-9_.+][A-Za-z0-9_.+/-]*\.whl")
_CODING = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")  # PEP 263, as pip reads it


@dataclass
class Vetted:
    """What a requirements file (and the files it nests) asked for and ``vet`` accepted, for pip."""

    requirements: list[str] = field(default_factory=list)  # a requirement per line, marker and hashes kept
    constraints: list[str] = field(default_factory=list)  # from files nested with -c
    options: list[str] = field(default_factory=list)  # pip's options (--pre, --no-index), once each

    @property
    def text(self) -> str:
        """The requirements file pip reads."""
        return "".join(f"{line}\n" for line in self.requirements)

    @property
    def constraints_text(self) -> str:
        return "".join(f"{line}\n" for line in self.constraints)

    def add_option(self, option: str) -> None:
        if option not in self.options:
            self.options.append(option)


def vet(requirements_file: Path) -> Vetted:
    """Refuse, naming the file and line, what the module docstring excludes; what was accepted otherwise.
    ``requirements_file`` and the files it nests must lie under its directory."""
    root = requirements_file.parent.resolve()
    vetted = Vetted()
    seen: set[Path] = set()
    todo = [(requirements_file.resolve(), False)]
    while todo:
        path, constraint = todo.pop(0)
        if path in seen:
            continue
        seen.add(path)
        if len(seen) > _MAX_FILES:
            raise DeployError(f"{requirements_file.name} nests more than {_MAX_FILES} requirements files.")
        name = str(path.relative_to(root))
        text = _utf8(path, name)
        into = vetted.constraints if constraint else vetted.requirements
        for number, line in enumerate(_logical_lines(text), start=1):
            where = f"{name} line {number}"
            nested, accepted = _vet_line(line, where, path.parent, root, vetted)
            if accepted:
                into.append(accepted)
            for target_name, as_constraint in nested:
                target = (path.parent / target_name).resolve()
                if not target.is_relative_to(root) or not target.is_file():
                    raise DeployError(
                        f"{where}: {target_name} is not a file beside the requirements (nested files must "
                        "be in the model's code directory)."
                    )
                todo.append((target, constraint or as_constraint))
    return vetted


def _utf8(path: Path, name: str) -> str:
    """The file's text, when it is UTF-8 (an optional UTF-8 byte-order mark, no NUL, no other declared
    encoding); DeployError naming the file otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DeployError(f"Cannot read {name}: {exc.strerror or exc}") from exc
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    declared = next((m.group(1) for line in raw.splitlines()[:2] if (m := _CODING.match(line))), None)
    refused = b"\x00" in raw or (
        declared is not None and declared.lower().replace(b"_", b"-") not in (b"utf-8", b"utf8")
    )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        refused = True
    if refused:
        raise DeployError(
            f"{name} is not UTF-8 text (a requirements file must be UTF-8, without another declared "
            "encoding or a UTF-16 byte-order mark)."
        )
    return text


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


def _vet_line(
    line: str, where: str, directory: Path, root: Path, vetted: Vetted
) -> tuple[list[tuple[str, bool]], str]:
    """The files ``line`` nests (each with whether it is a constraints file) and the requirement line pip
    gets for it ("" for none); DeployError for what it may not ask. A line is ``requirement [; marker]
    [options]``: the marker is pip's business (kept as written, without its options), the options and the
    requirement (its tokens joined: ``numpy >= 1.2``) are checked."""
    requirement, _, marker = line.partition(";")
    try:
        marker_tokens = shlex.split(marker)
        tokens = shlex.split(requirement) + [t for t in marker_tokens if t.startswith("-")]
    except ValueError:
        raise DeployError(f"{where}: cannot be read as a requirement ({line.strip()!r}).") from None
    nested: list[tuple[str, bool]] = []
    words: list[str] = []
    hashes: list[str] = []
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
            constraint = option in ("-c", "--constraint")
            if eq:
                nested.append((value, constraint))
            elif token.startswith("--") or len(token) == 2:
                if i >= len(tokens):
                    raise DeployError(f"{where}: {option} names no file.")
                nested.append((tokens[i], constraint))
                i += 1
            else:  # -rfile
                nested.append((token[2:], constraint))
        elif option == "--hash":
            if not eq and i < len(tokens):
                value = tokens[i]
                i += 1
            if not re.fullmatch(r"[a-z0-9]+:[0-9a-fA-F]+", value):
                raise DeployError(f"{where}: --hash wants ALGORITHM:HEXDIGEST, not {value!r}.")
            hashes.append(f"--hash={value}")
        elif option in _ALLOWED_OPTIONS:
            vetted.add_option(option)
        else:
            raise DeployError(f"{where}: the option {option} is not accepted in a model's requirements.")
    if not words:
        if hashes:
            raise DeployError(f"{where}: --hash without a requirement.")
        return nested, ""
    spec = " ".join(words)
    _vet_requirement(spec, where)
    # As pip cuts a line: its options start at the first space-separated token that starts with "-".
    marker_words = marker.split(" ")
    cut = next((n for n, word in enumerate(marker_words) if word.startswith("-")), len(marker_words))
    marker_text = " ".join(marker_words[:cut]).strip()
    if spec.endswith(".whl"):
        accepted = _wheel(spec, marker_text, directory, root, where)
    else:
        try:
            parsed = Requirement(spec + (f" ; {marker_text}" if marker_text else ""))
        except InvalidRequirement as exc:
            raise DeployError(f"{where}: cannot be read as a requirement ({exc}).") from None
        if parsed.url:
            raise DeployError(f"{where}: {spec!r} is a URL or direct reference; name the package.")
        accepted = str(parsed)  # canonical: pip reads exactly what was checked
    if any(word.startswith("-") for word in accepted.split(" ")):  # pip would read an option there
        raise DeployError(f"{where}: a requirement or marker may not hold an option ({line.strip()!r}).")
    return nested, " ".join([accepted, *hashes])


def _wheel(spec: str, marker: str, directory: Path, root: Path, where: str) -> str:
    """A wheel beside the requirements, by its path from the code directory (pip runs there)."""
    wheel = (directory / spec).resolve()
    if not wheel.is_relative_to(root) or not wheel.is_file():
        raise DeployError(f"{where}: {spec!r} is not a wheel in the model's code directory.")
    relative = wheel.relative_to(root).as_posix()
    if not _WHEEL_PATH.fullmatch(relative):
        raise DeployError(
            f"{where}: {spec!r}: name a wheel with letters, digits and . _ + - / only (no spaces)."
        )
    if marker:
        try:
            Marker(marker)
        except InvalidMarker as exc:
            raise DeployError(f"{where}: cannot be read as a marker ({exc}).") from None
        return f"./{relative} ; {Marker(marker)}"
    return f"./{relative}"


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
