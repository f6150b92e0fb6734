"""What this machine offers: GPU, memory, disk and which optional stacks are installed.

Nothing heavy is imported: packages are looked up in their installed metadata and the GPU
is asked through `nvidia-smi`, so the dashboard's system panel costs milliseconds.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

from core.export.converter import find_converter
from core.machine.devices import Gpu
from core.machine.installed import package_version

TRAINING_PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate")
TRAINING_HINT = (
    "pip install -r requirements-train.txt on a GPU machine, or -r requirements-dev.txt "
    "for CPU training of the tiny model"
)


@dataclass(frozen=True)
class Capability:
    """An optional part of the tool, whether it is usable here, and the detail why."""

    name: str
    available: bool
    detail: str


@dataclass(frozen=True)
class SystemReport:
    """Everything the system panel shows."""

    gpus: list[Gpu]
    cpu_count: int
    memory_gb: float | None
    python: str
    runs_root: Path
    free_disk_gb: float | None
    capabilities: list[Capability]


def total_memory_gb() -> float | None:
    """Physical memory of the machine in GB, where the OS tells it."""
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        return None


def free_disk_gb(path: Path) -> float | None:
    """Free space on the disk holding `path` (or its nearest existing parent), in GB."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return round(shutil.disk_usage(probe).free / 1e9, 1)
    except OSError:
        return None


def training_capability(gpus: list[Gpu]) -> Capability:
    """Whether runs can train here, and on which backend."""
    versions = {name: package_version(name) for name in TRAINING_PACKAGES}
    missing = [name for name, version in versions.items() if version is None]
    if missing:
        return Capability("Training stack", False, f"missing {', '.join(missing)}: {TRAINING_HINT}")
    listed = ", ".join(f"{name} {version}" for name, version in versions.items())
    unsloth = package_version("unsloth")
    if gpus and unsloth:
        backend = f"Unsloth {unsloth} on the GPU"
    elif gpus:
        backend = "transformers + peft on the GPU (unsloth not installed)"
    else:
        backend = "transformers + peft on the CPU (small models only)"
    return Capability("Training stack", True, f"{backend}; {listed}")


def llama_cpp_capability() -> Capability:
    """Whether GGUF models can be run here (study cards, GGUF evaluation)."""
    version = package_version("llama_cpp_python")
    if version is None:
        return Capability("llama-cpp", False, "llama-cpp-python is not installed")
    return Capability("llama-cpp", True, f"llama-cpp-python {version}")


def converter_capability() -> Capability:
    """Whether llama.cpp's GGUF converter is at hand."""
    location = find_converter()
    return Capability("GGUF converter", location.script is not None, location.explanation)


def system_report(runs_root: Path, gpus: list[Gpu]) -> SystemReport:
    """Collect the system panel's facts around `gpus` (from detect_gpus, which callers cache)."""
    return SystemReport(
        gpus=gpus,
        cpu_count=os.cpu_count() or 1,
        memory_gb=total_memory_gb(),
        python=platform.python_version(),
        runs_root=runs_root,
        free_disk_gb=free_disk_gb(runs_root),
        capabilities=[training_capability(gpus), llama_cpp_capability(), converter_capability()],
    )
