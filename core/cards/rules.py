"""The rules a card must pass before anyone sees it: rules, not a model, so they cannot be talked round.

A basic card's front asks a question or prompts recall, and its back does not restate the
front; a cloze card hides a real span (words, not a digit or a placeholder) of its own
sentence, and of the notes when there are notes; no field is filler characters, a run of a
repeated token or text copied from the prompt's instructions; and no card duplicates another,
by normalized text or by character-trigram similarity (a near-duplicate).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from core.cards.anki import CLOZE_DELETION, Card

WORD = re.compile(r"[^\W_]+")
LETTERS = re.compile(r"[^\W\d_]")
NEAR_DUPLICATE = 0.7  # content-trigram Jaccard similarity at or above which two cards are one
RESTATEMENT = 0.6  # the same, between a card's back and its front
QUESTION_WORDS = frozenset(
    [
        "what",
        "which",
        "why",
        "how",
        "when",
        "where",
        "who",
        "whom",
        "whose",
        "is",
        "are",
        "was",
        "were",
        "do",
        "does",
        "did",
        "can",
        "could",
        "should",
        "would",
        "will",
    ]
)
INTERROGATIVES = frozenset(["what", "which", "why", "how", "when", "where", "who", "whom", "whose"])
RECALL_VERBS = frozenset(
    [
        "name",
        "define",
        "describe",
        "explain",
        "list",
        "state",
        "give",
        "identify",
        "compare",
        "contrast",
        "outline",
        "summarize",
        "summarise",
        "recall",
        "complete",
        "calculate",
        "translate",
        "classify",
        "distinguish",
    ]
)
PLACEHOLDER_TERMS = frozenset({"term", "key term", "fact", "answer", "word", "x", "blank", "hidden"})
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "their",
        "this",
        "to",
        "was",
        "were",
        "which",
        "with",
        "what",
        "who",
        "why",
        "how",
        "when",
        "where",
        "does",
        "do",
        "did",
        "not",
        "no",
        "can",
        "will",
        "into",
        "than",
        "then",
        "there",
        "these",
        "those",
        "they",
        "them",
    ]
)
_LETTER_RUN = re.compile(r"([^\W\d_]{2,}?)\1{2,}", re.IGNORECASE)  # "sunsunsun"
_WORD_RUN = re.compile(r"\b(\w+)\b(?:\W+\1\b){2,}", re.IGNORECASE)  # "very very very"
INSTRUCTION_NGRAM = 4  # a field sharing this many consecutive words with the instructions copied them


def normalize(text: str) -> str:
    """Lower-case words only: how two cards are compared for duplicates."""
    return " ".join(WORD.findall(text.lower()))


def content_words(text: str) -> set[str]:
    """Words that carry content: not stop words, three letters or more."""
    return {word for word in WORD.findall(text.lower()) if len(word) >= 3 and word not in STOPWORDS}


def trigrams(text: str) -> frozenset[str]:
    """The character trigrams of the text's words less its stop words, padded with a space at both
    ends ("What is the capital of France?" and "...of Spain?" share only "capital")."""
    padded = " " + " ".join(word for word in normalize(text).split() if word not in STOPWORDS) + " "
    return frozenset(padded[i : i + 3] for i in range(len(padded) - 2))


def _jaccard(first: frozenset[str], second: frozenset[str]) -> float:
    return len(first & second) / len(first | second) if first | second else 1.0


def similarity(first: str, second: str) -> float:
    """Jaccard similarity of two texts' trigrams (see trigrams): 1.0 the same words, 0.0 nothing shared."""
    return _jaccard(trigrams(first), trigrams(second))


def card_text(card: Card, card_type: str) -> str:
    """What a card asks, as plain text: the front, a cloze card's sentence with its deletions shown."""
    return CLOZE_DELETION.sub(r"\1", card.front) if card_type == "cloze" else card.front


def _word_ngrams(text: str, size: int) -> set[tuple[str, ...]]:
    words = normalize(text).split()
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def instruction_ngrams(instructions: str) -> frozenset[tuple[str, ...]]:
    """The word n-grams of the prompt's own instructions (without the topic or the notes)."""
    return frozenset(_word_ngrams(instructions, INSTRUCTION_NGRAM))


