"""Bring-your-own images: a directory (pushed as a tar.gz) with a manifest naming its entrypoint, environment
and working directory, kept under ``<data-dir>/images/<name>/<tag>/`` and referenced by ``name:tag`` in
CreateModel's ``Image``. No container engine: the workers package starts the entrypoint as a process."""

from zeroscale.images.manifest import MANIFEST_FILE, Manifest, parse_manifest
from zeroscale.images.names import ImageError, parse_reference, validate_name, validate_tag
from zeroscale.images.registry import ImageRecord, ImageRegistry

__all__ = [
    "MANIFEST_FILE",
    "ImageError",
    "ImageRecord",
    "ImageRegistry",
    "Manifest",
    "parse_manifest",
    "parse_reference",
    "validate_name",
    "validate_tag",
]
