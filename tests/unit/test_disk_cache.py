"""The byte bound on a replica's disk cache (artifacts/disk_cache.py): least recently used entries go first, never
one in use, by this process or by another sharing the cache; the entries are the directories resolve.py writes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from eks_inference.artifacts.disk_cache import DiskCache, Entry, entries, removals
from eks_inference.artifacts.resolve import ArtifactRequest, cached_artifact_dir, cached_model_dir
from tests.conftest import ROOT

KIB = 1024


def request(model: str) -> ArtifactRequest:
    return ArtifactRequest(model=model, revision="v1", task="embedding", processor="cpu", backend="cpu",
                           dtype="fp32", batch_buckets=(1, 2), seq_buckets=(32,))


def member(cache: Path, model_id: str, *, size: int, used_at: float) -> tuple[Path, Path]:
    """A member's two entries where resolve_model / resolve_artifact put them: its weights and its artifact."""
    digest = hashlib.sha256(model_id.encode()).hexdigest()
    weights = cached_model_dir(cache, digest)
    artifact = cached_artifact_dir(cache, request(f"fam/{model_id}"), digest)
    for d, name in ((weights, "model.safetensors"), (artifact, "w-1/graph.pt")):
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(b"x" * size)
        (d / "manifest.json").write_bytes(b"{}")
        os.utime(d, (used_at, used_at))
    return weights, artifact


def test_removals_take_the_least_recently_used_first_and_skip_what_is_in_use() -> None:
    a, b, c = (Entry(Path(f"/c/{n}"), 10, t) for n, t in (("a", 1.0), ("b", 2.0), ("c", 3.0)))
    assert removals([c, a, b], 30, set()) == []
    assert removals([c, a, b], 25, set()) == [a]
    assert removals([c, a, b], 15, set()) == [a, b]
    assert removals([c, a, b], 15, {a.path}) == [b, c]
    assert removals([c, a, b], 5, {a.path, b.path, c.path}) == []  # all in use: over the bound, nothing removed


def test_a_trim_keeps_the_cache_within_its_budget_and_members_in_use(tmp_path: Path) -> None:
    """GIVEN four members' entries on disk, used at different times, one of the oldest held in memory
    WHEN the cache is trimmed to about two members' bytes
    THEN the least recently used members not in use are removed whole (weights and artifact), the held one stays,
    and what is left fits the budget."""
    now = time.time()
    m = {mid: member(tmp_path, mid, size=40 * KIB, used_at=now - age) for mid, age in
         (("old", 400), ("held", 300), ("mid", 200), ("new", 100))}
    one = sum(e.bytes for e in entries(tmp_path)) // 4
    cache = DiskCache(tmp_path, budget=2 * one)
    cache.in_use(m["held"])
    done = cache.trim()
    assert done is not None and not done.over
    left = {e.path for e in entries(tmp_path)}
    assert left == {*m["held"], *m["new"]}
    assert {e.path for e in done.removed} == {*m["old"], *m["mid"]}
    assert done.bytes == sum(e.bytes for e in entries(tmp_path)) <= 2 * one
    assert cache.removed == 4 and cache.removed_bytes == 2 * one


def test_a_member_leaving_memory_takes_its_place_in_the_lru_by_its_last_use(tmp_path: Path) -> None:
    now = time.time()
    a = member(tmp_path, "a", size=KIB, used_at=now - 100)
    b = member(tmp_path, "b", size=KIB, used_at=now - 200)
    one = sum(e.bytes for e in entries(tmp_path)) // 2
    cache = DiskCache(tmp_path, budget=one)
    cache.touch(b, at=now - 10)  # b was evicted from memory just now, used 10 s ago: a is the older one
    cache.touch([Path("/")], at=0)  # outside the cache: left alone
    cache.trim()
    assert {e.path for e in entries(tmp_path)} == set(b)
    assert not any(p.exists() for p in a)


def test_work_in_progress_is_never_counted_nor_removed(tmp_path: Path) -> None:
    now = time.time()
    member(tmp_path, "a", size=KIB, used_at=now)
    staging = tmp_path / "artifacts" / "fam" / "b" / "v1" / ".key.w-1234"
    staging.mkdir(parents=True)
    (staging / "manifest.json").write_bytes(b"{}")
    tmp = tmp_path / "models" / ".partial"
    tmp.mkdir(parents=True)
    assert all(not any(p.startswith(".") for p in e.path.relative_to(tmp_path).parts) for e in entries(tmp_path))
    DiskCache(tmp_path, budget=1).trim()
    assert staging.is_dir() and tmp.is_dir() and entries(tmp_path) == []


def test_no_budget_removes_nothing(tmp_path: Path) -> None:
    member(tmp_path, "a", size=KIB, used_at=time.time())
    cache = DiskCache(tmp_path, budget=None)
    cache.in_use([])
    assert cache.trim() is None and len(entries(tmp_path)) == 2
    assert not (tmp_path / ".in-use").exists()


def test_what_another_live_process_uses_stays_and_goes_once_it_ends(tmp_path: Path) -> None:
    """GIVEN another replica process sharing the cache that declared a member's entries in use (local serving runs
    several replicas on one directory)
    WHEN this process trims to nothing
    THEN that member stays while the other process lives, and is removed by the first trim after it ended."""
    now = time.time()
    theirs = member(tmp_path, "theirs", size=KIB, used_at=now - 100)
    ours = member(tmp_path, "ours", size=KIB, used_at=now)
    code = ("import sys; from pathlib import Path; from eks_inference.artifacts.disk_cache import DiskCache; "
            f"DiskCache({str(tmp_path)!r}, 1).in_use([Path(p) for p in {[str(p) for p in theirs]!r}]); "
            "print('declared', flush=True); sys.stdin.read()")
    other = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=ROOT)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "declared"
        cache = DiskCache(tmp_path, budget=1)
        cache.in_use([])
        done = cache.trim()
        assert done is not None and done.over
        assert {e.path for e in entries(tmp_path)} == set(theirs)
        assert not any(p.exists() for p in ours)
    finally:
        assert other.stdin is not None
        other.stdin.close()
        other.wait(timeout=60)
    cache.trim()
    assert entries(tmp_path) == []
    assert not (tmp_path / ".in-use" / f"{other.pid}.json").exists()
