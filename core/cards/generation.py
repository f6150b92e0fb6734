"""Study cards from a topic or notes: prompt, grammar-constrained JSON, checks, a rare retry.

One call asks for a few more candidates than the deck needs, in a JSON schema that llama.cpp
turns into a grammar: a basic card's question opens with a question word and is one sentence
ending in "?", a cloze deletion and an Extra field start with a letter, and length bounds keep
every field from being empty or running away; a repeat penalty keeps candidates apart. Every candidate is then held
to the card rules (core.cards.rules), and the first ones that pass make the deck; the model is
asked again only for what is still missing, within a fixed number of attempts. Each dropped
candidate keeps its reason. Model output never raises: malformed JSON is salvaged card by
card where possible.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.cards.anki import CARD_TYPES, CLOZE_DELETION, Card
from core.cards.rules import card_problem, content_words, duplicate_of, instruction_ngrams, normalize
from core.models.gguf import ModelError
from core.store.files import json_value

DIFFICULTIES = ("beginner", "intermediate", "advanced")
MAX_CARDS = 20
MAX_ATTEMPTS = 3
QUESTION_LIMITS = (8, 120)
ANSWER_LIMITS = (1, 100)
CLOZE_LIMITS = (12, 260)
TOKENS_PER_CARD = {"basic": 80, "cloze": 150}  # room for the longest fields the schema allows
REPEAT_PENALTY = 1.1  # keeps the candidates of one reply from repeating each other
NOTES_CHARACTERS_PER_TOKEN = (
    8  # notes longer than 8 characters per context token cannot fit: refused uncounted
)
# A field's characters: no braces, quotes, backslashes or control characters (llama-cpp-python's
# JSON grammar lets raw newlines into strings, which no JSON reader takes).
_PLAIN = r'[^{}"\\\x00-\x1f]'
# A question: one of these openers, then one sentence (no "." or "?") ending in "?".
# The question words each card of a reply may open with, card by card (then round again): no two
# of the first six cards can be the same question, and near-duplicates are rarer.
QUESTION_OPENERS = (
    ("What",),
    ("How",),
    ("Which", "In which"),
    ("Why",),
    ("Who", "Whose", "Where", "When"),
    ("Is", "Are", "Do", "Does", "Can"),
)


def question_pattern(openers: Sequence[str]) -> str:
    """A question: one of `openers`, then one sentence (no "." or "?") ending in "?"."""
    body = _PLAIN.replace("]", "?.]") + f"{{4,{QUESTION_LIMITS[1] - 20}}}"
    return "^(" + "|".join(openers) + ") " + body + r"\?$"


# A cloze text: plain characters, one {{c1::...}} deletion that starts with a letter, plain characters.
CLOZE_TEXT_PATTERN = f"^{_PLAIN}{{3,120}}\\{{\\{{c1::[A-Za-z]{_PLAIN}{{0,39}}\\}}\\}}{_PLAIN}{{0,90}}$"
# An answer: starts with a character that is not a space, then plain characters.
ANSWER_PATTERN = f"^{_PLAIN.replace(']', ' ]')}{_PLAIN}{{0,{ANSWER_LIMITS[1] - 1}}}$"
# An Extra field: empty, or starting with a letter (no "###" filler).
EXTRA_PATTERN = f"^([A-Za-z]{_PLAIN}{{0,{ANSWER_LIMITS[1] - 1}}})?$"
LEADING_NUMBER = re.compile(r"^\s*\d{1,2}[.)]\s+")


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


def card_schema(count: int, card_type: str, first: int = 0) -> dict[str, Any]:
    """The JSON schema of a reply with exactly `count` cards, with a shape and bounds per field
    (llama.cpp's grammar takes a list of item schemas as the cards in order); the question openers
    start at the group for card number `first` of the deck."""

    def card(index: int) -> dict[str, Any]:
        if card_type == "cloze":
            item = {
                "text": {"type": "string", "pattern": CLOZE_TEXT_PATTERN},
                "extra": {"type": "string", "pattern": EXTRA_PATTERN},
            }
        else:
            openers = QUESTION_OPENERS[index % len(QUESTION_OPENERS)]
            item = {
                "question": {"type": "string", "pattern": question_pattern(openers)},
                "answer": {"type": "string", "pattern": ANSWER_PATTERN},
            }
        return {"type": "object", "properties": item, "required": list(item)}

    # A list of item schemas: card by card, so each card has its own question openers.
    cards = {
        "type": "array",
        "items": [card(first + index) for index in range(count)],
        "minItems": count,
        "maxItems": count,
    }
    return {"type": "object", "properties": {"cards": cards}, "required": ["cards"]}


def candidates_for(missing: int) -> int:
    """How many candidates to ask for when `missing` cards are needed: a few spare, since some fail the rules."""
    return missing + 1 + missing // 6


def rule_text(request: CardRequest, count: int) -> str:
    """The rules the prompt states (twice): also what a card must not copy."""
    if request.card_type == "cloze":
        rules = [
            "each text is one sentence about the topic whose most important word is wrapped in a c1 cloze deletion",
            "hide a term worth remembering, never a filler word or a number",
            "extra is an optional short hint or context",
        ]
    else:
        rules = [
            "each question asks one thing and ends with a question mark",
            "each answer is short: one sentence or a few words",
            "a question never contains its own answer",
        ]
    rules += [
        f"exactly {count} card{'s' if count != 1 else ''}",
        "every card asks about a different fact",
        f"pitch the cards at {request.difficulty} level",
    ]
    if request.notes.strip():
        rules.append("use only facts stated in the notes; do not add outside knowledge")
    return "; ".join(rules)


def build_messages(request: CardRequest, count: int, avoid: Iterable[str] = ()) -> list[dict[str, str]]:
    """The chat for `count` cards; the rules are stated in the system turn and again at the end."""
    if request.card_type == "cloze":
        shape = '{"cards": [{"text": "...", "extra": "..."}]}'
    else:
        shape = '{"cards": [{"question": "...", "answer": "..."}]}'
    rules = rule_text(request, count)
    system = f"You write flashcards for spaced-repetition study. Reply with JSON only, shaped as {shape}. Rules: {rules}."
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
    user += f" Remember: {rules}."
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


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
    """A Card from one reply object, or the reason it is dropped (its shape; the rules come later)."""
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
    return Card(front=front, back=back), None


@dataclass(frozen=True)
class Rejection:
    """A candidate card that was not shown: what the model wrote, why, and the card it repeats."""

    front: str
    back: str
    reason: str
    attempt: int = 1
    repeats: str = ""


def _fields(item: Any, card_type: str) -> tuple[str, str]:
    """A reply object's two fields as text, however malformed, for the record of dropped cards."""
    if not isinstance(item, dict):
        return str(item)[:200], ""
    keys = ("text", "extra") if card_type == "cloze" else ("question", "answer")
    return tuple(str(item.get(key, ""))[:200] for key in keys)  # type: ignore[return-value]


def parse_cards(
    text: str,
    card_type: str,
    *,
    avoid: Sequence[Card] = (),
    accepted: Sequence[Card] = (),
    source: str = "",
    copied: frozenset[tuple[str, ...]] = frozenset(),
    attempt: int = 1,
) -> tuple[list[Card], list[Rejection]]:
    """The cards in a model reply that pass every rule, and the rejected ones with their reasons.

    `avoid` holds cards of the deck made elsewhere (a card repeating one is "already in the
    deck"), `accepted` the cards this generation kept so far; `source` and `copied` go to the
    card rules (core.cards.rules.card_problem).
    """
    items, how = raw_cards(text)
    rejected: list[Rejection] = []
    if how and not items:
        rejected.append(Rejection(text[:200], "", how, attempt))
    elif how == "cut-off JSON":  # the card the token limit cut is lost: say so
        rejected.append(Rejection(text[-200:], "", "cut off by the token limit", attempt))
    kept: list[Card] = []
    for item in items:
        card, reason = _card_from(item, card_type)
        if card is None:
            rejected.append(Rejection(*_fields(item, card_type), reason or "", attempt))
            continue
        reason = card_problem(card, card_type, source=source, copied=copied)
        repeats = ""
        if reason is None:
            earlier = [*accepted, *kept]
            for others, label in ((avoid, "already in the deck"), (earlier, None)):
                found = duplicate_of(card, card_type, others)
                if found:
                    reason, repeats = label or found[0], others[found[1]].front
                    break
        if reason is not None:
            rejected.append(Rejection(card.front, card.back, reason, attempt, repeats))
            continue
        kept.append(card)
    return kept, rejected


def is_grounded(card: Card, card_type: str, notes: str) -> bool:
    """Whether at least half of the card's answer words (a cloze card's whole fact) are in the notes."""
    fact = CLOZE_DELETION.sub(r"\1", card.front) if card_type == "cloze" else card.back
    words = content_words(fact)
    return bool(words) and len(words & content_words(notes)) * 2 >= len(words)


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


@dataclass
class CardResult:
    """The cards made, and the record of how: rejected candidates, spares, raw replies, attempts, cost."""

    cards: list[Card]
    requested: int
    rejected: list[Rejection] = field(default_factory=list)
    spares: list[Card] = field(default_factory=list)
    raw_outputs: list[str] = field(default_factory=list)
    attempts: int = 0
    tokens: int = 0
    seconds: float = 0.0
    grounded: int | None = None
    error: str | None = None

    @property
    def dropped(self) -> Counter:
        """Rejected candidates counted by reason."""
        return Counter(rejection.reason for rejection in self.rejected)

    def summary(self) -> str:
        """One line: cards that passed, attempts, time, candidates dropped and why, grounding."""
        line = f"{len(self.cards)} of {_counted(self.requested, 'card')} in {_counted(self.attempts, 'attempt')}, {self.seconds:.1f} s"
        if self.rejected:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in self.dropped.most_common())
            line += f"; dropped {_counted(len(self.rejected), 'candidate')} ({reasons})"
        if self.grounded is not None and self.cards:
            line += f"; {self.grounded} of {len(self.cards)} answers share their content with the notes"
        if self.error:
            line += f"; stopped early: {self.error}"
        return line


