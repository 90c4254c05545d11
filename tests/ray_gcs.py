"""A Ray cluster with GCS fault tolerance on this machine, as KubeRay runs one: the GCS state in an external Redis
over TLS with a password, a head that runs no replicas (``num-cpus=0``) and a worker node that holds the Serve
replica, each started with ``ray start --block`` in a session of its own (their own containers, in a cluster).

Used by ``tests/system/test_gcs_fault_tolerance.py`` and ``bench/faults.py``.

* The store: ``redis-server`` (Debian's build has TLS) on 127.0.0.1 with ``tls-port`` only, a throwaway CA and
  server certificate made with ``openssl``, and ``requirepass``.
* The head gets what KubeRay gives a head with ``gcsFaultToleranceOptions`` (ray-operator/controllers/ray/common/
  pod.go at v1.7.0, ``configureRedisFT``): ``RAY_REDIS_ADDRESS`` (``rediss://``), ``REDIS_PASSWORD`` and
  ``--redis-password=$REDIS_PASSWORD``, ``RAY_external_storage_namespace``; and what the serving chart adds,
  ``RAY_REDIS_CA_CERT``. The worker gets ``RAY_gcs_rpc_server_reconnect_timeout_s=600``
  (``configureGCSFaultTolerance``).
* A lost GCS: ``ray start --block`` watches the processes it started and, when one dies, stops the others and exits
  (ray python/ray/scripts/scripts.py, ``start``: the ``block`` loop). In a pod the Ray container then exits; its
  processes go with the container, and a new head starts (the container restarted, or with KubeRay's autoscaler v2
  ``restartPolicy: Never`` the pod replaced by the operator). :meth:`GcsFtCluster.restart_head` does that: it kills
  what the old head's session left, then runs the same ``ray start`` again.

Locally the restarted head gets a temp dir of its own: ``ray start --head`` refuses to start where another local
process names the same GCS address in its ``--gcs-address`` (``services.find_gcs_addresses``), and here the worker
node's processes do; in a pod they are in another container. The Serve proxies of both nodes share the HTTP port
(Serve sets ``SO_REUSEPORT``, ray serve/_private/http_util.py), so the port goes on answering while the head's
proxy is gone, as the serve Service goes on routing to the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eks_inference.serving.local import free_port

RAY = str(Path(sys.executable).with_name("ray"))
APP = "gcs-echo"
ECHO_MODULE = "gcs_echo_app"
STORAGE_NAMESPACE = "ray-cluster-uid"
MAX_HEAD_STARTS = 5
"""Head starts (the first included) before the harness gives up, as a crash-looping pod would be given up on."""
START_CEILING_S = 240.0
"""How long a step may take on a busy machine before the harness gives up: a ceiling for a hang, not a measure."""

ECHO_APP = textwrap.dedent('''
    """A Serve app shaped like the model API for the load tester: POST .../predict, GET .../info."""
    import os

    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse


    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1})
    class Echo:
        async def __call__(self, request: Request) -> JSONResponse:
            if request.url.path.endswith("/info"):
                return JSONResponse({"model": "gcs-echo", "replicas": {"running": 1}, "pid": os.getpid()})
            body = await request.json()
            return JSONResponse({"embeddings": [[float(len(t))] for t in body.get("inputs", [])],
                                 "pid": os.getpid()})


    app = Echo.bind()
''')


def tool_missing() -> str | None:
    """Why the local store cannot run here, or None."""
    for tool, package in (("redis-server", "redis-server"), ("redis-cli", "redis-tools"), ("openssl", "openssl")):
        if shutil.which(tool) is None:
            return (f"{tool} not found; install it with scripts/install-test-tools.sh (Debian package {package}) "
                    "to run the GCS fault-tolerance test")
    return None


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    def run(*args: str) -> None:
        subprocess.run(args, cwd=directory, check=True, capture_output=True, timeout=60)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "1", "-subj", "/CN=eks-inference test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "1", "-extfile", "san.ext")
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


class TlsRedis:
    """``redis-server`` on 127.0.0.1, TLS only (no plain port), with a password."""

    def __init__(self, directory: Path, password: str = "gcs-store-test-token-0123456789") -> None:
        self.directory = directory
        self.password = password
        self.ca, cert, key = make_certificates(directory)
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(self.ca),
             "--tls-auth-clients", "no", "--requirepass", password, "--save", "", "--appendonly", "no",
             "--dir", str(directory)],
            stdout=open(directory / "redis.log", "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
        deadline = time.monotonic() + 30
        while self.cli("PING") != "PONG":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(directory / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.2)

    @property
    def address(self) -> str:
        return f"rediss://127.0.0.1:{self.port}"

    def cli(self, *args: str, tls: bool = True, password: str | None = None) -> str:
        cmd = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--no-auth-warning"]
        if tls:
            cmd += ["--tls", "--cacert", str(self.ca)]
        pw = self.password if password is None else password
        if pw:
            cmd += ["-a", pw]
        r = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=30)
        return (r.stdout + r.stderr).strip()

    def scan(self, pattern: str = "*") -> list[str]:
        out = self.cli("--scan", "--pattern", pattern)
        return [k for k in out.splitlines() if k]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (by parent id), at this moment."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _ray_env(extra: dict[str, str]) -> dict[str, str]:
    # Stock Serve: none of the test session's Ray settings (tests/servers.py turns on the cluster's HAProxy ingress,
    # whose HAProxy processes on a shared port are not what the serve Service routes to in a cluster).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # Ceilings for a busy machine, not behaviour: a raylet gives its dashboard agent 15 s to write its ports and
    # then aborts (node_manager.cc, WaitForDashboardAgentPorts); a loaded 2-core machine took longer.
    env.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60", "RAY_agent_register_timeout_ms": "120000"})
    env.update(extra)
    return env


class GcsFtCluster:
    """Head and worker node against :class:`TlsRedis` (module docstring)."""

    def __init__(self, root: Path, redis: TlsRedis, *, ca: Path | None = None) -> None:
        self.root = root
        self.redis = redis
        self.gcs_port = free_port()
        self.http_port = free_port()
        self.head: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.head_starts = 0
        self._head_processes: list[int] = []
        (root / f"{ECHO_MODULE}.py").write_text(ECHO_APP)
        # What KubeRay sets on a head with gcsFaultToleranceOptions (names checked against tests/system/kuberay.py
        # by the test), with this machine's values; RAY_REDIS_CA_CERT as the serving chart sets it.
        self.head_env = _ray_env({
            "RAY_external_storage_namespace": STORAGE_NAMESPACE,
            "RAY_REDIS_ADDRESS": redis.address,
            "REDIS_PASSWORD": redis.password,
            "RAY_REDIS_CA_CERT": str(ca or redis.ca),
        })
        self.worker_env = _ray_env({"RAY_gcs_rpc_server_reconnect_timeout_s": "600"})
        self.driver_env = _ray_env({"PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])})

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/{APP}"

    def head_command(self) -> list[str]:
        # As KubeRay writes it: --redis-password=$REDIS_PASSWORD, expanded by the container's bash from the env.
        return ["bash", "-c", f'exec {RAY} start --head --block --port={self.gcs_port} --num-cpus=0 '
                f'--node-ip-address=127.0.0.1 --include-dashboard=false '
                f'--temp-dir={self.root}/head{self.head_starts} --redis-password="$REDIS_PASSWORD"']

    def start_head(self) -> None:
        self.head_starts += 1
        log = open(self.root / f"head{self.head_starts}.log", "w")  # noqa: SIM115
        self.head = subprocess.Popen(self.head_command(), env=self.head_env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def start(self) -> GcsFtCluster:
        self.start_head()
        self.wait_gcs()
        log = open(self.root / "worker.log", "w")  # noqa: SIM115
        self.worker = subprocess.Popen(
            [RAY, "start", "--block", f"--address={self.address}", "--num-cpus=2", "--node-ip-address=127.0.0.1"],
            env=self.worker_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_nodes(2)
        return self

    def driver(self, code: str, timeout_s: float = START_CEILING_S) -> str:
        """Run ``code`` in a Ray driver connected to the cluster; its stdout."""
        prelude = f"import ray\nray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)\n"
        r = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=self.driver_env,
                           capture_output=True, text=True, timeout=timeout_s, cwd=self.root)
        if r.returncode != 0:
            raise RuntimeError(f"driver failed ({r.returncode}): {r.stderr[-3000:]}")
        return r.stdout

    def wait_gcs(self, timeout_s: float = START_CEILING_S) -> None:
        deadline = time.monotonic() + timeout_s
        while subprocess.run([RAY, "health-check", "--address", self.address], env=self.worker_env,
                             capture_output=True, timeout=60).returncode != 0:
            if self.head is not None and self.head.poll() is not None:
                # The kubelet restarts a container that exits; on a busy machine Ray's start-up can give up on its
                # own agents (a raylet waits 15 s for the dashboard agent's ports, then aborts).
                if self.head_starts >= MAX_HEAD_STARTS:
                    raise RuntimeError(f"the head exited {self.head_starts} times: {self.log('head')[-3000:]}")
                self.restart_head()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no GCS at {self.address} within {timeout_s:g} s")
            time.sleep(0.5)

    def wait_nodes(self, n: int, timeout_s: float = START_CEILING_S) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            nodes = json.loads(self.driver(
                "import json; print(json.dumps([{'id': n['NodeID'], 'alive': n['Alive'], 'cpus': "
                "n['Resources'].get('CPU', 0)} for n in ray.nodes()]))").strip().splitlines()[-1])
            if sum(1 for x in nodes if x["alive"]) >= n:
                return list(nodes)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n} live nodes expected, Ray reports {nodes}")
            time.sleep(1.0)

    def log(self, which: str) -> str:
        name = f"head{self.head_starts}.log" if which == "head" else "worker.log"
        with contextlib.suppress(OSError):
            return (self.root / name).read_text(errors="replace")
        return ""

    def deploy(self) -> None:
        self.driver(f"""
            from ray import serve
            serve.start(http_options={{"host": "127.0.0.1", "port": {self.http_port}}})
            from {ECHO_MODULE} import app
            serve.run(app, name={APP!r}, route_prefix="/{APP}")
        """)
        self.wait_http()

    def wait_http(self, timeout_s: float = START_CEILING_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/info", timeout=5) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.url} did not answer within {timeout_s:g} s")
            time.sleep(0.5)

    def app_status(self) -> str:
        return self.driver(f"""
            from ray import serve
            print(serve.status().applications[{APP!r}].status.value)
        """, timeout_s=120).strip().splitlines()[-1]

    def replica_pids(self) -> list[int]:
        """The Serve replica processes of the app on this machine (their title is ``ray::ServeReplica:APP:...``)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith(f"ray::ServeReplica:{APP}:"):
                found.append(int(entry))
        return sorted(found)

    def gcs_pid(self) -> int:
        """The head's ``gcs_server`` (a child of the head's session)."""
        assert self.head is not None
        sid = os.getsid(self.head.pid)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if Path(cmd[0].decode()).name == "gcs_server" and os.getsid(int(entry)) == sid:
                    return int(entry)
            except (OSError, IndexError, UnicodeDecodeError):
                continue
        raise RuntimeError("no gcs_server in the head's session")

    def kill_gcs(self) -> int:
        """SIGKILL to the GCS; first the head's processes are noted, since the container's end takes them all."""
        assert self.head is not None
        self._head_processes = descendants(self.head.pid)
        pid = self.gcs_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_head_exit(self, timeout_s: float = 120.0) -> int:
        assert self.head is not None
        return self.head.wait(timeout_s)

    def restart_head(self) -> None:
        """The container's end and a new one: what the old head's session left is killed, then the same start."""
        assert self.head is not None
        left = descendants(self.head.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.head.pid, signal.SIGKILL)
        # Ray's workers (the Serve controller, the head's proxy) run in process groups of their own.
        for pid in {*self._head_processes, *left}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.head.wait(30)
        self.start_head()

    def stop(self) -> None:
        for proc in (self.worker, self.head):
            if proc is None:
                continue
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(15)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # Workers Ray forked (replicas, proxies, the controller) live in the sessions of their raylets; any left
        # over after their raylet's end exit on their own, these are what is still here.
        for pid in self.replica_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class GcsKillOutcome:
    """What a GCS kill under an open loop cost, measured by the project's load tester."""

    before_ok: int
    before_errors: dict[str, int]
    ok: int
    errors: dict[str, int]
    gcs_back_s: float
    """From the kill until the restarted head's GCS answers ``ray health-check``."""
    serve_back_s: float | None
    """From the kill until Serve reports the app RUNNING again (its controller restarted on the new head); None if
    not within the ceiling."""
    replicas_before: list[int]
    replicas_after: list[int]

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def sent(self) -> int:
        return self.ok + self.failed

    def describe(self, rate: float, tail_s: float) -> str:
        errs = ", ".join(f"{n} {k}" for k, n in sorted(self.errors.items())) or "none"
        back = "not within the ceiling" if self.serve_back_s is None else f"{self.serve_back_s:.1f} s"
        same = "the same process" if self.replicas_after == self.replicas_before else (
            f"{self.replicas_before} → {self.replicas_after}")
        return (f"GCS SIGKILL at {rate:g} req/s: in the {tail_s:g} s from the kill {self.ok} ok, {self.failed} failed "
                f"({errs}) of {self.sent}; GCS answering again {self.gcs_back_s:.1f} s after the kill, the Serve app "
                f"RUNNING again {back}; the replica: {same}")


