"""Local mode: run a rendered ``serveConfigV2`` on this machine, exactly as a RayService would.

:class:`LocalRay` starts a private Ray (``address="local"``: it never attaches to another Ray on the
machine) and submits configs through the same controller call KubeRay's dashboard path and
``serve run config.yaml`` use (``ServeDeploySchema`` → ``deploy_apps``), so ``http_options``,
``user_config``, ``ray_actor_options`` and the limits behave here as in the cluster. Several
applications can share it: :meth:`LocalRay.deploy` keeps the union of everything deployed so far,
because a declarative deploy replaces the whole application set.

The CLI's ``eks-inference local`` runs in the foreground until Ctrl-C or SIGTERM and records itself in
``.eks-inference/local.json``; ``--detach`` starts that foreground process in its own session and returns
once the model is healthy (or is waiting for unpublished weights); ``--stop`` signals it and waits until
Ray is down.

Weights not published yet (an ``s3://`` source with no ``manifest.json``): the replica waits for them as it
does in a cluster. The command prints the reason and the publish command once, a progress line every
minute, and serves as soon as the weights appear. ``--timeout`` bounds the start-up only: the time spent
waiting for weights does not count against it, since waiting is what the server is asked to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eks_inference.config import ConfigError
from eks_inference.serving.serve_config import model_aware_app

STATE_DIR = Path(".eks-inference")
STATE_FILE = "local.json"
LOG_FILE = "local.log"
FAILURE_FILE = "last-failure.log"
PROGRESS_EVERY_S = 60.0
METRICS_INTERVAL_ENV = "RAY_metrics_report_interval_ms"
LOCAL_METRICS_INTERVAL_MS = 2000
"""Local Ray hands metrics to its agent every 2 s (the cluster: 5 s, Ray's default 10 s), so a load-test step's
server metrics are complete soon after the step."""


def ray_environment(*, model_aware: bool = False) -> None:
    """Environment a private local Ray needs: the cluster's Ray settings, no token auth, no usage
    reporting, no model hub. Call it before anything imports ``ray.serve`` (it reads them at import; Ray's
    processes read them as ``ray.init`` starts them).

    :param model_aware: Serve's Python proxy instead of HAProxy, as a model-aware family's RayService runs it
        (:data:`~eks_inference.serving.serve_config.MODEL_AWARE_ENV`, set even over an inherited HAProxy setting).
    """
    from eks_inference.serving.serve_config import MODEL_AWARE_ENV, ray_cluster_env

    os.environ.setdefault(METRICS_INTERVAL_ENV, str(LOCAL_METRICS_INTERVAL_MS))
    for k, v in ray_cluster_env(model_aware=model_aware).items():
        if model_aware and k in MODEL_AWARE_ENV:
            os.environ[k] = v
        else:
            os.environ.setdefault(k, v)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Replicas drain 30 s by default so an external load balancer can deregister them; locally HAProxy
    # on the same node learns at once, and a 30 s wait would only slow every stop and redeploy.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")
    # Serve gives its proxy's new process 5 s to say it is ready, then kills it (and serve.start fails with
    # ActorDiedError) although it would have come up: on a busy machine starting a Ray worker takes longer.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


QUIET_PORTS = (20000, 32767)
"""Where :func:`free_port` looks: above Ray's worker ports (``min_worker_port``/``max_worker_port``, 10002-19999)
and below the kernel's ephemeral range (Linux 32768-60999, BSD and macOS 49152-65535)."""
_GIVEN: set[int] = set()
_GIVEN_LOCK = threading.Lock()


def _ephemeral_low(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing holds now, for a server started later (HAProxy's side ports, a test's server).

    A port the kernel hands out for ``bind(0)`` comes from its ephemeral range, which every outgoing connection
    and every Ray process binding port 0 also draws from: between this call and the server's bind, a busy
    machine gave one away ("Some protocols failed to start their listeners"). So the port is drawn at random
    from :data:`QUIET_PORTS`, below that range, where nothing is assigned without being asked for; a port is
    never given twice by one process. Where the ephemeral range starts too low to leave that gap, the
    kernel picks.
    """
    lo, hi = QUIET_PORTS[0], min(QUIET_PORTS[1], _ephemeral_low() - 1)
    rng = random.SystemRandom()
    if hi - lo >= 1000:
        for _ in range(200):
            port = rng.randint(lo, hi)
            with _GIVEN_LOCK:
                if port in _GIVEN:
                    continue
                try:
                    with socket.socket() as s:
                        s.bind((host, port))
                except OSError:
                    continue
                _GIVEN.add(port)
                return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host if host != "0.0.0.0" else "127.0.0.1", port)) == 0


def http_get_json(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    status, raw = http_get(url, timeout)
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    return status, body if isinstance(body, dict) else {}


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*(?:Error|Exception|NotFound|Failed)):\s*(\S.*)$")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def failure_summary(message: str) -> str:
    """The line of a Ray failure that says what went wrong: the last ``SomeError: reason`` line, module path
    and colour codes removed (Ray relays the replica's whole traceback, twice wrapped)."""
    lines = [ln.strip() for ln in strip_ansi(message).splitlines() if ln.strip()]
    for line in reversed(lines):
        m = _EXCEPTION_LINE.match(line)
        if m and not m.group(2).startswith("Traceback"):
            return f"{m.group(1)}: {m.group(2)}"
    return lines[-1] if lines else "no reason given"


class DeployFailed(RuntimeError):
    """The application did not become healthy; the message carries Ray's reason (replica traceback),
    :attr:`summary` the one line that matters."""

    @property
    def summary(self) -> str:
        return failure_summary(str(self))


class AlreadyRunning(RuntimeError):
    """``eks-inference local`` already runs with this state directory (not a configuration error)."""


# Ray validates a Serve config by pickling its autoscaling policy with the module registered in cloudpickle's
# process-wide table, then unregistered: a deploy in one thread and a status read in another raced on it
# ("... is not registered for pickle by value"), more often the slower the machine. One thread at a time.
_SERVE_API = threading.Lock()


@dataclass
class LocalRay:
    """A private Ray + Serve on 127.0.0.1, shared by any number of applications.

    By default its ingress is HAProxy (as the cluster's), and Serve's Python proxy still runs beside it on the head
    as HAProxy's fallback (``ray/serve/_private/proxy_state.py``, ``_start_fallback_proxy_if_needed``), at
    :attr:`python_proxy_url`: the same proxy and request router a model-aware family's RayService runs, so one local
    Ray serves an application both ways. ``model_aware=True`` runs the Python proxy alone, on ``http_port``.
    """

    http_host: str = "127.0.0.1"
    http_port: int = 8000
    num_cpus: int | None = None
    model_aware: bool = False
    temp_dir: str | None = None
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    _owns_temp: bool = False
    _client: Any = None
    _fallback_port: int | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::") else self.http_host
        return f"http://{host}:{self.http_port}"

    @property
    def python_proxy_url(self) -> str:
        """Where Serve's Python proxy answers: HAProxy's fallback proxy beside it, or the ingress itself when
        :attr:`model_aware`. Valid once started."""
        if self.model_aware:
            return self.url
        if self._fallback_port is None:
            raise RuntimeError("python_proxy_url: this local Ray has not started; call start() first")
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::") else self.http_host
        return f"http://{host}:{self._fallback_port}"

    def start(self, *, proxy_location: str = "HeadOnly") -> LocalRay:
        ray_environment(model_aware=self.model_aware)
        # Ray's fixed side ports would collide between Rays on one machine (tests, demo, benchmark), and
        # a child process inherits ours: pick fresh ones for every local Ray.
        for var in ("RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
                    "RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"):
            os.environ[var] = str(free_port())
        self._fallback_port = int(os.environ["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"])
        from eks_inference.serving.metrics import METRICS_HOST_ENV

        if self.http_host in ("127.0.0.1", "localhost", "::1"):
            # Ray binds its metrics agent to every interface and names the node by its LAN address; a local
            # server is addressed on the loopback, so its replicas advertise that (workers inherit the env).
            os.environ[METRICS_HOST_ENV] = "127.0.0.1"
        else:
            os.environ.pop(METRICS_HOST_ENV, None)
        import ray
        from ray.serve._private import api as serve_api

        if self.temp_dir is None:
            # Ray's socket paths must stay under 108 bytes: keep the session directory short.
            self.temp_dir = tempfile.mkdtemp(prefix="eki-ray-", dir="/tmp")
            self._owns_temp = True
        ray.init(address="local", num_cpus=self.num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 _temp_dir=self.temp_dir, log_to_driver=False, namespace="serve")
        from eks_inference.serving.serve_config import REQUEST_TIMEOUT_S

        # as KubeRay's first submission does (dashboard serve_head.py: serve_start with the config's http_options)
        self._client = serve_api.serve_start(
            http_options={"host": self.http_host, "port": self.http_port, "request_timeout_s": REQUEST_TIMEOUT_S},
            proxy_location=proxy_location,
        )
        return self

    @property
    def metrics_url(self) -> str | None:
        """This Ray node's Prometheus endpoint (Ray's and Serve's metrics and the replicas' own)."""
        import ray

        from eks_inference.serving.metrics import METRICS_HOST_ENV, node_metrics_urls

        urls = node_metrics_urls(ray.nodes(), host=os.environ.get(METRICS_HOST_ENV) or None)
        return next(iter(sorted(urls.values())), None)

    def deploy(self, config: dict[str, Any]) -> None:
        """Submit ``config`` (a ``serveConfigV2`` document) added to the applications already running."""
        from ray.serve.schema import ServeDeploySchema

        http = config.get("http_options") or {}
        if http and (int(http.get("port", self.http_port)) != self.http_port):
            raise ConfigError(f"http_options.port: {http.get('port')!r} differs from the running local Serve's "
                              f"{self.http_port}; render the config with http_port={self.http_port}")
        for app in config["applications"]:
            self.apps[app["name"]] = app
        self._index_all_models()
        merged = {k: v for k, v in config.items() if k != "applications"}
        merged["http_options"] = {"host": self.http_host, "port": self.http_port}
        merged["applications"] = list(self.apps.values())
        with _SERVE_API:
            self._client.deploy_apps(ServeDeploySchema.model_validate(merged), _blocking=False)

    def _index_all_models(self) -> None:
        """Each rendered config's route index lists its own model; here one index serves them all."""
        from eks_inference.serving.serve_config import APP_IMPORT_PATH, INDEX_APP_NAME

        index = self.apps.get(INDEX_APP_NAME)
        if index is not None:
            models = sorted(n for n, a in self.apps.items() if a.get("import_path") == APP_IMPORT_PATH)
            self.apps[INDEX_APP_NAME] = {**index, "args": {**(index.get("args") or {}), "models": models}}

    def remove(self, name: str, *, wait: bool = False, timeout_s: float = 60.0) -> None:
        from ray.serve.schema import ServeDeploySchema

        if self.apps.pop(name, None) is None:
            return
        self._index_all_models()
        with _SERVE_API:
            self._client.deploy_apps(ServeDeploySchema.model_validate(
                {"http_options": {"host": self.http_host, "port": self.http_port},
                 "applications": list(self.apps.values())}), _blocking=False)
        deadline = time.monotonic() + timeout_s
        while wait and time.monotonic() < deadline and name in self.status():
            time.sleep(0.5)

    def status(self) -> dict[str, tuple[str, str]]:
        from ray import serve

        out = {}
        with _SERVE_API:
            applications = serve.status().applications
        for name, a in applications.items():
            # the application message is generic; a failing deployment's message carries the traceback
            details = [f"{d}: {ds.message}" for d, ds in a.deployments.items() if ds.message]
            out[name] = (str(getattr(a.status, "value", a.status)), "\n".join([a.message, *details]))
        return out

    def wait_ready(self, name: str, *, route_prefix: str | None = None, timeout_s: float = 300.0,
                   progress: Callable[[str], None] | None = None,
                   cancelled: Callable[[], bool] = lambda: False,
                   not_ready: Callable[[dict[str, Any]], None] | None = None) -> bool:
        """Block until ``name`` is RUNNING and its ``/healthz`` answers 200 (True), or ``cancelled()`` (False).

        Each 503 body of ``/healthz`` goes to ``not_ready``. While it says ``waiting_for_weights`` the timeout
        is held (waiting for a publish is not a slow start). Raises DeployFailed with Ray's reason when the
        application fails, the replica reports it cannot serve (corrupt weights), or the timeout passes.
        """
        prefix = route_prefix or f"/{name}"
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            if cancelled():
                return False
            st, msg = self.status().get(name, ("NOT_STARTED", ""))
            if st in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise DeployFailed(f"application {name!r} is {st}: {msg}")
            if st != last and progress:
                progress(st)
            last = st
            if st == "RUNNING":
                code, body = http_get_json(f"{self.url}{prefix}/healthz", timeout=5)
                if code == 200:
                    return True
                if code == 503 and body.get("status") == "failed":
                    raise DeployFailed(f"application {name!r} cannot serve: "
                                       f"{(body.get('error') or {}).get('message')}")
                if code == 503 and body.get("status") == "waiting_for_weights":
                    deadline = time.monotonic() + timeout_s
                if code == 503 and not_ready is not None and body:
                    not_ready(body)
            time.sleep(0.5)
        st, msg = self.status().get(name, ("NOT_STARTED", ""))
        raise DeployFailed(f"application {name!r} not healthy after {timeout_s:.0f} s (status {st}): {msg}")

    def shutdown(self) -> None:
        import ray
        from ray import serve
        from ray._private import worker as ray_worker

        # Stopping Serve kills its controller while a retried task is pending; Ray's driver then prints a
        # "(raylet) Task ServeController.graceful_shutdown failed" line in raw colour codes. Expected here.
        ray_worker.print_to_stdstream = lambda *args, **kwargs: None
        with contextlib.suppress(Exception):
            serve.shutdown()
        with contextlib.suppress(Exception):
            ray.shutdown()
        if self.temp_dir:
            reap_session_processes(self.temp_dir)
        if self._owns_temp and self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def session_processes(temp_dir: str) -> list[int]:
    """PIDs (not ours) holding files open under this Ray session's temp dir: the processes it started."""
    root = os.path.realpath(temp_dir) + os.sep
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}").startswith(root) for fd in fds):
                found.append(int(entry))
        except OSError:
            continue
    return found


def reap_session_processes(temp_dir: str, grace_s: float = 3.0) -> None:
    """Ray's agents can outlive ``ray.shutdown()`` (they retry a GCS that is gone); end them by PID."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and session_processes(temp_dir):
        time.sleep(0.25)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = session_processes(temp_dir)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if not pids:
            return
        time.sleep(1.0)


# ---------------------------------------------------------------------------------------------------
# The `eks-inference local` process and its state file
# ---------------------------------------------------------------------------------------------------

def state_path(state_dir: Path = STATE_DIR) -> Path:
    return state_dir / STATE_FILE


def read_state(state_dir: Path = STATE_DIR) -> dict[str, Any] | None:
    try:
        return dict(json.loads(state_path(state_dir).read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def write_state(state: dict[str, Any], state_dir: Path = STATE_DIR) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, state_path(state_dir))


class WaitReporter:
    """Turns the replica's 503 bodies into a few lines: the waiting reason once, progress every minute,
    and a line when the weights appear."""

    def __init__(self, out: Callable[[str], None], *, on_waiting: Callable[[dict[str, Any]], None] | None = None,
                 every_s: float = PROGRESS_EVERY_S) -> None:
        self.out = out
        self.on_waiting = on_waiting
        self.every_s = every_s
        self.waiting_since: float | None = None
        self.last_line = 0.0
        self.found = False

    def __call__(self, body: dict[str, Any]) -> None:
        now = time.monotonic()
        if body.get("status") == "waiting_for_weights":
            if self.waiting_since is None:
                self.waiting_since = self.last_line = now
                self.out(f"waiting for the model's weights: {body.get('missing')} does not exist yet")
                if body.get("command"):
                    self.out(f"  publish them with: {body['command']}")
                self.out("  serving starts by itself once they appear (Ctrl-C or `eks-inference local --stop` "
                         "to give up)")
                if self.on_waiting:
                    self.on_waiting(body)
            elif now - self.last_line >= self.every_s:
                self.last_line = now
                self.out(f"  still waiting for {body.get('missing')} ({(now - self.waiting_since) / 60:.0f} min, "
                         f"{body.get('checks')} checks)")
        elif self.waiting_since is not None and not self.found and body.get("status") == "loading":
            self.found = True
            self.out("  weights found; loading the model ...")


def cpu_demand(config: Mapping[str, Any]) -> float:
    """CPUs the serve config's replicas ask Ray for once scaled out: per deployment, its fixed ``num_replicas``
    (or autoscaling's ``max_replicas``, at least 1) times ``ray_actor_options.num_cpus`` (Ray's default 1)."""
    total = 0.0
    for app in config.get("applications") or []:
        for d in app.get("deployments") or []:
            n = d.get("num_replicas")
            if not isinstance(n, int):
                n = max(1, int((d.get("autoscaling_config") or {}).get("max_replicas", 1) or 1))
            total += n * float((d.get("ray_actor_options") or {}).get("num_cpus", 1))
    return total


SPLIT_FROM_CORES = 3
"""From this many usable cores the local server leaves the last one to the load client. The same rule as
``eks_inference.measure.contention.split_cores``, which the load client follows (the serving images do not ship
the measurement package; tests/unit/test_loadtest_affinity.py checks the two agree)."""


def server_share(cores: list[int]) -> tuple[list[int], str]:
    """The cores a local server keeps of ``cores``, and what was chosen."""
    usable = sorted(cores)
    if len(usable) >= SPLIT_FROM_CORES:
        return usable[:-1], f"server on cores {','.join(map(str, usable[:-1]))}, load client on core {usable[-1]}"
    return usable, (f"{len(usable)} core(s): server and load client share them (a core each would halve the "
                    "server); each load-test step records the client's share")


def serving_cores() -> int:
    """Cores a local server may plan its replicas on: all this process may use, less the load client's own core
    from three up (:func:`eks_inference.measure.contention.split_cores`)."""
    try:
        usable: list[int] = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    return len(server_share(usable)[0])


def keep_apart(config: Mapping[str, Any]) -> tuple[int | None, str]:
    """Confine this process (and the Ray it starts, whose processes inherit it) to the server's share of the
    cores (:func:`eks_inference.measure.contention.split_cores`), leaving the load client's core free, where the
    OS has affinity and every replica still fits once scaled out; returns (Ray's CPU count, or None to leave it,
    what was chosen)."""
    try:
        usable = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, "this OS offers no CPU affinity: server and load client share every core"
    server, note = server_share(usable)
    if server == usable:
        return None, note
    demand = cpu_demand(config)
    if demand > len(server):
        return None, (f"the replicas ask for {demand:g} CPUs, more than the {len(server)} left beside the load "
                      "client's core: server and client share every core")
    os.sched_setaffinity(0, server)
    return len(server), note


def run_foreground(config: dict[str, Any], *, state_dir: Path = STATE_DIR, timeout_s: float = 600.0,
                   out: Callable[[str], None] = print) -> int:
    """Serve ``config`` until Ctrl-C or SIGTERM; returns the exit code.

    ``timeout_s`` bounds the start-up; time spent waiting for unpublished weights is not counted.
    """
    app = config["applications"][0]
    http = config.get("http_options", {})
    host, port = str(http.get("host", "127.0.0.1")), int(http.get("port", 8000))
    prev = read_state(state_dir)
    if prev and pid_alive(int(prev.get("pid", 0))):
        raise AlreadyRunning(already_running_message(prev))
    if port_in_use(host, port):
        raise ConfigError(f"--port: {port} is already in use on {host}; pick another with --port")
    stop = {"flag": False}

    def on_signal(_signum: int, _frame: Any) -> None:
        stop["flag"] = True

    signals = (signal.SIGTERM, signal.SIGINT)
    old = {s: signal.signal(s, on_signal) for s in signals}
    num_cpus, cores = keep_apart(config)
    model_aware = model_aware_app(app)
    ray = LocalRay(http_host=host, http_port=port, num_cpus=num_cpus, model_aware=model_aware)
    base = ray.url
    state = {"pid": os.getpid(), "url": f"{base}/{app['name']}", "model": app["name"], "port": port,
             "status": "starting", "started_at": time.time(), "temp_dir": None, "cores": cores}
    write_state(state, state_dir)

    def waiting(body: dict[str, Any]) -> None:
        state.update(status="waiting", missing=body.get("missing"), command=body.get("command"))
        write_state(state, state_dir)

    try:
        out(f"starting Ray Serve for model {app['name']!r} on {base} ...")
        out(f"  cores: {cores}")
        if model_aware:
            out("  routing: model-aware (Serve's Python proxy routes each member to a replica that holds it)")
        ray.start(proxy_location=str(config.get("proxy_location", "HeadOnly")))
        for s in signals:  # ray.init installs its own SIGTERM handler, which skips our clean shutdown
            signal.signal(s, on_signal)
        state["temp_dir"] = ray.temp_dir
        ray.deploy(config)
        try:
            if not ray.wait_ready(app["name"], route_prefix=app.get("route_prefix"), timeout_s=timeout_s,
                                  progress=lambda st: out(f"  application status: {st}"),
                                  cancelled=lambda: stop["flag"], not_ready=WaitReporter(out, on_waiting=waiting)):
                return 130
        except DeployFailed as e:
            details = state_dir / FAILURE_FILE
            details.write_text(strip_ansi(str(e)) + "\n")
            out(f"eks-inference: model {app['name']!r} failed to start: {e.summary} (details: {details})")
            return 1
        url = f"{base}{app.get('route_prefix', '/' + app['name'])}"
        state["status"] = "ready"
        write_state(state, state_dir)
        out(f"serving {app['name']!r} at {url}")
        out(f"  curl -s {url}/predict -H 'content-type: application/json' -d '{{\"inputs\": [\"hello world\"]}}'")
        out(f"  docs: {url}/docs   info: {url}/info   stop: Ctrl-C or `eks-inference local --stop`")
        metrics_url = ray.metrics_url
        if metrics_url:
            state["metrics_url"] = metrics_url
            write_state(state, state_dir)
            out(f"  metrics (Prometheus text): {metrics_url}")
        while not stop["flag"]:
            time.sleep(0.25)
        out("stopping ...")
        return 0
    finally:
        ray.shutdown()
        cur = read_state(state_dir)
        if cur and int(cur.get("pid", -1)) == os.getpid():
            state_path(state_dir).unlink(missing_ok=True)
        for s, h in old.items():
            signal.signal(s, h)


def already_running_message(state: dict[str, Any]) -> str:
    return (f"local serving already runs (pid {state['pid']}, {state.get('url')}); stop it with "
            "`eks-inference local --stop` first, or give this one another --state-dir")


def start_detached(argv: list[str], *, state_dir: Path = STATE_DIR, timeout_s: float = 600.0,
                   out: Callable[[str], None] = print) -> int:
    """Run ``eks-inference <argv>`` (the foreground command) in its own session; return once it serves, or
    once it waits for unpublished weights (it then serves by itself when they appear)."""
    prev = read_state(state_dir)
    if prev and pid_alive(int(prev.get("pid", 0))):
        raise AlreadyRunning(already_running_message(prev))
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / LOG_FILE
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "eks_inference.cli", *argv], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = read_state(state_dir)
        if st and int(st.get("pid", -1)) == proc.pid and st.get("status") == "ready":
            out(f"serving {st['model']!r} at {st['url']} (pid {proc.pid}, log {log_path}); "
                "stop with `eks-inference local --stop`")
            return 0
        if st and int(st.get("pid", -1)) == proc.pid and st.get("status") == "waiting":
            out(f"started {st['model']!r} at {st['url']} (pid {proc.pid}, log {log_path}), waiting for its "
                f"weights: {st.get('missing')} does not exist yet")
            if st.get("command"):
                out(f"  publish them with: {st['command']}")
            out("  it serves by itself once they appear; stop with `eks-inference local --stop`")
            return 0
        if proc.poll() is not None:
            lines = [ln.strip() for ln in strip_ansi(log_path.read_text(errors="replace")).splitlines()]
            ours = [ln for ln in lines if ln.startswith("eks-inference:")]
            reason = ours[-1] if ours else next((ln for ln in reversed(lines) if ln), "no output")
            out(f"{reason} (log: {log_path})" if ours else f"eks-inference: local serving exited before it was "
                f"ready: {reason} (log: {log_path})")
            return proc.returncode or 1
        time.sleep(0.5)
    out(f"eks-inference: not ready after {timeout_s:.0f} s; stopping it (log: {log_path})")
    stop(state_dir=state_dir, out=out)
    return 1


def stop(*, state_dir: Path = STATE_DIR, timeout_s: float = 60.0, out: Callable[[str], None] = print) -> int:
    """Signal the recorded local server and wait until it (and its Ray) has exited."""
    st = read_state(state_dir)
    if not st:
        out("no local serving is recorded (nothing to stop)")
        return 0
    pid = int(st.get("pid", 0))
    if pid <= 0 or not pid_alive(pid):
        state_path(state_dir).unlink(missing_ok=True)
        out(f"local serving (pid {pid}) is not running; removed its stale state")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.25)
    if pid_alive(pid):
        out(f"pid {pid} did not stop within {timeout_s:.0f} s; killing its process group")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        state_path(state_dir).unlink(missing_ok=True)
        return 1
    state_path(state_dir).unlink(missing_ok=True)
    out(f"stopped local serving of {st.get('model')!r} (pid {pid})")
    return 0
