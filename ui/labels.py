"""How the pages show states and missing values."""

from __future__ import annotations

from typing import Any

STATE_ICONS = {
    "queued": "⏳",
    "running": "🔄",
    "completed": "✅",
    "failed": "❌",
    "stopped": "⏹️",
    "broken": "⚠️",
}
MISSING = "–"


def state_label(state: str | None) -> str:
    """A run's or job's state with its icon: `✅ completed`."""
    return f"{STATE_ICONS.get(state or '', '')} {state or 'not started'}".strip()


def shown(value: Any) -> Any:
    """`value`, or a dash when it is missing (as the command line shows it)."""
    return MISSING if value is None or value == "" else value
