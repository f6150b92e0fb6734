"""A run's variant answering a prompt set: the evaluation job and its results.

A variant is what answers: "adapter" (the run's base model in full precision with its LoRA
adapter, in transformers), "base" (the base model alone, the lab's T0 baseline) or
"gguf:FILE" (a GGUF file from the run's export, or any path, in llama-cpp on the CPU). Every
answer is greedy, limited to a fixed number of new tokens, and only the new tokens are
decoded. Results go to `<run>/eval/<variant>.jsonl` (`adapter`, `base`, `gguf-<file stem>`),
one row per prompt, written whole when the evaluation ends.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import first_line
from core.evaluate.checks import (
    FAIL,
    MAX_ANSWER_CHARS,
    NEEDS_JUDGE,
    PASS,
    answer_verdict,
    check_answer,
    passed_of,
    stored_verdict,
)
from core.evaluate.prompt_sets import EvalPrompt, PromptSet
from core.jobs.protocol import Progress
from core.models.generation import (
    InferenceError,
    check_adapter,
    greedy_generate,
    inference_placement,
    load_run_model,
    run_base_model,
)
from core.models.gguf import GgufModel, ModelError, gguf_greedy_with, gguf_prompt_tokens
from core.store.files import (
    finite_number,
    read_jsonl,
    write_jsonl_atomic,
)
from core.store.runs import (
    EVAL_DIR,
    GGUF_DIR,
    now_iso,
    read_run_folder,
    run_gguf_files,
)

DEFAULT_MAX_NEW_TOKENS = 256


MAX_NEW_TOKENS_LIMIT = 4096


VARIANT_FILE_PATTERN = re.compile(r"adapter|base|gguf-[A-Za-z0-9._-]{1,120}")


class EvalError(ValueError):
    """An evaluation that cannot run: a bad variant, a run without an adapter, no model."""


@dataclass(frozen=True)
class Variant:
    """What answers: kind "adapter", "base" or "gguf"; `file_name` names its results file."""

    kind: str
    file_name: str
    gguf_path: Path | None = None


def _safe_stem(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", path.stem)[:120] or "model"


def _find_gguf(run_path: Path, name: str) -> Path:
    found = run_gguf_files(run_path)
    if not name:
        if len(found) == 1:
            return found[0]
        listed = ", ".join(p.name for p in found) or "none"
        raise EvalError(f"name the GGUF file as gguf:FILE; run {run_path.name} has {listed} in {GGUF_DIR}/")
    if "/" not in name:
        folder = run_path / GGUF_DIR
        for candidate in (folder / name, folder / f"{name}.gguf"):
            if candidate in found:
                return candidate
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    raise EvalError(
        f"no GGUF file {name!r} in {run_path.name}/{GGUF_DIR}/ or at that path"
        + (f"; the run has {', '.join(p.name for p in found)}" if found else "; export the run first")
    )


def parse_variant(run_path: Path, spec: str) -> Variant:
    """The variant `spec` ("adapter", "base", "gguf:FILE" or "gguf") of the run at `run_path`."""
    if spec in ("adapter", "base"):
        return Variant(spec, spec)
    kind, colon, name = spec.partition(":")
    if kind == "gguf":
        path = _find_gguf(run_path, name.strip() if colon else "")
        return Variant("gguf", f"gguf-{_safe_stem(path)}", path)
    raise EvalError(f"unknown variant {spec!r}: use adapter, base or gguf:FILE")


def variant_label(file_name: str) -> str:
    """A variant as the pages and the command line name it: `adapter`, `base` or `gguf:FILE.gguf`
    (results files are named `gguf-<file stem>`)."""
    return f"gguf:{file_name[len('gguf-') :]}.gguf" if file_name.startswith("gguf-") else file_name


def _messages(prompt: EvalPrompt) -> list[dict[str, str]]:
    """The chat a prompt is asked in: the prompt alone, as the user's turn."""
    return [{"role": "user", "content": prompt.prompt}]


def gguf_model_for(path: Path, prompts: Sequence[EvalPrompt], max_new_tokens: int) -> GgufModel:
    """The GGUF model at `path`, loaded with a context that holds its longest prompt (in its chat
    template) plus `max_new_tokens`.

    Counting a prompt's tokens needs the loaded model: it is loaded again, with that context,
    when its default context is too small. A GGUF without a chat template keeps the default
    (every answer then says that the template is missing).
    """
    model = GgufModel(path)
    try:
        longest = max(len(gguf_prompt_tokens(model.llama, _messages(prompt))) for prompt in prompts)
    except InferenceError:
        return model
    needed = longest + max_new_tokens
    if needed <= model.context:
        return model
    model.llama.close()  # one model in memory at a time
    return GgufModel(path, context=needed)


