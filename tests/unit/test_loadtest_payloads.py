"""Payloads: seeded generation, length distributions, JSONL files whose errors name the line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from eks_inference.config import ConfigError
from eks_inference.loadgen.payloads import (
    LengthKind,
    generate_payloads,
    load_payload_file,
    parse_length_dist,
    parse_payload_lines,
)


def test_generation_is_reproducible_and_seed_dependent() -> None:
    d = parse_length_dist("uniform:4-40")
    a = generate_payloads(d, inputs_per_request=3, seed=11, count=50)
    b = generate_payloads(d, inputs_per_request=3, seed=11, count=50)
    c = generate_payloads(d, inputs_per_request=3, seed=12, count=50)
    assert [p.body for p in a] == [p.body for p in b]
    assert [p.body for p in a] != [p.body for p in c]
    assert all(len(p.inputs) == 3 for p in a)
    assert all(json.loads(p.body) == {"inputs": list(p.inputs)} for p in a)


@pytest.mark.parametrize("spec, lo, hi", [("fixed:7", 7, 7), ("12", 12, 12), ("uniform:3-9", 3, 9),
                                          ("normal:20,5", 1, 80)])
def test_lengths_follow_the_distribution(spec: str, lo: int, hi: int) -> None:
    d = parse_length_dist(spec)
    words = [len(t.split()) for p in generate_payloads(d, inputs_per_request=1, seed=1, count=400) for t in p.inputs]
    assert lo <= min(words) and max(words) <= hi
    if d.kind is LengthKind.UNIFORM:
        assert set(words) == set(range(lo, hi + 1))  # every length occurs in 400 draws of 7 values
    if d.kind is LengthKind.NORMAL:
        assert 18 <= sum(words) / len(words) <= 22
    assert parse_length_dist(d.spec()) == d


@pytest.mark.parametrize("spec", ["uniform:9-3", "fixed:0", "normal:abc", "poisson:3", "uniform:5", ""])
def test_bad_length_distributions(spec: str) -> None:
    with pytest.raises(ConfigError, match="--text-length"):
        parse_length_dist(spec)


def test_payload_lines_accept_the_documented_shapes() -> None:
    lines = ['{"inputs": ["a b", "c"]}', "", '{"text": "hello"}', '"just text"', '["x", "y"]']
    got = parse_payload_lines(lines, source="p.jsonl")
    assert [p.inputs for p in got] == [("a b", "c"), ("hello",), ("just text",), ("x", "y")]


@pytest.mark.parametrize("bad, what", [('{"inputs": [1, 2]}', "expected"), ('{"inputs": "x"', "not valid JSON"),
                                       ('{"inputs": []}', "expected"), ("42", "expected")])
def test_malformed_payload_file_names_the_line(tmp_path: Path, bad: str, what: str) -> None:
    f = tmp_path / "payload.jsonl"
    f.write_text('{"inputs": ["ok"]}\n\n' + bad + '\n{"text": "fine"}\n')
    with pytest.raises(ConfigError, match=rf"payload\.jsonl:3: {what}"):
        load_payload_file(f)


def test_payload_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_payload_file(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ConfigError, match="empty"):
        load_payload_file(tmp_path / "empty.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'"ok"\n"caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin1\.jsonl:2: not UTF-8"):
        load_payload_file(tmp_path / "latin1.jsonl")


def test_payload_file_round_trip(tmp_path: Path) -> None:
    rng = random.Random(0)
    texts = [[f"text {rng.random()}" for _ in range(rng.randint(1, 4))] for _ in range(20)]
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps({"inputs": t}) for t in texts))
    assert [list(p.inputs) for p in load_payload_file(f)] == texts
