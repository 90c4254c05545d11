"""A model family's index: the one object replicas trust to say which members exist and which weights each is.

Layout under the family's prefix (``{root}/models/{family}/``, which ``eks-inference publish --family`` writes)::

    members/{model_id}/{revision}/manifest.json + model files      (a model revision, as any model's)
    index/{generation:010d}.json                                   (the index, one object per generation)

Each generation is a whole index: every member's revision, weights digest and size. A publish writes the member
first, then generation ``n + 1`` (the previous one plus the new member) create-only (S3 ``If-None-Match: *``; the
bucket refuses any other write under ``models/``). So the pointer to the current index is the generation number in
the object's name: a reader lists ``index/`` and reads the highest one, and since an S3 object appears whole or not
at all, a reader never sees half an index. Two publishers racing for the same generation: one wins, the other reads
the winner's index and tries the next number, so neither member is lost. A mutable ``latest`` pointer would need a
PUT that replaces an object, which the bucket refuses.

Pure format and a thin read/write over :class:`~eks_inference.storage.Store`: the publisher (compile floor), the
replicas (serving) and ``verify`` all read it here.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eks_inference.config import ConfigError
from eks_inference.storage import Store

MODEL_ID_HEADER = "serve_multiplexed_model_id"
"""The request header naming the member: Ray Serve's own multiplexing header (ray/serve/_private/constants.py,
``SERVE_MULTIPLEXED_MODEL_ID``), so Serve's router can prefer replicas that hold the member."""
COLD_HEADER = "x-eks-inference-cold"
"""Set by a family's replica on every answer: ``1`` when the request waited for its member to load on that replica
(a cold request), ``0`` when the member was held. The load tester splits latency on it."""
INDEX_DIR = "index"
MEMBERS_DIR = "members"
INDEX_FORMAT = 1
MODEL_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_GENERATION_RE = re.compile(r"^(?:.*/)?index/(?P<n>[0-9]{10})\.json$")
MAX_PUBLISH_TRIES = 20


class FamilyIndexError(ValueError):
    """The index is unreadable or lists a member without its digest; the message names the object."""


@dataclass(frozen=True)
class Member:
    model_id: str
    revision: str
    digest: str
    bytes: int
    """The member's weights on disk (the sum of its files): the replica's estimate of its memory before loading."""

    @property
    def prefix(self) -> str:
        """Where its revision lives, relative to the family's prefix."""
        return member_prefix(self.model_id, self.revision)


@dataclass(frozen=True)
class FamilyIndex:
    family: str
    generation: int
    task: str | None
    members: Mapping[str, Member]

    def to_bytes(self) -> bytes:
        doc = {"format": INDEX_FORMAT, "kind": "family-index", "family": self.family, "generation": self.generation,
               "task": self.task, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "members": {m.model_id: {"revision": m.revision, "digest": m.digest, "bytes": m.bytes}
                           for m in sorted(self.members.values(), key=lambda m: m.model_id)}}
        return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"

    def with_member(self, member: Member) -> FamilyIndex:
        return FamilyIndex(self.family, self.generation + 1, self.task, {**self.members, member.model_id: member})


def check_model_id(model_id: Any, where: str = "--model-id") -> str:
    if not isinstance(model_id, str) or not MODEL_ID_RE.match(model_id):
        raise ConfigError(f"{where}: {model_id!r} is not a model id; use 1-63 lower-case letters, digits, '.', '_' "
                          "or '-', starting with a letter or digit")
    return model_id


def member_prefix(model_id: str, revision: str) -> str:
    return f"{MEMBERS_DIR}/{model_id}/{revision}"


def index_key(generation: int) -> str:
    return f"{INDEX_DIR}/{generation:010d}.json"


def parse_index(data: bytes, where: str) -> FamilyIndex:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FamilyIndexError(f"{where} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT or doc.get("kind") != "family-index":
        raise FamilyIndexError(f"{where} is not a format-{INDEX_FORMAT} family index")
    members: dict[str, Member] = {}
    raw = doc.get("members")
    if not isinstance(raw, dict) or not isinstance(doc.get("generation"), int):
        raise FamilyIndexError(f"{where} has no generation or members table")
    for mid, m in raw.items():
        ok = (isinstance(m, dict) and MODEL_ID_RE.match(str(mid)) and isinstance(m.get("revision"), str)
              and isinstance(m.get("digest"), str) and re.fullmatch(r"[0-9a-f]{64}", m["digest"])
              and isinstance(m.get("bytes"), int))
        if not ok:
            raise FamilyIndexError(f"{where} member {mid!r} has no revision, sha256 digest or size; refusing the index")
        members[mid] = Member(mid, m["revision"], m["digest"], m["bytes"])
    return FamilyIndex(str(doc.get("family")), doc["generation"], doc.get("task"), members)


def latest_generation(store: Store) -> int:
    """The highest generation under ``index/`` (0 when the family has no index yet). One listing."""
    best = 0
    for key in store.list(INDEX_DIR):
        m = _GENERATION_RE.match(key)
        if m:
            best = max(best, int(m["n"]))
    return best


def read_index(store: Store, family: str) -> FamilyIndex:
    """The family's current index; an empty generation 0 when nothing is published yet."""
    n = latest_generation(store)
    if n == 0:
        return FamilyIndex(family, 0, None, {})
    raw = store.read_bytes(index_key(n))
    if raw is None:  # listed, then gone: only a delete does that
        raise FamilyIndexError(f"{store.uri_of(index_key(n))} was listed but cannot be read")
    return parse_index(raw, store.uri_of(index_key(n)))


def add_member(store: Store, family: str, member: Member, *, task: str | None) -> FamilyIndex:
    """Write the next generation with ``member`` in it (create-only); retried on a lost race. A member already
    indexed with the same revision and digest leaves the index as it is."""
    for _ in range(MAX_PUBLISH_TRIES):
        current = read_index(store, family)
        if current.task is not None and task is not None and current.task != task:
            raise ConfigError(f"family {family!r} serves task {current.task!r}; {member.model_id!r} was published "
                              f"as {task!r}: publish it with --task {current.task} or to another family")
        if current.members.get(member.model_id) == member:
            return current
        nxt = FamilyIndex(family, current.generation + 1, current.task or task,
                          {**current.members, member.model_id: member})
        if store.put_if_absent(index_key(nxt.generation), nxt.to_bytes()):
            return nxt
    raise ConfigError(f"the index of family {family!r} at {store.uri_of(INDEX_DIR)} moved {MAX_PUBLISH_TRIES} times "
                      "while publishing; retry")