def kill_gcs_under_load(cluster: GcsFtCluster, *, rate: float, lead_s: float, tail_s: float,
                        serve_ceiling_s: float = START_CEILING_S) -> GcsKillOutcome:
    """An open loop of ``lead_s + tail_s`` at ``rate`` to the app; SIGKILL to the GCS ``lead_s`` in; the head started
    again once ``ray start --block`` has exited (the container's end), then waited for until Serve reports the app
    RUNNING (each status read is a new driver, as ``kubectl``/KubeRay would read it from the dashboard)."""
    from eks_inference.loadgen import runner
    from eks_inference.loadgen.payloads import generate_payloads, parse_length_dist
    from eks_inference.loadgen.run_config import RunConfig
    from eks_inference.measure.schedule import Segment
    from eks_inference.measure.spec import Mode, TargetInfo

    url = cluster.url
    replicas_before = cluster.replica_pids()
    payloads = generate_payloads(parse_length_dist("uniform:8-64"), inputs_per_request=1, seed=0)
    cfg = RunConfig(url=url, mode=Mode.OPEN, target=TargetInfo(name=APP, url=url), out="unused.json", run_id="gcs",
                    warmup_s=0.0, timeout_s=10.0, duration_s=lead_s + tail_s,
                    schedule=(Segment(rate, rate, lead_s), Segment(rate, rate, tail_s)))
    result: dict[str, Any] = {}
    killed = threading.Event()

    def load() -> None:
        result["out"] = asyncio.run(runner.run(cfg, payloads, server_metrics=False))

    def kill() -> None:
        result["t_kill"] = time.monotonic()
        cluster.kill_gcs()
        killed.set()

    thread = threading.Thread(target=load)
    timer = threading.Timer(lead_s, kill)
    thread.start()
    timer.start()
    serve_back: float | None = None
    try:
        if not killed.wait(lead_s + 60):
            raise RuntimeError("the GCS was not killed")
        cluster.wait_head_exit()
        cluster.restart_head()
        cluster.wait_gcs()
        gcs_back = time.monotonic() - result["t_kill"]
        deadline = time.monotonic() + serve_ceiling_s
        while serve_back is None and time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                if cluster.app_status() == "RUNNING":
                    serve_back = time.monotonic() - result["t_kill"]
    finally:
        timer.cancel()
        thread.join(lead_s + tail_s + 120)
    (step,) = result["out"].steps
    segs = {i: st for i, _, st in step.segments}
    return GcsKillOutcome(before_ok=segs[0].ok, before_errors=dict(segs[0].errors_by_kind), ok=segs[1].ok,
                          errors=dict(segs[1].errors_by_kind), gcs_back_s=gcs_back, serve_back_s=serve_back,
                          replicas_before=replicas_before, replicas_after=cluster.replica_pids())
