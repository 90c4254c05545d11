"""Session-wide real servers on 127.0.0.1 for integration tests, started once and shared.

* ``moto_s3_endpoint`` — a ``moto_server`` subprocess (a real S3 HTTP API, not an in-process mock) on a free
  port; returns its base URL. Dummy AWS credentials are set for this process *and* for Ray workers.
* ``local_ray`` — a private Ray + Serve (``eks_inference.serving.local.LocalRay``) on a free port, with the
  same Ray environment the clusters get; deploy ``serveConfigV2`` documents with ``local_ray.deploy(cfg)``
  (rendered with ``http_port=local_ray.http_port``), wait with ``local_ray.wait_ready(name)``, remove with
  ``local_ray.remove(name)``. ``local_serve`` returns its base URL.

Environment variables are set at import, before anything imports Ray: Ray reads its settings at import and
its workers inherit the environment of ``ray.init``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from eks_inference.serving.local import LocalRay, free_port, ray_environment

ray_environment()
for _k, _v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(_k, _v)


def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


@pytest.fixture(scope="session")
def moto_s3_endpoint() -> Iterator[str]:
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url, 60)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def local_ray() -> Iterator[LocalRay]:
    # Logical CPUs above the physical 2: several small test applications share the machine.
    ray = LocalRay(http_host="127.0.0.1", http_port=free_port(), num_cpus=16).start()
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def local_serve(local_ray: LocalRay) -> str:
    return local_ray.url
