"""Study card generation: validation of crafted model replies, prompts, limits, and real
generation with the bundled SmolLM2 model in llama.cpp."""

import json
import re
from collections import Counter

import pytest

from core.cards.anki import Card
from core.cards.generation import (
    MAX_ATTEMPTS,
    CardRequest,
    CardRequestError,
    build_messages,
    candidates_for,
    card_schema,
    check_notes_fit,
    generate_cards,
    is_grounded,
    parse_cards,
    raw_cards,
    regenerate_card,
    take_spare,
    validate_request,
)
from core.cards.rules import card_problem, duplicate_of
from core.models.gguf import ChatResult, GgufModel, ModelError
from core.models.sources import bundled_path


def reply(*cards: dict) -> str:
    return json.dumps({"cards": list(cards)})


def qa(question: str, answer: str) -> dict:
    return {"question": question, "answer": answer}


def dropped(rejected) -> dict[str, int]:
    return dict(Counter(r.reason for r in rejected))


def test_valid_cards_pass_and_bad_ones_are_dropped_by_reason():
    text = reply(
        qa("What gas do plants take in?", "Carbon dioxide."),
        qa("What gas do plants take in?", "CO2."),  # duplicate
        qa("what GAS do plants, take in?", "Carbon dioxide"),  # duplicate once normalized
        qa("Which pigment makes leaves green, chlorophyll?", "Chlorophyll"),  # answers itself
        qa("Where does photosynthesis happen?", "   "),  # empty
        qa("2. Which organelle holds chlorophyll?", "The chloroplast."),  # numbering stripped
        {"question": 3, "answer": "x"},
        "not a card",
    )
    cards, rejected = parse_cards(text, "basic")
    assert cards == [
        Card("What gas do plants take in?", "Carbon dioxide."),
        Card("Which organelle holds chlorophyll?", "The chloroplast."),
    ]
    assert dropped(rejected) == {
        "duplicate": 2,
        "answer repeats the question": 1,
        "empty field": 1,
        "not text": 1,
        "not a card object": 1,
    }
    assert rejected[0].repeats == "What gas do plants take in?" and rejected[-1].front == "not a card"


def test_cards_already_in_the_deck_are_skipped_and_name_the_note():
    cards, rejected = parse_cards(
        reply(
            qa("What is ATP?", "The cell's energy currency."), qa("What is a ribosome?", "A protein factory.")
        ),
        "basic",
        avoid=[Card("What is ATP ?", "Energy.")],
    )
    assert cards == [Card("What is a ribosome?", "A protein factory.")]
    assert [(r.reason, r.repeats) for r in rejected] == [("already in the deck", "What is ATP ?")]


@pytest.mark.parametrize(
    ("text", "expected_cards", "reason"),
    [
        ("", 0, "unreadable reply"),
        ("I cannot help with that.", 0, "unreadable reply"),
        ('{"cards": "none"}', 0, "JSON without a cards list"),
        (
            '{"cards": [{"question": "What is H2O?", "answer": "Water."}, {"question": "What is Na',
            1,
            "cut off by the token limit",
        ),
        ("Q: What is H2O?\nA: Water.\n\nQ: What is NaCl?\nA: Table salt.", 2, None),
        ('[{"question": "What is H2O?", "answer": "Water."}]', 1, None),
    ],
)
def test_malformed_replies_never_raise_and_complete_cards_are_salvaged(text, expected_cards, reason):
    cards, rejected = parse_cards(text, "basic")
    assert len(cards) == expected_cards
    assert (reason in dropped(rejected)) if reason else not rejected


def test_cloze_cards_need_a_real_deletion():
    text = json.dumps(
        {
            "cards": [
                {"text": "Plants release {{c1::oxygen}} during photosynthesis.", "extra": "As a by-product."},
                {"text": "Plants release oxygen during photosynthesis.", "extra": ""},
                {"text": "The key is {{c1::term}} here.", "extra": ""},
                {"text": "Water boils at {{c1::100}} degrees.", "extra": ""},
                {"text": "Leaves are {{c2::green}} because of {{c1::chlorophyll}}.", "extra": ""},
            ]
        }
    )
    cards, rejected = parse_cards(text, "cloze")
    assert [c.front for c in cards] == [
        "Plants release {{c1::oxygen}} during photosynthesis.",
        "Leaves are {{c2::green}} because of {{c1::chlorophyll}}.",
    ]
    assert dropped(rejected) == {"no cloze deletion": 1, "placeholder deletion": 2}


