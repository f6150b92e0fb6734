"""Study-card generation with the bundled model: attempts per deck, seconds per deck and card,
our end-to-end overhead against bare llama-cpp calls that produce the same tokens, the Hub
stall without a network, and llama.cpp's compute buffer by prompt batch.

Run: make bench (or .venv/bin/python bench/cards.py [--decks N] [--skip-offline] [--skip-memory]).
Prints medians and ratios measured in this run on this machine. Targets: mean attempts per deck
at most 1.3, a 5-card deck at most 5 s (median), overhead under 10%, and the cards command
without a network and without HF_HUB_OFFLINE within 1 s of the same command with it.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.cards.generation import CardRequest, build_messages, generate_cards  # noqa: E402
from core.models.gguf import DEFAULT_BATCH, GgufModel, gguf_prompt_tokens  # noqa: E402
from core.models.sources import bundled_path  # noqa: E402

TOPICS = ("the water cycle", "volcanoes", "the Roman Empire", "photosynthesis", "prime numbers")
BATCHES = (512, DEFAULT_BATCH, 32)
# Llama 3.2 1B (the lab's default card model): its vocabulary, for the compute-buffer estimate.
LLAMA_1B_VOCAB = 128_256


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
            repeat_penalty=options["repeat_penalty"],
            seed=options["seed"],
            response_format={"type": "json_object", "schema": options["schema"]},
        )
        tokens += reply["usage"]["completion_tokens"]
    return time.perf_counter() - started, tokens


def decks(count: int, cards: int) -> None:
    """Attempts, seconds and overhead per deck, alternating ours and the bare replay."""
    model = GgufModel(bundled_path())
    ratios, per_deck, per_card, attempts = [], [], [], []
    for index in range(count):
        recorder = RecordingModel(model)
        started = time.perf_counter()
        result = generate_cards(
            recorder, CardRequest(topic=TOPICS[index % len(TOPICS)], count=cards), seed=index
        )
        ours = time.perf_counter() - started
        bare, bare_tokens = replay_bare(model, recorder.calls)
        ratios.append(ours / bare)
        per_deck.append(ours)
        per_card.append(ours / max(1, len(result.cards)))
        attempts.append(result.attempts)
        print(
            f"deck {index + 1}: {len(result.cards)} cards, {result.attempts} attempt(s), "
            f"{len(result.rejected)} candidate(s) dropped, tokens ours {result.tokens} bare {bare_tokens}, "
            f"ours {ours:.2f} s, bare {bare:.2f} s, ratio {ours / bare:.3f}"
        )
    ratio = statistics.median(ratios)
    print(f"\nbundled SmolLM2-135M, {cards} cards per deck, {count} decks, {os.cpu_count()} CPU cores")
    print(f"mean attempts per deck {statistics.mean(attempts):.2f} (target at most 1.3)")
    print(
        f"median per deck {statistics.median(per_deck):.2f} s (target at most 5 s), "
        f"per card {statistics.median(per_card):.2f} s"
    )
    print(
        f"median ratio ours / bare llama-cpp calls with the same prompts, grammar and seed: {ratio:.3f} "
        f"({(ratio - 1) * 100:+.1f}% overhead; target under +10%)"
    )


RESOLVE = (
    "import time; started = time.perf_counter(); "
    "from core.models.sources import hub_choice, resolve_model; "
    "resolved = resolve_model(hub_choice()); "
    "print(resolved.choice.kind, time.perf_counter() - started)"
)


def offline(rounds: int) -> None:
    """Without a network: the Hub model's resolution (imports, Hub check, fallback) in a fresh process
    without HF_HUB_OFFLINE against with it, alternating. The cards command adds the same generation
    to both (same seed, same tokens), so this is the whole difference between the two commands."""
    base = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    times: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(rounds):
        for arm, env in (("without", base), ("with", {**base, "HF_HUB_OFFLINE": "1"})):
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", RESOLVE],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            times[arm].append(time.perf_counter() - started)
            if done.returncode != 0 or not done.stdout.startswith("bundled"):
                raise SystemExit(
                    f"resolving the Hub model failed ({arm} HF_HUB_OFFLINE): {done.stderr[-500:]}"
                )
    without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
    print(
        f"\nthe Hub model without a network, {rounds} fresh processes each: without HF_HUB_OFFLINE "
        f"{without:.2f} s, with it {with_:.2f} s, difference {without - with_:+.2f} s (target within 1 s)"
    )


CHILD = """
import resource, sys
sys.path.insert(0, {root!r})
from core.cards.generation import CardRequest, generate_cards
from core.models.gguf import GgufModel
from core.models.sources import bundled_path
model = GgufModel(bundled_path(), batch={batch}, verbose=True)  # llama.cpp logs its buffers
generate_cards(model, CardRequest(topic="volcanoes", count=5), seed=1)
print("RSS_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
NOTES = "Volcanoes are openings in the crust where magma reaches the surface as lava. " * 40


def prefill_seconds(model: GgufModel, messages: list) -> float:
    """Seconds to read a prompt (the only work the prompt batch changes) and write one token."""
    model.llama.reset()
    started = time.perf_counter()
    model.llama.create_chat_completion(messages=messages, max_tokens=1, temperature=0.0)
    return time.perf_counter() - started


def memory(rounds: int = 5) -> None:
    """llama.cpp's compute buffer and peak memory by prompt batch (n_batch = n_ubatch), and the time
    to read a long prompt (notes) at llama.cpp's default batch and at ours, alternating."""
    print("\nprompt batch: compute buffer (llama.cpp's log) and peak RSS after a 5-card deck")
    per_token = []
    for batch in BATCHES:
        done = subprocess.run(
            [sys.executable, "-c", CHILD.format(root=str(ROOT), batch=batch)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        buffer = re.search(r"CPU compute buffer size =\s*([\d.]+) MiB", done.stderr)
        rss = re.search(r"RSS_MB ([\d.]+)", done.stdout)
        if not buffer or not rss:
            raise SystemExit(f"the memory child failed: {done.stderr[-800:]}")
        mib = float(buffer.group(1))
        per_token.append(mib / batch)
        print(f"n_batch {batch}: compute buffer {mib:.1f} MiB, peak RSS {float(rss.group(1)):.0f} MB")
    vocab_share = statistics.mean(per_token) * 1024 * 1024 / (49_152 * 4)
    for batch in BATCHES:
        estimate = batch * LLAMA_1B_VOCAB * 4 * vocab_share / 1024 / 1024
        print(f"Llama 3.2 1B q8_0 estimate at n_batch {batch}: compute buffer about {estimate:.0f} MiB")
    models = {batch: GgufModel(bundled_path(), batch=batch) for batch in (512, DEFAULT_BATCH)}
    messages = build_messages(CardRequest(notes=NOTES, count=5), 6)
    tokens = len(gguf_prompt_tokens(models[512].llama, messages))
    times: dict[int, list[float]] = {batch: [] for batch in models}
    for _ in range(rounds):
        for batch, model in models.items():
            times[batch].append(prefill_seconds(model, messages))
    default, ours = statistics.median(times[512]), statistics.median(times[DEFAULT_BATCH])
    print(
        f"reading a {tokens}-token prompt, median of {rounds}: n_batch 512 {default:.2f} s, "
        f"n_batch {DEFAULT_BATCH} {ours:.2f} s, ratio {ours / default:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decks", type=int, default=10, help="decks to measure (default 10)")
    parser.add_argument("--cards", type=int, default=5, help="cards per deck (default 5)")
    parser.add_argument("--offline-rounds", type=int, default=5, help="processes per arm (default 5)")
    parser.add_argument("--skip-offline", action="store_true", help="leave out the no-network stall")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the compute buffers")
    args = parser.parse_args()
    decks(args.decks, args.cards)
    if not args.skip_offline:
        offline(args.offline_rounds)
    if not args.skip_memory:
        memory()


if __name__ == "__main__":
    main()
