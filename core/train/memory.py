"""A training job's memory, under two definitions named apart in metrics.json.

- **The lab's** (`peak_memory_gb`, `lora_memory_gb`; the notebook's cells 21 and 24, and the
  seed runs' figures): the start figure is the peak reserved memory so far, read without a
  reset (`max_memory_reserved()` after the model loaded), the peak is the job's peak over its
  whole life, and the LoRA figure is the peak minus the start.
- **Since training started** (`training_peak_memory_gb`, `training_memory_gb`): the peak is
  reset when training starts, and the training figure is the peak since then minus the
  memory in use at that moment (`memory_reserved()`).

On a CUDA device the figures are torch's reserved memory. On CPU they are the process's
resident set size: current from VmRSS, peak from VmHWM, which Linux resets when "5" is
written to /proc/self/clear_refs (the CPU analogue of resetting CUDA peak stats). Every
figure is in GiB (1024**3 bytes), the unit torch's and the lab's figures are in; the
project writes it "GB" as the lab did.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from pathlib import Path

GB = 1024**3
PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def _proc_status_kb(key: str) -> int | None:
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True)
class MemoryFigures:
    """A finished training's memory under both definitions, in GB (GiB)."""

    peak_gb: float  # the lab's: the job's peak, never reset
    lora_gb: float  # the lab's: peak minus the peak before training started
    start_peak_gb: float  # the lab's start figure: the peak before training started
    training_peak_gb: float  # the peak since training started
    training_gb: float  # that peak minus the memory in use when training started
    start_gb: float  # the memory in use when training started
    peak_reset: bool  # False: the peak could not be reset, the training figures cover the whole job

    def to_metrics(self) -> dict[str, float | bool]:
        """The figures under their metrics.json names."""
        return {
            "peak_memory_gb": round(self.peak_gb, 3),
            "lora_memory_gb": round(self.lora_gb, 3),
            "start_peak_memory_gb": round(self.start_peak_gb, 3),
            "training_peak_memory_gb": round(self.training_peak_gb, 3),
            "training_memory_gb": round(self.training_gb, 3),
            "start_memory_gb": round(self.start_gb, 3),
            "memory_peak_reset": self.peak_reset,
        }


class MemoryMeter:
    """Current and peak memory of the training device, in GB (GiB)."""

    def __init__(self, device: str):
        self.device = device
        self.measure = "cuda_reserved" if device == "cuda" else "process_rss"
        self.start_gb = 0.0
        self.start_peak_gb = 0.0
        self.peak_reset = False  # whether the peak was reset when training started

    def current_gb(self) -> float:
        """Memory in use now: CUDA reserved, or the process's RSS."""
        if self.device == "cuda":
            import torch

            return torch.cuda.memory_reserved() / GB
        kb = _proc_status_kb("VmRSS")
        return (kb or 0) * 1024 / GB

    def start_training(self) -> None:
        """Take both start figures: the peak so far (the lab's, read before any reset), then
        reset the peak and take the memory in use now."""
        self.start_peak_gb = self.peak_gb()
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
            self.peak_reset = True
        else:
            try:
                PROC_CLEAR_REFS.write_text("5")
                self.peak_reset = True
            except OSError:  # not Linux or not permitted: the peak then covers the whole process
                self.peak_reset = False
        self.start_gb = self.current_gb()

    def peak_gb(self) -> float:
        """Peak since the last reset (or the process start): CUDA max reserved, or peak RSS."""
        if self.device == "cuda":
            import torch

            return torch.cuda.max_memory_reserved() / GB
        kb = _proc_status_kb("VmHWM")
        if kb is None:
            scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale // 1024
        return kb * 1024 / GB

    def peak_allocated_gb(self) -> float | None:
        """Peak CUDA memory held by tensors since training started; None on CPU."""
        if self.device != "cuda":
            return None
        import torch

        return torch.cuda.max_memory_allocated() / GB

    def figures(self, seen_gb: list[float]) -> MemoryFigures:
        """Both definitions now; `seen_gb` are readings taken during training (they count
        towards the peak where the device's own peak figure missed them)."""
        training_peak = max([self.peak_gb(), *seen_gb])
        peak = max(self.start_peak_gb, training_peak)
        return MemoryFigures(
            peak_gb=peak,
            lora_gb=max(0.0, peak - self.start_peak_gb),
            start_peak_gb=self.start_peak_gb,
            training_peak_gb=training_peak,
            training_gb=max(0.0, training_peak - self.start_gb),
            start_gb=self.start_gb,
            peak_reset=self.peak_reset,
        )
