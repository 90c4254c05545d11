"""Random-weight BERT models written from a config, with a working fast tokenizer — no model hub.

For tests (``tiny``: compiles in about a second) and for benchmarks on machines without the bundled model
(``base``: BERT-base shapes, so timings are those of the real architecture). The tokenizer uses a given
``vocab.txt`` when there is one (e.g. the bundled MiniLM's, the BERT uncased vocabulary), otherwise a
word-level WordPiece vocabulary built from ``words`` plus single characters, so arbitrary text tokenizes.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from eks_inference.config import Task

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def synthetic_vocab(words: Iterable[str]) -> list[str]:
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = list(SPECIALS) + list(chars) + [f"##{c}" for c in chars]
    seen = set(vocab)
    for w in words:
        w = w.lower().strip(string.punctuation)
        if w and w not in seen:
            seen.add(w)
            vocab.append(w)
    return vocab


def write_tokenizer(out_dir: Path, *, vocab_file: Path | None = None, words: Iterable[str] = ()) -> int:
    """Write a BERT-style fast tokenizer (tokenizer.json + config) into ``out_dir``; returns the vocab size."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    lines = (vocab_file.read_text(encoding="utf-8").splitlines() if vocab_file is not None
             else synthetic_vocab(words))
    vocab = {tok: i for i, tok in enumerate(lines)}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    fast.save_pretrained(out_dir)
    (out_dir / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def write_synthetic_model(out_dir: str | Path, *, task: Task = Task.EMBEDDING, size: str = "tiny",
                          vocab_file: Path | None = None, words: Iterable[str] = (),
                          labels: tuple[str, ...] = ("negative", "positive"), seed: int = 0) -> Path:
    """A random-weight BERT for ``task`` saved as a Hugging Face model directory (safetensors)."""
    import torch
    import transformers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab_size = write_tokenizer(out, vocab_file=vocab_file, words=words)
    extra: dict[str, Any] = {}
    if task is Task.CLASSIFICATION:
        extra = {"id2label": dict(enumerate(labels)), "label2id": {v: i for i, v in enumerate(labels)}}
    cfg = transformers.BertConfig(vocab_size=vocab_size, max_position_embeddings=512, **SIZES[size], **extra)
    torch.manual_seed(seed)
    cls = {Task.EMBEDDING: transformers.BertModel,
           Task.CLASSIFICATION: transformers.BertForSequenceClassification,
           Task.QUESTION_ANSWERING: transformers.BertForQuestionAnswering}[task]
    cls(cfg).eval().save_pretrained(out)
    return out
