"""``eks-inference verify``: is the target's answer right? (registered by :mod:`eks_inference.cli`).

Exit codes: 0 the target agrees with the fp32 reference; 1 it does not (the worst input is named);
2 usage or connection error, or no reference to be had (one line saying what to install or run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from typing import Any

from eks_inference.cli.help import add_command
from eks_inference.verify.check import REFERENCE_MODES, VerifyError, render_table, verify_target
from eks_inference.verify.compare import Tolerances

EXIT_AGREES, EXIT_DISAGREES, EXIT_ERROR = 0, 1, 2


def register(sub: Any) -> None:
    tol = Tolerances()
    p = add_command(
        sub, "verify", summary="check a model endpoint's answers against an fp32 reference of its weights",
        description=textwrap.fill(
            "Send a fixed, versioned probe set (texts of several lengths, empty and non-ASCII inputs, inputs at "
            "and over max_seq_length) to URL/predict and compare every answer with reference outputs of the same "
            "weights in fp32 eager torch, truncated at the max_seq_length URL/info reports. Embeddings need cosine "
            f">= {tol.min_cosine:g} on every input; classification the same label on >= "
            f"{tol.min_label_agreement:.0%} of inputs and probabilities within {tol.max_score_delta:g}; question "
            "answering the same span; truncation flags must match everywhere. The reference is computed here when "
            "torch is installed (the serve extra), else read from where publish stores it beside the weights. "
            "Exit 0: agrees; 1: does not (the worst input is named); 2: usage or connection error.", width=100),
        example_lines=(
            "eks-inference verify --url http://127.0.0.1:8000/minilm",
            "eks-inference verify --url http://127.0.0.1:8000/minilm --source bundled:all-minilm-l6-v2 --json",
            "eks-inference verify --url http://minilm-serve:8000/minilm --source s3://BUCKET/models/minilm/v1 \\",
            "    --write-reference      # store the reference beside the weights for machines without torch",
            "eks-inference verify --url http://127.0.0.1:8000/tenants --sample 5 --model-id acme   # a family",
        ),
    )
    p.add_argument("--url", required=True, help="model endpoint base, e.g. http://127.0.0.1:8000/minilm")
    p.add_argument("--source", help="the weights the reference is computed from: bundled:NAME, a model directory "
                                    "or s3://BUCKET/models/NAME/REV (default: the model_uri URL/info names)")
    p.add_argument("--reference", choices=REFERENCE_MODES, default="auto",
                   help="compute: in fp32 here (needs torch); stored: the one stored beside the weights; "
                        "auto: compute when torch is installed, else stored")
    p.add_argument("--write-reference", action="store_true",
                   help="also store the computed reference beside the weights of --source (a directory or s3://), "
                        "for load-test images without torch")
    p.add_argument("--cache-dir", default=".eks-inference/verify-cache",
                   help="where weights from s3:// are downloaded to compute the reference")
    p.add_argument("--s3-endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL") or None,
                   help="S3 endpoint for s3:// sources (default: AWS, or $AWS_ENDPOINT_URL)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON instead of the table")
    p.add_argument("--model-id", action="append", default=[],
                   help="a family target: check this member (repeatable), besides the --sample")
    p.add_argument("--sample", type=int, default=None,
                   help="a family target: check this many members drawn from its index with --seed (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of a family's sample (default 0)")
    p.set_defaults(func=cmd_verify)


def _say(text: str) -> None:
    print(f"eks-inference verify: {text}", file=sys.stderr, flush=True)


def cmd_verify(a: argparse.Namespace) -> int:
    if not a.timeout > 0:
        print(f"eks-inference verify: error: --timeout {a.timeout:g} must be positive, e.g. 60", file=sys.stderr)
        return EXIT_ERROR
    if a.model_id or a.sample is not None:
        return _verify_family(a)
    try:
        verdict = verify_target(a.url, source=a.source, reference_mode=a.reference, cache_dir=a.cache_dir,
                                endpoint_url=a.s3_endpoint_url, timeout_s=a.timeout, write=a.write_reference,
                                say=_say)
    except VerifyError as e:
        print(f"eks-inference verify: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # S3 or filesystem trouble: one line, never a traceback
        print(f"eks-inference verify: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR
    if a.json:
        print(json.dumps(verdict.to_dict(), indent=1, ensure_ascii=False))
    else:
        print(render_table(verdict))
    if not verdict.passed:
        print(f"eks-inference verify: {a.url} disagrees with the fp32 reference; worst input: {verdict.worst_text()}",
              file=sys.stderr)
        return EXIT_DISAGREES
    return EXIT_AGREES


def _verify_family(a: argparse.Namespace) -> int:
    from eks_inference.verify.family import verify_family

    sample = 5 if a.sample is None else a.sample
    if sample < 0 or (sample == 0 and not a.model_id):
        print(f"eks-inference verify: error: --sample {sample} checks nothing; use e.g. 5, or name --model-id",
              file=sys.stderr)
        return EXIT_ERROR
    try:
        verdicts = verify_family(a.url, model_ids=a.model_id, sample=sample, seed=a.seed, reference_mode=a.reference,
                                 cache_dir=a.cache_dir, endpoint_url=a.s3_endpoint_url, timeout_s=a.timeout, say=_say)
    except VerifyError as e:
        print(f"eks-inference verify: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # S3 or filesystem trouble: one line, never a traceback
        print(f"eks-inference verify: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR
    if a.json:
        print(json.dumps([{"model_id": mid, **v.to_dict()} for mid, v in verdicts], indent=1, ensure_ascii=False))
    else:
        for mid, v in verdicts:
            print(f"member {mid}: {v.summary()}")
    failed = [mid for mid, v in verdicts if not v.passed]
    if failed:
        print(f"eks-inference verify: members {', '.join(failed)} of {a.url} disagree with their own fp32 references",
              file=sys.stderr)
        return EXIT_DISAGREES
    return EXIT_AGREES