def test_odd_replies_are_dropped_not_raised():
    cards, rejected = parse_cards(
        reply(
            qa("Which family do big cats such as lions belong to?", "Felidae"),
            qa("What does a sponge absorb?", "sorb"),  # inside a word, not the answer repeated
            qa("........", "Dots."),
            qa("Why?", "Because."),
        ),
        "basic",
    )
    assert [c.back for c in cards] == ["Felidae", "sorb"]
    assert dropped(rejected) == {"empty field": 1, "too short": 1}
    cards, rejected = parse_cards("[" * 5000, "basic")
    assert cards == [] and dropped(rejected) == {"unreadable reply": 1}


def test_a_cut_off_answer_is_trimmed_to_its_last_sentence():
    long_answer = "Water evaporates. It condenses into clouds. It falls as rain and then " + "flows " * 30
    cards, _ = parse_cards(reply(qa("How does the water cycle work?", long_answer[:100])), "basic")
    assert cards[0].back == "Water evaporates. It condenses into clouds."


def test_the_schema_shapes_every_field_and_bounds_the_count():
    schema = card_schema(7, "basic")
    cards = schema["properties"]["cards"]
    assert (cards["minItems"], cards["maxItems"], len(cards["items"])) == (7, 7, 7)
    questions = [re.compile(item["properties"]["question"]["pattern"]) for item in cards["items"]]
    assert questions[0].match("What drives the water cycle?") and questions[2].match(
        "In which year did Rome fall?"
    )
    assert not questions[0].match("How does rain form?")  # each card of a reply opens its own way
    assert questions[6].match("What is rain?")  # ...round again after six
    for question in questions:
        assert not question.match("Photosynthesis is a process that involves plants.")
        assert not question.match("What drives evaporation. 2?")  # one sentence
    answer = re.compile(cards["items"][0]["properties"]["answer"]["pattern"])
    assert answer.match("1980") and answer.match("Water vapour cools into droplets.")
    for bad in ("", " leading space", "molten rock that can\n", "a" * 101, 'say "hi"', "{braces}"):
        assert not answer.fullmatch(bad), bad  # raw newlines would make the reply unreadable JSON
    cloze = card_schema(2, "cloze")["properties"]["cards"]["items"][1]["properties"]
    assert re.match(cloze["text"]["pattern"], "The sun drives {{c1::evaporation}} of water.")
    assert not re.match(cloze["text"]["pattern"], "The sun drives {{c1:::1}} of water.")
    assert re.match(cloze["extra"]["pattern"], "") and not re.match(cloze["extra"]["pattern"], "###")


def test_the_prompt_states_the_rules_twice_and_grounds_notes():
    request = CardRequest(topic="cells", notes="Mitochondria make ATP.", count=3, difficulty="advanced")
    system, user = build_messages(request, 3, avoid=["What is ATP?"])
    assert "exactly 3 cards" in system["content"] and "exactly 3 cards" in user["content"]
    assert "use only facts stated in the notes" in user["content"]
    assert "Mitochondria make ATP." in user["content"] and "Focus on: cells" in user["content"]
    assert "Do not repeat these: What is ATP?" in user["content"] and "advanced" in user["content"]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (CardRequest(), "topic"),
        (CardRequest(topic="   ", notes="\n"), "topic"),
        (CardRequest(topic="x" * 301), "topic"),
        (CardRequest(topic="cells", count=0), "count"),
        (CardRequest(topic="cells", count=21), "count"),
        (CardRequest(topic="cells", difficulty="expert"), "difficulty"),
        (CardRequest(topic="cells", card_type="reverse"), "card_type"),
        (CardRequest(topic="cells", deck="d" * 101), "deck"),
    ],
)
def test_bad_requests_are_refused_by_field(request_, field):
    with pytest.raises(CardRequestError) as caught:
        validate_request(request_)
    assert field in caught.value.problems


