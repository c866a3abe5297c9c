"""zeroscale: serverless machine-learning inference you run yourself, wire-compatible with SageMaker."""

__version__ = "0.1.0"
