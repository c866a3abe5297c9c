"""ModelDataUrl -> a verified, safely extracted, cached model directory (the future /opt/ml/model)."""

from zeroscale.artifacts.cache import ArtifactCache
from zeroscale.artifacts.fetch import SUPPORTED_FORMS, parse_model_data_url

__all__ = ["SUPPORTED_FORMS", "ArtifactCache", "parse_model_data_url"]
