"""Evaluation: prompt sets, a run's variant answering them, the results and a person's ratings.

A prompt set is JSON: `{"name", "title", "prompts": [{"id", "prompt", "checks": [...]}]}`
(checks as in core/checks.py). The lab's set ships in data/eval_prompts.json; users keep
their own in `<runs root>/.prompt_sets/<name>.json`.

A variant is what answers: "adapter" (the run's base model in full precision with its LoRA
adapter, in transformers), "base" (the base model alone, the lab's T0 baseline) or
"gguf:FILE" (a GGUF file from the run's export, or any path, in llama-cpp on the CPU). Every
answer is greedy, limited to a fixed number of new tokens, and only the new tokens are
decoded. Results go to `<run>/eval/<variant>.jsonl` (`adapter`, `base`, `gguf-<file stem>`),
one row per prompt, written whole when the evaluation ends.

A person's ratings go to `<run>/ratings.json`: variant -> prompt id -> `{"rating": 1-5 or
null, "note", "answer_sha256"}`, the last being the SHA-256 of the answer text that was rated.
A rating applies only to that answer: once a new evaluation gives a different answer, the
rating is no longer shown (rating_applies), though it stays in the file until the person
rates the new answer. Entries written before answer_sha256 was recorded cannot be matched;
they apply to whatever answer is there, as they did before.
"""

from __future__ import annotations

import difflib
import fcntl
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from core.checks import CheckSpecError, check_answer, check_name, validate_check
from core.errors import first_line
from core.files import FileProblem, read_json_object, read_jsonl, write_json_atomic, write_jsonl_atomic
from core.inference import (
    InferenceError,
    check_adapter,
    gguf_greedy_with,
    gguf_prompt_tokens,
    greedy_generate,
    inference_placement,
    load_run_model,
    run_base_model,
)
from core.jobs import Progress
from core.llm import CardModel, ModelError
from core.paths import DATA_DIR
from core.runs import EVAL_DIR, GGUF_DIR, RATINGS_FILE, RUN_NAME_PATTERN, now_iso, read_run_folder


LAB_SET_FILE = DATA_DIR / "eval_prompts.json"
LAB_SET_NAME = "lab"
PROMPT_SETS_DIR = ".prompt_sets"
JSON_SUFFIX = ".json"
DEFAULT_MAX_NEW_TOKENS = 256
MAX_NEW_TOKENS_LIMIT = 4096
MAX_NOTE_CHARS = 2000
ANSWER_HASH_FIELD = "answer_sha256"  # in ratings.json: which answer a rating rates
MAX_PROMPTS = 200
MAX_PROMPT_CHARS = 4000
NAME_PATTERN = RUN_NAME_PATTERN  # prompt set names are file names too
VARIANT_FILE_PATTERN = re.compile(r"adapter|base|gguf-[A-Za-z0-9._-]{1,120}")


class PromptSetError(ValueError):
    """A prompt set that cannot be used; the message names the prompt and check at fault."""


class EvalError(ValueError):
    """An evaluation that cannot run: a bad variant, a run without an adapter, no model."""


class RatingError(ValueError):
    """A rating or note that cannot be saved."""


# --- prompt sets -------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalPrompt:
    """One prompt and the checks its answer must pass (leakage is always checked too)."""

    id: str
    prompt: str
    checks: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class PromptSet:
    """A named set of prompts."""

    name: str
    title: str
    prompts: tuple[EvalPrompt, ...]

    def as_json(self) -> dict[str, Any]:
        """The set in its JSON schema."""
        return {"name": self.name, "title": self.title,
                "prompts": [{"id": p.id, "prompt": p.prompt, "checks": list(p.checks)} for p in self.prompts]}


