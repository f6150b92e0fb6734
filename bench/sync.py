"""Syncing a runs root with a folder remote: an incremental sync with nothing changed, and how
soon a live run's new events reach a pulling dashboard.

Run: make bench (or .venv/bin/python bench/sync.py [--runs N] [--rounds N]). Builds N runs
(default 200) with the light files of a finished 600-step run and a small adapter, then:

- first push (everything is sent): the baseline, measured in this run;
- an incremental sync (pull, then push) with nothing changed, from the side that pushed and from
  a second side that pulled everything: median of --rounds; target under 1 s for 200 runs;
- live: a run's job syncs every INTERVAL seconds (core.remote.live.LiveSync) while an event is
  appended to it; a second side pulls every 0.5 s; the delay until the event shows there,
  median of --rounds; target under INTERVAL + 5 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.remote.live import LiveSync  # noqa: E402
from core.remote.stores import FolderStore  # noqa: E402
from core.remote.sync import pull, push  # noqa: E402
from core.store.files import write_json_atomic  # noqa: E402
from core.store.paths import runs_root_side  # noqa: E402
from core.store.runs import create_run, initial_status  # noqa: E402

INTERVAL_S = 2.0


def build_runs(root: Path, count: int) -> None:
    """`count` completed runs as a job leaves them (600 logged steps, a log, an adapter)."""
    side = runs_root_side(root)
    events = "".join(
        json.dumps({"step": s, "loss": 1.0 / s, "elapsed_s": s * 4.3}) + "\n" for s in range(1, 601)
    )
    for number in range(count):
        status = {**initial_status("completed", 600), "step": 600, "side": side}
        path = create_run(root, f"run{number:04d}", {"base_model": "x", "max_steps": 600}, status=status)
        (path / "events.jsonl").write_text(events)
        (path / "train.log").write_text("a line of the log\n" * 500)
        write_json_atomic(path / "metrics.json", {"train_loss": 0.9, "steps": 600})
        (path / "adapter").mkdir()
        (path / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 200_000)


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def live_delay(a: Path, b: Path, store: FolderStore) -> float:
    """Seconds from an event appended on side A (whose job syncs live) until side B has it."""
    run = a / "run0000"
    write_json_atomic(run / "status.json", {**initial_status("running", 600), "side": runs_root_side(a)})
    marker = f'{{"step": 601, "loss": 0.5, "mark": {time.time()}}}\n'
    with LiveSync(run, store, INTERVAL_S, lambda: None):
        time.sleep(0.3)  # the job is under way
        with (run / "events.jsonl").open("a") as events:
            events.write(marker)
        appended = time.monotonic()
        while marker not in (b / "run0000" / "events.jsonl").read_text():
            time.sleep(0.5)
            pull(b, store, ["run0000"])
        return time.monotonic() - appended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as folder:
        a, b, remote = Path(folder) / "a", Path(folder) / "b", Path(folder) / "remote"
        remote.mkdir()
        build_runs(a, args.runs)
        store = FolderStore(remote)
        first_push = timed(lambda: push(a, store))
        first_pull = timed(lambda: pull(b, store))
        unchanged_a = [timed(lambda: (pull(a, store), push(a, store))) for _ in range(args.rounds)]
        unchanged_b = [timed(lambda: (pull(b, store), push(b, store))) for _ in range(args.rounds)]
        delays = [live_delay(a, b, store) for _ in range(args.rounds)]
    files = args.runs * 6
    print(f"{args.runs} runs, {files} files, folder remote")
    print(f"first push (baseline): {first_push:.3f} s; first pull: {first_pull:.3f} s")
    for side, times in (("the pushing side", unchanged_a), ("the pulling side", unchanged_b)):
        median = statistics.median(times)
        print(
            f"sync with nothing changed, {side}: median {median:.3f} s "
            f"({median / first_push:.2f} x the first push; target under 1 s)"
        )
    delay = statistics.median(delays)
    print(
        f"live: a new event reaches the pulling side in median {delay:.2f} s "
        f"(sync every {INTERVAL_S:g} s; target under {INTERVAL_S + 5:g} s)"
    )


if __name__ == "__main__":
    main()
