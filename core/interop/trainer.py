"""Import a transformers Trainer output folder (`outputs/`, `checkpoint-N/` inside it, or one
checkpoint) as a completed run.

What is read: trainer_state.json (the newest one: the folder's own, which trainer.save_state
writes, or the checkpoint of the highest step), its log_history (loss, learning rate, grad norm,
epoch and tokens per logged step; eval loss; the final train loss and runtime), max_steps and
train_batch_size; adapter_config.json (r, alpha, dropout, target modules, base model) and
adapter_model.safetensors with the tokenizer files beside them: the folder's own (what
trainer.save_model writes, the final model), else that checkpoint's. What is never read: training_args.bin, optimizer.pt,
scheduler.pt, rng_state.pth and adapter_model.bin, which are pickles (loading one runs code).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from core.interop.runs import (
    ADAPTER_CONFIG_FILE,
    ImportedRun,
    InteropError,
    check_adapter_folder,
    checked_fields,
    eval_event,
    fit_events,
    lora_fields,
    origin,
    run_metrics,
    training_event,
    valid_step,
)
from core.store.files import FileProblem, finite_number, is_real_dir, read_json_object
from core.store.runs import CHECKPOINT_PREFIX

STATE_FILE = "trainer_state.json"
MAX_STATE_BYTES = 24 << 20  # log_history of ~100,000 logged steps; events.jsonl holds ~50,000 (fit_events)
_DESCEND = 3  # single folders a zip may wrap the Trainer folder in (outputs/, a Drive export's)


def _checkpoint_step(path: Path) -> int | None:
    name = path.name
    digits = name[len(CHECKPOINT_PREFIX) :]
    return (
        int(digits)
        if name.startswith(CHECKPOINT_PREFIX) and re.fullmatch(r"[0-9]{1,18}", digits) and is_real_dir(path)
        else None
    )


def trainer_root(folder: Path) -> Path:
    """The Trainer folder at or just inside `folder` (one with trainer_state.json or checkpoint-N
    folders, possibly wrapped in single folders); InteropError when there is none."""
    current = folder
    for _ in range(_DESCEND + 1):
        if not is_real_dir(current):
            break
        entries = [entry for entry in current.iterdir() if not entry.name.startswith((".", "__MACOSX"))]
        if (current / STATE_FILE).exists() or any(_checkpoint_step(entry) is not None for entry in entries):
            return current
        folders = [entry for entry in entries if is_real_dir(entry)]
        if len(folders) != 1 or len(entries) != 1:
            break
        current = folders[0]
    raise InteropError(
        f"{folder.name}: no {STATE_FILE}, in it or in a {CHECKPOINT_PREFIX}N folder: not a Trainer output folder"
    )


def checkpoints(root: Path) -> dict[int, Path]:
    """The checkpoint-N folders in `root` by step, in step order."""
    found = {step: entry for entry in root.iterdir() if (step := _checkpoint_step(entry)) is not None}
    return dict(sorted(found.items()))


def newest_state(root: Path, problems: list[str]) -> tuple[Path, dict[str, Any]]:
    """The folder whose trainer_state.json is at the highest global step (the Trainer folder itself
    before a checkpoint of the same step) and that state; unreadable states are noted in
    `problems`, InteropError when none reads."""
    found: list[tuple[float, bool, Path, dict[str, Any]]] = []
    for folder in [root, *checkpoints(root).values()]:
        if not (folder / STATE_FILE).exists():
            continue
        try:
            state = read_json_object(folder / STATE_FILE, MAX_STATE_BYTES)
        except FileProblem as exc:
            problems.append(f"{folder.name}/{STATE_FILE}: not read ({exc})")
            continue
        step = finite_number(state.get("global_step")) or 0.0
        found.append((step, folder == root, folder, state))
    if not found:
        raise InteropError(f"{root.name}: no readable {STATE_FILE} ({'; '.join(problems) or 'none found'})")
    _, _, folder, state = max(found, key=lambda item: (item[0], item[1]))
    return folder, state


def state_events(
    state: dict[str, Any], where: str, problems: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """events.jsonl's records from a trainer_state.json's log_history (steps that valid_step
    refuses left out; thinned by fit_events), and its final report (the entry with train_loss and
    train_runtime); InteropError when it logs no training loss."""
    history = state.get("log_history")
    if not isinstance(history, list):
        raise InteropError(f"{where}: log_history is missing or not a list")
    events: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    for entry in history:
        if not isinstance(entry, dict):
            continue
        step = entry.get("step")
        if not valid_step(step, state.get("max_steps")):
            continue
        if "train_runtime" in entry or "train_loss" in entry:
            final = entry
        loss, eval_loss = finite_number(entry.get("loss")), finite_number(entry.get("eval_loss"))
        if loss is not None:
            event = training_event(step, loss, entry, None)
            event["tokens_seen"] = finite_number(entry.get("num_input_tokens_seen"))
            events.append(event)
        if eval_loss is not None:
            events.append(eval_event(step, eval_loss, entry.get("epoch"), None))
    if not any("loss" in event for event in events):
        raise InteropError(f"{where}: log_history has no training loss to import")
    return fit_events(events, where, problems), final


def read_trainer_folder(
    folder: Path, *, name: str, source: str, base_model: str | None = None
) -> tuple[ImportedRun, list[str]]:
    """The run to create from the Trainer output folder `folder` and what was left out and why;
    InteropError when it is not a Trainer folder or logs no loss. `base_model` replaces the one
    adapter_config.json names (a path on the machine that trained it, say)."""
    if folder.is_symlink() or not folder.is_dir():
        raise InteropError(f"{folder}: not a folder (a symbolic link is not followed)")
    problems: list[str] = []
    root = trainer_root(folder)
    chosen, state = newest_state(root, problems)
    label = STATE_FILE if chosen == root else f"{chosen.name}/{STATE_FILE}"
    events, final = state_events(state, label, problems)
    adapter, adapter_config, adapter_label = None, {}, ADAPTER_CONFIG_FILE
    step = state.get("global_step")
    same_step = checkpoints(root).get(step) if valid_step(step) else None  # only a folder found in root
    for candidate in dict.fromkeys(f for f in (root, chosen, same_step) if f is not None):
        if adapter is None:  # the final model, else the checkpoint's
            adapter, found = check_adapter_folder(candidate, problems)
            if adapter is not None or not adapter_config:
                adapter_config = found
                where = "" if candidate == root else f"{candidate.name}/"
                adapter_label = f"{where}{ADAPTER_CONFIG_FILE}"
    lora = lora_fields(adapter_config) if adapter_config else {}
    if base_model:
        lora["base_model"] = base_model
    values = {
        "max_steps": state.get("max_steps"),
        "batch_size": state.get("train_batch_size"),
        "logging_steps": state.get("logging_steps"),
        "save_steps": state.get("save_steps"),
    }
    config = {**checked_fields(lora, adapter_label, problems), **checked_fields(values, label, problems)}
    config["origin"] = origin(
        "trainer",
        source,
        state=label,
        adapter=None if adapter is None else (adapter.name if adapter != root else "."),
    )
    run = ImportedRun(name, config, events, run_metrics(events, final), adapter)
    return run, problems
