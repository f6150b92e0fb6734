"""Run untrusted Python (a model's answer) in a separate, limited process.

The code runs in a fresh `python -I` process with an empty environment, in its own
temporary folder, under a wall-clock limit and CPU, memory, file-size and process rlimits.
Before the code runs, an audit hook is installed that refuses network use, starting
processes, ctypes, changing the limits, and deleting, renaming or writing files outside the
temporary folder. Refusals are recorded even when the code catches the error.

This protects the machine from careless or runaway code (infinite loops, `rm -rf`, memory
bombs). It is not a boundary against code written to escape it: audit hooks can be evaded
from inside the interpreter, and a process run as root ignores RLIMIT_NPROC.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The child's side: limits, audit hook, the code, then calls of its functions. Stdlib only;
# everything it needs is imported before the hook is installed and the answer runs.
_HARNESS = r'''
import inspect, json, os, resource, sys

request = json.loads(sys.stdin.readline())
root = os.path.realpath(os.getcwd())
limits = request["limits"]


def limit(kind, soft, hard):
    current = resource.getrlimit(kind)[1]
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(kind, (soft, hard))


limit(resource.RLIMIT_AS, limits["memory_mb"] * 2**20, limits["memory_mb"] * 2**20)
limit(resource.RLIMIT_CPU, limits["cpu_s"], limits["cpu_s"] + 1)
limit(resource.RLIMIT_FSIZE, limits["file_size_mb"] * 2**20, limits["file_size_mb"] * 2**20)
limit(resource.RLIMIT_NPROC, 0, 0)

refused = []
REFUSED = ("socket.", "subprocess.", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
           "os.forkpty", "os.kill", "os.killpg", "pty.", "ctypes.", "resource.setrlimit", "resource.prlimit",
           "webbrowser.", "urllib.Request", "http.client.", "ftplib.", "smtplib.", "poplib.", "imaplib.",
           "telnetlib.", "nntplib.", "mmap.", "os.setuid", "os.setgid")
PATH_EVENTS = {"os.remove": 1, "os.rmdir": 1, "os.rename": 2, "os.truncate": 1, "os.chmod": 1,
               "os.chown": 1, "os.mkdir": 1, "os.link": 2, "os.utime": 1, "shutil.rmtree": 1,
               "shutil.copyfile": 2, "shutil.copytree": 2, "shutil.unpack_archive": 2, "os.chflags": 1,
               "os.setxattr": 1, "os.removexattr": 1}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def inside(path):
    if isinstance(path, int):
        return True
    try:
        real = os.path.realpath(os.fsdecode(os.fspath(path)))
    except (TypeError, ValueError):
        return False
    return real == root or real.startswith(root + os.sep)


def refuse(event, what):
    refused.append(f"{event} {what}".strip())
    raise PermissionError(f"sandbox: {event} is not allowed {what}".strip())


def hook(event, args):
    if event.startswith(REFUSED):
        refuse(event, "")
    elif event == "os.symlink" and not inside(args[1]):
        refuse(event, f"outside the sandbox ({args[1]!r})")
    elif event in PATH_EVENTS:
        for path in args[:PATH_EVENTS[event]]:
            if not inside(path):
                refuse(event, f"outside the sandbox ({path!r})")
    elif event == "open":
        path, mode, flags = args
        writing = bool(mode and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
        if writing and not inside(path):
            refuse("writing", f"outside the sandbox ({path!r})")


def summary(value):
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return {"repr": repr(value)[:200]}
    return value if len(text) <= 4000 else {"repr": text[:200] + "..."}


def candidates(namespace, name, arity):
    if name:
        found = namespace.get(name)
        return [(name, found)] if callable(found) else []
    chosen = []
    for key, value in namespace.items():
        if inspect.isfunction(value) and value.__module__ == "answer":
            try:
                inspect.signature(value).bind(*([None] * arity))
            except TypeError:
                continue
            chosen.append((key, value))
    return chosen


def error_of(exc):
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "answer.py":
            line = tb.tb_lineno
        tb = tb.tb_next
    kind = "memory" if isinstance(exc, MemoryError) else "exception"
    return {"kind": kind, "text": f"{type(exc).__name__}: {exc}"[:300], "line": line}


result = {"refused": refused, "error": None, "functions": {}}
source = request["source"]
calls = request["calls"]
sys.addaudithook(hook)
try:
    namespace = {"__name__": "answer", "__builtins__": __builtins__}
    exec(compile(source, "answer.py", "exec"), namespace)
    if calls is not None:
        for name, function in candidates(namespace, request["function"], len(calls[0]) if calls else 0):
            outcomes = []
            for args in calls:
                try:
                    outcomes.append({"value": summary(function(*args))})
                except BaseException as exc:
                    outcomes.append({"error": error_of(exc)})
            result["functions"][name] = outcomes
except BaseException as exc:
    result["error"] = error_of(exc)
with open(request["result_file"], "w", encoding="utf-8") as handle:
    json.dump(result, handle)
'''

RESULT_FILE = "result.json"
HARNESS_FILE = "harness.py"
OUTPUT_LIMIT = 4000


@dataclass(frozen=True)
class Limits:
    """What the sandboxed process may use."""

    wall_s: float = 5.0
    cpu_s: int = 5
    memory_mb: int = 256
    file_size_mb: int = 1


@dataclass(frozen=True)
class SandboxRun:
    """What happened to one piece of code in the sandbox.

    outcome: "ok" (ran to the end; functions may still have raised, see `functions`),
    "timeout", "cpu", "memory", "refused", "exception" or "crashed"; `reason` says it in words.
    """

    outcome: str
    reason: str
    functions: dict[str, list[dict[str, Any]]]
    refused: tuple[str, ...]
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        """True when the code ran to the end without refusals or errors."""
        return self.outcome == "ok"


@dataclass(frozen=True)
class FunctionVerdict:
    """Whether a function in the code returned the expected values, and why not."""

    passed: bool
    reason: str
    function: str | None
    seconds: float


def _read_limited(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(OUTPUT_LIMIT)
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _verdict_from(result: dict[str, Any] | None, returncode: int | None, timed_out: bool,
                  limits: Limits, stderr: str) -> tuple[str, str]:
    if timed_out:
        return "timeout", f"timed out: still running after {limits.wall_s:g} s (killed)"
    if returncode is not None and returncode < 0:
        number = -returncode
        if number == signal.SIGXCPU:
            return "cpu", f"used more than its {limits.cpu_s} s of CPU time (killed)"
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return "crashed", f"killed by {name}"
    if result is None:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {returncode}"
        if "MemoryError" in stderr:
            return "memory", f"ran out of memory (limit {limits.memory_mb} MB)"
        return "crashed", f"exited without a result ({last[:200]})"
    if result.get("refused"):
        return "refused", "refused: " + "; ".join(list(dict.fromkeys(result["refused"]))[:3])
    error = result.get("error")
    if error:
        where = f" (line {error['line']})" if error.get("line") else ""
        if error.get("kind") == "memory":
            return "memory", f"ran out of memory (limit {limits.memory_mb} MB){where}"
        if "[Errno 27]" in error["text"]:
            return "exception", f"wrote more than {limits.file_size_mb} MB to a file or its output{where}"
        return "exception", f"raised {error['text']}{where}"
    return "ok", "ran to the end"


def run_python(source: str, calls: list[list[Any]] | None = None, *, function: str | None = None,
               limits: Limits = Limits()) -> SandboxRun:
    """Run `source` in the sandbox; then call its functions with each argument list in `calls`.

    Without `function`, every function the code defines that accepts that many positional
    arguments is called; with it, only that one. Results come back in `functions`.
    """
    folder = Path(tempfile.mkdtemp(prefix="peft-sandbox-"))
    started = time.monotonic()
    try:
        (folder / HARNESS_FILE).write_text(_HARNESS, encoding="utf-8")
        request = json.dumps({"source": source, "calls": calls, "function": function, "result_file": RESULT_FILE,
                              "limits": {"cpu_s": limits.cpu_s, "memory_mb": limits.memory_mb,
                                         "file_size_mb": limits.file_size_mb}})
        with open(folder / "stdout.txt", "wb") as out, open(folder / "stderr.txt", "wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-I", "-B", "-X", "utf8", HARNESS_FILE], cwd=folder, env={},
                stdin=subprocess.PIPE, stdout=out, stderr=err, start_new_session=True,
            )
            timed_out = False
            try:
                process.communicate(request.encode("utf-8") + b"\n", timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        seconds = time.monotonic() - started
        stdout, stderr = _read_limited(folder / "stdout.txt"), _read_limited(folder / "stderr.txt")
        result = None if timed_out else _read_result(folder / RESULT_FILE)
        outcome, reason = _verdict_from(result, process.returncode, timed_out, limits, stderr)
        return SandboxRun(
            outcome=outcome, reason=reason,
            functions=(result or {}).get("functions") or {},
            refused=tuple((result or {}).get("refused") or ()),
            stdout=stdout, stderr=stderr, seconds=seconds,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _shown(value: Any) -> str:
    text = value["repr"] if isinstance(value, dict) and set(value) == {"repr"} else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def run_function_cases(source: str, cases: list[tuple[list[Any], Any]], *, function: str | None = None,
                       limits: Limits = Limits()) -> FunctionVerdict:
    """Run `source` and check that a function it defines maps each case's arguments to its expected value.

    Without `function`, any function the code defines may pass (the first that returns every
    expected value is named); the reason names what went wrong otherwise.
    """
    run = run_python(source, [list(args) for args, _ in cases], function=function, limits=limits)
    if not run.ok:
        return FunctionVerdict(False, run.reason, None, run.seconds)
    if not run.functions:
        wanted = f"function named {function}" if function else (
            f"function taking {len(cases[0][0])} argument(s)" if cases else "function")
        return FunctionVerdict(False, f"defines no {wanted}", None, run.seconds)
    first_problem = ""
    for name, outcomes in run.functions.items():
        problem = ""
        for (args, expected), outcome in zip(cases, outcomes):
            call = f"{name}({', '.join(repr(a) for a in args)})"
            if "error" in outcome:
                error = outcome["error"]
                if error.get("kind") == "memory":
                    problem = f"{call} ran out of memory (limit {limits.memory_mb} MB)"
                else:
                    problem = f"{call} raised {error['text']}"
                break
            if outcome["value"] != expected:
                problem = f"wrong output: {call} returned {_shown(outcome['value'])}, expected {_shown(expected)}"
                break
        if not problem:
            return FunctionVerdict(True, f"{name} passed {len(cases)} case(s)", name, run.seconds)
        first_problem = first_problem or problem
    return FunctionVerdict(False, first_problem, None, run.seconds)