def _answerer(
    run_path: Path, variant: Variant, prompts: Sequence[EvalPrompt], max_new_tokens: int
) -> tuple[Callable[[list[dict]], Any], str]:
    """A function from messages to a Generation, and a label of the model that answers."""
    try:
        if variant.kind == "gguf":
            assert variant.gguf_path is not None
            card_model = gguf_model_for(variant.gguf_path, prompts, max_new_tokens)
            return (lambda messages: gguf_greedy_with(card_model, messages, max_new_tokens)), str(
                variant.gguf_path
            )
        device, dtype = inference_placement()
        model, tokenizer = load_run_model(
            run_path, adapter=variant.kind == "adapter", dtype=dtype, device=device
        )
        base = run_base_model(run_path)
    except (InferenceError, ModelError) as exc:
        raise EvalError(first_line(exc)) from None
    label = f"{base} + {run_path.name}/adapter" if variant.kind == "adapter" else base
    return (lambda messages: greedy_generate(model, tokenizer, messages, max_new_tokens)), label


def check_request(run_path: Path, variant: str, max_new_tokens: int) -> Variant:
    """The variant to evaluate, after refusing with the reason what cannot run: a bad variant or
    token limit, a broken run, an imported (metrics-only) run's adapter or GGUF, a missing adapter."""
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or not 1 <= max_new_tokens <= MAX_NEW_TOKENS_LIMIT
    ):
        raise EvalError(f"max_new_tokens must be from 1 to {MAX_NEW_TOKENS_LIMIT} (got {max_new_tokens!r})")
    run = read_run_folder(run_path)
    if not run.config:
        raise EvalError(
            f"run {run.name} cannot be evaluated: {'; '.join(run.problems) or 'config.json is empty'}"
        )
    if run.imported and variant != "base":
        raise EvalError(
            f"run {run.name} was imported with metrics only: it has no adapter or "
            "GGUF to evaluate (--variant base evaluates its base model)"
        )
    chosen = parse_variant(run_path, variant)
    if chosen.kind == "adapter":
        try:
            check_adapter(run_path)
        except InferenceError as exc:
            raise EvalError(str(exc)) from None
    return chosen


