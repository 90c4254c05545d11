"""Keeping the load client and a local server apart: the core split, the server's demand, and what each side does
on this machine (two cores here: they share; the split itself is exercised where a machine has three or more)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eks_inference.cli.serving import render_local_config
from eks_inference.loadgen.host import pin_client
from eks_inference.measure.contention import MIN_CORES_TO_SPLIT, split_cores
from eks_inference.serving import local

from .test_serving_local import parse


@pytest.mark.parametrize(("cores", "server", "client"), [
    ([0], (0,), (0,)),
    ([0, 1], (0, 1), (0, 1)),
    ([0, 1, 2], (0, 1), (2,)),
    ([4, 2, 3, 5], (2, 3, 4), (5,)),
])
def test_split(cores: list[int], server: tuple[int, ...], client: tuple[int, ...]) -> None:
    got_server, got_client, note = split_cores(cores)
    assert (got_server, got_client) == (server, client)
    if len(cores) < 3:
        assert "share" in note and "halve the server" in note
    else:
        assert f"load client on core {client[0]} (its own)" in note


@pytest.mark.parametrize("cores", [[0], [0, 1], [0, 1, 2], [4, 2, 3, 5], list(range(16))])
def test_the_server_and_the_client_follow_one_rule(cores: list[int]) -> None:
    """The serving images do not ship the measurement package, so the server side states the rule again."""
    server, client, _ = split_cores(cores)
    assert tuple(local.server_share(cores)[0]) == server
    assert client == (server if len(cores) < MIN_CORES_TO_SPLIT else (max(cores),))
    assert local.SPLIT_FROM_CORES == MIN_CORES_TO_SPLIT


def test_the_local_configs_cpu_demand_fits_the_servers_share(tmp_path: Path) -> None:
    one = render_local_config(parse("--state-dir", str(tmp_path), "--replicas", "1", "--threads", "1"))
    dep = one["applications"][0]["deployments"][0]
    assert local.cpu_demand(one) == float(dep["ray_actor_options"].get("num_cpus", 1))
    # By default the local server plans its replicas on the cores it leaves the client: they fit, so it keeps apart.
    default = render_local_config(parse("--state-dir", str(tmp_path)))
    assert 1 <= local.cpu_demand(default) <= local.serving_cores()
    assert local.serving_cores() == len(split_cores(sorted(os.sched_getaffinity(0)))[0])


def test_a_remote_target_or_off_leaves_the_client_where_it_is() -> None:
    before = os.sched_getaffinity(0)
    remote = pin_client("10.0.0.5")
    off = pin_client("127.0.0.1", enabled=False)
    assert not remote["pinned"] and "not on this machine" in remote["note"]
    assert not off["pinned"] and "off" in off["note"]
    assert os.sched_getaffinity(0) == before


PIN = ("import json, os\nfrom eks_inference.loadgen.host import pin_client\n"
       "got = pin_client('127.0.0.1')\nprint(json.dumps({**got, 'now': sorted(os.sched_getaffinity(0))}))\n")


def test_a_local_target_gets_the_client_its_own_core_where_there_are_enough() -> None:
    """In a child process, so the test process keeps every core."""
    out = json.loads(subprocess.run([sys.executable, "-c", PIN], capture_output=True, text=True, check=True).stdout)
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) >= 3:
        assert out["pinned"] and out["now"] == [usable[-1]] and out["server_cores"] == usable[:-1]
    else:
        assert not out["pinned"] and out["now"] == usable and "share" in out["note"]


def test_the_server_side_keeps_to_its_share_or_says_why_not(tmp_path: Path) -> None:
    cfg = render_local_config(parse("--state-dir", str(tmp_path), "--replicas", "1", "--threads", "1"))
    code = ("import json, os, sys\nfrom eks_inference.serving.local import keep_apart\n"
            "n, note = keep_apart(json.loads(sys.stdin.read()))\n"
            "print(json.dumps({'n': n, 'note': note, 'now': sorted(os.sched_getaffinity(0))}))\n")
    out = json.loads(subprocess.run([sys.executable, "-c", code], input=json.dumps(cfg), capture_output=True,
                                    text=True, check=True).stdout)
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) >= 3:
        assert out["n"] == len(usable) - 1 and out["now"] == usable[:-1]
    else:
        assert out["n"] is None and out["now"] == usable and "share" in out["note"]
    many = json.loads(json.dumps(cfg))
    many["applications"][0]["deployments"][0].update(num_replicas=len(usable) * 4)
    out = json.loads(subprocess.run([sys.executable, "-c", code], input=json.dumps(many), capture_output=True,
                                    text=True, check=True).stdout)
    assert out["n"] is None and out["now"] == usable
    if len(usable) >= 3:
        assert "more than the" in out["note"]
