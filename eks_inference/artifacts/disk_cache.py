"""A byte bound on a replica's disk cache of weights and compiled artifacts: least recently used entries go first,
never one in use.

A family's replica loads members on a miss and keeps what it fetched (:func:`~eks_inference.artifacts.resolve.
resolve_model`, :func:`~eks_inference.artifacts.resolve.resolve_artifact`) so that a reload after an eviction from
memory fetches nothing; unbounded, that cache grows with every member the replica ever loaded, until the pod's
``/tmp`` (a ``sizeLimit``-ed emptyDir) overflows and the kubelet evicts the pod. The cache's *entries* are the
directories those functions write, each removed whole:

    {cache}/models/{digest[:24]}/                     a model's verified files
    {cache}/artifacts/{model}/{revision}/{key}/       a compiled artifact (the directory holding its manifest)

Names starting with ``.`` (a download's staging directory, a temporary file) are work in progress and never counted
nor removed. An entry's last use is its directory's modification time, which the replica sets when a member that
used it loads or leaves memory (:meth:`DiskCache.touch`), so the order survives a restart of the replica.

*In use* means held in memory or loading, by any process sharing the cache (local serving runs several replicas on
one directory): each process writes the entries it uses to ``{cache}/.in-use/{pid}.json`` and removal reads every
live process's list, both under one lock file, so a trim never removes what another replica is fetching into.
What is in use stays even above the bound; the trim then reports the cache as over it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from eks_inference.artifacts.manifests import MANIFEST

log = logging.getLogger(__name__)

IN_USE_DIR = ".in-use"
LOCK_FILE = "lock"
MODELS_DIR = "models"
ARTIFACTS_DIR = "artifacts"


@dataclass(frozen=True)
class Entry:
    path: Path
    bytes: int
    used_at: float


@dataclass(frozen=True)
class Trim:
    """What one trim did: the entries it removed, the bytes left and whether they are still over the budget (then
    everything left is in use)."""

    removed: tuple[Entry, ...]
    bytes: int
    over: bool


def removals(entries: Sequence[Entry], budget: int, in_use: Collection[Path]) -> list[Entry]:
    """Which ``entries`` to remove, least recently used first, so that the rest fit ``budget`` bytes; an entry in
    ``in_use`` never (the rest may then stay over the budget)."""
    total = sum(e.bytes for e in entries)
    out: list[Entry] = []
    for e in sorted(entries, key=lambda e: (e.used_at, str(e.path))):
        if total <= budget:
            break
        if e.path in in_use:
            continue
        out.append(e)
        total -= e.bytes
    return out


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):  # removed meanwhile (a temporary file renamed into place)
                total += (Path(dirpath) / f).lstat().st_size
    return total


def entries(cache_dir: Path) -> list[Entry]:
    """Every entry of the cache under ``cache_dir`` (see the module's docstring), with its bytes and last use."""
    root = Path(cache_dir).resolve()
    found: list[Path] = []
    models = root / MODELS_DIR
    if models.is_dir():
        found += [p for p in models.iterdir() if p.is_dir() and not p.name.startswith(".")]
    artifacts = root / ARTIFACTS_DIR
    if artifacts.is_dir():
        found += [m.parent for m in artifacts.rglob(MANIFEST) if not _hidden(m, artifacts)]
    out = []
    for p in found:
        try:
            out.append(Entry(p, _size(p), p.stat().st_mtime))
        except FileNotFoundError:
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DiskCache:
    """The bound on one cache directory, as one process (a replica) applies it.

    :param cache_dir: the directory :func:`~eks_inference.artifacts.resolve.resolve_model` and
        :func:`~eks_inference.artifacts.resolve.resolve_artifact` cache into.
    :param budget: bytes the cache may hold; None: no bound (nothing is ever removed).
    """

    def __init__(self, cache_dir: str | Path, budget: int | None) -> None:
        self.root = Path(cache_dir).resolve()
        self.budget = budget
        self.removed = 0
        self.removed_bytes = 0
        self.last: Trim | None = None

    @property
    def _markers(self) -> Path:
        return self.root / IN_USE_DIR

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._markers.mkdir(parents=True, exist_ok=True)
        with open(self._markers / LOCK_FILE, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _own(self) -> Path:
        return self._markers / f"{os.getpid()}.json"

    def in_use(self, paths: Iterable[Path]) -> None:
        """Declare what this process uses now (held and loading members' entries), in place of what it declared
        before; a trim by any process sharing the cache keeps them."""
        if self.budget is None:
            return
        doc = json.dumps({"pid": os.getpid(), "paths": sorted({str(Path(p).resolve()) for p in paths})}).encode()
        with self._locked():
            tmp = self._own().with_name(f".{os.getpid()}.tmp")
            tmp.write_bytes(doc)
            os.replace(tmp, self._own())

    def _all_in_use(self) -> set[Path]:
        used: set[Path] = set()
        for marker in self._markers.glob("*.json"):
            try:
                doc = json.loads(marker.read_bytes())
                pid, paths = int(doc["pid"]), [Path(p) for p in doc["paths"]]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if pid != os.getpid() and not _alive(pid):
                marker.unlink(missing_ok=True)  # a process that ended uses nothing
                continue
            used.update(paths)
        return used

    def touch(self, paths: Iterable[Path], at: float | None = None) -> None:
        """Mark the entries at ``paths`` used at ``at`` (default now); paths outside the cache are left alone."""
        when = time.time() if at is None else at
        for p in paths:
            p = Path(p).resolve()
            if p.is_relative_to(self.root) and p.is_dir():
                with contextlib.suppress(OSError):
                    os.utime(p, (when, when))

    def trim(self) -> Trim | None:
        """Remove least recently used entries not in use by any process until the cache fits its budget; None when
        it has no budget."""
        if self.budget is None:
            return None
        with self._locked():
            found = entries(self.root)
            gone = removals(found, self.budget, self._all_in_use())
            for e in gone:
                shutil.rmtree(e.path, ignore_errors=True)
        left = sum(e.bytes for e in found) - sum(e.bytes for e in gone)
        self.removed += len(gone)
        self.removed_bytes += sum(e.bytes for e in gone)
        self.last = Trim(tuple(gone), left, left > self.budget)
        return self.last


__all__ = ["DiskCache", "Entry", "Trim", "entries", "removals"]
