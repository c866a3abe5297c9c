"""Client helpers other bench scripts import (``from latency import SignedClient, pct`` in bench/metering.py
and bench/runtimes.py). The latency benchmarks themselves moved to ``python -m bench.run`` (``make bench``);
running this file runs them.
"""

from __future__ import annotations

import http.client
import sys
from pathlib import Path

import numpy as np
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

_REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO / "tests"))
from serverproc import ACCESS_KEY, REGION, SECRET_KEY  # noqa: E402


class SignedClient:
    """Keep-alive HTTP with a SigV4 signature per request, like boto3 but without its per-call machinery."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = http.client.HTTPConnection(url.split("//", 1)[1])
        self.signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION)

    def invoke(self, endpoint: str, body: bytes) -> bytes:
        path = f"/endpoints/{endpoint}/invocations"
        req = AWSRequest("POST", self.url + path, data=body, headers={"Content-Type": "application/json"})
        self.signer.add_auth(req)
        self.conn.request("POST", path, body=body, headers=dict(req.headers.items()))
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{resp.status}: {data!r}")
        return data


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


if __name__ == "__main__":
    sys.path.insert(0, str(_REPO))
    from bench.run import main

    main()
