"""Memory as the lab measured it: peak reserved minus reserved at start, peak reset first.

On a CUDA device the figures are torch's reserved (and allocated) memory. On CPU they are the
process's resident set size: current from VmRSS, peak from VmHWM, which Linux resets when
"5" is written to /proc/self/clear_refs (the CPU analogue of resetting CUDA peak stats).
"""

from __future__ import annotations

import contextlib
import resource
import sys
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


class MemoryMeter:
    """Current and peak memory of the training device, in GB."""

    def __init__(self, device: str):
        self.device = device
        self.measure = "cuda_reserved" if device == "cuda" else "process_rss"
        self.start_gb = 0.0

    def current_gb(self) -> float:
        """Memory in use now: CUDA reserved, or the process's RSS."""
        if self.device == "cuda":
            import torch

            return torch.cuda.memory_reserved() / GB
        kb = _proc_status_kb("VmRSS")
        return (kb or 0) * 1024 / GB

    def reset_peak(self) -> None:
        """Forget earlier peaks and take the current memory as the start figure."""
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            with contextlib.suppress(
                OSError
            ):  # not Linux or not permitted: the peak then covers the whole process
                PROC_CLEAR_REFS.write_text("5")
        self.start_gb = self.current_gb()

    def peak_gb(self) -> float:
        """Peak since the last reset: CUDA max reserved, or the process's peak RSS."""
        if self.device == "cuda":
            import torch

            return torch.cuda.max_memory_reserved() / GB
        kb = _proc_status_kb("VmHWM")
        if kb is None:
            scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale // 1024
        return kb * 1024 / GB

    def peak_allocated_gb(self) -> float | None:
        """Peak CUDA memory held by tensors; None on CPU, where there is no such figure."""
        if self.device != "cuda":
            return None
        import torch

        return torch.cuda.max_memory_allocated() / GB

    def training_gb(self) -> float:
        """The lab's LoRA-specific memory: peak minus the memory at the reset."""
        return max(0.0, self.peak_gb() - self.start_gb)