def test_grounding_counts_answers_whose_words_come_from_the_notes():
    notes = "Mitochondria produce ATP through cellular respiration. They carry their own DNA."
    assert is_grounded(
        Card("What do mitochondria produce?", "ATP, through cellular respiration."), "basic", notes
    )
    assert not is_grounded(Card("Who discovered mitochondria?", "Albert Kölliker in 1857."), "basic", notes)
    assert is_grounded(Card("Mitochondria carry their own {{c1::DNA}}.", ""), "cloze", notes)


class ScriptedModel:
    """Stands in for llama.cpp where a test needs exact replies; real generation is tested below."""

    def __init__(self, replies: list[str], context: int = 4096):
        self.replies, self.prompts, self.context = list(replies), [], context

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def chat(self, messages, **options) -> ChatResult:
        self.prompts.append((messages, options))
        prompt = sum(self.count_tokens(m["content"]) for m in messages)
        if prompt + options["max_tokens"] > self.context:
            raise ModelError(f"Requested tokens ({prompt + options['max_tokens']}) exceed context window")
        return ChatResult(self.replies.pop(0), 10, 0.01)


def test_a_long_deck_to_avoid_is_cut_to_fit_the_context_and_errors_keep_the_cards_made():
    deck = [Card(f"What is fact number {n} about cells?", "A fact.") for n in range(300)]
    model = ScriptedModel([reply(qa("What is a ribosome?", "Where proteins are made."))], context=1200)
    result = generate_cards(model, CardRequest(topic="cells", count=1), avoid=deck)
    assert [c.front for c in result.cards] == ["What is a ribosome?"] and result.error is None
    listed = model.prompts[0][0][1]["content"]
    assert "fact number 299" in listed and "fact number 0 " not in listed  # the most recent are kept

    class Failing(ScriptedModel):
        def chat(self, messages, **options):
            if self.prompts:
                raise ModelError("llama.cpp could not answer: out of memory")
            return super().chat(messages, **options)

    failing = Failing([reply(qa("What is a cell?", "The unit of life."))])
    result = generate_cards(failing, CardRequest(topic="cells", count=3))
    assert [c.front for c in result.cards] == ["What is a cell?"]
    assert result.error == "llama.cpp could not answer: out of memory" and "stopped early" in result.summary()


def test_one_call_asks_for_spare_candidates_and_only_missing_cards_are_asked_again():
    model = ScriptedModel(
        [
            reply(qa("What is a cell?", "The unit of life."), qa("What is a cell?", "Dup.")),
            "garbage",
            reply(
                qa("What is DNA?", "Genetic material."),
                qa("What is RNA?", "A messenger."),
                qa("What is a membrane?", "The cell's boundary."),
            ),
        ]
    )
    result = generate_cards(model, CardRequest(topic="cells", count=3))
    assert [c.front for c in result.cards] == ["What is a cell?", "What is DNA?", "What is RNA?"]
    assert result.spares == [Card("What is a membrane?", "The cell's boundary.")]  # passed, not needed
    assert result.attempts == 3 == MAX_ATTEMPTS and len(result.raw_outputs) == 3
    assert result.dropped == {"duplicate": 1, "unreadable reply": 1}
    first_options, (second_messages, second_options) = model.prompts[0][1], model.prompts[1]
    assert first_options["schema"]["properties"]["cards"]["minItems"] == candidates_for(3) > 3
    assert second_options["schema"]["properties"]["cards"]["minItems"] == candidates_for(2)
    assert "Do not repeat these" not in second_messages[1]["content"]  # a small model copies such a list
    retry = second_options["schema"]["properties"]["cards"]["items"][0]["properties"]["question"]["pattern"]
    assert retry.startswith("^(How) ")  # the openers go on from the deck's second card
    assert result.summary().startswith("3 of 3 cards in 3 attempts, ")
    assert "dropped 2 candidates (duplicate: 1, unreadable reply: 1)" in result.summary()
    assert take_spare(result, [Card("What is a membrane ?", "x")], "basic") is None and not result.spares


