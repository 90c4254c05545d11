"""Before measuring: wait for the target to be ready, and for every client of the run to be ready too.

A client pod can start long before the model it measures: a replica still downloading its weights, a
RayService not yet rolled out. Probing once and giving up turns that ordinary start-up order into a
failed Job (Jobs of a load test do not retry, so a retry cannot measure a half-warm server twice).
``wait_ready`` polls ``GET {url}/healthz`` until it answers 200, saying what the server reports it is
waiting for, with a line at least every :data:`PROGRESS_EVERY_S` seconds so pod logs show it is alive.

Parallel clients of one run only merge into one honest step when they send at the same time; pods of an
Indexed Job start seconds or minutes apart. :class:`Barrier` meets them through the place they write
their results anyway (a directory or an S3 prefix, no extra service): each writes a small marker with
the time it became ready, and once all ``clients`` markers are there each computes the same start
instant from them (the latest ready time plus :data:`BARRIER_MARGIN_S`, enough for every client to see
the last marker on its next poll).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eks_inference import storage
from eks_inference.loadgen.client import USER_AGENT, parse_endpoint

PROGRESS_EVERY_S = 5.0
"""A waiting client says so at least this often (and whenever what it sees changes)."""
POLL_S = 1.0
BARRIER_MARGIN_S = 3.0
"""Start this long after the last client became ready: a few polls, so every client sees the last marker."""
DEFAULT_BARRIER_S = 300.0
"""How long clients wait for each other when ``--wait-ready`` does not say."""
MARKER_DIR = "_ready"
MARKER_SUFFIX = ".ready"
"""Not ``.json``: the report reads every ``*.json`` below its inputs, and markers are not results."""

Say = Callable[[str], None]


class NotReady(Exception):
    """The deadline passed; the message says what was still missing and what to do."""


def _describe_body(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return text[:200] if text else "(empty body)"
    return json.dumps(doc, separators=(", ", ": "), sort_keys=True)[:300]


def _get(url: str, timeout_s: float) -> tuple[int, str]:
    """(HTTP status or 0, what it said); never raises for an unreachable or failing server."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the target, never a proxy
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with opener.open(req, timeout=timeout_s) as r:
            return int(r.status), _describe_body(r.read(4096))
    except urllib.error.HTTPError as e:
        return int(e.code), _describe_body(e.read(4096) if e.fp is not None else b"")
    except (TimeoutError, urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return 0, f"{type(reason).__name__}: {reason}"


def wait_ready(url: str, *, timeout_s: float, say: Say, clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> float:
    """Poll ``{url}/healthz`` until it answers 200; returns the seconds waited, raises :class:`NotReady`."""
    healthz = parse_endpoint(url).url + "/healthz"
    t0 = clock()
    deadline = t0 + timeout_s
    last_state, last_said = None, -float("inf")
    while True:
        now = clock()
        status, said = _get(healthz, timeout_s=max(0.5, min(5.0, deadline - now)))
        now = clock()
        if status == 200:
            if last_state is not None:
                say(f"{healthz} is ready after {now - t0:.0f} s")
            return now - t0
        state = f"HTTP {status}: {said}" if status else said
        if now >= deadline:
            raise NotReady(f"{healthz} was not ready within {timeout_s:g} s (last answer: {state}); "
                           "check why the server is not up (its logs, or the body above), or raise --wait-ready")
        if state != last_state or now - last_said >= PROGRESS_EVERY_S:
            say(f"waiting for {healthz}: {state} ({now - t0:.0f} s of {timeout_s:g} s)")
            last_state, last_said = state, now
        sleep(max(0.0, min(POLL_S, deadline - now)))


@dataclass(frozen=True, kw_only=True)
class Barrier:
    """The clients of one run and target meeting through ``location`` (a directory or ``s3://`` prefix).

    :param location: where the run's result files go; markers live in ``location/_ready/``.
    """

    location: str
    run_id: str
    target: str
    clients: int
    index: int

    @property
    def directory(self) -> str:
        return storage.join(self.location, MARKER_DIR) + ("/" if storage.is_s3(self.location) else "")

    @property
    def _prefix(self) -> str:
        return f"{self.run_id}_{self.target}_client"

    def arrive(self, *, ready_at: float, extra: Mapping[str, Any] | None = None) -> str:
        """Write this client's marker; returns where."""
        dest = storage.join(self.directory, f"{self._prefix}{self.index}{MARKER_SUFFIX}")
        doc = {"run_id": self.run_id, "target": self.target, "client": self.index, "clients": self.clients,
               "ready_at": ready_at, **(extra or {})}
        storage.write_bytes(dest, json.dumps(doc).encode("utf-8"), content_type="application/json")
        return dest

    def marker(self, index: int) -> dict[str, Any] | None:
        """Client ``index``'s marker document for this run (with what it added, e.g. its verdict), or None."""
        name = f"{self._prefix}{index}{MARKER_SUFFIX}"
        text = storage.list_texts(self.directory, suffix=MARKER_SUFFIX).get(name)
        try:
            doc = json.loads(text) if text is not None else None
        except ValueError:
            return None
        return doc if isinstance(doc, dict) and doc.get("run_id") == self.run_id else None

    def ready(self) -> dict[int, float]:
        """``{client index: ready time}`` of the markers written so far for this run and target."""
        out: dict[int, float] = {}
        for name, text in storage.list_texts(self.directory, suffix=MARKER_SUFFIX).items():
            if not name.startswith(self._prefix):
                continue
            try:
                doc = json.loads(text)
                if doc.get("run_id") == self.run_id and int(doc.get("clients", -1)) == self.clients:
                    out[int(doc["client"])] = float(doc["ready_at"])
            except (ValueError, KeyError, TypeError):
                continue  # a marker being written, or not ours
        return {i: t for i, t in out.items() if 0 <= i < self.clients}

    def wait(self, *, timeout_s: float, say: Say, since: float | None = None,
             clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> tuple[float, dict[int, float]]:
        """Block until all clients are ready; returns the common start (epoch seconds) and the markers.

        ``timeout_s`` counts from ``since`` (a ``clock()`` reading, default now), so that one ``--wait-ready``
        budget covers the wait for the target and this one.
        """
        t0 = clock() if since is None else since
        deadline = t0 + timeout_s
        last_count, last_said = -1, -float("inf")
        while True:
            ready = self.ready()
            now = clock()
            if len(ready) >= self.clients:
                start = max(ready.values()) + BARRIER_MARGIN_S
                say(f"all {self.clients} clients of run {self.run_id} ({self.target}) are ready; "
                    f"starting together in {max(0.0, start - time.time()):.1f} s")
                return start, ready
            missing = [i for i in range(self.clients) if i not in ready]
            if now >= deadline:
                raise NotReady(
                    f"only {len(ready)} of {self.clients} clients of run {self.run_id} ({self.target}) were ready "
                    f"within {timeout_s:g} s (missing: {_indices(missing)}); check those client pods, or raise "
                    "--wait-ready")
            if len(ready) != last_count or now - last_said >= PROGRESS_EVERY_S:
                say(f"waiting for the other clients of run {self.run_id}: {len(ready)} of {self.clients} ready, "
                    f"missing {_indices(missing)} ({now - t0:.0f} s of {timeout_s:g} s)")
                last_count, last_said = len(ready), now
            sleep(max(0.0, min(POLL_S, deadline - now)))


def _indices(xs: list[int]) -> str:
    shown = ", ".join(str(i) for i in xs[:10])
    return shown + (f" and {len(xs) - 10} more" if len(xs) > 10 else "")
