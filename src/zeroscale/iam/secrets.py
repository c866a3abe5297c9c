"""Secret access keys at rest: encrypted with the server's key (``<data-dir>/iam.key``, 32 random bytes,
mode 0600), never stored in plain text. SigV4 needs the secret itself to check a signature, so a one-way
hash cannot do; the database alone reveals nothing.

The cipher is built from the standard library: HMAC-SHA256 as a pseudorandom function in counter mode for
the keystream, then HMAC-SHA256 over nonce and ciphertext (encrypt-then-MAC), with separate derived keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

_NONCE = 16
_TAG = 32


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._enc = hmac.digest(key, b"zeroscale iam encrypt", "sha256")
        self._mac = hmac.digest(key, b"zeroscale iam authenticate", "sha256")

    @classmethod
    def load_or_create(cls, path: Path) -> SecretBox:
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            key = secrets.token_bytes(32)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
        if len(key) != 32:
            raise ValueError(f"{path} is not a zeroscale IAM key (32 bytes)")
        return cls(key)

    def derive(self, label: bytes) -> bytes:
        """A key of its own for another use of the same shared secret (``label`` names the use)."""
        return hmac.digest(self._mac, b"zeroscale derive " + label, "sha256")

    def _stream(self, nonce: bytes, size: int) -> bytes:
        blocks = (size + 31) // 32
        return b"".join(hmac.digest(self._enc, nonce + i.to_bytes(4, "big"), "sha256") for i in range(blocks))

    def seal(self, plain: str) -> str:
        data = plain.encode()
        nonce = secrets.token_bytes(_NONCE)
        cipher = bytes(a ^ b for a, b in zip(data, self._stream(nonce, len(data)), strict=False))
        tag = hmac.digest(self._mac, nonce + cipher, "sha256")
        return base64.b64encode(nonce + cipher + tag).decode()

    def check(self) -> str:
        """What identifies this key among others, stored beside the secrets it seals (a MAC of a constant:
        it reveals nothing of the key)."""
        return hmac.digest(self._mac, b"zeroscale iam key check", "sha256").hex()[:32]

    def open(self, sealed: str) -> str:
        raw = base64.b64decode(sealed)
        nonce, cipher, tag = raw[:_NONCE], raw[_NONCE:-_TAG], raw[-_TAG:]
        if not hmac.compare_digest(tag, hmac.digest(self._mac, nonce + cipher, "sha256")):
            raise ValueError("a stored secret failed its integrity check")
        return bytes(a ^ b for a, b in zip(cipher, self._stream(nonce, len(cipher)), strict=False)).decode()


class KeyMismatch(Exception):
    """This server's key is not the one the database's secrets were sealed with (another front end's)."""


def fingerprint(secret: str) -> str:
    """For logs and tests: a short digest that identifies a secret without revealing it."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]
