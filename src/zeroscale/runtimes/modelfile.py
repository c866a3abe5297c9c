"""Where a runtime's default model_fn finds the model file in the model directory."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence


def find_model_file(
    model_dir: str, names: Sequence[str], candidate: Callable[[str], bool], none_found: str
) -> str:
    """The first of ``names`` that is a file in ``model_dir``; else the directory's only file whose name
    ``candidate`` accepts. Neither: FileNotFoundError naming ``names`` and the candidates found
    (``none_found`` when there are none)."""
    for name in names:
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            return path
    found = sorted(
        name
        for name in os.listdir(model_dir)
        if candidate(name) and os.path.isfile(os.path.join(model_dir, name))
    )
    if len(found) == 1:
        return os.path.join(model_dir, found[0])
    raise FileNotFoundError(
        f"No {' or '.join(names)} in {model_dir} (found {', '.join(found) or none_found}) "
        "and code/inference.py defines no model_fn"
    )