def evaluate_run(
    run_path: Path,
    variant: str,
    prompt_set: PromptSet,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Answer every prompt of the set with the run's `variant`, check the answers, and write
    `<run>/eval/<variant file>.jsonl` whole at the end (replacing an earlier evaluation).

    `progress(text, fraction)` hears of the model loading and of each answer.
    """
    report = progress or (lambda text, fraction: None)
    chosen = check_request(run_path, variant, max_new_tokens)
    report(f"loading the model ({chosen.file_name})", 0.0)
    answer, model_label = _answerer(run_path, chosen, prompt_set.prompts, max_new_tokens)
    rows: list[dict[str, Any]] = []
    total = len(prompt_set.prompts)
    for number, prompt in enumerate(prompt_set.prompts, 1):
        row: dict[str, Any] = {
            "variant": chosen.file_name,
            "prompt_set": prompt_set.name,
            "prompt_id": prompt.id,
            "prompt": prompt.prompt,
        }
        try:
            generation = answer(_messages(prompt))
        except InferenceError as exc:
            checks = [{"name": "generation", "passed": False, "verdict": FAIL, "detail": str(exc)}]
            row |= {
                "answer": "",
                "checks": checks,
                "passed": False,
                "verdict": FAIL,
                "latency_s": None,
                "new_tokens": 0,
                "prompt_tokens": None,
                "error": str(exc),
            }
        else:
            row |= {
                "answer": generation.text,
                **checked_answer(prompt, generation.text),
                "latency_s": round(generation.seconds, 3),
                "new_tokens": len(generation.token_ids),
                "prompt_tokens": generation.prompt_tokens,
            }
        row |= {"max_new_tokens": max_new_tokens, "model": model_label, "created_at": now_iso()}
        rows.append(row)
        passed, judge, checks = tally([stored_verdict(check) for check in row["checks"]])
        latency = (
            "no answer"
            if row["latency_s"] is None
            else f"{row['latency_s']:.2f} s, {row['new_tokens']} tokens"
        )
        report(
            f"[{number}/{total}] {prompt.id}: {pass_text(passed, judge, checks, 'checks')}, {latency}",
            number / total,
        )
    folder = run_path / EVAL_DIR
    folder.mkdir(exist_ok=True)
    write_jsonl_atomic(folder / f"{chosen.file_name}.jsonl", rows)
    return rows


def find_prompt(prompt_set: PromptSet, prompt_id: str) -> EvalPrompt:
    """The prompt of the set with this id; EvalError names the set's prompts when there is none."""
    for prompt in prompt_set.prompts:
        if prompt.id == prompt_id:
            return prompt
    raise EvalError(
        f"prompt set {prompt_set.name!r} has no prompt {prompt_id!r}; its prompts: "
        + ", ".join(prompt.id for prompt in prompt_set.prompts)
    )


def try_answer(prompt: EvalPrompt, answer: str) -> dict[str, Any]:
    """A person's answer to `prompt` checked (checked_answer), after refusing one longer than
    MAX_ANSWER_CHARS (EvalError)."""
    if len(answer) > MAX_ANSWER_CHARS:
        raise EvalError(f"the answer is {len(answer)} characters long (at most {MAX_ANSWER_CHARS})")
    return checked_answer(prompt, answer)


def checked_answer(prompt: EvalPrompt, answer: str) -> dict[str, Any]:
    """The checks of `prompt` (and leakage) on `answer`, as an eval row holds them: `checks` (each
    as CheckResult.as_dict), the answer's `verdict` (answer_verdict) and `passed` (passed_of)."""
    checks = [result.as_dict() for result in check_answer(list(prompt.checks), answer, prompt.prompt)]
    verdict = answer_verdict(checks)
    return {"checks": checks, "passed": passed_of(verdict), "verdict": verdict}


def tally(verdicts: Sequence[str]) -> tuple[int, int, int]:
    """(answers that passed all their checks, answers that need a judge, answers) of answers'
    verdicts: the one pass count every view shows. An answer that needs a judge has not passed."""
    return verdicts.count(PASS), verdicts.count(NEEDS_JUDGE), len(verdicts)


def pass_count(rows: Sequence[Mapping[str, Any]]) -> tuple[int, int, int]:
    """The tally of eval rows (their stored verdicts)."""
    return tally([stored_verdict(row) for row in rows])


def pass_text(passed: int, judge: int, total: int, counted: str = "") -> str:
    """ "7/10 passed, 1 needs a judge" (the judge part only when there is one); with `counted`
    "checks": "1/2 checks passed, 1 needs a judge"."""
    return f"{passed}/{total}{' ' * bool(counted)}{counted} passed" + (
        f", {judge} need{'s' * (judge == 1)} a judge" if judge else ""
    )


def variant_summaries(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One summary per evaluated variant (load_eval_results' shape): its name as the command line
    says it, prompt set, answers that passed all their checks, mean latency and date; None where
    the rows do not say (they may come from anywhere)."""
    summaries = []
    for name, rows in results.items():
        if not rows:
            continue
        latencies = [value for row in rows if (value := finite_number(row.get("latency_s"))) is not None]
        summaries.append(
            {
                "variant": variant_label(name),
                "prompt_set": text_or_none(rows[0].get("prompt_set")),
                "passed": pass_text(*pass_count(rows)),
                "mean_latency_s": round(sum(latencies) / len(latencies), 2) if latencies else None,
                "evaluated": text_or_none(rows[0].get("created_at")),
            }
        )
    return summaries


def text_or_none(value: Any) -> str | None:
    """A stored value as text, or None when it is missing or not text."""
    return value if isinstance(value, str) and value else None


def summary_line(rows: list[dict[str, Any]]) -> str:
    """ "adapter: 7/10 passed, 1 needs a judge": answers that passed all their checks."""
    variant = rows[0]["variant"] if rows else "?"
    return f"{variant}: {pass_text(*pass_count(rows))}"


def _variant_order(name: str) -> tuple[int, str]:
    return (0 if name == "adapter" else 2 if name == "base" else 1), name


def load_eval_results(run_path: Path) -> dict[str, list[dict[str, Any]]]:
    """The run's eval results: variant file name -> rows. Unreadable lines and files are skipped."""
    folder = run_path / EVAL_DIR
    if not folder.is_dir():
        return {}
    results: dict[str, list[dict[str, Any]]] = {}
    for path in folder.glob("*.jsonl"):
        if not VARIANT_FILE_PATTERN.fullmatch(path.stem):
            continue
        try:
            rows, _ = read_jsonl(path)
        except OSError:
            continue
        rows = [row for row in rows if isinstance(row.get("prompt_id"), str)]
        if rows:
            results[path.stem] = rows
    return dict(sorted(results.items(), key=lambda item: _variant_order(item[0])))