def test_the_budget_is_bounded_when_the_model_never_delivers():
    model = ScriptedModel(["nothing"] * MAX_ATTEMPTS)
    result = generate_cards(model, CardRequest(topic="cells", count=2))
    assert result.cards == [] and result.attempts == MAX_ATTEMPTS and model.replies == []


@pytest.fixture(scope="module")
def smollm() -> GgufModel:
    return GgufModel(bundled_path())


def test_notes_too_long_for_the_context_are_refused_with_how_much_fits(smollm):
    notes = "Cells are the basic unit of life. " * 800
    with pytest.raises(CardRequestError) as caught:
        check_notes_fit(smollm, CardRequest(notes=notes, count=5))
    message = caught.value.problems["notes"]
    assert "tokens but only" in message and "fit this model's context (4096 tokens" in message
    check_notes_fit(smollm, CardRequest(notes=notes[:2000], count=5))


def passes_every_rule(cards: list[Card], card_type: str, notes: str = "") -> bool:
    return all(
        card_problem(card, card_type, source=notes) is None
        and duplicate_of(card, card_type, cards[:i]) is None
        for i, card in enumerate(cards)
    )


def test_real_generation_with_the_bundled_model_gives_checked_distinct_cards(smollm):
    result = generate_cards(smollm, CardRequest(topic="the water cycle", count=4), seed=7)
    assert len(result.cards) == 4 and passes_every_rule(result.cards, "basic")
    for raw in result.raw_outputs:
        json.loads(raw)  # grammar-constrained: always valid JSON
    assert result.tokens > 0 and result.seconds > 0
    assert result.summary().startswith("4 of 4 cards in ")


def test_real_generation_from_notes_reports_grounding(smollm):
    notes = (
        "The water cycle moves water between the oceans, the air and the land. Water evaporates from the "
        "oceans, condenses into clouds and falls as precipitation such as rain or snow."
    )
    result = generate_cards(smollm, CardRequest(notes=notes, count=3), seed=3)
    assert result.cards and result.grounded is not None
    assert (
        f"{result.grounded} of {len(result.cards)} answers share their content with the notes"
        in result.summary()
    )
    assert "use only facts stated in the notes" in build_messages(CardRequest(notes=notes), 3)[1]["content"]


def test_real_cloze_generation_is_held_to_the_cloze_grammar_and_rules(smollm):
    result = generate_cards(smollm, CardRequest(topic="volcanoes", count=2, card_type="cloze"), seed=2)
    assert result.raw_outputs
    items = [item for raw in result.raw_outputs for item in raw_cards(raw)[0]]  # the token limit may cut one
    assert items and all(isinstance(item, dict) for item in items)
    for item in items:  # the grammar: a deletion starting with a letter, an Extra starting with one
        assert re.search(r"\{\{c1::[A-Za-z][^}]*\}\}", item["text"])
        assert item["extra"] == "" or item["extra"][0].isalpha()
    assert passes_every_rule(result.cards, "cloze")


def test_regenerate_serves_a_spare_without_the_model_then_asks_it_for_one_card():
    request = CardRequest(topic="cells", count=1)
    model = ScriptedModel(
        [
            reply(qa("What is a cell?", "The unit of life."), qa("What is DNA?", "Genetic material.")),
            reply(qa("What is RNA?", "A messenger."), qa("What is a ribosome?", "Where proteins are made.")),
        ]
    )
    result = generate_cards(model, request)
    loads = []

    def load():
        loads.append(1)
        return model

    card, single = regenerate_card(result, request, result.cards, load)
    assert card == Card("What is DNA?", "Genetic material.") and single is None and not loads
    card, single = regenerate_card(result, request, [*result.cards, card], load)
    assert card.front == "What is RNA?" and loads == [1] and single.requested == 1
    assert len(result.raw_outputs) == 2  # the new call's reply joins the deck's record
