"""Creating a run to train: its folder, queued, with its config pinned to its data recipe."""

from __future__ import annotations

from pathlib import Path

from core.data.recipes import new_run_files
from core.store.runs import create_run, initial_status
from core.train.config import RunConfig, resolve_local_file


def create_queued_run(root: Path, name: str, config: RunConfig) -> Path:
    """Create the run `name`, queued, with `config` (pinned to its recipe, whose copy the run
    folder keeps); return its path. Raises RecipeError (a ValueError) for an unusable recipe,
    RunNameError or RunExistsError; nothing is created then."""
    config, documents = new_run_files(config, root)
    return create_run(
        root, name, config.to_dict(), status=initial_status("queued", config.max_steps), documents=documents
    )


def local_data_problem(config: RunConfig) -> str | None:
    """What is wrong with a new run's local dataset, read here before the run is created; None when
    it is usable, and for a Hub dataset (the job reads it) or a recipe (checked when it was saved)."""
    from core.train.data import DataError, load_conversations

    if config.recipe or resolve_local_file(config.dataset) is None:
        return None
    try:
        load_conversations(config.dataset, config.split)
    except DataError as exc:
        return f"dataset {config.dataset} [{config.split}]: {exc}"
    return None
