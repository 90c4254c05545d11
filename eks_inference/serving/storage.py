"""Where model directories and compiled artifacts live: ``s3://bucket/prefix`` or a local directory.

Both stores give the same four guarantees the artifact cache relies on: downloads land atomically
(temporary file, then rename, so a crashed download never looks complete), uploads of data files go to
keys no other writer uses, :meth:`Store.put_if_absent` is a create-only write (S3 ``If-None-Match: *``;
a hard link locally) that decides which concurrent writer wins, and every object can be named in an
error message (:meth:`Store.uri_of`). boto3 is imported only for ``s3://`` stores; the endpoint comes from
the argument, else boto3's own ``AWS_ENDPOINT_URL`` handling.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from eks_inference.config import ConfigError

DOWNLOAD_WORKERS = 8


class Store(Protocol):
    uri: str

    def uri_of(self, rel: str) -> str: ...
    def read_bytes(self, rel: str) -> bytes | None: ...
    def download(self, rel: str, dest: Path) -> None: ...
    def upload(self, src: Path, rel: str) -> None: ...
    def put_if_absent(self, rel: str, data: bytes) -> bool: ...
    def delete(self, rel: str) -> None: ...
    def list(self, rel_prefix: str) -> list[str]: ...


def temp_sibling(dest: Path) -> Path:
    """A unique temporary path next to ``dest`` (same filesystem, so ``os.replace`` is atomic)."""
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")


def copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dest)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


class LocalStore:
    """A directory used as an object store (tests, laptops, shared volumes)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, rel: str) -> Path:
        p = (self.root / rel).resolve()
        if p != self.root and self.root not in p.parents:
            raise ValueError(f"object path {rel!r} escapes the store {self.root}")
        return p

    def uri_of(self, rel: str) -> str:
        return str(self._path(rel))

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            return self._path(rel).read_bytes()
        except FileNotFoundError:
            return None

    def download(self, rel: str, dest: Path) -> None:
        copy_atomic(self._path(rel), dest)

    def upload(self, src: Path, rel: str) -> None:
        copy_atomic(src, self._path(rel))

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        dest = self._path(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(dest)
        try:
            tmp.write_bytes(data)
            os.link(tmp, dest)  # fails if dest exists: create-only, like If-None-Match: *
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, rel: str) -> None:
        self._path(rel).unlink(missing_ok=True)

    def list(self, rel_prefix: str) -> list[str]:
        base = self._path(rel_prefix)
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith("."))


class S3Store:
    """``s3://bucket/prefix``; objects are ``prefix/rel``."""

    def __init__(self, uri: str, *, endpoint_url: str | None = None, client: Any = None) -> None:
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        if not bucket:
            raise ConfigError(f"S3 URI {uri!r} has no bucket; write it as s3://BUCKET/PREFIX")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3", endpoint_url=endpoint_url or None,
                config=Config(max_pool_connections=DOWNLOAD_WORKERS * 2,
                              retries={"max_attempts": 5, "mode": "standard"}),
            )
        self.client = client

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def uri_of(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.key(rel)}"

    def read_bytes(self, rel: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(rel))["Body"]
            return bytes(body.read())
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    def download(self, rel: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(dest)
        try:
            self.client.download_file(self.bucket, self.key(rel), str(tmp))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def upload(self, src: Path, rel: str) -> None:
        self.client.upload_file(str(src), self.bucket, self.key(rel))

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=data, IfNoneMatch="*")
            return True
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            # 409 ConditionalRequestConflict: a concurrent conditional write is in flight; it will win.
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return False
            raise

    def delete(self, rel: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(rel))

    def list(self, rel_prefix: str) -> list[str]:
        base = self.key(rel_prefix).rstrip("/") + "/"
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
            for obj in page.get("Contents", []):
                out.append(obj["Key"][len(self.prefix) + 1:] if self.prefix else obj["Key"])
        return sorted(out)


def open_store(uri: str, *, endpoint_url: str | None = None) -> Store:
    """``s3://...`` → :class:`S3Store`; anything else is a local directory (``file://`` allowed)."""
    if uri.startswith("s3://"):
        return S3Store(uri, endpoint_url=endpoint_url)
    if "://" in uri and not uri.startswith("file://"):
        raise ConfigError(f"store URI {uri!r} is not supported; use s3://BUCKET/PREFIX or a local directory")
    return LocalStore(uri.removeprefix("file://"))


def join(root: str, *parts: str) -> str:
    """``root`` (URI or absolute path, kept as is) joined with relative parts."""
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts if p and p.strip("/"))])


def run_concurrently(jobs: Iterable[Any], fn: Any, workers: int = DOWNLOAD_WORKERS) -> Iterator[Any]:
    """Apply ``fn`` to each job on a thread pool; results in job order; the first error propagates."""
    jobs = list(jobs)
    if not jobs:
        return iter(())
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        return iter(list(pool.map(fn, jobs)))
