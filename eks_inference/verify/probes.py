"""The probe set: fixed, versioned inputs that every target must answer like the fp32 reference does.

A load test sends generated prose of one shape; a wrong answer hides best at the edges, so the probes are
chosen for them: texts of several lengths (a ladder whose token counts straddle every usual
``max_seq_length`` from 32 to 512), empty and near-empty texts, non-ASCII scripts, emoji and invisible
characters, and two probes built for the target's own ``max_seq_length``: one exactly at the limit (not
truncated) and one a token over it (truncated). Question answering gets (question, context) pairs with
the same edges, including a context cut by truncation and a question longer than the limit.

Pure Python and deterministic: the load-test image (no torch) builds the same probes as the machine that
computed the reference. Any change to a probe is a new :data:`PROBE_SET_VERSION`, because stored
reference outputs are keyed by it.
"""

from __future__ import annotations

from dataclasses import dataclass

from eks_inference.config import Task

PROBE_SET_VERSION = 1

Item = str | tuple[str, str]


@dataclass(frozen=True)
class Probe:
    """One input with a stable id (``short``, ``ladder-250``, ``at-limit``...) and what it exercises."""

    id: str
    item: Item
    what: str

    @property
    def chars(self) -> int:
        return len(self.item) if isinstance(self.item, str) else len(self.item[0]) + len(self.item[1])

    def short(self, width: int = 48) -> str:
        """A one-line rendering for tables and messages."""
        text = self.item if isinstance(self.item, str) else f"Q: {self.item[0]} | C: {self.item[1]}"
        flat = repr(text)[1:-1]
        return flat if len(flat) <= width else flat[: width - 1] + "…"


_SENTENCES = (
    "Ray Serve batches requests so that the accelerator stays busy while latency stays low.",
    "Each replica downloads its weights from the model repository and checks every file against its manifest.",
    "Inferentia2 runs a compiled graph for each fixed shape, so inputs are padded up to the nearest bucket.",
    "Graviton processors serve small encoders at a low price per inference, with bf16 where the core has it.",
    "A load test that ignores coordinated omission reports latencies that no user ever saw.",
    "The report ranks every target by dollars per million inferences at the best rate that met the SLO.",
    "Three availability zones keep the service up when one of them fails, at the price of spare capacity.",
    "Tokenizers split rare words into pieces, so a sentence of twenty words may take thirty tokens or more.",
)


def ladder_text(words: int) -> str:
    """The first ``words`` words of the project prose, cycled: English text of a known length."""
    pool = " ".join(_SENTENCES).split()
    return " ".join(pool[i % len(pool)] for i in range(words))


LADDER_WORDS = (12, 24, 45, 90, 190, 380, 540)
"""About 1.3 tokens a word: ~18, ~35, ~62, ~125, ~255, ~505 and ~720 tokens, around every usual limit.
The longest stays under 4,000 characters, below any sensible ``max_input_chars``."""

_TEXTS: tuple[tuple[str, str, str], ...] = (
    ("short", "The quick brown fox jumps over the lazy dog.", "a short English sentence"),
    ("question", "How much does a million embeddings cost on Inferentia2?", "a question"),
    ("empty", "", "the empty string"),
    ("space", " ", "a single space"),
    ("newlines", "\n\t\n", "whitespace only"),
    ("one-char", "a", "one letter"),
    ("punctuation", "?!...;:-- ()[]{}", "punctuation only"),
    ("digits", "3.14159 2.71828 1,000,000 0x1F 2026-11-29", "numbers, a date, hex"),
    ("german", "Grüße aus München! Die Straße ist naß, das Café hat geöffnet.", "Latin with diacritics"),
    ("french", "Ça va? Le garçon mange une crème brûlée à côté du château.", "French accents and cedilla"),
    ("chinese", "东京是日本的首都，人口超过一千万。", "CJK characters"),
    ("japanese", "今日はいい天気ですね。カタカナとひらがなも。", "kana and kanji"),
    ("russian", "Привет! Как дела? Это проверка кириллицы.", "Cyrillic"),
    ("arabic", "مرحبا بالعالم، هذا اختبار للنص العربي.", "Arabic, right to left"),
    ("hindi", "नमस्ते दुनिया, यह एक परीक्षण है।", "Devanagari"),
    ("emoji", "🙂🚀👍🏽 emoji in text 🇫🇷 and a family 👨‍👩‍👧", "emoji, skin tone and ZWJ sequences"),
    ("invisible", "zero\u200bwidth soft\u00adhyphen e\u0301 combining ﬁ ligature Ｆｕｌｌｗｉｄｔｈ",
     "zero-width, combining and compatibility characters"),
    ("code", "def f(x):\n    return {'k': [x, x ** 2]}  # comment", "source code"),
    ("url", "https://example.com/a/b?q=1&r=two#frag user@example.org", "a URL and an address"),
    ("shouting", "THIS IS ALL UPPER CASE AND VERY LOUD!!!", "upper case"),
    ("repeated", "na " * 40 + "batman", "one token repeated"),
    ("mixed-scripts", "Model serving モデル 服务 обслуживание خدمة 🚀 done.", "several scripts in one text"),
)


