"""The devices a training job can use: CUDA GPUs as nvidia-smi lists them (no torch import, for
the pages), and as torch sees them (in the job itself).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from dataclasses import dataclass

from core import describe
from core.machine.installed import package_version

GPU_HINT = (
    "pip install -r requirements-train.txt on a machine with a CUDA GPU, or on Colab (a T4) "
    "run notebooks/train_on_colab.ipynb"
)


@dataclass(frozen=True)
class Gpu:
    """One CUDA device as nvidia-smi reports it."""

    name: str
    memory_gb: float
    compute_capability: float | None = None


@dataclass(frozen=True)
class DeviceFacts:
    """What the training process can use."""

    cuda: bool
    bf16: bool = False
    gpu_name: str | None = None
    gpu_memory_gb: float | None = None
    gpu_count: int = 0
    unsloth_installed: bool = False
    unsloth_error: str | None = None


class PlanError(RuntimeError):
    """The config cannot train on this machine; the message says why and what to do."""


UNSLOTH_CHECK_TIMEOUT_S = 600  # unsloth's first import compiles kernels: minutes on a cold Colab


def unsloth_import_problem() -> str | None:
    """None when `import unsloth` succeeds in a fresh interpreter, else why not.

    The import is tried in a child process, so this one stays free of unsloth's patches
    (importing it replaces trl's SFTTrainer): a run that falls back to the hf backend is then
    plain transformers + peft + trl.
    """
    try:
        result = subprocess.run(
            [sys.executable, "-c", "import unsloth"],
            capture_output=True,
            text=True,
            timeout=UNSLOTH_CHECK_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return f"import unsloth took over {UNSLOTH_CHECK_TIMEOUT_S} s"
    except OSError as exc:
        return describe(exc)
    if result.returncode == 0:
        return None
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return lines[-1][:500] if lines else f"import unsloth exited with {result.returncode}"


def import_unsloth() -> str | None:
    """Import unsloth into this process: None, or why it failed.

    Unsloth patches transformers and trl when imported, and unsloth_zoo sets the CUDA
    allocator's settings (PYTORCH_ALLOC_CONF) that torch reads when CUDA starts, so this must
    come before any CUDA call other than torch.cuda.is_available().
    """
    try:
        import unsloth  # noqa: F401
    except Exception as exc:  # a broken install raises anything from ImportError to RuntimeError
        return describe(exc)
    return None


@functools.cache
def detect_device(backend: str) -> DeviceFacts:
    """What a run with `backend` ("auto", "unsloth" or "hf") trains on in this process, asked
    in the order the training stack needs (imports torch, and unsloth where the run uses it).

    1. torch.cuda.is_available(), which does not start CUDA;
    2. unsloth, imported only where the run will use it, before CUDA starts: "hf" never
       imports it, "unsloth" imports it, and "auto" first checks in a child process that it
       imports (unsloth_import_problem), so that a fallback to hf finds trl unpatched;
    3. the GPU's properties, which start CUDA.
    """
    try:
        import torch
    except ImportError:
        raise PlanError(
            "training needs torch and the training stack, which this installation lacks: "
            f"{GPU_HINT}, or pip install -r requirements-dev.txt for CPU training of the tiny model"
        ) from None
    installed = package_version("unsloth") is not None
    if not torch.cuda.is_available():
        return DeviceFacts(cuda=False, unsloth_installed=installed)
    error = None
    if installed and backend != "hf":
        error = unsloth_import_problem() if backend == "auto" else None
        if error is None:
            error = import_unsloth()
            if error is not None and backend == "auto":
                raise PlanError(
                    f"unsloth imported in a separate check but not in this process ({error}); "
                    "set backend=hf or fix the installation"
                )
    properties = torch.cuda.get_device_properties(0)
    return DeviceFacts(
        cuda=True,
        bf16=torch.cuda.is_bf16_supported(including_emulation=False),  # a T4 only emulates bf16
        gpu_name=properties.name,
        gpu_memory_gb=round(properties.total_memory / 1024**3, 1),
        gpu_count=torch.cuda.device_count(),
        unsloth_installed=installed,
        unsloth_error=error,
    )


def device_facts_from(gpus: list[Gpu]) -> DeviceFacts:
    """What a training job here would find, from nvidia-smi and the installed packages, without
    importing torch (pages use it to show what will run; the job itself asks torch)."""
    unsloth = package_version("unsloth") is not None
    if not gpus or package_version("torch") is None:
        return DeviceFacts(cuda=False, unsloth_installed=unsloth)
    gpu = gpus[0]
    return DeviceFacts(
        cuda=True,
        bf16=(gpu.compute_capability or 0) >= 8.0,
        gpu_name=gpu.name,
        gpu_memory_gb=gpu.memory_gb,
        gpu_count=len(gpus),
        unsloth_installed=unsloth,
    )


def _nvidia_smi(query: str) -> str:
    """nvidia-smi's CSV answer to a --query-gpu, or "" when it fails."""
    try:
        return subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def detect_gpus() -> list[Gpu]:
    """CUDA GPUs listed by nvidia-smi; empty when there is none or no driver."""
    if shutil.which("nvidia-smi") is None:
        return []
    out = _nvidia_smi("name,memory.total,compute_cap") or _nvidia_smi(
        "name,memory.total"
    )  # old drivers lack compute_cap
    gpus = []
    for line in out.strip().splitlines():
        fields = [field.strip() for field in line.split(",")]
        try:
            capability = float(fields[2]) if len(fields) > 2 else None
            gpus.append(
                Gpu(
                    name=fields[0], memory_gb=round(float(fields[1]) / 1024, 1), compute_capability=capability
                )
            )
        except (ValueError, IndexError):
            continue
    return gpus
