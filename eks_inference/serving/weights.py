"""Waiting for model weights that are not published yet, so a first deploy heals itself.

A RayService starts its replicas as soon as the cluster exists, usually before anyone has run
``eks-inference publish``. A replica that raised in its constructor then would be retried only a few times:
Ray Serve marks the deployment DEPLOY_FAILED after ``min(max_constructor_retry_count, 3 × num_replicas)``
start failures while no replica of that version has ever started, and stops trying; KubeRay resubmits a
serve config only when it differs from the one it cached, so publishing the weights later changed nothing.

Instead the replica starts *waiting*: its constructor returns, its health check passes, and a background
thread polls for the model's ``manifest.json`` with a bounded, jittered backoff. Meanwhile every request
gets a 503 whose JSON body names the missing object and the publish command (:meth:`WeightsWatch.body`).
When the manifest appears the thread downloads and verifies the files and the replica loads, compiles or
fetches its artifact and warms up exactly as a replica with published weights does in its constructor.
A corrupt object is never served: the thread records the integrity error, the health check fails with it,
Serve replaces the replica, and the new replica fails in its constructor naming object and expected hash.

Upstream (Ray 2.60): ``python/ray/serve/_private/replica.py`` (start = constructor, reconfigure, one health
check), ``python/ray/serve/_private/deployment_state.py`` (``_failed_to_start_threshold``,
``record_replica_startup_failure``, ``ActorReplicaWrapper.check_health`` with 3 failures in a row);
KubeRay ``ray-operator/controllers/ray/rayservice_controller.go`` (``checkIfNeedSubmitServeApplications``).
The behaviour is replayed in ``tests/system/test_first_deploy_serving.py``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eks_inference.artifacts.resolve import ArtifactIntegrityError, ArtifactNotFound, ResolvedModel, resolve_model
from eks_inference.config import ConfigError

log = logging.getLogger(__name__)

DEFAULT_POLL_S = (2.0, 30.0)
"""First and largest interval between two looks for the manifest (one S3 GET each)."""


@dataclass(frozen=True)
class Backoff:
    """Intervals that grow by ``factor`` from ``initial_s`` up to ``max_s``, each jittered by ±``jitter``.

    The jitter keeps the replicas of a fleet, all started by one deploy, from polling S3 in lockstep.
    """

    initial_s: float = DEFAULT_POLL_S[0]
    max_s: float = DEFAULT_POLL_S[1]
    factor: float = 1.5
    jitter: float = 0.2

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        r = rng or random.Random()
        base = self.initial_s
        while True:
            yield min(self.max_s, max(0.05, base * r.uniform(1 - self.jitter, 1 + self.jitter)))
            base = min(self.max_s, base * self.factor)


@dataclass
class WeightsWatch:
    """What a waiting replica knows and reports: the missing object, how to publish it, how long it waited."""

    model: str
    missing: str
    command: str | None
    reason: str
    since: float = field(default_factory=time.time)
    checks: int = 0
    next_check_at: float | None = None
    last_error: str | None = None
    found_at: float | None = None

    STATUS = "waiting_for_weights"
    CODE = "weights_not_published"

    @property
    def waiting(self) -> bool:
        return self.found_at is None

    def message(self) -> str:
        how = (f"publish them with: {self.command}" if self.command
               else "upload the model directory with its manifest.json (eks-inference publish writes both)")
        return (f"the weights of model {self.model!r} are not published yet: {self.missing} does not exist; "
                f"{how}. This replica keeps checking and serves as soon as they appear (no restart or "
                "redeploy needed).")

    def body(self, now: float | None = None) -> dict[str, Any]:
        """The 503 JSON of ``/healthz`` and ``/predict`` while the weights are missing (error schema + details)."""
        now = time.time() if now is None else now
        return {
            "status": self.STATUS,
            "model": self.model,
            "error": {"code": self.CODE, "message": self.message()},
            "missing": self.missing,
            "command": self.command,
            "waiting_s": round(now - self.since, 1),
            "checks": self.checks,
            "next_check_in_s": None if self.next_check_at is None else round(max(0.0, self.next_check_at - now), 1),
            "last_error": self.last_error,
        }


@dataclass
class ArtifactWatch(WeightsWatch):
    """What a replica that may not compile reports while its compiled artifact is not published yet (in the cluster
    the compile step writes it; ``command`` says who)."""

    STATUS = "waiting_for_artifact"
    CODE = "artifact_not_compiled"

    def message(self) -> str:
        who = self.command or "the compile step (eks-inference compile --serve-app)"
        return (f"the compiled artifact of model {self.model!r} is not published yet: {self.missing} does not "
                f"exist; {who} writes it, replicas never do. This replica keeps checking and serves as soon as it "
                "appears (no restart or redeploy needed).")


def wait_for_weights(model_uri: str, *, cache_dir: str | Path, endpoint_url: str | None, watch: WeightsWatch,
                     stop: threading.Event, backoff: Backoff = Backoff(),
                     resolve: Callable[..., ResolvedModel] = resolve_model,
                     expected_digest: str | None = None) -> ResolvedModel | None:
    """Poll until the weights are published, then download and verify them; None once ``stop`` is set.

    Absent weights and passing faults (network, throttling, access not granted yet) are retried with
    ``backoff``; an integrity or configuration error is final and raised, so corrupt weights never load, nor
    weights whose digest is not ``expected_digest`` (the pinned ``weights_sha256``; default none).
    """
    for delay in backoff.delays():
        watch.next_check_at = time.time() + delay
        if stop.wait(delay):
            return None
        watch.checks += 1
        try:
            model = resolve(model_uri, cache_dir=cache_dir, endpoint_url=endpoint_url, expected_digest=expected_digest)
        except ArtifactNotFound:
            watch.last_error = None
            continue
        except (ArtifactIntegrityError, ConfigError):
            raise
        except Exception as e:
            watch.last_error = f"{type(e).__name__}: {e}"
            log.warning("looking for the weights at %s failed (retrying): %s", watch.missing, watch.last_error)
            continue
        watch.found_at = time.time()
        return model
    return None  # pragma: no cover - delays() never ends