def _unknown_keys(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            raise PromptSetError(f"{where}: unknown field {key!r}" + (f" (did you mean {hint[0]}?)" if hint else
                                                                        f"; fields: {', '.join(allowed)}"))


def _parse_prompt(data: object, number: int, seen: set[str]) -> EvalPrompt:
    where = f"prompt #{number}"
    if not isinstance(data, dict):
        raise PromptSetError(f"{where}: must be a JSON object with id, prompt and checks")
    prompt_id = data.get("id")
    if not isinstance(prompt_id, str) or not NAME_PATTERN.fullmatch(prompt_id):
        raise PromptSetError(f"{where}: id must be 1-64 letters, digits, '.', '_' or '-' (got {prompt_id!r})")
    where = f"prompt {prompt_id!r} (#{number})"
    if prompt_id in seen:
        raise PromptSetError(f"{where}: another prompt has the id {prompt_id!r}")
    seen.add(prompt_id)
    _unknown_keys(data, ("id", "prompt", "checks"), where)
    text = data.get("prompt")
    if not isinstance(text, str) or not text.strip():
        raise PromptSetError(f"{where}: prompt must be a non-empty string")
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptSetError(f"{where}: prompt is {len(text)} characters long (at most {MAX_PROMPT_CHARS})")
    checks = data.get("checks", [])
    if not isinstance(checks, list):
        raise PromptSetError(f"{where}: checks must be a list of checks")
    names: set[str] = set()
    for index, spec in enumerate(checks, 1):
        try:
            validate_check(spec)
        except CheckSpecError as exc:
            raise PromptSetError(f"{where}, check {index}: {exc}") from None
        name = check_name(spec)
        if name in names:
            raise PromptSetError(f"{where}, check {index}: two checks are named {name!r}; give one a \"name\"")
        names.add(name)
    return EvalPrompt(prompt_id, text, tuple(checks))


def parse_prompt_set(data: object) -> PromptSet:
    """A validated PromptSet from parsed JSON; PromptSetError names the prompt and check at fault."""
    if not isinstance(data, dict):
        raise PromptSetError(f"a prompt set must be a JSON object with name, title and prompts "
                             f"(got {type(data).__name__})")
    _unknown_keys(data, ("name", "title", "prompts"), "the set")
    name = data.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise PromptSetError(f"name must be 1-64 letters, digits, '.', '_' or '-' (got {name!r})")
    title = data.get("title", name)
    if not isinstance(title, str):
        raise PromptSetError("title must be a string")
    prompts = data.get("prompts")
    if not isinstance(prompts, list) or not prompts:
        raise PromptSetError("prompts must be a non-empty list")
    if len(prompts) > MAX_PROMPTS:
        raise PromptSetError(f"{len(prompts)} prompts (at most {MAX_PROMPTS})")
    seen: set[str] = set()
    return PromptSet(name, title.strip() or name, tuple(_parse_prompt(p, n, seen) for n, p in enumerate(prompts, 1)))


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PromptSetError(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


def load_prompt_set(path: Path) -> PromptSet:
    """The prompt set in the JSON file at `path`; PromptSetError says which file and why."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptSetError(f"cannot read {path}: {exc}") from None
    try:
        return parse_prompt_set(_json(text))
    except PromptSetError as exc:
        raise PromptSetError(f"{path.name}: {exc}") from None


def prompt_sets_dir(runs_root: Path) -> Path:
    """Where users' prompt sets are kept."""
    return runs_root / PROMPT_SETS_DIR


@dataclass(frozen=True)
class PromptSetEntry:
    """One prompt set on offer: the set, or why it cannot be used."""

    name: str
    path: Path
    prompt_set: PromptSet | None
    problem: str | None
    bundled: bool


def _is_file_spec(spec: str) -> bool:
    """True when resolve_prompt_set reads `spec` as the path of a JSON file rather than a set name."""
    return spec.lower().endswith(JSON_SUFFIX) or "/" in spec or "\\" in spec


def set_name_problem(name: object) -> str | None:
    """Why `name` cannot name a user's prompt set, or None when it can.

    A name ending in ".json" is refused: resolve_prompt_set reads such a name as a file path.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        return f"set name must be 1-64 letters, digits, '.', '_' or '-' (got {name!r})"
    if name == LAB_SET_NAME:
        return f"{LAB_SET_NAME!r} is the bundled set's name; choose another"
    if _is_file_spec(name):
        return f"set name {name!r} ends in {JSON_SUFFIX}, which names a file; leave the {JSON_SUFFIX} out"
    return None


def list_prompt_sets(runs_root: Path) -> list[PromptSetEntry]:
    """The bundled lab set first, then the users' sets by name; broken files carry their problem."""
    entries = [PromptSetEntry(LAB_SET_NAME, LAB_SET_FILE, load_prompt_set(LAB_SET_FILE), None, True)]
    folder = prompt_sets_dir(runs_root)
    paths = sorted(folder.glob(f"*{JSON_SUFFIX}")) if folder.is_dir() else []
    for path in paths:
        if path.name.startswith("."):
            continue
        name = path.stem
        problem, loaded = None, None
        if reason := set_name_problem(name):
            problem = f"{path.name}: the file name is not a usable set name ({reason})"
        else:
            try:
                loaded = load_prompt_set(path)
            except PromptSetError as exc:
                problem = str(exc)
        entries.append(PromptSetEntry(name, path, loaded, problem, False))
    return entries


def save_prompt_set(runs_root: Path, name: str, text: str) -> PromptSet:
    """Validate the JSON `text` and store it as the user's set `name` (the name given wins)."""
    if problem := set_name_problem(name):
        raise PromptSetError(problem)
    data = _json(text)
    if isinstance(data, dict):
        data = {**data, "name": name}
    prompt_set = parse_prompt_set(data)
    folder = prompt_sets_dir(runs_root)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / f"{name}{JSON_SUFFIX}", prompt_set.as_json())
    return prompt_set


def resolve_prompt_set(runs_root: Path, spec: str | None) -> PromptSet:
    """The set named `spec` ("lab", a user's set) or in the .json file `spec`; default: the lab's."""
    if not spec or spec == LAB_SET_NAME:
        return load_prompt_set(LAB_SET_FILE)
    if _is_file_spec(spec):
        return load_prompt_set(Path(spec).expanduser())
    path = prompt_sets_dir(runs_root) / f"{spec}{JSON_SUFFIX}"
    if NAME_PATTERN.fullmatch(spec) and path.is_file():
        return load_prompt_set(path)
    known = ", ".join(entry.name for entry in list_prompt_sets(runs_root)
                      if entry.bundled or not set_name_problem(entry.name))
    raise PromptSetError(f"no prompt set named {spec!r}; sets: {known} (or give the path of a .json file)")


# --- variants ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """What answers: kind "adapter", "base" or "gguf"; `file_name` names its results file."""

    kind: str
    file_name: str
    gguf_path: Path | None = None


def _safe_stem(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", path.stem)[:120] or "model"


def _find_gguf(run_path: Path, name: str) -> Path:
    folder = run_path / GGUF_DIR
    if not name:
        found = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
        if len(found) == 1:
            return found[0]
        listed = ", ".join(p.name for p in found) or "none"
        raise EvalError(f"name the GGUF file as gguf:FILE; run {run_path.name} has {listed} in {GGUF_DIR}/")
    for candidate in (folder / name, folder / f"{name}.gguf"):
        if "/" not in name and candidate.is_file():
            return candidate
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    found = sorted(p.name for p in folder.glob("*.gguf")) if folder.is_dir() else []
    raise EvalError(f"no GGUF file {name!r} in {run_path.name}/{GGUF_DIR}/ or at that path"
                    + (f"; the run has {', '.join(found)}" if found else "; export the run first"))


def parse_variant(run_path: Path, spec: str) -> Variant:
    """The variant `spec` ("adapter", "base", "gguf:FILE" or "gguf") of the run at `run_path`."""
    if spec in ("adapter", "base"):
        return Variant(spec, spec)
    kind, colon, name = spec.partition(":")
    if kind == "gguf":
        path = _find_gguf(run_path, name.strip() if colon else "")
        return Variant("gguf", f"gguf-{_safe_stem(path)}", path)
    raise EvalError(f"unknown variant {spec!r}: use adapter, base or gguf:FILE")


# --- evaluation --------------------------------------------------------------------------


def _messages(prompt: EvalPrompt) -> list[dict[str, str]]:
    """The chat a prompt is asked in: the prompt alone, as the user's turn."""
    return [{"role": "user", "content": prompt.prompt}]


def gguf_model_for(path: Path, prompts: Sequence[EvalPrompt], max_new_tokens: int) -> CardModel:
    """The GGUF model at `path`, loaded with a context that holds its longest prompt (in its chat
    template) plus `max_new_tokens`.

    Counting a prompt's tokens needs the loaded model: it is loaded again, with that context,
    when its default context is too small. A GGUF without a chat template keeps the default
    (every answer then says that the template is missing).
    """
    model = CardModel(path)
    try:
        longest = max(len(gguf_prompt_tokens(model.llama, _messages(prompt))) for prompt in prompts)
    except InferenceError:
        return model
    needed = longest + max_new_tokens
    if needed <= model.context:
        return model
    model.llama.close()  # one model in memory at a time
    return CardModel(path, context=needed)


def _answerer(run_path: Path, variant: Variant, prompts: Sequence[EvalPrompt],
              max_new_tokens: int) -> tuple[Callable[[list[dict]], Any], str]:
    """A function from messages to a Generation, and a label of the model that answers."""
    try:
        if variant.kind == "gguf":
            assert variant.gguf_path is not None
            card_model = gguf_model_for(variant.gguf_path, prompts, max_new_tokens)
            return (lambda messages: gguf_greedy_with(card_model, messages, max_new_tokens)), str(variant.gguf_path)
        device, dtype = inference_placement()
        model, tokenizer = load_run_model(run_path, adapter=variant.kind == "adapter", dtype=dtype, device=device)
        base = run_base_model(run_path)
    except (InferenceError, ModelError) as exc:
        raise EvalError(first_line(exc)) from None
    label = f"{base} + {run_path.name}/adapter" if variant.kind == "adapter" else base
    return (lambda messages: greedy_generate(model, tokenizer, messages, max_new_tokens)), label


def check_request(run_path: Path, variant: str, max_new_tokens: int) -> Variant:
    """The variant to evaluate, after refusing with the reason what cannot run: a bad variant or
    token limit, a broken run, an imported (metrics-only) run's adapter or GGUF, a missing adapter."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or not 1 <= max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
        raise EvalError(f"max_new_tokens must be from 1 to {MAX_NEW_TOKENS_LIMIT} (got {max_new_tokens!r})")
    run = read_run_folder(run_path)
    if not run.config:
        raise EvalError(f"run {run.name} cannot be evaluated: {'; '.join(run.problems) or 'config.json is empty'}")
    if run.imported and variant != "base":
        raise EvalError(f"run {run.name} was imported from a CSV and holds metrics only: it has no adapter or "
                        "GGUF to evaluate (--variant base evaluates its base model)")
    chosen = parse_variant(run_path, variant)
    if chosen.kind == "adapter":
        try:
            check_adapter(run_path)
        except InferenceError as exc:
            raise EvalError(str(exc)) from None
    return chosen


def evaluate_run(run_path: Path, variant: str, prompt_set: PromptSet, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 progress: Progress | None = None) -> list[dict[str, Any]]:
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
        row: dict[str, Any] = {"variant": chosen.file_name, "prompt_set": prompt_set.name, "prompt_id": prompt.id,
                               "prompt": prompt.prompt}
        try:
            generation = answer(_messages(prompt))
        except InferenceError as exc:
            checks = [{"name": "generation", "passed": False, "detail": str(exc)}]
            row |= {"answer": "", "checks": checks, "passed": False, "latency_s": None, "new_tokens": 0,
                    "prompt_tokens": None, "error": str(exc)}
        else:
            checks = [result.as_dict() for result in check_answer(list(prompt.checks), generation.text, prompt.prompt)]
            row |= {"answer": generation.text, "checks": checks, "passed": all(c["passed"] for c in checks),
                    "latency_s": round(generation.seconds, 3), "new_tokens": len(generation.token_ids),
                    "prompt_tokens": generation.prompt_tokens}
        row |= {"max_new_tokens": max_new_tokens, "model": model_label, "created_at": now_iso()}
        rows.append(row)
        passed = sum(1 for c in row["checks"] if c["passed"])
        latency = "no answer" if row["latency_s"] is None else f"{row['latency_s']:.2f} s, {row['new_tokens']} tokens"
        report(f"[{number}/{total}] {prompt.id}: {passed}/{len(row['checks'])} checks passed, {latency}",
               number / total)
    folder = run_path / EVAL_DIR
    folder.mkdir(exist_ok=True)
    write_jsonl_atomic(folder / f"{chosen.file_name}.jsonl", rows)
    return rows


def summary_line(rows: list[dict[str, Any]]) -> str:
    """"adapter: 7/10 prompts passed all checks"."""
    variant = rows[0]["variant"] if rows else "?"
    return f"{variant}: {sum(1 for row in rows if row.get('passed') is True)}/{len(rows)} prompts passed all checks"


# --- results and ratings -----------------------------------------------------------------


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


def answer_sha256(answer: str) -> str:
    """What ties a rating to the answer it rates: the SHA-256 (hex) of the answer's UTF-8 text."""
    return hashlib.sha256(answer.encode("utf-8", errors="surrogatepass")).hexdigest()


def rating_applies(entry: Mapping[str, Any], answer: str) -> bool:
    """True when the rating `entry` (from load_ratings) was given to `answer`, or predates answer_sha256."""
    rated = entry.get(ANSWER_HASH_FIELD)
    return rated is None or rated == answer_sha256(answer)


def is_rating(value: object) -> bool:
    """True for a rating: a whole number from 1 to 5."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5


def _valid_rating(entry: object) -> bool:
    if not isinstance(entry, dict):
        return False
    rating, note, rated = entry.get("rating"), entry.get("note", ""), entry.get(ANSWER_HASH_FIELD)
    return (rating is None or is_rating(rating)) and isinstance(note, str) and (rated is None or isinstance(rated, str))


def load_ratings(run_path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """variant -> prompt id -> {"rating": 1-5 or None, "note": str, "answer_sha256": str (absent in old
    entries)}; a bad file or entry reads as none. rating_applies says whether one rates a given answer."""
    try:
        data = read_json_object(run_path / RATINGS_FILE)
    except FileProblem:
        return {}
    ratings: dict[str, dict[str, dict[str, Any]]] = {}
    for variant, prompts in data.items():
        if not isinstance(prompts, dict):
            continue
        kept = {}
        for prompt_id, entry in prompts.items():
            if _valid_rating(entry):
                kept[prompt_id] = {"rating": entry.get("rating"), "note": entry.get("note", "")}
                if entry.get(ANSWER_HASH_FIELD) is not None:
                    kept[prompt_id][ANSWER_HASH_FIELD] = entry[ANSWER_HASH_FIELD]
        if kept:
            ratings[variant] = kept
    return ratings


def save_rating(run_path: Path, variant: str, prompt_id: str, rating: int | None, note: str, *, answer: str) -> None:
    """Store a person's rating (1-5, or None) and note for `answer`, the text they rated; no rating
    and no note removes it."""
    if not isinstance(answer, str):
        raise RatingError("the rated answer must be text")
    if not isinstance(variant, str) or not VARIANT_FILE_PATTERN.fullmatch(variant):
        raise RatingError(f"unknown variant {variant!r}: adapter, base or gguf-<file>")
    if not isinstance(prompt_id, str) or not NAME_PATTERN.fullmatch(prompt_id):
        raise RatingError(f"invalid prompt id {prompt_id!r}")
    if rating is not None and not is_rating(rating):
        raise RatingError(f"a rating is a whole number from 1 to 5, or none (got {rating!r})")
    if not isinstance(note, str):
        raise RatingError("a note must be text")
    if len(note) > MAX_NOTE_CHARS:
        raise RatingError(f"the note is {len(note)} characters long (at most {MAX_NOTE_CHARS})")
    if not run_path.is_dir():
        raise RatingError(f"no run folder at {run_path}")
    with open(run_path / f".{RATINGS_FILE}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ratings = load_ratings(run_path)
        prompts = ratings.setdefault(variant, {})
        if rating is None and not note.strip():
            prompts.pop(prompt_id, None)
        else:
            prompts[prompt_id] = {"rating": rating, "note": note, ANSWER_HASH_FIELD: answer_sha256(answer)}
        write_json_atomic(run_path / RATINGS_FILE, {v: p for v, p in ratings.items() if p})
