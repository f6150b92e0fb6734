"""The Arena's streaming on the CPU: time to the first token for two GGUF runs (cold: the model
loaded by the pool first; warm: already in the pool), and tokens per second of our streaming
(pool + stream_answer, as the page runs it) against bare llama-cpp streaming the same prompt
with the same settings from its own Llama object.

Run: make bench (or .venv/bin/python bench/arena.py [--rounds N] [--gguf FILE]). The two runs'
export is the bundled SmolLM2-135M Q4_1 (or FILE), copied into a temporary runs root. Prints
medians measured in this run on this machine. Targets: first token under 1 s, bare tokens/s
over ours at most 1.1.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.evaluate.arena import contenders, messages_for, stream_answer  # noqa: E402
from core.evaluate.prompt_sets import resolve_prompt_set  # noqa: E402
from core.models.gguf import GgufModel  # noqa: E402
from core.models.pool import ModelPool  # noqa: E402
from core.models.sources import bundled_path  # noqa: E402
from core.store.runs import create_run, initial_status  # noqa: E402
from core.train.presets import get_preset  # noqa: E402

MAX_TOKENS = 64
PROMPTS = 5  # the first prompts of the lab set


def make_runs(root: Path, gguf: Path) -> None:
    """Two completed runs, `arena_a` and `arena_b`, whose export is `gguf`."""
    for name in ("arena_a", "arena_b"):
        run = create_run(root, name, get_preset("cpu_smoke").config(), status=initial_status("completed", 1))
        (run / "gguf").mkdir()
        shutil.copyfile(gguf, run / "gguf" / f"{name}.gguf")


def bare_stream(llama, prompt: str) -> tuple[int, float, float]:
    """llama-cpp's own streaming chat completion: content pieces, seconds to the first and to the last one."""
    started, pieces, first = time.perf_counter(), 0, 0.0
    for chunk in llama.create_chat_completion(
        messages=messages_for(prompt), max_tokens=MAX_TOKENS, temperature=0.0, repeat_penalty=1.0, stream=True
    ):
        if chunk["choices"][0].get("delta", {}).get("content"):
            pieces += 1
            first = first or time.perf_counter() - started
    return pieces, first, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gguf", type=Path, default=bundled_path())
    args = parser.parse_args()
    prompts = [p.prompt for p in resolve_prompt_set(ROOT, None).prompts][:PROMPTS]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "runs"
        make_runs(root, args.gguf)
        pair = contenders(root, adapters=False)
        cold, warm, bare_first, ours, bare = [], [], [], [], []
        for round_number in range(args.rounds):
            pool = ModelPool(1 << 30)
            for contender in pair:  # cold: each run's model loaded by the pool for its first answer
                stream = stream_answer(pool, contender, prompts[round_number % len(prompts)], 8)
                for _ in stream:
                    break
                if stream.first_token_s is not None:  # None: the model ended its answer at once
                    cold.append(stream.first_token_s)
            bare_model = GgufModel(pair[0].path)
            for prompt in prompts:  # alternating arms, the KV cache reset before each answer
                for contender in pair:
                    for entry in pool.entries.values():
                        entry.model.llama.reset()
                    stream = stream_answer(pool, contender, prompt, MAX_TOKENS)
                    for _ in stream:
                        pass
                    if stream.tokens:
                        warm.append(stream.first_token_s)
                        ours.append(stream.tokens / stream.seconds)
                bare_model.llama.reset()
                pieces, first, seconds = bare_stream(bare_model.llama, prompt)
                if pieces:
                    bare_first.append(first)
                    bare.append(pieces / seconds)
            bare_model.llama.close()
    print(
        f"first token, cold (model loaded by the pool): median {statistics.median(cold):.3f} s, max {max(cold):.3f} s"
    )
    print(
        f"first token, warm (model in the pool): median {statistics.median(warm):.3f} s, max {max(warm):.3f} s"
    )
    print(f"first token, bare llama-cpp (model loaded): median {statistics.median(bare_first):.3f} s")
    ours_median, bare_median = statistics.median(ours), statistics.median(bare)
    print(
        f"tokens/s, our streaming: median {ours_median:.1f} ({len(ours)} answers of up to {MAX_TOKENS} tokens)"
    )
    print(f"tokens/s, bare llama-cpp: median {bare_median:.1f} ({len(bare)} answers)")
    print(f"ratio bare/ours: {bare_median / ours_median:.3f} (target at most 1.1)")


if __name__ == "__main__":
    main()
