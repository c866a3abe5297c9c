"""Container image names users pass (SageMaker framework image URIs) -> zeroscale runtime names.

Any account, region, registry and tag: an image maps by its repository name, e.g.
``683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3`` -> ``sklearn``.
A bare name may also be a short alias (``sklearn:1.2``).
"""

from __future__ import annotations

from dataclasses import dataclass

from zeroscale.errors import DeployError


@dataclass(frozen=True)
class ImageFamily:
    runtime: str
    repository: str  # the ECR repository name of the SageMaker framework image
    aliases: tuple[str, ...] = ()


IMAGES: tuple[ImageFamily, ...] = (
    ImageFamily(runtime="sklearn", repository="sagemaker-scikit-learn", aliases=("sklearn", "scikit-learn")),
    ImageFamily(runtime="xgboost", repository="sagemaker-xgboost", aliases=("xgboost",)),
    ImageFamily(runtime="pytorch", repository="pytorch-inference", aliases=("pytorch", "torch")),
    # SageMaker has no first-party ONNX image: this repository name is zeroscale's own.
    ImageFamily(runtime="onnx", repository="zeroscale-onnx", aliases=("onnx", "onnxruntime")),
)


def _repository(image: str) -> tuple[str, bool]:
    """``registry/ns/name:tag@digest`` -> (``name`` lower-cased, whether it was a bare name)."""
    ref = image.split("@", 1)[0]
    slash, colon = ref.rfind("/"), ref.rfind(":")
    if colon > slash:
        ref = ref[:colon]
    parts = ref.split("/")
    return parts[-1].lower(), len(parts) == 1


def known_images() -> str:
    return "; ".join(
        f"{f.repository} (alias {', '.join(f.aliases)})" if f.aliases else f.repository for f in IMAGES
    )


def resolve_image(image: str | None) -> str:
    """The runtime name for an image URI or alias; ``DeployError`` for an empty or unknown one."""
    ref = (image or "").strip()
    if not ref:
        raise DeployError(f"No image given. Known images: {known_images()}")
    name, bare = _repository(ref)
    for family in IMAGES:
        if name == family.repository or (bare and name in family.aliases):
            return family.runtime
    raise DeployError(f"Image {ref!r} is not a known zeroscale image. Known images: {known_images()}")
