"""Prompt sets: the prompts an evaluation answers, each with its automatic checks.

A prompt set is JSON: `{"name", "title", "prompts": [{"id", "prompt", "checks": [...]}]}`
(checks as in core/evaluate/checks.py). The lab's set ships in data/eval_prompts.json; users
keep their own in `<runs root>/.prompt_sets/<name>.json`.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.evaluate.checks import (
    CheckSpecError,
    check_name,
    validate_check,
)
from core.store.files import (
    MAX_DOCUMENT_BYTES,
    json_value,
    read_capped,
    write_json_atomic,
)
from core.store.paths import DATA_DIR
from core.store.runs import (
    RUN_NAME_PATTERN,
)

LAB_SET_FILE = DATA_DIR / "eval_prompts.json"


LAB_SET_NAME = "lab"


PROMPT_SETS_DIR = ".prompt_sets"


JSON_SUFFIX = ".json"


MAX_PROMPTS = 200


MAX_PROMPT_CHARS = 4000


NAME_PATTERN = RUN_NAME_PATTERN  # prompt set names are file names too


class PromptSetError(ValueError):
    """A prompt set that cannot be used; the message names the prompt and check at fault."""


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
        return {
            "name": self.name,
            "title": self.title,
            "prompts": [{"id": p.id, "prompt": p.prompt, "checks": list(p.checks)} for p in self.prompts],
        }


def _unknown_keys(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            raise PromptSetError(
                f"{where}: unknown field {key!r}"
                + (f" (did you mean {hint[0]}?)" if hint else f"; fields: {', '.join(allowed)}")
            )


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
            raise PromptSetError(f'{where}, check {index}: two checks are named {name!r}; give one a "name"')
        names.add(name)
    return EvalPrompt(prompt_id, text, tuple(checks))


def parse_prompt_set(data: object) -> PromptSet:
    """A validated PromptSet from parsed JSON; PromptSetError names the prompt and check at fault."""
    if not isinstance(data, dict):
        raise PromptSetError(
            f"a prompt set must be a JSON object with name, title and prompts (got {type(data).__name__})"
        )
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
    return PromptSet(
        name, title.strip() or name, tuple(_parse_prompt(p, n, seen) for n, p in enumerate(prompts, 1))
    )


def _json(text: str) -> object:
    try:
        return json_value(text)
    except json.JSONDecodeError as exc:
        raise PromptSetError(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # a number too long, a lone surrogate, nesting too deep
        raise PromptSetError(f"not readable JSON ({type(exc).__name__})") from None


def load_prompt_set(path: Path) -> PromptSet:
    """The prompt set in the JSON file at `path`; PromptSetError says which file and why."""
    try:
        text = read_capped(path, MAX_DOCUMENT_BYTES).decode("utf-8-sig")
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
    entries = [PromptSetEntry(LAB_SET_NAME, load_prompt_set(LAB_SET_FILE), None, True)]
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
        entries.append(PromptSetEntry(name, loaded, problem, False))
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
        return load_prompt_set(Path(spec).expanduser().resolve())  # a user's own file may be a link
    path = prompt_sets_dir(runs_root) / f"{spec}{JSON_SUFFIX}"
    if NAME_PATTERN.fullmatch(spec) and path.is_file():
        return load_prompt_set(path)
    known = ", ".join(
        entry.name
        for entry in list_prompt_sets(runs_root)
        if entry.bundled or not set_name_problem(entry.name)
    )
    raise PromptSetError(f"no prompt set named {spec!r}; sets: {known} (or give the path of a .json file)")
