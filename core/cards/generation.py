"""Study cards from a topic or notes: prompt, grammar-constrained JSON, validation, retries.

The model is asked for exactly the missing number of cards with a JSON schema that
llama.cpp turns into a grammar (length bounds keep fields from being empty or running
away), and the rules are repeated in the prompt. Whatever comes back is validated: empty,
duplicate, self-answering and (for cloze) unmarked cards are dropped and counted by reason,
and the model is asked again for what is missing within a fixed number of attempts. Model
output never raises: malformed JSON is salvaged card by card where possible.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from core.cards.anki import CARD_TYPES, CLOZE_DELETION, Card
from core.models.gguf import ModelError
from core.store.files import json_value

DIFFICULTIES = ("beginner", "intermediate", "advanced")
MAX_CARDS = 20
MAX_ATTEMPTS = 3
QUESTION_LIMITS = (8, 160)
ANSWER_LIMITS = (1, 200)
CLOZE_LIMITS = (12, 260)
TOKENS_PER_CARD = {"basic": 110, "cloze": 150}  # room for the longest fields the schema allows
NOTES_CHARACTERS_PER_TOKEN = (
    8  # notes longer than 8 characters per context token cannot fit: refused uncounted
)
# The grammar for a cloze text: plain characters, one {{c1::...}} deletion, plain characters.
_PLAIN = r'[^{}"\\\n\r\t]'
CLOZE_TEXT_PATTERN = (
    f"^{_PLAIN}{{3,120}}\\{{\\{{c1::{_PLAIN}{{1,40}}\\}}\\}}{_PLAIN}{{0,90}}$"  # <= CLOZE_LIMITS
)
PLACEHOLDER_TERMS = frozenset(
    {"", "term", "key term", "fact", "answer", "word", "x"}
)  # copied from the rules
LEADING_NUMBER = re.compile(r"^\s*\d{1,2}[.)]\s+")
WORD = re.compile(r"[^\W_]+")
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


class CardRequestError(ValueError):
    """Input the generator cannot work from; `problems` maps each input to what is wrong."""

    def __init__(self, problems: dict[str, str]):
        self.problems = problems
        super().__init__("; ".join(f"{key}: {message}" for key, message in problems.items()))


@dataclass(frozen=True)
class CardRequest:
    """What the user asked for."""

    topic: str = ""
    notes: str = ""
    count: int = 5
    difficulty: str = "beginner"
    card_type: str = "basic"
    deck: str = ""
    tags: tuple[str, ...] = ()

    @property
    def deck_name(self) -> str:
        """The deck name given, else one made from the topic or the notes' first words.

        Decks must not share a default name: the name decides the deck id and the note GUIDs.
        """
        if self.deck.strip():
            return self.deck.strip()
        subject = self.topic.strip() or " ".join(self.notes.split()[:6])
        return f"Study cards: {subject[:60]}"


def validate_request(request: CardRequest) -> CardRequest:
    """`request` if usable, else CardRequestError naming every problem."""
    problems = {}
    if not request.topic.strip() and not request.notes.strip():
        problems["topic"] = "give a topic or paste notes to make cards from"
    if len(request.topic) > 300:
        problems["topic"] = (
            f"is {len(request.topic)} characters long (at most 300); paste longer text as notes"
        )
    if (
        isinstance(request.count, bool)
        or not isinstance(request.count, int)
        or not 1 <= request.count <= MAX_CARDS
    ):
        problems["count"] = f"must be a whole number from 1 to {MAX_CARDS} (got {request.count!r})"
    if request.difficulty not in DIFFICULTIES:
        problems["difficulty"] = f"must be one of {', '.join(DIFFICULTIES)}"
    if request.card_type not in CARD_TYPES:
        problems["card_type"] = f"must be one of {', '.join(CARD_TYPES)}"
    if len(request.deck) > 100:
        problems["deck"] = f"is {len(request.deck)} characters long (at most 100)"
    if problems:
        raise CardRequestError(problems)
    return request


def card_schema(count: int, card_type: str) -> dict[str, Any]:
    """The JSON schema of a reply with exactly `count` cards, with length bounds per field."""

    def text(limits: tuple[int, int]) -> dict[str, Any]:
        return {"type": "string", "minLength": limits[0], "maxLength": limits[1]}

    if card_type == "cloze":
        item = {
            "text": {"type": "string", "pattern": CLOZE_TEXT_PATTERN},
            "extra": {"type": "string", "maxLength": ANSWER_LIMITS[1]},
        }
    else:
        item = {"question": text(QUESTION_LIMITS), "answer": text(ANSWER_LIMITS)}
    card = {"type": "object", "properties": item, "required": list(item)}
    cards = {"type": "array", "items": card, "minItems": count, "maxItems": count}
    return {"type": "object", "properties": {"cards": cards}, "required": ["cards"]}


def build_messages(request: CardRequest, count: int, avoid: Iterable[str] = ()) -> list[dict[str, str]]:
    """The chat for `count` cards; the rules are stated in the system turn and again at the end."""
    if request.card_type == "cloze":
        shape = '{"cards": [{"text": "...", "extra": "..."}]}'
        rules = [
            "each text is one sentence about the topic whose most important word is wrapped in a c1 cloze deletion",
            "hide a term worth remembering, never a filler word",
            "extra is an optional short hint or context",
        ]
    else:
        shape = '{"cards": [{"question": "...", "answer": "..."}]}'
        rules = [
            "each answer is short: one sentence or a few words",
            "a question never contains its own answer",
        ]
    rules += [
        f"exactly {count} card{'s' if count != 1 else ''}",
        "no two cards ask the same thing",
        f"pitch the cards at {request.difficulty} level",
    ]
    if request.notes.strip():
        rules.append("use only facts stated in the notes; do not add outside knowledge")
    rule_text = "; ".join(rules)
    system = f"You write flashcards for spaced-repetition study. Reply with JSON only, shaped as {shape}. Rules: {rule_text}."
    if request.notes.strip():
        subject = f'Make the cards from these notes.\n\nNotes:\n"""\n{request.notes.strip()}\n"""'
        if request.topic.strip():
            subject += f"\n\nFocus on: {request.topic.strip()}"
    else:
        subject = f"Topic: {request.topic.strip()}"
    user = f"{subject}\n\nWrite {count} {request.difficulty}-level {request.card_type} card{'s' if count != 1 else ''}."
    avoided = [front for front in avoid if front.strip()]
    if avoided:
        user += " Do not repeat these: " + " | ".join(avoided)
    user += f" Remember: {rule_text}."
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def normalize(text: str) -> str:
    """Lower-case words only: how two cards are compared for duplicates."""
    return " ".join(WORD.findall(text.lower()))


def _salvage_objects(text: str) -> list[Any]:
    """Every complete JSON object inside a reply that is not valid JSON as a whole (e.g. cut off)."""
    decoder, found, index = json.JSONDecoder(), [], text.find("[")
    while index != -1:
        index = text.find("{", index + 1)
        if index == -1:
            break
        try:
            value, end = decoder.raw_decode(text, index)
            json_value(text[index:end])  # refuses a lone surrogate, as for a whole reply
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            found.append(value)
            index = end - 1
    return found


def _qa_blocks(text: str) -> list[dict[str, str]]:
    """Cards from the lab's plain "Q: ... / A: ..." format."""
    pairs = re.findall(r"Q:\s*(.+?)\s*\n\s*A:\s*(.+?)(?=\n\s*Q:|\Z)", text, flags=re.S)
    return [{"question": q.strip(), "answer": a.strip()} for q, a in pairs]


