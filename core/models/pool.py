"""Loaded models kept for reuse under a memory budget, the least recently used unloaded first.

The Arena asks for several models at once (one per variant it shows); loading each again for
every prompt would cost seconds, keeping all of them could exhaust a small machine's memory.
A ModelPool keeps what fits in its budget. A model's size is estimated before it loads (a GGUF
file's bytes: llama.cpp maps the weights, and the KV cache and compute buffers are small beside
them for the models this runs on a CPU). A model that a session is generating with (its lock
held) is never unloaded; a model larger than the whole budget still loads, alone.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

BUDGET_ENV = "PEFT_ARENA_MEMORY_MB"
DEFAULT_BUDGET_BYTES = 2 << 30  # two 1B q8_0 files, or a dozen SmolLM2-135M ones


class PoolError(RuntimeError):
    """No room for a model: everything loaded is in use by other sessions."""


@dataclass
class PooledModel:
    """A loaded model, its size estimate in bytes, its lock (held while it generates), how to unload
    it, and whether the pool has (a session that got it before must then ask again)."""

    model: Any
    size: int
    lock: threading.Lock
    close: Callable[[], None]
    unloaded: bool = False  # set when the pool let it go: a holder must not use it any more


def budget_from_environment(environment: dict[str, str] | None = None) -> int:
    """The pool's budget in bytes: $PEFT_ARENA_MEMORY_MB (megabytes, 10^6 bytes) when it is a
    positive number, else DEFAULT_BUDGET_BYTES."""
    value = (os.environ if environment is None else environment).get(BUDGET_ENV, "").strip()
    try:
        megabytes = float(value)
    except ValueError:
        return DEFAULT_BUDGET_BYTES
    return int(megabytes * 1e6) if megabytes > 0 else DEFAULT_BUDGET_BYTES


class ModelPool:
    """Loaded models by key, least recently used first; their estimated sizes stay within `budget`
    bytes, except that one model larger than the budget may be loaded alone."""

    def __init__(self, budget: int):
        self.budget = budget
        self.lock = threading.Lock()
        self.entries: OrderedDict[Hashable, PooledModel] = OrderedDict()

    @property
    def used(self) -> int:
        """Bytes of the loaded models' size estimates."""
        return sum(entry.size for entry in self.entries.values())

    def loaded(self) -> list[tuple[Hashable, int]]:
        """(key, size) of every loaded model, least recently used first."""
        with self.lock:
            return [(key, entry.size) for key, entry in self.entries.items()]

    def get(
        self, key: Hashable, size: int, load: Callable[[], tuple[Any, threading.Lock, Callable[[], None]]]
    ) -> PooledModel:
        """The model under `key`, loaded by `load` (returning the model, the lock its callers hold
        while it generates, and its unload function) when it is not loaded; least recently used idle models are unloaded first until `size`
        more bytes fit. PoolError when it cannot fit because models in use fill the budget."""
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
                return entry
            self._make_room(size)
            model, lock, close = load()
            entry = PooledModel(model, size, lock, close)
            self.entries[key] = entry
            return entry

    def _make_room(self, size: int) -> None:
        for key in list(self.entries):
            if self.used + size <= self.budget:
                return
            entry = self.entries[key]
            if entry.lock.acquire(blocking=False):  # never unload a model a session generates with
                try:
                    del self.entries[key]
                    entry.unloaded = True
                    entry.close()
                finally:
                    entry.lock.release()
        if self.entries and self.used + size > self.budget:
            raise PoolError(
                f"no room for another model: {len(self.entries)} loaded and in use fill the "
                f"{self.budget / 1e6:,.0f} MB budget ({BUDGET_ENV}); try again when they finish"
            )
