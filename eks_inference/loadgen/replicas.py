"""Per-second samples of the replicas a target reports while it is under load.

The target's ``GET URL/info`` carries ``"replicas": {"running", "target", "min", "max"}`` read from Serve's live
state. Once a second, on the second, the sampler asks for it on a connection of its own, never with more than one
request in flight (a slow answer skips the seconds it overlaps rather than piling up), so the load schedule and
its connection pool are untouched. A sample is the time it was asked and what came back, or why nothing did.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from eks_inference.loadgen.client import USER_AGENT

PERIOD_S = 1.0
TIMEOUT_S = 0.9
MAX_SAMPLES = 86_400


def parse_sample(t: float, status: int, body: Any, elapsed_s: float) -> dict[str, Any]:
    """One sample from an ``/info`` answer: the replica counts, or the reason they are missing."""
    out: dict[str, Any] = {"t": round(t, 3), "ms": round(elapsed_s * 1000, 1)}
    if status != 200:
        out["error"] = f"HTTP {status}"
        return out
    replicas = body.get("replicas") if isinstance(body, dict) else None
    if not isinstance(replicas, dict) or replicas.get("running") is None:
        reason = replicas.get("error") if isinstance(replicas, dict) else None
        out["error"] = reason or "no replica counts in /info"
        return out
    for key in ("running", "target", "min", "max"):
        value = replicas.get(key)
        out[key] = value if isinstance(value, int) and not isinstance(value, bool) else None
    return out


class ReplicaSampler:
    """Samples ``info_url`` every :data:`PERIOD_S` until :meth:`stop`; read :attr:`samples` afterwards."""

    def __init__(self, info_url: str, *, period_s: float = PERIOD_S, timeout_s: float = TIMEOUT_S,
                 max_samples: int = MAX_SAMPLES) -> None:
        self.info_url = info_url
        self.period_s = period_s
        self.timeout_s = timeout_s
        self.max_samples = max_samples
        self.samples: list[dict[str, Any]] = []
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        self._stopped.set()

    async def run(self) -> list[dict[str, Any]]:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout) as session:
            due = math.floor(time.time()) + 1.0
            while len(self.samples) < self.max_samples:
                try:
                    await asyncio.wait_for(self._stopped.wait(), timeout=max(0.0, due - time.time()))
                    break
                except TimeoutError:
                    pass
                t0, m0 = time.time(), time.monotonic()
                try:
                    async with session.get(self.info_url, headers={"User-Agent": USER_AGENT}) as r:
                        status, body = r.status, await r.json(content_type=None)
                except Exception as e:  # a sample that failed says why; the run goes on
                    self.samples.append({"t": round(t0, 3), "ms": round((time.monotonic() - m0) * 1000, 1),
                                         "error": f"{type(e).__name__}: {e}" if str(e) else type(e).__name__})
                else:
                    self.samples.append(parse_sample(t0, status, body, time.monotonic() - m0))
                due += self.period_s
                now = time.time()
                if due <= now:  # an answer slower than the period: skip the seconds it overlapped
                    due = math.floor(now) + 1.0
        return self.samples
