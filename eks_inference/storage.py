"""Where everything the project writes lives: ``s3://bucket/prefix`` or a local directory, one implementation.

Two views of one place. :class:`Store` (``open_store``) is what the artifact cache uses for model directories and
compiled artifacts, relative to a root; the location functions below it (``write_text``, ``exists``,
``list_texts``, ``read_inputs``) take a whole path or ``s3://`` URI each, which is how load-test results, barrier
markers and reports are named. Both reach S3 through :func:`s3_client`.

Both stores give the same four guarantees the artifact cache relies on: downloads land atomically
(temporary file, then rename, so a crashed download never looks complete), every write is create-only
(:meth:`Store.upload_new` and :meth:`Store.put_if_absent`: S3 ``If-None-Match: *`` on the PUT or on the
completion of a multipart upload, a hard link locally) so nothing published is ever overwritten and the first
of concurrent writers wins, and every object can be named in an error message (:meth:`Store.uri_of`). The model
repository's bucket policy refuses any other write under ``models/`` and ``artifacts/``. boto3 is imported only
for ``s3://`` stores; the endpoint comes from the argument, else boto3's own ``AWS_ENDPOINT_URL`` handling.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from eks_inference.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

DOWNLOAD_WORKERS = 8
SINGLE_PUT_MAX_BYTES = 64 * 2**20
"""Files up to this size go up in one conditional PUT; larger ones in parts of this size, the completion
conditional (S3 accepts ``If-None-Match`` on PutObject and CompleteMultipartUpload only)."""


def is_s3(location: str) -> bool:
    return location.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/...`` → (bucket, key); the key may be empty."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ConfigError(f"S3 URI {uri!r} has no bucket; write it as s3://BUCKET/PREFIX")
    return bucket, key


class Store(Protocol):
    uri: str

    def uri_of(self, rel: str) -> str: ...
    def read_bytes(self, rel: str) -> bytes | None: ...
    def download(self, rel: str, dest: Path) -> None: ...
    def upload_new(self, src: Path, rel: str) -> bool: ...
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

    def upload_new(self, src: Path, rel: str) -> bool:
        """Copy ``src`` to ``rel`` unless ``rel`` exists (then False, and nothing changes)."""
        dest = self._path(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(dest)
        try:
            shutil.copyfile(src, tmp)
            return self._link_new(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        dest = self._path(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(dest)
        try:
            tmp.write_bytes(data)
            return self._link_new(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _link_new(tmp: Path, dest: Path) -> bool:
        try:
            os.link(tmp, dest)  # fails if dest exists: create-only, like If-None-Match: *
            return True
        except FileExistsError:
            return False

    def delete(self, rel: str) -> None:
        self._path(rel).unlink(missing_ok=True)

    def list(self, rel_prefix: str) -> list[str]:
        base = self._path(rel_prefix)
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith("."))


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client with room for concurrent downloads and standard retries; the endpoint comes from the
    argument, else boto3's own ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` handling (a moto server in tests)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint_url or None,
        config=Config(max_pool_connections=DOWNLOAD_WORKERS * 2, retries={"max_attempts": 5, "mode": "standard"}),
    )


class S3Store:
    """``s3://bucket/prefix``; objects are ``prefix/rel``."""

    def __init__(self, uri: str, *, endpoint_url: str | None = None, client: Any = None) -> None:
        bucket, prefix = split_s3(uri)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.client = client if client is not None else s3_client(endpoint_url)

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def uri_of(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.key(rel)}"

    def read_bytes(self, rel: str) -> bytes | None:
        """The object's bytes, or None when it does not exist, whichever of 404 and 403 S3 answers for that.

        S3 answers a GET of a missing key with 404 only to a caller allowed ``s3:ListBucket``, else 403 (S3 API
        Reference, GetObject, "Permissions"). The roles here may list only under the prefixes they read (an
        ``s3:prefix`` condition), and whether S3 counts that as ListBucket for a GET is not documented. So a 403 is
        read as "absent" only when a listing of exactly that key, which those roles are allowed, confirms it; a
        403 on a key the listing shows, or a refused listing, is a real denial and is raised.
        """
        from botocore.exceptions import ClientError

        key = self.key(rel)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            return bytes(body.read())
        except ClientError as e:
            if _missing(e):
                return None
            if _denied(e) and self._listed_absent(key):
                log.info("s3://%s/%s: GET answered 403, a listing shows it absent: not published yet", self.bucket, key)
                return None
            raise

    def _listed_absent(self, key: str) -> bool:
        """True when a listing of ``key`` shows no such object; False when it shows one or the listing is refused."""
        from botocore.exceptions import ClientError

        try:
            listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        except ClientError:
            return False
        return not any(obj["Key"] == key for obj in listed.get("Contents", []))

    def download(self, rel: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(dest)
        try:
            self.client.download_file(self.bucket, self.key(rel), str(tmp))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def upload_new(self, src: Path, rel: str) -> bool:
        """Upload ``src`` to ``rel`` unless ``rel`` exists (then False): one conditional PUT, or for files over
        :data:`SINGLE_PUT_MAX_BYTES` a multipart upload whose completion is conditional (aborted if it fails)."""
        from botocore.exceptions import ClientError

        key = self.key(rel)
        try:
            if src.stat().st_size <= SINGLE_PUT_MAX_BYTES:
                with src.open("rb") as body:
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
                return True
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
            try:
                parts: list[dict[str, Any]] = []
                with src.open("rb") as f:
                    while chunk := f.read(SINGLE_PUT_MAX_BYTES):
                        n = len(parts) + 1
                        etag = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=n,
                                                       Body=chunk)["ETag"]
                        parts.append({"ETag": etag, "PartNumber": n})
                self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                      MultipartUpload={"Parts": parts}, IfNoneMatch="*")
                return True
            except BaseException:
                with contextlib.suppress(ClientError):  # else the lifecycle rule removes the parts after 7 days
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                raise
        except ClientError as e:
            if _exists(e):
                return False
            raise

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=data, IfNoneMatch="*")
            return True
        except ClientError as e:
            if _exists(e):
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