def take_spare(result: CardResult, deck: Sequence[Card], card_type: str) -> Card | None:
    """A spare candidate of `result` that repeats no card of `deck` (removed from the spares), or None."""
    while result.spares:
        spare = result.spares.pop(0)
        if duplicate_of(spare, card_type, deck) is None:
            return spare
    return None


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
    """Cards for `request`: a few spare candidates in one call, held to the card rules, and
    another call only for cards still missing, up to MAX_ATTEMPTS calls.

    `avoid` holds cards that must not be repeated (the rest of a deck when one card is
    regenerated, the notes of a deck being grown). `on_progress` gets a short status line
    while the model writes.
    """
    validate_request(request)
    check_notes_fit(model, request)
    result = CardResult(cards=[], requested=request.count)
    avoided = list(avoid)
    while len(result.cards) < request.count and result.attempts < MAX_ATTEMPTS:
        missing = request.count - len(result.cards)
        asked = candidates_for(missing)
        result.attempts += 1
        attempt = result.attempts

        def report(tokens: int, attempt: int = attempt, asked: int = asked) -> None:
            if on_progress:
                on_progress(f"attempt {attempt}: writing {asked} candidate cards, {tokens} tokens so far")

        max_tokens = TOKENS_PER_CARD[request.card_type] * asked + 64
        # Only the caller's cards are listed: a small model copies a list it is shown, and this
        # generation's own cards are kept out by the rules (and by new question openers) anyway.
        fronts = fitting_fronts(model, request, asked, [card.front for card in avoided], max_tokens)
        try:
            reply = model.chat(
                build_messages(request, asked, fronts),
                schema=card_schema(asked, request.card_type, first=len(result.cards)),
                max_tokens=max_tokens,
                temperature=0.7 if attempt == 1 else 0.9,
                repeat_penalty=REPEAT_PENALTY,
                seed=None if seed is None else seed + attempt,
                on_token=report,
            )
        except ModelError as exc:  # the cards accepted so far are kept
            result.error = str(exc)
            break
        result.raw_outputs.append(reply.text)
        result.tokens += reply.tokens
        result.seconds += reply.seconds
        cards, rejected = parse_cards(
            reply.text,
            request.card_type,
            avoid=avoided,
            accepted=result.cards,
            source=request.notes,
            copied=instruction_ngrams(rule_text(request, asked)),
            attempt=attempt,
        )
        if request.notes.strip():  # the best first: cards whose answers come from the notes
            cards.sort(key=lambda card: not is_grounded(card, request.card_type, request.notes))
        result.rejected.extend(rejected)
        result.cards.extend(cards[:missing])
        result.spares = cards[missing:]
    if request.notes.strip():
        result.grounded = sum(is_grounded(card, request.card_type, request.notes) for card in result.cards)
    return result


def regenerate_card(
    result: CardResult, request: CardRequest, deck: Sequence[Card], load_model: Callable[[], Any]
) -> tuple[Card | None, CardResult | None]:
    """A card to replace one of `deck`: a spare of `result` that repeats none of it, else one new
    card from the model (`load_model` is called only then), whose replies and rejected candidates
    join `result`'s record. Returns the card (None when the model made none) and the new call's
    result (None when a spare served)."""
    spare = take_spare(result, deck, request.card_type)
    if spare is not None:
        return spare, None
    single = generate_cards(load_model(), dataclasses.replace(request, count=1), avoid=deck)
    result.raw_outputs.extend(single.raw_outputs)
    result.rejected.extend(single.rejected)
    return (single.cards[0] if single.cards else None), single
