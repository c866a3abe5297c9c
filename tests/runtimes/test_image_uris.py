from __future__ import annotations

import subprocess
import sys

import pytest

from zeroscale.errors import DeployError
from zeroscale.runtimes import codecs
from zeroscale.runtimes.image_uris import resolve_image
from zeroscale.runtimes.registry import RUNTIMES, get_runtime


@pytest.mark.parametrize(
    "image",
    [
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
        "746614075791.dkr.ecr.us-west-1.amazonaws.com/sagemaker-scikit-learn:0.23-1-cpu-py3",
        "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-scikit-learn:1.0-1",
        "801668240914.dkr.ecr.ap-southeast-1.amazonaws.com/sagemaker-scikit-learn:latest",
        "451049120500.dkr.ecr.cn-north-1.amazonaws.com.cn/sagemaker-scikit-learn:1.2-1",
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn@sha256:" + "0" * 64,
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn",
        "localhost:5000/sagemaker-scikit-learn:1.2-1",
        "sagemaker-scikit-learn",
        "sagemaker-scikit-learn:1.2-1-cpu-py3",
        "sklearn",
        "sklearn:1.2",
        "scikit-learn",
        " Scikit-Learn:1.4 ",
    ],
)
def test_sklearn_images(image: str) -> None:
    assert resolve_image(image) == "sklearn"


@pytest.mark.parametrize(
    "image",
    [
        "foo:1",
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost-unknown:1.7-1",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/sklearn:1",  # aliases are for bare names only
        "myorg/my-byoc-sklearn:2",
    ],
)
def test_unknown_image_lists_known(image: str) -> None:
    with pytest.raises(DeployError) as err:
        resolve_image(image)
    message = str(err.value)
    assert f"Image {image!r} is not a known zeroscale image" in message
    assert "sagemaker-scikit-learn (alias sklearn, scikit-learn)" in message


@pytest.mark.parametrize("image", [None, "", "   "])
def test_empty_image_is_a_deploy_error(image: str | None) -> None:
    with pytest.raises(DeployError, match="No image given"):
        resolve_image(image)


def test_registry() -> None:
    runtime = get_runtime("sklearn")
    assert runtime.name == "sklearn"
    assert runtime.framework_version.split(".")[0].isdigit()
    assert set(runtime.content_types) == set(codecs.DECODERS)
    assert {"sklearn", "xgboost", "pytorch", "onnx"} <= set(RUNTIMES)
    with pytest.raises(DeployError, match="Unknown runtime 'tensorflow'"):
        get_runtime("tensorflow")


def test_registry_and_images_import_no_framework() -> None:
    code = (
        "import sys; import zeroscale.runtimes.registry, zeroscale.runtimes.image_uris; "
        "heavy = [m for m in ('numpy', 'sklearn', 'joblib', 'httptools', 'xgboost', 'torch', 'onnxruntime') "
        "if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
