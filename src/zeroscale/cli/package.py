"""``zeroscale package``: a model file (or directory), inference code and requirements -> model.tar.gz.

The layout SageMaker's framework containers expect::

    model.joblib            the model file at the root (a directory's contents, for a model directory)
    code/inference.py       the handler hooks (--code DIR; its files, recursively)
    code/requirements.txt   installed once at deploy time (--requirements FILE, or the one in --code)

A bare model file is stored under the name its image's default model_fn loads (``model_name``):
``clf.joblib`` for the sklearn image becomes ``model.joblib``. Archives are reproducible: sorted members, no
owner names, gzip without a timestamp. ``zeroscale deploy`` packages a bare model file with the same code
(``package_into_cache``).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from zeroscale.errors import DeployError
from zeroscale.progname import command_name
from zeroscale.runtimes.image_uris import resolve_image

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
CODE = "code"
INFERENCE = "inference.py"
REQUIREMENTS = "requirements.txt"
# Not packaged from a code directory: caches and version-control or editor debris.
SKIPPED_DIRS = frozenset(
    {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache", ".ipynb_checkpoints"}
)
SKIPPED_FILES = frozenset({".DS_Store"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")


class PackageError(click.ClickException):
    """Bad input to ``package``: a message for the user, exit status 1."""


# A bare model file's runtime, by its suffix, when no image is named.
_SUFFIX_RUNTIMES = {
    ".joblib": "sklearn",
    ".pkl": "sklearn",
    ".pickle": "sklearn",
    ".pt": "pytorch",
    ".pth": "pytorch",
    ".onnx": "onnx",
}
_MODEL_FN = re.compile(r"^\s*(async\s+)?def\s+model_fn\b", re.MULTILINE)


def image_runtime(image: str) -> str | None:
    """The built-in runtime of an image URI or alias; None for an image zeroscale does not know (one pushed
    with `zeroscale images push`, whose server loads what it likes)."""
    try:
        return resolve_image(image)
    except DeployError:
        return None


def guess_runtime(model: Path) -> str | None:
    """The built-in runtime a bare model file's suffix suggests (None: no telling)."""
    return _SUFFIX_RUNTIMES.get(model.suffix.lower())


def _defines_model_fn(code_dir: Path | None) -> bool:
    if code_dir is None or not (code_dir / INFERENCE).is_file():
        return False
    return bool(_MODEL_FN.search((code_dir / INFERENCE).read_text(errors="replace")))


def model_name(model: Path, runtime: str | None, code_dir: Path | None = None) -> str:
    """The name a bare model file gets in the archive: what ``runtime``'s default model_fn loads (sklearn
    model.joblib or model.pkl, xgboost xgboost-model, pytorch model.pt or model.pth, onnx model.onnx). Its
    own name for an image zeroscale does not know, and when ``code_dir``'s inference.py defines model_fn
    (that loads the file by its own name). PackageError when the suffix says it is another runtime's."""
    if runtime is None or _defines_model_fn(code_dir):
        return model.name
    suffix = model.suffix.lower()
    guessed = guess_runtime(model)
    # XGBoost's loader also unpickles (a pickled Booster or XGBClassifier): .pkl/.joblib fit it too.
    if guessed is not None and guessed != runtime and not (runtime == "xgboost" and guessed == "sklearn"):
        raise PackageError(
            f"{model.name} looks like a {guessed} model, but the image is the {runtime} runtime's: "
            f"pass --image {guessed} (or a code/inference.py with a model_fn that loads it)"
        )
    if runtime == "sklearn":
        return "model.pkl" if suffix in (".pkl", ".pickle") else "model.joblib"
    if runtime == "xgboost":
        return "xgboost-model"
    if runtime == "pytorch":
        return "model.pth" if suffix == ".pth" else "model.pt"
    if runtime == "onnx":
        return "model.onnx"
    return model.name


@dataclass(frozen=True)
class Member:
    arcname: str
    source: Path
    size: int


