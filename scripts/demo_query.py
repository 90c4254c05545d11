"""Send a few texts to a served model and print what comes back (used by `make demo`)."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request

TEXTS = [
    "Graviton serves small encoders cheaply.",
    "Inferentia2 compiles the model once and serves it fast.",
    "How much does a million embeddings cost?",
]


def call(url: str, payload: dict | None = None) -> dict:  # type: ignore[type-arg]
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # outputs are L2-normalized


def wait_healthy(base: str, timeout_s: float = 60.0) -> str | None:
    """The proxy can take a moment to (re)bind after the app reports healthy; wait for it to answer.

    Returns None once healthy, else the last reason the model gave (e.g. its weights are not published).
    """
    deadline = time.monotonic() + timeout_s
    reason = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
                if resp.status == 200:
                    return None
        except urllib.error.HTTPError as e:
            try:
                reason = json.loads(e.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                reason = f"HTTP {e.code}"
        except OSError as e:
            reason = str(e)
        time.sleep(0.5)
    return reason


def main(base: str) -> int:
    reason = wait_healthy(base)
    if reason is not None:
        print(f"demo_query: {base} is not serving: {reason}", file=sys.stderr)
        return 1
    info = call(f"{base}/info")
    print(f"model {info.get('model')} on {info.get('processor')} ({info.get('dtype')}), task {info.get('task')}")
    reply = call(f"{base}/predict", {"inputs": TEXTS})
    vecs = reply["outputs"]  # one L2-normalized embedding per input
    for text, vec in zip(TEXTS, vecs, strict=True):
        shown = ", ".join(f"{x:+.3f}" for x in vec[:4])
        print(f"  {text!r:60} -> [{shown}, ...] ({len(vec)} dims)")
    print(f"  cosine(text 1, text 2) = {cosine(vecs[0], vecs[1]):.3f}; "
          f"cosine(text 1, text 3) = {cosine(vecs[0], vecs[2]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/minilm"))
