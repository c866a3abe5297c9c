"""The tests' import name for zeroscale.testing_s3 (SeaweedFS for the tests and the benchmarks)."""

from zeroscale.testing_s3 import SeaweedS3, find_weed

__all__ = ["SeaweedS3", "find_weed"]