def _files(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` (symlinks to files are followed), sorted, without debris."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in sorted(filenames):
            if name in SKIPPED_FILES or name.endswith(SKIPPED_SUFFIXES):
                continue
            path = Path(dirpath) / name
            if path.is_file():
                yield path


def _member(arcname: str, source: Path) -> Member:
    return Member(arcname, source, source.stat().st_size)


def collect(
    model: Path,
    code_dir: Path | None = None,
    requirements: Path | None = None,
    exclude: Path | None = None,
    runtime: str | None = None,
) -> tuple[list[Member], list[str]]:
    """What the archive will hold, and warnings for the user. A bare model file is stored as ``runtime``'s
    default model_fn expects (``model_name``). Raises PackageError for unusable input."""
    warnings: list[str] = []
    if not model.exists():
        raise PackageError(f"Model file {model} does not exist")
    if model.is_file() and model.name.endswith(ARCHIVE_SUFFIXES):
        raise PackageError(f"{model} is already an archive: deploy it as it is (--model {model})")
    members: list[Member] = []
    if model.is_dir():
        members += [_member(p.relative_to(model).as_posix(), p) for p in _files(model)]
        if not members:
            raise PackageError(f"Model directory {model} has no files")
    elif model.is_file():
        members.append(_member(model_name(model, runtime, code_dir), model))
    else:
        raise PackageError(f"Model file {model} is not a regular file or directory")

    if code_dir is not None:
        if not code_dir.is_dir():
            raise PackageError(f"--code {code_dir}: not a directory")
        if any(m.arcname.startswith(CODE + "/") for m in members):
            raise PackageError(f"Model directory {model} already has a code/ directory and --code was given")
        members += [_member(f"{CODE}/{p.relative_to(code_dir).as_posix()}", p) for p in _files(code_dir)]
        if not (code_dir / INFERENCE).is_file():
            warnings.append(
                f"{code_dir} has no {INFERENCE}: the runtime's default handlers serve the model "
                "unless the model's SAGEMAKER_PROGRAM environment variable names another script"
            )
    if requirements is not None:
        if not requirements.is_file():
            raise PackageError(f"--requirements {requirements}: no such file")
        target = f"{CODE}/{REQUIREMENTS}"
        for member in members:
            if member.arcname == target and member.source.resolve() != requirements.resolve():
                warnings.append(f"--requirements {requirements} replaces {member.source}")
        members = [m for m in members if m.arcname != target] + [_member(target, requirements)]
    if exclude is not None:
        resolved = exclude.resolve()
        members = [m for m in members if m.source.resolve() != resolved]
    return sorted(members, key=lambda m: m.arcname), warnings


def _tarinfo(member: Member) -> tarfile.TarInfo:
    info = tarfile.TarInfo(member.arcname)
    stat = member.source.stat()
    info.size = stat.st_size
    info.mtime = int(stat.st_mtime)
    info.mode = 0o755 if stat.st_mode & 0o111 else 0o644
    return info  # uid/gid 0, no user or group names


def write_archive(out: Path, members: list[Member]) -> int:
    """Write ``members`` as a gzip-compressed tar at ``out`` (atomically); returns its size in bytes."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for member in members:
                with member.source.open("rb") as data:
                    tar.addfile(_tarinfo(member), data)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return out.stat().st_size


def package_into_cache(model: Path, code_dir: Path | None = None, image: str | None = None) -> Path:
    """``zeroscale deploy``'s packaging of a bare model file for ``image`` (None: the runtime its suffix
    suggests): model.tar.gz in the user's cache, named by its content (the same input gives the same
    file)."""
    runtime = image_runtime(image) if image is not None else guess_runtime(model)
    members, _ = collect(model, code_dir, runtime=runtime)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zeroscale" / "packages"
    cache.mkdir(parents=True, exist_ok=True)
    staged = cache / f".{os.getpid()}-{uuid.uuid4().hex}.tar.gz"
    try:
        write_archive(staged, members)
        digest = hashlib.sha256()
        with staged.open("rb") as f:
            for chunk in iter(lambda: f.read(1024 * 1024), b""):
                digest.update(chunk)
        out = cache / f"{digest.hexdigest()[:32]}.tar.gz"
        os.replace(staged, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
    return out


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


@click.command()
@click.argument("model_file", type=click.Path(path_type=Path))
@click.option(
    "--code",
    "code_dir",
    type=click.Path(path_type=Path),
    help="Directory with inference.py (and helpers); packaged as code/.",
)
@click.option(
    "--requirements",
    type=click.Path(path_type=Path),
    help="requirements.txt to install at deploy time; packaged as code/requirements.txt.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("model.tar.gz"),
    show_default=True,
    help="Where to write the archive.",
)
@click.option(
    "--image",
    default=None,
    help="The image the archive is for (an alias such as sklearn, xgboost, pytorch, onnx, or an image URI; "
    "see `zeroscale images`): a bare model file is stored under the name it loads, e.g. model.joblib. "
    "Default: guessed from the file's suffix (.joblib/.pkl: sklearn, .pt/.pth: pytorch, .onnx: onnx).",
)
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def package(
    model_file: Path,
    code_dir: Path | None,
    requirements: Path | None,
    output: Path,
    image: str | None,
    force: bool,
) -> None:
    """Build a model.tar.gz from MODEL_FILE (a model file, or a directory of them), inference code and
    requirements, laid out as SageMaker expects; deploy it with `zeroscale deploy --model OUTPUT`."""
    if not model_file.exists():  # what was asked for first, before anything about the output
        raise PackageError(f"Model file {model_file} does not exist")
    if output.is_dir():
        raise PackageError(f"Output {output} is a directory; name the archive file, e.g. -o model.tar.gz")
    if output.exists() and not force:
        raise PackageError(f"Output {output} already exists; pass --force to overwrite it")
    if not output.name.endswith(ARCHIVE_SUFFIXES[:2]):
        click.secho(
            f"warning: {output} does not end in .tar.gz (it is a gzip-compressed tar)", fg="yellow", err=True
        )
    if not output.parent.is_dir():
        raise PackageError(f"Output directory {output.parent} does not exist")
    runtime = image_runtime(image) if image is not None else guess_runtime(model_file)
    members, warnings = collect(model_file, code_dir, requirements, exclude=output, runtime=runtime)
    for warning in warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    size = write_archive(output, members)
    click.echo(f"wrote {output} ({_size(size)}, {len(members)} files)")
    width = max(len(m.arcname) for m in members)
    for member in members:
        click.echo(f"  {member.arcname.ljust(width)}  {_size(member.size)}")
    if model_file.is_file():
        stored = model_name(model_file, runtime, code_dir)
        if stored != model_file.name:
            click.echo(f"{model_file.name} is stored as {stored}, the file the {runtime} image loads")
    click.echo(
        f"deploy: {command_name()} deploy --name NAME --model {output} --image {image or runtime or 'IMAGE'}"
    )
