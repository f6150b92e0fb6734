"""Many new run folders at once (an import of thousands of rows), each whole or not at all.

create_run makes one run folder durable by itself: a staging folder, three files written and
synced one by one, a rename. For thousands of runs that is thousands of syncs. create_runs
builds every folder inside one hidden staging folder beside them, writes the files without a
sync each, syncs once, then renames each folder into place. A crash before the sync leaves
only the hidden staging folder; a crash during the renames leaves complete runs in place and
the rest in the hidden staging folder, which a sweep of hidden leftovers removes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.store.files import json_document, place_new_dir, staging_dir, sync_file_system
from core.store.runs import CONFIG_FILE, METRICS_FILE, STATUS_FILE, taken_names, validate_run_name


@dataclass(frozen=True)
class NewRun:
    """A run folder to create: its name and the documents create_run would write."""

    name: str
    config: dict[str, Any]
    status: dict[str, Any]
    metrics: dict[str, Any] | None = None


@dataclass
class CreatedRuns:
    """What create_runs did: runs created, names already taken (left alone), runs that could
    not be written and why."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _build(folder: Path, run: NewRun) -> None:
    """The run's folder and files, written without a sync (the caller syncs them all at once)."""
    folder.mkdir()
    documents = {CONFIG_FILE: run.config, STATUS_FILE: run.status, METRICS_FILE: run.metrics}
    for filename, document in documents.items():
        if document is not None:
            (folder / filename).write_text(json_document(document), encoding="utf-8")


def create_runs(root: Path, runs: Iterable[NewRun]) -> CreatedRuns:
    """Create a run folder in `root` for each of `runs` (read one at a time), as create_run
    would, with one sync for them all.

    A name already taken in `root`, or earlier in `runs`, is reported existing and left alone;
    a run that cannot be written is reported failed and leaves nothing in `root`. Raises
    RunNameError for an invalid name, before any run is put in place.
    """
    root.mkdir(parents=True, exist_ok=True)
    taken = taken_names(root)
    result = CreatedRuns()
    built: list[str] = []
    with staging_dir(root / "import") as staging:
        for run in runs:
            name = validate_run_name(run.name)
            if name in taken:
                result.existing.append(name)
                continue
            taken.add(name)
            try:
                _build(staging / name, run)
            except OSError as exc:
                result.failed[name] = str(exc)  # what it wrote goes with the staging folder
                continue
            built.append(name)
        sync_file_system(staging)  # every file and folder on disk before any run is in place
        for name in built:
            try:
                placed = place_new_dir(staging / name, root / name)
            except OSError as exc:
                result.failed[name] = str(exc)
                continue
            (result.created if placed else result.existing).append(name)
    return result
