"""Where the console's browser tests find Chromium."""

from __future__ import annotations

import os
import shutil

import pytest


def chromium_path() -> str:
    """Debian's Chromium (``apt-get install chromium``; ``make test`` does it), or ZEROSCALE_CHROMIUM."""
    for candidate in (os.environ.get("ZEROSCALE_CHROMIUM"), "chromium", "chromium-browser"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    pytest.fail(
        "No Chromium found for the console's browser tests: run `make test` (it installs Debian's chromium) "
        "or `apt-get install chromium`, or set ZEROSCALE_CHROMIUM to a Chromium binary."
    )