def text_probes(max_seq_length: int) -> list[Probe]:
    """Probes for embedding and classification targets serving at ``max_seq_length`` tokens."""
    out = [Probe(pid, text, what) for pid, text, what in _TEXTS]
    out += [Probe(f"ladder-{w}", ladder_text(w), f"{w} words of prose") for w in LADDER_WORDS]
    # "the" is one token in every English vocabulary: n of them plus [CLS]/[SEP] is n + 2 tokens
    at = max(1, max_seq_length - 2)
    out.append(Probe("at-limit", " ".join(["the"] * at), f"exactly max_seq_length ({max_seq_length}) tokens"))
    out.append(Probe("over-limit", " ".join(["the"] * (at + 1)), "one token over max_seq_length: truncated"))
    return out


_CONTEXT = ("Paris is the capital and most populous city of France. The Eiffel Tower was completed in 1889 "
            "for the World's Fair and is 330 metres tall.")


def qa_probes(max_seq_length: int) -> list[Probe]:
    """Probes for question-answering targets: (question, context) pairs."""
    long_ctx = ladder_text(380)
    pairs: list[tuple[str, Item, str]] = [
        ("capital", ("What is the capital of France?", _CONTEXT), "a plain factual question"),
        ("year", ("When was the Eiffel Tower completed?", _CONTEXT), "a number as the answer"),
        ("height", ("How tall is the Eiffel Tower?", _CONTEXT), "a quantity with a unit"),
        ("german", ("Wo liegt München?", "München liegt in Bayern, im Süden Deutschlands, an der Isar."),
         "non-ASCII question and context"),
        ("chinese", ("首都是哪里？", "东京是日本的首都，人口超过一千万。"), "CJK question and context"),
        ("empty-question", ("", _CONTEXT), "an empty question"),
        ("one-char-context", ("What?", "a"), "a one-letter context"),
        ("answer-first-long", ("What keeps the accelerator busy?", "Ray Serve batching keeps it busy. " + long_ctx),
         "the answer at the start of a context longer than the limit"),
        ("answer-last-long", ("Who wins the ranking?", long_ctx + " The cheapest verified target wins."),
         "the answer at the end of a long context, cut away by truncation"),
        ("long-question", (ladder_text(540) + "?", _CONTEXT), "a question longer than max_seq_length"),
        ("at-limit-context", ("the?", " ".join(["the"] * max(1, max_seq_length - 5))),
         f"question and context exactly at max_seq_length ({max_seq_length}) tokens"),
    ]
    return [Probe(pid, item, what) for pid, item, what in pairs]


def probes_for(task: Task, max_seq_length: int) -> list[Probe]:
    """The probe set of :data:`PROBE_SET_VERSION` for a task at a serving ``max_seq_length``."""
    if max_seq_length < 1:
        raise ValueError(f"max_seq_length {max_seq_length} is not positive")
    return qa_probes(max_seq_length) if task is Task.QUESTION_ANSWERING else text_probes(max_seq_length)
