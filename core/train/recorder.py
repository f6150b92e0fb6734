"""The trainer callback that writes a run's progress into its folder and honours stop requests.

Imported only by the training job (it imports transformers). The stop request is the job's
(core.jobs.protocol.JobControl): checked at every step, it ends the step with a checkpoint. In a
run of several processes (core.train.distributed) every process has a recorder: at each step's
end they take the maximum of their stop flags and memory readings together, so all of them stop
after the same step, and only the first process (rank 0) writes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from core.jobs.protocol import JobControl
from core.store.files import append_jsonl
from core.store.runs import EVENTS_FILE, update_status
from core.train.distributed import max_over_processes
from core.train.memory import MemoryMeter

log = logging.getLogger(__name__)
STATUS_INTERVAL_S = 1.0  # status.json is rewritten at most this often (it may sit on a slow synced drive)


class RunRecorder(TrainerCallback):
    """Appends one event per logging step, keeps status.json current, stops on request.

    `job` is the training job's control: once a stop is requested (of any process of the
    run: `stopping`), the current step ends with a checkpoint and training stops.
    """

    def __init__(self, run_path: Path, meter: MemoryMeter, job: JobControl, runtime_before_s: float):
        self.run_path = run_path
        self.meter = meter
        self.job = job
        self.runtime_before_s = runtime_before_s
        self.segment_start = time.monotonic()
        self.status_written = float("-inf")
        self.stopping = False  # a stop was requested of any process of the run
        self.memory_gb = 0.0  # at the last step's end: the largest of the processes' readings
        self.evaluation_s = 0.0  # this attempt's time spent on the validation loss

    def elapsed_s(self) -> float:
        """Training time of the whole run so far, earlier segments included, evaluations left out
        (a run with a validation share compares with one without)."""
        return self.runtime_before_s + time.monotonic() - self.segment_start - self.evaluation_s

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.segment_start = time.monotonic()
        self.evaluation_s = 0.0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        last_step = state.global_step >= state.max_steps
        stop, self.memory_gb = max_over_processes([float(self.job.stop_requested), self.meter.current_gb()])
        self.stopping = stopping = stop > 0
        due = time.monotonic() - self.status_written >= STATUS_INTERVAL_S
        if state.is_world_process_zero and (stopping or last_step or due):
            update_status(self.run_path, step=state.global_step, training_s=round(self.elapsed_s(), 3))
            self.status_written = time.monotonic()
        if stopping or last_step:
            control.should_log = True  # the loss of a last, partial logging interval is not lost
        if stopping and not last_step:
            log.info(
                "stop requested (%s): saving a checkpoint at step %d",
                self.job.stop_signal or "of another process",
                state.global_step,
            )
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not logs or not state.is_world_process_zero:
            return
        if "eval_loss" in logs:
            self.evaluation_s += float(logs.get("eval_runtime") or 0.0)
            append_jsonl(
                self.run_path / EVENTS_FILE,
                {
                    "step": state.global_step,
                    "eval_loss": logs["eval_loss"],
                    "epoch": logs.get("epoch", state.epoch),
                    "elapsed_s": round(self.elapsed_s(), 3),
                },
            )
            log.info("step %d/%d eval loss %.4f", state.global_step, state.max_steps, logs["eval_loss"])
        if "loss" not in logs:
            return
        memory = self.memory_gb
        event = {
            "step": state.global_step,
            "loss": logs["loss"],
            "learning_rate": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "epoch": logs.get("epoch", state.epoch),
            "elapsed_s": round(self.elapsed_s(), 3),
            "tokens_seen": state.num_input_tokens_seen,
            "memory_gb": round(memory, 4),
        }
        append_jsonl(self.run_path / EVENTS_FILE, event)
        log.info(
            "step %d/%d loss %.4f lr %.3g tokens %d memory %.2f GB",
            state.global_step,
            state.max_steps,
            logs["loss"],
            logs.get("learning_rate") or 0.0,
            state.num_input_tokens_seen,
            memory,
        )

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        log.info("checkpoint saved at step %d", state.global_step)
