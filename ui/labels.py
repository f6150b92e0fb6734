"""How the pages show states."""

from __future__ import annotations

STATE_ICONS = {
    "queued": "⏳",
    "running": "🔄",
    "completed": "✅",
    "failed": "❌",
    "stopped": "⏹️",
    "broken": "⚠️",
}


def state_label(state: str | None) -> str:
    """A run's or job's state with its icon: `✅ completed`."""
    return f"{STATE_ICONS.get(state or '', '')} {state or 'not started'}".strip()