def raw_cards(text: str) -> tuple[list[Any], str | None]:
    """The card objects a reply holds, and how it was read if not as clean JSON."""
    try:
        data = json_value(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        salvaged = _salvage_objects(text)
        if salvaged:
            return salvaged, "cut-off JSON"
        blocks = _qa_blocks(text)
        return (blocks, "Q:/A: text") if blocks else ([], "unreadable reply")
    if isinstance(data, dict) and isinstance(data.get("cards"), list):
        return data["cards"], None
    if isinstance(data, list):
        return data, None
    return [], "JSON without a cards list"


def _tidy(text: str, limit: int) -> str:
    """A field the length bound cut off, trimmed back to its last full sentence where there is one."""
    if len(text) < limit - 1:
        return text
    end = max(text.rfind(mark) for mark in ".!?")
    return text[: end + 1] if end >= len(text) * 0.2 else text


def _card_from(item: Any, card_type: str) -> tuple[Card | None, str | None]:
    """A Card from one reply object, or the reason it is dropped."""
    if not isinstance(item, dict):
        return None, "not a card object"
    if card_type == "cloze":
        front, back = item.get("text"), item.get("extra", "")
        limits = CLOZE_LIMITS
    else:
        front, back = item.get("question"), item.get("answer")
        limits = QUESTION_LIMITS
    if not isinstance(front, str) or not isinstance(back, (str, type(None))):
        return None, "not text"
    front, back = LEADING_NUMBER.sub("", front.strip()), _tidy((back or "").strip(), ANSWER_LIMITS[1])
    if not normalize(front) or (card_type == "basic" and not normalize(back)):
        return None, "empty field"
    if len(front) < limits[0]:
        return None, "too short"
    if len(front) > limits[1] or len(back) > ANSWER_LIMITS[1]:
        return None, "too long"
    if card_type == "cloze":
        deletions = CLOZE_DELETION.findall(front)
        if not deletions:
            return None, "no cloze deletion"
        if any(normalize(term) in PLACEHOLDER_TERMS for term in deletions):
            return None, "copied the rules' example"
    if card_type == "basic":
        answer = normalize(back)
        if len(answer) >= 3 and f" {answer} " in f" {normalize(front)} ":
            return None, "answer in the question"
    return Card(front=front, back=back), None


def parse_cards(text: str, card_type: str, existing: Iterable[Card] = ()) -> tuple[list[Card], Counter]:
    """The valid, new cards in a model reply, and the count of dropped ones by reason."""
    items, how = raw_cards(text)
    dropped: Counter = Counter()
    if how and not items:
        dropped[how] += 1
    seen = {normalize(card.front) for card in existing}
    cards = []
    for item in items:
        card, reason = _card_from(item, card_type)
        if card is not None and normalize(card.front) in seen:
            card, reason = None, "duplicate"
        if card is None:
            dropped[reason] += 1
            continue
        seen.add(normalize(card.front))
        cards.append(card)
    return cards, dropped


def content_words(text: str) -> set[str]:
    """Words that carry content: not stop words, three letters or more."""
    return {word for word in WORD.findall(text.lower()) if len(word) >= 3 and word not in STOPWORDS}


def is_grounded(card: Card, card_type: str, notes: str) -> bool:
    """Whether at least half of the card's answer words (a cloze card's whole fact) are in the notes."""
    fact = CLOZE_DELETION.sub(r"\1", card.front) if card_type == "cloze" else card.back
    words = content_words(fact)
    return bool(words) and len(words & content_words(notes)) * 2 >= len(words)


@dataclass
class CardResult:
    """The cards made, and the record of how: drops by reason, raw replies, attempts, cost."""

    cards: list[Card]
    requested: int
    dropped: Counter = field(default_factory=Counter)
    raw_outputs: list[str] = field(default_factory=list)
    attempts: int = 0
    tokens: int = 0
    seconds: float = 0.0
    grounded: int | None = None
    error: str | None = None

    def summary(self) -> str:
        """One line: made, dropped and why, attempts, grounding."""
        line = (
            f"{len(self.cards)} of {self.requested} cards in {self.attempts} attempt(s), {self.seconds:.1f} s"
        )
        if self.dropped:
            line += "; dropped " + ", ".join(
                f"{count} {reason}" for reason, count in self.dropped.most_common()
            )
        if self.grounded is not None and self.cards:
            line += f"; {self.grounded} of {len(self.cards)} answers share their content with the notes"
        if self.error:
            line += f"; stopped early: {self.error}"
        return line


def _prompt_tokens(model: Any, messages: list[dict[str, str]]) -> int:
    """Tokens a chat takes, with a margin for the template's role headers."""
    return sum(model.count_tokens(m["content"]) for m in messages) + 32


def prompt_room(model: Any, request: CardRequest) -> tuple[int, int]:
    """Tokens the notes take and tokens the context leaves for them after the prompt and reply."""
    overhead = _prompt_tokens(model, build_messages(dataclasses.replace(request, notes="."), request.count))
    available = model.context - overhead - TOKENS_PER_CARD[request.card_type] * request.count
    return model.count_tokens(request.notes), available


def check_notes_fit(model: Any, request: CardRequest) -> None:
    """CardRequestError when the notes do not fit the model's context, saying how much does."""
    if not request.notes.strip():
        return
    if len(request.notes) > NOTES_CHARACTERS_PER_TOKEN * model.context:
        raise CardRequestError(
            {
                "notes": f"the notes are {len(request.notes):,} characters, far more than this model's context of "
                f"{model.context} tokens holds: make cards from one part at a time"
            }
        )
    needed, available = prompt_room(model, request)
    if needed > available:
        share = max(0, available) / needed
        raise CardRequestError(
            {
                "notes": f"the notes take {needed} tokens but only {max(0, available)} fit this model's context "
                f"({model.context} tokens, with room left for {request.count} cards): about "
                f"{share:.0%} of them. Shorten them, ask for fewer cards, or make cards from one part at a time."
            }
        )


def fitting_fronts(
    model: Any, request: CardRequest, count: int, fronts: list[str], max_tokens: int
) -> list[str]:
    """The most recent fronts to list as "do not repeat" that still leave room for the reply."""
    base = _prompt_tokens(model, build_messages(request, count))
    room = model.context - max_tokens - base
    kept: list[str] = []
    for front in reversed(fronts):
        room -= model.count_tokens(front) + 2
        if room < 0:
            break
        kept.append(front)
    return kept[::-1]


def generate_cards(
    model: Any,
    request: CardRequest,
    *,
    avoid: Iterable[Card] = (),
    seed: int | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> CardResult:
    """Cards for `request`, asking again for missing ones up to MAX_ATTEMPTS times.

    `avoid` holds cards that must not be repeated (the rest of a deck when one card is
    regenerated). `on_progress` gets a short status line while the model writes.
    """
    validate_request(request)
    check_notes_fit(model, request)
    result = CardResult(cards=[], requested=request.count)
    avoided = list(avoid)
    while len(result.cards) < request.count and result.attempts < MAX_ATTEMPTS:
        missing = request.count - len(result.cards)
        result.attempts += 1
        attempt = result.attempts

        def report(tokens: int, attempt: int = attempt, missing: int = missing) -> None:
            if on_progress:
                on_progress(f"attempt {attempt}: writing {missing} card(s), {tokens} tokens so far")

        max_tokens = TOKENS_PER_CARD[request.card_type] * missing + 64
        fronts = fitting_fronts(
            model, request, missing, [card.front for card in avoided + result.cards], max_tokens
        )
        try:
            reply = model.chat(
                build_messages(request, missing, fronts),
                schema=card_schema(missing, request.card_type),
                max_tokens=max_tokens,
                temperature=0.7 if attempt == 1 else 0.9,
                seed=None if seed is None else seed + attempt,
                on_token=report,
            )
        except ModelError as exc:  # the cards accepted so far are kept
            result.error = str(exc)
            break
        result.raw_outputs.append(reply.text)
        result.tokens += reply.tokens
        result.seconds += reply.seconds
        cards, dropped = parse_cards(reply.text, request.card_type, avoided + result.cards)
        result.dropped.update(dropped)
        if len(cards) > missing:
            result.dropped["more than asked"] += len(cards) - missing
        result.cards.extend(cards[:missing])
    if request.notes.strip():
        result.grounded = sum(is_grounded(card, request.card_type, request.notes) for card in result.cards)
    return result
