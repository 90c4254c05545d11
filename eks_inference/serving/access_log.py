"""A sampled access log on stderr, where the cluster's log agent ships it to CloudWatch Logs.

Ray Serve writes one access-log line per request to the replica's log file only (``ray/serve/_private/replica.py``
marks them ``log_to_stderr: False``): in a pod that file lives in an emptyDir and dies with it, and shipping one line
per request at thousands of requests a second is a CloudWatch Logs bill of its own (docs/observability.md, "What logs
cost"). This log keeps what an operator needs after the pod is gone at a fraction of that: every failed request
(status 5xx) and a random ``sample`` of the others, each line carrying ``weight`` (1/sample for sampled lines, 1 for
failures) so that a Logs Insights ``stats sum(weight)`` estimates request counts. Serve's own per-request lines stay
in the pod's rotating files.

``EKS_INFERENCE_ACCESS_LOG_SAMPLE`` sets ``sample`` (0 to 1; default :data:`DEFAULT_SAMPLE`); 0 keeps failures only.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from typing import TextIO

from eks_inference.config import ConfigError

SAMPLE_ENV = "EKS_INFERENCE_ACCESS_LOG_SAMPLE"
DEFAULT_SAMPLE = 0.01


def sample_from_env(environ: dict[str, str] | None = None) -> float:
    raw = (os.environ if environ is None else environ).get(SAMPLE_ENV, "")
    if not raw.strip():
        return DEFAULT_SAMPLE
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{SAMPLE_ENV}: {raw!r} is not a share between 0 and 1; give e.g. 0.01 (one request in a "
                          "hundred) or 0 (failed requests only)")
    return value


class AccessLog:
    """Writes one JSON line per kept request to ``stream`` (default stderr)."""

    def __init__(self, sample: float, *, stream: TextIO | None = None, rng: random.Random | None = None) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ConfigError(f"access log sample: {sample!r} is not a share between 0 and 1; give e.g. 0.01")
        self.sample = sample
        self.stream = stream
        self.rng = rng or random.Random()
        self.written = 0

    def line(self, *, model: str, route: str, status: int, ms: float) -> str | None:
        """The line to write for one request, or None when it is not kept."""
        failed = status >= 500
        if not failed and (self.sample <= 0.0 or self.rng.random() >= self.sample):
            return None
        weight = 1.0 if failed else 1.0 / self.sample
        return json.dumps({"access": route, "model": model, "status": status, "ms": round(ms, 1),
                           "weight": round(weight, 3), "ts": round(time.time(), 3)}, separators=(",", ":"))

    def record(self, *, model: str, route: str, status: int, ms: float) -> bool:
        text = self.line(model=model, route=route, status=status, ms=ms)
        if text is None:
            return False
        stream = self.stream or sys.stderr
        stream.write(text + "\n")
        stream.flush()
        self.written += 1
        return True
