"""``/zeroscale/v1/images``: the images a model can name in CreateModel's ``Image``.

GET  /zeroscale/v1/images               built-in runtimes and registered bring-your-own images
GET  /zeroscale/v1/images/<name>/<tag>  one registered image
PUT  /zeroscale/v1/images/<name>/<tag>  register one; the body is a tar.gz of the image directory
DELETE /zeroscale/v1/images/<name>/<tag>  forget one (its files stay while endpoints run them)

With several front ends on one database, a push goes into the registry of the front end it reaches, which
the others copy; listing, describing and deleting see every live front end's (``images.sharing``), and a
deployment copies the latest push of its tag from whichever front end holds it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from zeroscale.api.app import RestRequest, RestResponse
from zeroscale.errors import DeployError, ResourceNotFound, UnknownOperationException
from zeroscale.iam.authz import CALLER
from zeroscale.images import ImageError, validate_name, validate_tag
from zeroscale.images.sharing import SharedImages
from zeroscale.images.tags import Pusher
from zeroscale.runtimes.image_uris import IMAGES, resolve_image
from zeroscale.runtimes.registry import RUNTIMES

_JSON = "application/json"


def builtin_images() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for family in IMAGES:
        runtime = RUNTIMES.get(family.runtime)
        out.append(
            {
                "Name": family.aliases[0] if family.aliases else family.runtime,
                "Kind": "builtin",
                "Runtime": family.runtime,
                "Repository": family.repository,
                "Aliases": list(family.aliases),
                "Version": runtime.framework_version if runtime else "",
                "ContentTypes": list(runtime.content_types) if runtime else [],
            }
        )
    return out


def registered_image(doc: dict[str, Any]) -> dict[str, Any]:
    manifest = doc["manifest"]
    return {
        "Name": doc["name"],
        "Kind": "image",
        "Tag": doc["tag"],
        "Image": f"{doc['name']}:{doc['tag']}",
        "Digest": doc["digest"],
        "PushedAt": doc["pushed_at"],
        "Files": doc["files"],
        "Size": doc["size"],
        "PushedBy": doc.get("pushed_by") or "",  # the IAM user's name; "" for the admin's
        "Entrypoint": manifest["entrypoint"],
        "Workdir": manifest["workdir"],
        "EnvNames": sorted(manifest["env"]),
        "ContentTypes": manifest["content_types"],
    }


class ImagesApi:
    def __init__(self, images: SharedImages) -> None:
        self._images = images

    async def handle(self, request: RestRequest) -> RestResponse:
        parts = [p for p in request.path.split("/")[1:] if p]
        if request.method == "GET" and not parts:
            everywhere = await asyncio.to_thread(self._images.everywhere)
            return _ok({"Images": builtin_images() + [registered_image(doc) for doc in everywhere]})
        if len(parts) == 2 and request.method in ("GET", "PUT", "DELETE"):
            name, tag = validate_name(parts[0]), validate_tag(parts[1])
            if request.method == "PUT":
                return _ok(registered_image(await self._push(name, tag, request.body)))
            if request.method == "DELETE":
                try:
                    deleted, kept = await asyncio.to_thread(self._images.delete, name, tag)
                except ImageError:
                    raise ResourceNotFound(f"Image {name}:{tag} is not registered.") from None
                return _ok({**registered_image(deleted), "FilesKept": kept})
            found = await asyncio.to_thread(self._images.find, name, tag)
            if found is None:
                raise ResourceNotFound(f"Image {name}:{tag} is not registered.")
            return _ok(registered_image(found))
        where = f"{request.method} /zeroscale/v1/{request.path}"
        raise UnknownOperationException(f"No images operation at {where}.")

    async def _push(self, name: str, tag: str, body: bytes) -> dict[str, Any]:
        if _is_builtin(name):
            raise ImageError(f"Image name {name!r} is a built-in framework image; choose another name.")
        if not body:
            raise ImageError(f"Image {name}:{tag}: the request body must be a tar.gz of the image directory.")
        by = Pusher(*CALLER.get())  # the IAM user the request is authorized for: its quota counts the push
        record = await asyncio.to_thread(self._images.push, name, tag, body, by)  # the others copy it now
        return {**record.to_json(), "pushed_by": by.name}


def _is_builtin(name: str) -> bool:
    try:
        resolve_image(name)
    except DeployError:
        return False
    return True


def _ok(doc: dict[str, Any]) -> RestResponse:
    return 200, _JSON, json.dumps(doc).encode()