def _field_problem(text: str, copied: frozenset[tuple[str, ...]]) -> str | None:
    """Why a field's text is junk: a run of a repeated token, or a copy of the instructions."""
    if _LETTER_RUN.search(text) or _WORD_RUN.search(text):
        return "repeated token"
    if copied & _word_ngrams(text, INSTRUCTION_NGRAM):
        return "copied the instructions"
    return None


def asks_something(front: str) -> bool:
    """Whether a basic card's front is a question or a prompt to recall (a rule, not a model): one
    sentence ending in "?" that opens with a question word or holds an interrogative ("...by whom?"),
    or an instruction to recall ("Name the three states of water.")."""
    words = normalize(front).split()
    if not words:
        return False
    text = front.rstrip()
    if text.endswith("?"):
        one_sentence = not re.search(r"[.!?]\s", text) and (text[-2:-1].isalnum() or text[-2:-1] in ")'\"")
        return one_sentence and (bool(QUESTION_WORDS & set(words[:2])) or bool(INTERROGATIVES & set(words)))
    return words[0] in RECALL_VERBS


def restates(front: str, back: str) -> bool:
    """Whether a basic card's back says nothing its front does not: inside it, or nearly the same."""
    answer = normalize(back)
    if len(answer) >= 3 and f" {answer} " in f" {normalize(front)} ":
        return True
    words = content_words(back)
    if words and words <= content_words(front):
        return True
    return similarity(front, back) >= RESTATEMENT


def deletion_problem(text: str, source: str) -> str | None:
    """Why a cloze text's deletions are not real: none, a digit or a placeholder, not in the text
    around them or (with notes) not in the notes."""
    deletions = CLOZE_DELETION.findall(text)
    if not deletions:
        return "no cloze deletion"
    rest = CLOZE_DELETION.sub(" ", text)
    for term in deletions:
        if len(LETTERS.findall(term)) < 2 or term.lstrip()[:1] in {":", "{", "}"}:
            return "placeholder deletion"
        if normalize(term) in PLACEHOLDER_TERMS or not content_words(term):
            return "placeholder deletion"
        if len(content_words(rest)) < 2:
            return "deletion is the whole sentence"
        if source.strip() and f" {normalize(term)} " not in f" {normalize(source)} ":
            return "deletion not in the notes"
    return None


def is_filler(text: str) -> bool:
    """Whether a non-empty field is filler: fewer than two letters, or mostly punctuation."""
    stripped = "".join(text.split())
    return bool(stripped) and (
        len(LETTERS.findall(stripped)) < 2 or len(LETTERS.findall(stripped)) * 2 < len(stripped)
    )


def card_problem(
    card: Card, card_type: str, *, source: str = "", copied: frozenset[tuple[str, ...]] = frozenset()
) -> str | None:
    """Why `card` must not be shown, or None when it passes every rule.

    `source` is the notes the cards are made from (a cloze deletion must be a span of them);
    `copied` is instruction_ngrams() of the prompt's instructions.
    """
    for text in (card.front, card.back):
        problem = _field_problem(text, copied)
        if problem:
            return problem
    if card_type == "cloze":
        problem = deletion_problem(card.front, source)
        if problem:
            return problem
        return "filler Extra" if is_filler(card.back) else None
    if not asks_something(card.front):
        return "not a question"
    if restates(card.front, card.back):
        return "answer repeats the question"
    return None


def duplicate_of(card: Card, card_type: str, others: Sequence[Card]) -> tuple[str, int] | None:
    """("duplicate" or "near-duplicate", index in `others`) for the first card it repeats, else None."""
    text = card_text(card, card_type)
    key, grams = normalize(text), trigrams(text)
    for index, other in enumerate(others):
        other_text = card_text(other, card_type)
        if normalize(other_text) == key:
            return "duplicate", index
        if _jaccard(grams, trigrams(other_text)) >= NEAR_DUPLICATE:
            return "near-duplicate", index
    return None
