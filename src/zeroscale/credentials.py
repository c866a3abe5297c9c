"""Admin credentials: from Settings, or generated on first start into <data-dir>/credentials (mode 0600),
in the AWS shared-credentials format so boto3, the AWS CLI and the zeroscale CLI can all read it."""

from __future__ import annotations

import configparser
import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

PROFILE = "default"


@dataclass(frozen=True)
class AdminCredentials:
    access_key_id: str
    secret_access_key: str
    path: Path | None  # the file they were read from or written to; None when given by configuration


def read_file(path: Path, profile: str = PROFILE) -> AdminCredentials | None:
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
        section = parser[profile]
        return AdminCredentials(section["aws_access_key_id"], section["aws_secret_access_key"], path)
    except (KeyError, configparser.Error):
        return None


def load_or_create(path: Path, access_key_id: str | None, secret_access_key: str | None) -> AdminCredentials:
    if access_key_id and secret_access_key:
        return AdminCredentials(access_key_id, secret_access_key, None)
    existing = read_file(path)
    if existing is not None:
        return existing
    alphabet = string.ascii_uppercase + string.digits
    key = "ZS" + "".join(secrets.choice(alphabet) for _ in range(18))
    secret = secrets.token_urlsafe(30)[:40]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"[{PROFILE}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")
    os.chmod(path, 0o600)
    return AdminCredentials(key, secret, path)
