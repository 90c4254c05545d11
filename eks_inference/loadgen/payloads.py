"""Request payloads: read from a JSONL file or generated, seeded, from a text-length distribution.

Latency depends on input length (tokens) and on how many texts one request carries, so a load test
that cannot say exactly what it sent cannot be repeated. Generated payloads are therefore a pure
function of (distribution, inputs per request, seed), and file payloads name the line of any error.
Bodies are encoded once, up front: the client's hot path only ever writes bytes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from eks_inference.config import ConfigError


class LengthKind(str, Enum):
    FIXED = "fixed"
    UNIFORM = "uniform"
    NORMAL = "normal"


@dataclass(frozen=True, kw_only=True)
class TextLengthDist:
    """Words per generated text.

    :param kind: fixed, uniform (``low``..``high`` inclusive) or normal (``mean``, ``stddev``, clipped to
        1..4 × mean so a long tail cannot produce absurd texts).
    :param low: fixed length, or the uniform lower bound.  :param high: the uniform upper bound.
    :param stddev: normal only.
    """

    kind: LengthKind
    low: int
    high: int
    stddev: float = 0.0

    def __post_init__(self) -> None:
        if self.low < 1 or self.high < self.low:
            raise ConfigError(
                f"--text-length: {self.spec()!r} has an empty or non-positive range; "
                "use e.g. 'fixed:32', 'uniform:8-64' or 'normal:32,8'"
            )
        if self.kind is LengthKind.NORMAL and self.stddev < 0:
            raise ConfigError(f"--text-length: {self.spec()!r} has a negative stddev; use e.g. 'normal:32,8'")

    def spec(self) -> str:
        """The canonical text form, as recorded in result files."""
        if self.kind is LengthKind.FIXED:
            return f"fixed:{self.low}"
        if self.kind is LengthKind.UNIFORM:
            return f"uniform:{self.low}-{self.high}"
        return f"normal:{self.low},{self.stddev:g}"

    def sample(self, rng: random.Random) -> int:
        if self.kind is LengthKind.FIXED:
            return self.low
        if self.kind is LengthKind.UNIFORM:
            return rng.randint(self.low, self.high)
        return max(1, min(self.high, round(rng.gauss(self.low, self.stddev))))


def parse_length_dist(spec: str) -> TextLengthDist:
    """Parse ``32``, ``fixed:32``, ``uniform:8-64`` or ``normal:32,8`` (words per text)."""
    text = spec.strip().lower()
    kind, _, params = text.partition(":")
    if not params:
        kind, params = "fixed", kind
    try:
        if kind == "fixed":
            n = int(params)
            return TextLengthDist(kind=LengthKind.FIXED, low=n, high=n)
        if kind == "uniform":
            lo, hi = params.replace(",", "-").split("-")
            return TextLengthDist(kind=LengthKind.UNIFORM, low=int(lo), high=int(hi))
        if kind == "normal":
            mean, sd = params.split(",")
            m = round(float(mean))
            return TextLengthDist(kind=LengthKind.NORMAL, low=m, high=max(1, 4 * m), stddev=float(sd))
    except ValueError:
        pass
    raise ConfigError(
        f"--text-length: {spec!r} is not a length distribution; "
        "use 'fixed:N', 'uniform:LOW-HIGH' or 'normal:MEAN,STDDEV' (words per text)"
    )


# Common English words: a stand-in for real text whose token count tracks the word count.
_WORDS = """the of and to in is was that for on with as by at from his her they this which be or are an
    had not but have it one all were when we there can more if no out so said what up its about into than
    them only other new some could time these two may then first any like now my such make over our even
    most after also did many before must through back years where much your way well down should because
    each just those people how too little state good very great world still own public see men work long
    here between both life being under never day same another know while last might us great old year off
    come since against go came right used take three himself few house use during without again place
    around however home small found thought went say part once general high upon school every does got
    united left number course war until always away something fact water though less public put think
    almost hand enough far took head yet government system better set told nothing night end why called
    model serve latency cluster request batch token vector search answer question service price fast"""
_VOCABULARY = tuple(dict.fromkeys(_WORDS.split()))


@dataclass(frozen=True, kw_only=True)
class Payload:
    """One request's inputs and the exact bytes sent for them."""

    inputs: tuple[str, ...]
    body: bytes


def make_payload(inputs: Iterable[str]) -> Payload:
    items = tuple(inputs)
    return Payload(inputs=items, body=json.dumps({"inputs": list(items)}, separators=(",", ":")).encode())


def generate_payloads(
    dist: TextLengthDist, *, inputs_per_request: int, seed: int, count: int = 256
) -> list[Payload]:
    """``count`` distinct payloads, the same for the same arguments on any machine (cycled while sending)."""
    if inputs_per_request < 1:
        raise ConfigError(f"--inputs-per-request: {inputs_per_request} is not >= 1; use e.g. 1 or 8")
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        texts = [" ".join(rng.choice(_VOCABULARY) for _ in range(dist.sample(rng)))
                 for _ in range(inputs_per_request)]
        out.append(make_payload(texts))
    return out


def parse_payload_lines(lines: Iterable[str], *, source: str) -> list[Payload]:
    """Each non-blank line: ``{"inputs": [...]}``, ``{"text": "..."}``, a JSON string or a list of strings.

    Errors name ``source:line`` so a 100k-line file can be fixed without bisecting it.
    """
    out: list[Payload] = []
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{source}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        if isinstance(doc, dict) and "inputs" in doc:
            inputs = doc["inputs"]
        elif isinstance(doc, dict) and "text" in doc:
            inputs = [doc["text"]]
        elif isinstance(doc, str):
            inputs = [doc]
        else:
            inputs = doc
        if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) for x in inputs):
            raise ConfigError(
                f"{source}:{lineno}: expected {{\"inputs\": [\"text\", ...]}}, {{\"text\": \"...\"}}, "
                "a JSON string or a non-empty list of strings"
            )
        out.append(make_payload(inputs))
    if not out:
        raise ConfigError(f"{source}: no payloads (the file is empty); put one JSON request per line")
    return out


def load_payload_file(path: str | Path) -> list[Payload]:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"--payload: {str(p)!r} does not exist; give a JSONL file, one request per line") from None
    except IsADirectoryError:
        raise ConfigError(f"--payload: {str(p)!r} is a directory; give a JSONL file") from None
    lines = []
    for lineno, b in enumerate(raw.splitlines(), start=1):
        try:
            lines.append(b.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_payload_lines(lines, source=str(p))
