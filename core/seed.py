"""The lab's recorded experiments, shipped with the project and shown out of the box."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.experiments_log import DETAIL_KEYS, ImportReport, import_log
from core.paths import DATA_DIR

SEED_LOG = DATA_DIR / "seed_runs" / "experiments_log.csv"
SEED_DETAILS = DATA_DIR / "seed_runs" / "run_details.json"


def seed_details() -> dict[str, dict[str, Any]]:
    """Per-run facts beyond the CSV schema (dataset, LoRA alpha, device, note)."""
    raw = json.loads(SEED_DETAILS.read_text(encoding="utf-8"))
    return {
        name: {key: facts[key] for key in DETAIL_KEYS if key in facts}
        for name, facts in raw.items()
        if isinstance(facts, dict)
    }


def prepare_runs_root(root: Path) -> ImportReport | None:
    """Create a new runs root holding the seed runs; leave an existing root as it is.

    Returns the import report when the root was created here, else None. Deleting the
    seed runs later is respected: an existing root is never re-seeded.
    """
    try:
        root.mkdir(parents=True)
    except FileExistsError:
        return None
    return import_log(
        root,
        SEED_LOG.read_text(encoding="utf-8"),
        source="data/seed_runs/experiments_log.csv",
        details=seed_details(),
    )
