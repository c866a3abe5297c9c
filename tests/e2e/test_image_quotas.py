"""--images-max-mb-per-user and --images-max-per-user through a real server: real IAM users allowed
zeroscale:PushImage push over the signed REST API (as `zeroscale images push` does); a user past either
bound is refused by name, with nothing kept, while another user and the admin push on, and what the user
deletes makes room again. The listing names who pushed each image."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from zeroscale.cli.client import ApiError, Clients
from zeroscale.cli.image_commands import pack
from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "byo-image"
KB = 1024


def image(root: Path, payload_kb: int) -> bytes:
    """The example image with ``payload_kb`` KB of random bytes of its own (never compressed away)."""
    source = root / os.urandom(8).hex()
    shutil.copytree(EXAMPLE, source)
    (source / "payload.bin").write_bytes(os.urandom(payload_kb * KB))
    return pack(source)


def test_one_iam_user_cannot_fill_the_image_registry(
    server_factory: Callable[..., ServerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = server_factory(images_max_mb_per_user=1, images_max_per_user=3)
    iam = server.client("iam")
    policy = json.dumps({"Statement": [{"Effect": "Allow", "Action": "zeroscale:*", "Resource": "*"}]})

    def api(access_key: str, secret_key: str) -> Clients:
        """zeroscale's own API signed with this key, as the CLI signs it."""
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
        return Clients(server.url, REGION, server.data_dir)

    clients = {}
    for user in ("tenant-1", "tenant-2"):
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="images", PolicyDocument=policy)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        clients[user] = api(key["AccessKeyId"], key["SecretAccessKey"])
    one, two, admin = clients["tenant-1"], clients["tenant-2"], api(ACCESS_KEY, SECRET_KEY)

    def push(client: Clients, ref: str, payload_kb: int) -> dict[str, Any]:
        name, tag = ref.split(":")
        answer: dict[str, Any] = json.loads(
            client.rest("PUT", f"images/{name}/{tag}", body=image(tmp_path, payload_kb))
        )
        return answer

    def refused(client: Clients, ref: str, payload_kb: int) -> str:
        with pytest.raises(ApiError) as err:
            push(client, ref, payload_kb)
        assert err.value.status == 400
        return err.value.message

    # the bytes of a user's pushes: 1 MB
    assert push(one, "one:1", 600)["PushedBy"] == "tenant-1"
    assert refused(one, "one:2", 600) == (
        "ValidationException: Image one:2: its 0.6 MB would take IAM user tenant-1's pushed images past "
        "1 MB (they hold 0.6 MB; zeroscale serve --images-max-mb-per-user): delete images no model needs "
        "(zeroscale images delete NAME:TAG), or ask the operator to raise it."
    )
    assert not (server.data_dir / "images" / "one" / "2").exists()
    push(two, "two:1", 600)  # another user's room is its own
    for n in range(2):
        push(admin, f"base:{n}", 600)  # the admin's are not counted
    listed = {
        i["Image"]: i for i in json.loads(admin.rest("GET", "images"))["Images"] if i["Kind"] == "image"
    }
    assert {ref: i["PushedBy"] for ref, i in listed.items()} == {
        "one:1": "tenant-1",
        "two:1": "tenant-2",
        "base:0": "",
        "base:1": "",
    }
    one.rest("DELETE", "images/one/1")  # frees tenant-1's room
    push(one, "one:2", 600)

    # the number of a user's tags: 3
    push(one, "tiny:1", 1)
    push(one, "tiny:2", 1)
    assert "already name 3 image tags" in refused(one, "tiny:3", 1)
    assert "(zeroscale serve --images-max-per-user)" in refused(one, "tiny:3", 1)
    push(one, "tiny:2", 2)  # a tag pushed again is no new one
    push(admin, "tiny:3", 1)
    push(two, "tiny:4", 1)
    one.rest("DELETE", "images/tiny/1")
    push(one, "tiny:5", 1)
