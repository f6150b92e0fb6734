"""Study-card generation speed: time per deck and per card with the bundled model, and our
end-to-end overhead against a bare llama-cpp call that produces the same number of tokens.

Run: make bench (or .venv/bin/python bench/cards.py [--decks N]). Prints medians and the
ratio ours / bare, measured in this run on this machine. Target: overhead under 10%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.cards.generation import CardRequest, generate_cards
from core.models.gguf import GgufModel
from core.models.sources import bundled_path

TOPICS = ("the water cycle", "volcanoes", "the Roman Empire", "photosynthesis", "prime numbers")


class RecordingModel:
    """Our GgufModel, with every chat call's arguments kept so the bench can replay them bare."""

    def __init__(self, model: GgufModel):
        self.model, self.calls = model, []
        self.context, self.count_tokens = model.context, model.count_tokens

    def chat(self, messages, **options):
        self.calls.append((messages, options))
        self.model.llama.reset()  # no prompt-prefix cache from an earlier call in either arm
        return self.model.chat(messages, **options)


def replay_bare(model: GgufModel, calls: list) -> tuple[float, int]:
    """The same completions as plain llama-cpp calls: seconds and tokens generated."""
    started, tokens = time.perf_counter(), 0
    for messages, options in calls:
        model.llama.reset()
        reply = model.llama.create_chat_completion(
            messages=messages,
            max_tokens=options["max_tokens"],
            temperature=options["temperature"],
            seed=options["seed"],
            response_format={"type": "json_object", "schema": options["schema"]},
        )
        tokens += reply["usage"]["completion_tokens"]
    return time.perf_counter() - started, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decks", type=int, default=5, help="decks per measurement (default 5)")
    parser.add_argument("--cards", type=int, default=5, help="cards per deck (default 5)")
    args = parser.parse_args()
    model = GgufModel(bundled_path())
    ratios, per_deck, per_card = [], [], []
    for index in range(args.decks):
        recorder = RecordingModel(model)
        started = time.perf_counter()
        result = generate_cards(
            recorder, CardRequest(topic=TOPICS[index % len(TOPICS)], count=args.cards), seed=index
        )
        ours = time.perf_counter() - started
        bare, bare_tokens = replay_bare(model, recorder.calls)
        ratios.append(ours / bare)
        per_deck.append(ours)
        per_card.append(ours / max(1, len(result.cards)))
        print(
            f"deck {index + 1}: {len(result.cards)} cards, {result.attempts} attempt(s), tokens ours {result.tokens} "
            f"bare {bare_tokens}, ours {ours:.2f} s, bare {bare:.2f} s, ratio {ours / bare:.3f}"
        )
    ratio = statistics.median(ratios)
    print(
        f"\nbundled SmolLM2-135M, {args.cards} cards per deck, {args.decks} decks, {os.cpu_count()} CPU cores"
    )
    print(
        f"median per deck {statistics.median(per_deck):.2f} s, per card {statistics.median(per_card):.2f} s"
    )
    print(
        f"median ratio ours / bare llama-cpp calls with the same prompts, grammar and seed: {ratio:.3f} "
        f"({(ratio - 1) * 100:+.1f}% overhead; target under +10%)"
    )


if __name__ == "__main__":
    main()
