"""Where result files live: a local path or an ``s3://bucket/key`` (boto3), the same for read and write.

Client pods write straight to S3 so results survive the pod; the report reads local files, whole
directories or S3 prefixes. ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` point boto3 elsewhere (a moto
server in tests) with no option of our own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eks_inference.config import ConfigError


def is_s3(location: str) -> bool:
    return location.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ConfigError(f"{uri!r} names no bucket; write s3://BUCKET/PREFIX")
    return bucket, key


def _s3() -> Any:
    import boto3

    return boto3.client("s3")


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


def join(base: str, name: str) -> str:
    if is_s3(base):
        return base.rstrip("/") + "/" + name
    return str(Path(base) / name)


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
