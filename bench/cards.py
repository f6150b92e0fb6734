"""Study-card generation with the bundled model: attempts per deck, seconds per deck and card,
our time per generated token against llama-cpp-python's own chat completion of the same prompts
(same grammar, seed and sampling settings), the Hub stall without a network, and llama.cpp's
compute buffer by prompt batch.

Run: make bench (or .venv/bin/python bench/cards.py [--decks N] [--skip-offline] [--skip-memory]).
Prints medians and ratios measured in this run on this machine. Targets: mean attempts per deck
at most 1.3, a 5-card deck at most 5 s (median), per-token time at most 1.10 x llama-cpp-python's,
and the cards command without a network and without HF_HUB_OFFLINE within 1 s of the same command
with it. Run it on a quiet machine: the decode threads are chosen by timing, and another busy
process makes one thread the faster choice.
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
from core.models.gguf import DEFAULT_BATCH, DecodeThreads, GgufModel, gguf_prompt_tokens  # noqa: E402
from core.models.sources import bundled_path  # noqa: E402

TOPICS = ("the water cycle", "volcanoes", "the Roman Empire", "photosynthesis", "prime numbers")
BATCHES = (512, DEFAULT_BATCH, 32)
# Llama 3.2 1B (the lab's default card model): its vocabulary, for the compute-buffer estimate.
LLAMA_1B_VOCAB = 128_256


class RecordingModel:
    """Our GgufModel, with every chat call's arguments and time in llama.cpp kept, so the bench can
    replay them bare and tell our own work (prompts, rules, parsing) from the model's."""

    def __init__(self, model: GgufModel):
        self.model, self.calls, self.seconds = model, [], 0.0
        self.context, self.count_tokens = model.context, model.count_tokens

    def chat(self, messages, **options):
        self.calls.append((messages, options))
        self.model.llama.reset()  # cold, as the bare calls: no prompt read in an earlier call is reused
        reply = self.model.chat(messages, **options)
        self.seconds += reply.seconds
        return reply


def replay_bare(model: GgufModel, calls: list) -> tuple[float, int]:
    """The same calls as llama-cpp-python's own chat completions: seconds and tokens generated."""
    started, tokens = time.perf_counter(), 0
    for messages, options in calls:
        model.llama.reset()  # no prompt-prefix cache from an earlier call
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


def pin_threads(model: GgufModel, threads: int | None) -> None:
    """Decode threads chosen by timing (None), or `threads` always, for ours and the bare calls."""
    model.threads = DecodeThreads(model.llama, choices=None if threads is None else [threads])
    model.threads.next()  # set in llama.cpp now: the bare calls decode with it too


def one_deck(model: GgufModel, index: int, cards: int) -> tuple[object, RecordingModel, float]:
    """A deck of the index-th topic: the result, the recorded calls and the wall time."""
    recorder = RecordingModel(model)
    started = time.perf_counter()
    result = generate_cards(recorder, CardRequest(topic=TOPICS[index % len(TOPICS)], count=cards), seed=index)
    return result, recorder, time.perf_counter() - started


def decks(count: int, cards: int) -> None:
    """Attempts, seconds and per-token time per deck: ours with the decode threads chosen by timing,
    ours with llama-cpp-python's one decode thread, and llama-cpp-python's own chat completion of
    the same calls, in turn."""
    model = GgufModel(bundled_path())
    per_deck, per_card, attempts, one_thread, ratios, ratios_one, own_work = [], [], [], [], [], [], []
    for index in range(count):
        pin_threads(model, None)
        result, recorder, ours = one_deck(model, index, cards)
        winner = min(
            model.threads.timings, key=lambda n: statistics.median(model.threads.timings[n] or [9.9])
        )
        pin_threads(model, model.llama.n_threads)  # llama-cpp-python's default decode threads
        single, _, ours_one = one_deck(model, index, cards)
        bare, bare_tokens = replay_bare(model, recorder.calls)
        per_token = bare / bare_tokens
        ratios.append(ours / result.tokens / per_token)
        ratios_one.append(ours_one / single.tokens / per_token)
        own_work.append(ours / recorder.seconds)
        per_deck.append(ours)
        one_thread.append(ours_one)
        per_card.append(ours / max(1, len(result.cards)))
        attempts.append(result.attempts)
        print(
            f"deck {index + 1}: {len(result.cards)} cards, {result.attempts} attempt(s), "
            f"{len(result.rejected)} candidate(s) dropped, {result.tokens} tokens, {ours:.2f} s "
            f"({winner} decode thread(s) won); one thread {ours_one:.2f} s; llama-cpp-python "
            f"{bare_tokens} tokens {bare:.2f} s"
        )
    print(f"\nbundled SmolLM2-135M, {cards} cards per deck, {count} decks, {os.cpu_count()} CPU cores")
    print(f"mean attempts per deck {statistics.mean(attempts):.2f} (target at most 1.3)")
    print(
        f"median per deck {statistics.median(per_deck):.2f} s (target at most 5 s), "
        f"per card {statistics.median(per_card):.2f} s; with one decode thread {statistics.median(one_thread):.2f} s"
    )
    print(
        f"median time per generated token, ours / llama-cpp-python's chat completion of the same calls: "
        f"{statistics.median(ratios):.3f} (one decode thread: {statistics.median(ratios_one):.3f}; "
        f"target at most 1.10)"
    )
    print(
        f"median deck time / time inside llama.cpp calls: {statistics.median(own_work):.3f} "
        "(prompts, card rules and parsing)"
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
