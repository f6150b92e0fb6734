"""The lab's recorded experiments, shipped with the project and shown out of the box."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from core.store.experiments_log import EXTRA_COLUMNS, ImportReport, import_log
from core.store.files import sweep_debris, write_text_atomic
from core.store.paths import DATA_DIR
from core.store.runs import now_iso

SEED_LOG = DATA_DIR / "seed_runs" / "experiments_log.csv"
SEED_DETAILS = DATA_DIR / "seed_runs" / "run_details.json"
SEED_MARKER = ".seeded"


def seed_details() -> dict[str, dict[str, Any]]:
    """Per-run facts the lab's CSV has no column for (dataset, LoRA alpha, device, note)."""
    raw = json.loads(SEED_DETAILS.read_text(encoding="utf-8"))
    return {
        name: {key: facts[key] for key in EXTRA_COLUMNS if key in facts}
        for name, facts in raw.items()
        if isinstance(facts, dict)
    }


def import_seed_runs(root: Path) -> ImportReport:
    """Import the lab's runs into `root` (existing runs are left alone) and mark it seeded."""
    root.mkdir(parents=True, exist_ok=True)
    report = import_log(
        root,
        SEED_LOG.read_text(encoding="utf-8"),
        source="data/seed_runs/experiments_log.csv",
        details=seed_details(),
    )
    write_text_atomic(root / SEED_MARKER, now_iso() + "\n")
    return report


@functools.cache
def _swept(root: Path) -> list[str]:
    """What sweep_debris removed from the runs root the first time this process opened it."""
    return sweep_debris(root)


def prepare_runs_root(root: Path) -> ImportReport | None:
    """Clear what killed writers left in a runs root (once per process) and seed it the first
    time the dashboard opens it; return the seeding's report then.

    Seeding happens once per runs root: seed runs a person deleted do not come back.
    """
    _swept(root)
    if (root / SEED_MARKER).exists():
        return None
    return import_seed_runs(root)
