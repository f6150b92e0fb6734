"""Code-check sandbox cost: time per code check under bubblewrap (with the audit hook inside)
against the audit hook alone, measured alternately in the same run.

Run: make bench (or .venv/bin/python bench/sandbox.py [--checks N]). Prints the median time per
`run_function_cases` call on a small answer for each, their ratio and difference. Target: at
most about 100 ms more per code check under bubblewrap.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.evaluate.sandbox import AUDIT_HOOK_ONLY, Isolation, code_check_isolation, run_function_cases

ANSWER = "def reverse_string(s: str) -> str:\n    return s[::-1]\n"
CASES = [([""], ""), (["abc"], "cba"), (["racecar"], "racecar"), (["åäö 🙂"], "🙂 öäå")]


def seconds_per_check(isolation: Isolation) -> float:
    """Wall-clock seconds of one code check on the small answer, which must pass."""
    started = time.perf_counter()
    verdict = run_function_cases(ANSWER, CASES, isolation=isolation)
    elapsed = time.perf_counter() - started
    assert verdict.passed and verdict.isolation == isolation.kind, verdict
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checks", type=int, default=30, help="code checks per arm (default 30)")
    args = parser.parse_args()
    bwrap = code_check_isolation()
    if bwrap.kind != "bwrap":
        raise SystemExit(f"bubblewrap does not work here: {bwrap.description}")
    for isolation in (bwrap, AUDIT_HOOK_ONLY):  # warm-up: the probe, the page cache
        seconds_per_check(isolation)
    isolated, hooked = [], []
    for _ in range(args.checks):  # alternating, so that load on the machine hits both arms alike
        isolated.append(seconds_per_check(bwrap))
        hooked.append(seconds_per_check(AUDIT_HOOK_ONLY))
    bwrap_median, hook_median = statistics.median(isolated), statistics.median(hooked)
    print(f"{args.checks} code checks per arm ({len(CASES)} cases each), {os.cpu_count()} CPU cores")
    print(
        f"median per code check: bubblewrap + audit hook {bwrap_median * 1000:.1f} ms, "
        f"audit hook alone {hook_median * 1000:.1f} ms"
    )
    print(
        f"ratio {bwrap_median / hook_median:.2f}, difference {(bwrap_median - hook_median) * 1000:+.1f} ms "
        "per code check (target: at most +100 ms)"
    )


if __name__ == "__main__":
    main()