def _missing(e: Any) -> bool:
    return e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


def _denied(e: Any) -> bool:
    code = e.response.get("Error", {}).get("Code")
    return code in ("AccessDenied", "403", "Forbidden") or \
        e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403


RETRY_DELAYS_S: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
"""Waits between attempts of a write that failed on a passing fault (about four minutes in all), on top of botocore's
own retries of each call: a compile that took an hour is not lost to a minute of S3 errors or a dropped connection."""
_TRANSIENT_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                              "InternalError", "ServiceUnavailable", "503", "500", "BadDigest", "IncompleteBody"})


def is_transient(e: BaseException) -> bool:
    """A fault worth retrying: a 5xx or throttling answer, or a connection that failed or broke."""
    try:
        from botocore.exceptions import ClientError, ConnectionError, HTTPClientError
    except ImportError:  # pragma: no cover - local stores only
        return False
    if isinstance(e, ClientError):
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return e.response.get("Error", {}).get("Code") in _TRANSIENT_CODES or status >= 500
    return isinstance(e, ConnectionError | HTTPClientError)


def with_retries(fn: Callable[[], T], *, what: str, delays: Sequence[float] | None = None) -> T:
    """``fn()``, attempted again after each of ``delays`` (default :data:`RETRY_DELAYS_S`) while it fails on a passing
    fault (:func:`is_transient`); any other error, or the last, is raised. Each retry is logged naming ``what``."""
    waits = list(RETRY_DELAYS_S if delays is None else delays)
    for attempt in range(len(waits) + 1):
        try:
            return fn()
        except Exception as e:
            if attempt == len(waits) or not is_transient(e):
                raise
            log.warning("%s failed (%s: %s); attempt %d of %d in %.0f s", what, type(e).__name__, e, attempt + 2,
                        len(waits) + 1, waits[attempt])
            time.sleep(waits[attempt] * random.uniform(0.8, 1.2))
    raise AssertionError("unreachable")  # pragma: no cover


def _exists(e: Any) -> bool:
    """A create-only write refused because the key exists (412), or because a concurrent conditional write of the
    same key is in flight and will win (409 ConditionalRequestConflict)."""
    code = e.response.get("Error", {}).get("Code")
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)


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


# --- locations: one whole path or s3:// URI each (load-test results, barrier markers, reports) ---

def _s3() -> Any:
    return s3_client()


def write_text(dest: str, text: str) -> None:
    """Write ``text`` to a local file (creating directories, atomically) or an S3 object."""
    write_bytes(dest, text.encode("utf-8"), content_type="application/json")


def write_bytes(dest: str, data: bytes, *, content_type: str) -> None:
    if is_s3(dest):
        bucket, key = split_s3(dest)
        if not key or key.endswith("/"):
            raise ConfigError(f"{dest!r} is a prefix, not an object key")
        _s3().put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        return
    p = Path(dest)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(p)


def exists(location: str) -> bool:
    """Whether a local file or an S3 object is there.

    On S3 this lists the key's prefix instead of a HEAD: a role that may list only under a prefix (an
    ``s3:prefix`` condition, as the load-test role has) gets 403, not 404, for a HEAD on a missing key.
    """
    if not is_s3(location):
        return Path(location).is_file()
    bucket, key = split_s3(location)
    listed = _s3().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    return any(obj["Key"] == key for obj in listed.get("Contents", []))


def list_texts(prefix: str, *, suffix: str) -> dict[str, str]:
    """``{name: text}`` of the files directly under a local directory or S3 prefix whose names end in
    ``suffix``; empty when the directory does not exist yet."""
    if not is_s3(prefix):
        d = Path(prefix)
        if not d.is_dir():
            return {}
        out = {}
        for f in sorted(d.iterdir()):
            if f.name.endswith(suffix) and f.is_file():
                try:
                    out[f.name] = f.read_text(encoding="utf-8")
                except FileNotFoundError:  # replaced between listing and reading
                    continue
        return out
    bucket, key = split_s3(prefix)
    key = key if (not key or key.endswith("/")) else key + "/"
    s3 = _s3()
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key, Delimiter="/"):
        for obj in page.get("Contents", []):
            name = obj["Key"][len(key):]
            if name.endswith(suffix):
                found[name] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode("utf-8")
    return found


def parent(location: str) -> str:
    """The directory or prefix that holds ``location``."""
    if is_s3(location):
        return location.rsplit("/", 1)[0] + "/"
    return str(Path(location).parent)


@dataclass(frozen=True, kw_only=True)
class Found:
    """One candidate result file; ``explicit`` when the user named it rather than its directory."""

    source: str
    text: str
    explicit: bool


def read_inputs(inputs: list[str]) -> list[Found]:
    """Expand files, directories (``*.json`` below them) and S3 prefixes into their contents."""
    found: list[Found] = []
    for item in inputs:
        if is_s3(item):
            found.extend(_read_s3(item))
            continue
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*.json") if f.is_file())
            found.extend(Found(source=str(f), text=f.read_text(encoding="utf-8"), explicit=False) for f in files)
        elif p.is_file():
            found.append(Found(source=str(p), text=p.read_text(encoding="utf-8"), explicit=True))
        else:
            raise ConfigError(f"{item!r} is neither a file, a directory nor an s3:// prefix")
    return found


def _read_s3(uri: str) -> list[Found]:
    bucket, key = split_s3(uri)
    s3 = _s3()
    if key.endswith(".json"):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        return [Found(source=uri, text=body, explicit=True)]
    out = []
    paginator = s3.get_paginator("list_objects_v2")
    prefix = key if (not key or key.endswith("/")) else key + "/"
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".json"):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode("utf-8")
                out.append(Found(source=f"s3://{bucket}/{obj['Key']}", text=body, explicit=False))
    if not out:
        raise ConfigError(f"{uri!r} holds no .json objects")
    return out
