"""Run untrusted Python (a model's answer) in a separate, limited process.

The code runs in a fresh `python -I` process with an empty environment (but TMPDIR, the
folder), in its own temporary folder, under a wall-clock limit and CPU, memory, file-size
and process rlimits. Before the code runs, an audit hook is installed that refuses:
- network use, starting processes (subprocess's fork_exec included), ctypes, mmap,
  changing the limits, tracing or profiling, walking the garbage collector's objects,
  replacing the code or defaults of the sandbox's own functions;
- writing, deleting, renaming or os.open-ing anything outside the folder, symbolic links;
- reading or listing anything outside the folder and the Python installation (sys.prefix,
  sys.base_prefix, sys.exec_prefix and the stdlib and site-packages folders), all of /proc,
  devices and pipes, and relative paths that climb with '..' (os.chdir stays in the folder).

How a verdict comes back, and why the code cannot forge one:
- A refusal ends the process at once: the hook writes the reason to the result channel and
  calls os._exit with REFUSED_EXIT. No code runs after it, so none can catch, clear or hide
  it; the parent reads the refusal from the exit status, which the code cannot undo.
- The hook cannot be changed from inside: it and its helpers take everything they use as
  default arguments (bound before the code runs, immutable) and read no global, builtin or
  closure cell, so replacing os.path.realpath, a builtin or a global of the harness changes
  nothing; replacing their defaults or code is refused.
- The result travels through a pipe the parent opens (not a file in the folder), prefixed
  with a random nonce that the parent sends on stdin and the harness reads before the code
  runs (stdin is then at its end), and encoded by json's C encoder bound before the code
  runs. A result.json, a result written into the pipe without the nonce, or a replaced
  json.dumps counts for nothing.
- CPU and memory kills are the kernel's, and the wall clock is the parent's.

What it does not protect against (it is not a security boundary against code written to
escape it; for that, run the dashboard as an unprivileged user in a container):
- Code that digs through the interpreter can find the nonce (CPython 3.11 audits neither a
  signal handler's frame argument nor frame.f_back or f_locals, which reach the harness's
  frames) and send a result of its own; code that replaces what the harness calls after it
  (its summary and candidates functions, inspect, builtins) can change the values reported.
  Either way the result can only claim values its functions could have returned: to pass,
  the code must know the expected values, which stay in the parent (the files that hold
  them are outside what it may read); and neither can hide a refusal or outlast the wall clock.
- Calls that raise no audit event: os.mknod and os.mkfifo (a device node made in the folder
  is refused when opened, but a thread could swap one in between the check and the open),
  os.pidfd_open with signal.pidfd_send_signal, os.setpriority, extension modules loaded by
  hand (_imp.create_dynamic), and C code that opens files itself (pwd, time zones).
  os.stat and friends still tell whether a path outside exists.
- A process run as root ignores RLIMIT_NPROC; on Python 3.13+ frame locals are writable
  (PEP 667), so a signal handler could change the hook's locals while it checks a path.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The child's side: read the request, set the limits, install the audit hook, run the code,
# call its functions and send the result. Stdlib only; everything it needs is imported
# before the hook is installed and the answer runs. make_hook and the functions inside it
# must not read globals, builtins or closure cells (tests/test_sandbox.py checks).
_HARNESS = r'''
import _json, _posixsubprocess, inspect, json, os, resource, stat, sys, sysconfig, types

REFUSED = ("socket.", "subprocess.", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
           "os.forkpty", "os.kill", "os.killpg", "pty.", "ctypes.", "resource.setrlimit", "resource.prlimit",
           "webbrowser.", "urllib.Request", "http.client.", "ftplib.", "smtplib.", "poplib.", "imaplib.",
           "telnetlib.", "nntplib.", "mmap.", "os.setuid", "os.setgid", "os.symlink", "sys.settrace",
           "sys.setprofile", "sys.monitoring.", "gc.get_objects", "gc.get_referrers", "gc.get_referents")
# Loaded again, _posixsubprocess would bring back the fork_exec that main() replaces.
REFUSED_MODULES = ("_posixsubprocess",)
WRITES = ("os.remove", "os.rmdir", "os.truncate", "os.chmod", "os.chown", "os.mkdir", "os.utime",
          "shutil.rmtree", "os.chflags", "os.setxattr", "os.removexattr")  # their first argument is written
WRITES_TWO = ("os.rename", "os.link")  # both their first arguments are
READS = ("os.listdir", "os.scandir", "os.listxattr", "os.getxattr")
COPIES = ("shutil.copyfile", "shutil.copytree", "shutil.unpack_archive")  # (source, destination, ...)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def make_hook(root, read_roots, channel, refused_exit):
    """The audit hook for code running in the folder `root` that may read below `read_roots`,
    and the function that refuses: it writes "refused <reason>" to the file descriptor
    `channel` and ends the process with `refused_exit` (so does any error while checking).

    Every function here takes what it uses as default arguments, bound now, before the code
    runs, and only immutable values (str, int, tuple) or these functions.
    """

    def refuse(reason, _write=os.write, _channel=channel, _exit=os._exit, _code=refused_exit,
               _BaseException=BaseException):
        try:
            _write(_channel, ("refused " + reason[:400].replace("\n", " ") + "\n").encode("utf-8", "backslashreplace"))
        except _BaseException:
            pass
        _exit(_code)

    def plain(path, _type=type, _issubclass=issubclass, _str=str, _bytes=bytes, _int=int):
        """`path` as an exact str; True for a file descriptor; None for anything else."""
        kind = _type(path)
        if kind is _str:
            return path
        if _issubclass(kind, _bytes):
            return _bytes.decode(path, "utf-8", "surrogateescape")
        if _issubclass(kind, _str):
            return _str.__str__(path)
        if _issubclass(kind, _int):
            return True
        return None

    def resolve(path, _getcwd=os.getcwd, _lstat=os.lstat, _readlink=os.readlink, _is_link=stat.S_ISLNK,
                _OSError=OSError, _ValueError=ValueError):
        """os.path.realpath of `path`, made of primitives; None for a loop of links, and for a
        relative path that climbs with '..'. Without those, a relative path stays in the folder
        whatever the working folder is meanwhile (os.chdir cannot leave it) and whatever folder
        a dir_fd names (os.open opens only inside it), so a race cannot move it out."""
        parts = path.split("/")
        if not path.startswith("/"):
            if ".." in parts:
                return None
            parts = (_getcwd() + "/" + path).split("/")
        pending = parts[::-1]
        resolved = ""
        links = 0
        while pending:
            name = pending.pop()
            if name == "" or name == ".":
                continue
            if name == "..":
                resolved = resolved.rpartition("/")[0]
                continue
            candidate = resolved + "/" + name
            try:
                mode = _lstat(candidate).st_mode
            except (_OSError, _ValueError):  # missing, under a file, a NUL byte: taken as written
                resolved = candidate
                continue
            if not _is_link(mode):
                resolved = candidate
                continue
            links += 1
            if links > 40:
                return None
            target = _readlink(candidate)
            if target.startswith("/"):
                resolved = ""
            pending.extend(target.split("/")[::-1])
        return resolved or "/"

    def below(real, folders):
        """True when the absolute path `real` is one of `folders` or inside one."""
        for folder in folders:
            if real == folder or real.startswith(folder + "/"):
                return True
        return False

    def special(real, _lstat=os.lstat, _is_reg=stat.S_ISREG, _is_dir=stat.S_ISDIR, _OSError=OSError):
        """True when `real` exists and is neither a file nor a folder (a device, a pipe, a socket)."""
        try:
            mode = _lstat(real).st_mode
        except _OSError:
            return False
        return not (_is_reg(mode) or _is_dir(mode))

    def judge(event, path, roots, where, refuse_proc, _plain=plain, _resolve=resolve, _special=special,
              _below=below):
        """Why touching `path` is refused, or None: it must resolve below one of `roots` (`where`
        names them), be no device or pipe, and with `refuse_proc` lie outside /proc."""
        name = _plain(path)
        if name is True:
            return None
        if name is None:
            return f"{event} with a path that is not text"
        real = _resolve(name)
        if real is None:
            return f"{event} of a relative path that climbs with '..' ({name!r})"
        if refuse_proc and (real == "/proc" or real.startswith("/proc/")):
            return f"{event} in /proc ({name!r})"
        if not _below(real, roots):
            return f"{event} outside {where} ({name!r})"
        if _special(real):
            return f"{event} of a device or pipe ({name!r})"
        return None

    def writing(event, path, _judge=judge, _folder=(root,)):
        """Why writing `path` is refused, or None: only the folder and what is in it may be changed."""
        return _judge(event, path, _folder, "the sandbox", False)

    def reading(event, path, _judge=judge, _roots=read_roots):
        """Why reading `path` is refused, or None: the folder and the Python installation only, never /proc."""
        return _judge(event, "." if path is None else path, _roots, "the sandbox and the Python installation", True)

    def check(event, args, _refused=REFUSED, _modules=REFUSED_MODULES, _writes=WRITES, _writes_two=WRITES_TWO,
              _reads=READS, _copies=COPIES, _write_flags=WRITE_FLAGS, _writing=writing, _reading=reading,
              _folder=(root,), _below=below, _resolve=resolve, _plain=plain, _type=type,
              _function=types.FunctionType, _harness=globals()):
        """Why the event is refused, or None when it may go ahead."""
        if event.startswith(_refused):
            return event
        if event == "open":
            path, mode, flags = args
            if mode is None or "w" in mode or "a" in mode or "x" in mode or "+" in mode or flags & _write_flags:
                # os.open (mode None) only below the folder: a folder's descriptor opened elsewhere
                # would let a relative path with dir_fd escape.
                return _writing("writing" if mode is not None else "os.open", path)
            return _reading("reading", path)
        if event in _writes:
            return _writing(event, args[0])
        if event in _writes_two:
            return _writing(event, args[0]) or _writing(event, args[1])
        if event in _reads:
            return _reading(event, args[0])
        if event in _copies:
            return _reading(event, args[0]) or _writing(event, args[1])
        if event == "os.chdir":  # relative paths are checked against the working folder: keep it inside
            name = _plain(args[0])
            if name is True:
                return None
            real = None if name is None else _resolve(name)
            return None if real is not None and _below(real, _folder) else f"os.chdir outside the sandbox ({name!r})"
        if event == "sqlite3.connect":
            name = _plain(args[0])
            if name == ":memory:" or name == "":
                return None
            if name is not None and name is not True and name.startswith("file:"):
                return f"sqlite3.connect to a URI ({name!r})"
            return _writing(event, args[0])
        if event == "import" and args[0] in _modules:
            return f"importing {args[0]}"
        if event == "object.__setattr__" and _type(args[0]) is _function and args[0].__globals__ is _harness:
            return f"changing a sandbox function's {args[1]}"  # the hook's functions among them
        return None

    def hook(event, args, _check=check, _refuse=refuse, _BaseException=BaseException):
        try:
            reason = _check(event, args)
        except _BaseException:
            reason = f"{event} (it could not be checked)"
        if reason is not None:
            _refuse(reason)

    return hook, refuse


def limit(kind, soft, hard):
    current = resource.getrlimit(kind)[1]
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(kind, (soft, hard))


def python_folders(root):
    """The folders the code may read: its own and the Python installation's."""
    paths = sysconfig.get_paths()
    folders = [root, sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
               *(paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths)]
    return tuple(dict.fromkeys(os.path.realpath(folder) for folder in folders if folder))


def unencodable(value, _error=TypeError):
    raise _error("not JSON")


def encode(value, _make=_json.make_encoder, _default=unencodable, _ascii=_json.encode_basestring_ascii):
    """`value` as JSON, by json's C encoder, bound before the code runs: code that replaces json's
    functions cannot change what the harness sends."""
    return "".join(_make({}, _default, _ascii, None, ":", ",", False, False, True)(value, 0))


def summary(value):
    try:
        text = encode(value)
    except (TypeError, ValueError, RecursionError):
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


def main():
    data = b""
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        data += chunk
    nonce, _, body = data.partition(b"\n")
    request = json.loads(body)
    del data, body
    channel, write, send = request["channel"], os.write, encode
    root = os.path.realpath(os.getcwd())
    folders = python_folders(root)
    os.environ["TMPDIR"] = root  # tempfile's first choice: the folder, where writing is allowed
    limits = request["limits"]
    limit(resource.RLIMIT_AS, limits["memory_mb"] * 2**20, limits["memory_mb"] * 2**20)
    limit(resource.RLIMIT_CPU, limits["cpu_s"], limits["cpu_s"] + 1)
    limit(resource.RLIMIT_FSIZE, limits["file_size_mb"] * 2**20, limits["file_size_mb"] * 2**20)
    limit(resource.RLIMIT_NPROC, 0, 0)
    hook, refuse = make_hook(root, folders, channel, request["refused_exit"])

    def fork_exec(*args, _refuse=refuse):  # subprocess's way to start a process, which raises no audit event
        _refuse("_posixsubprocess.fork_exec")

    _posixsubprocess.fork_exec = fork_exec
    sys.addaudithook(hook)
    del hook, refuse, fork_exec
    result = {"error": None, "functions": {}}
    calls = request["calls"]
    try:
        namespace = {"__name__": "answer", "__builtins__": __builtins__}
        exec(compile(request["source"], "answer.py", "exec"), namespace)
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
    message = nonce + b" " + send(result).encode("utf-8") + b"\n"
    while message:
        message = message[write(channel, message):]


main()
'''

HARNESS_FILE = "harness.py"
OUTPUT_LIMIT = 4000
CHANNEL_LIMIT = 4 * 2**20  # bytes of the result channel kept; more is read and dropped
REFUSED_EXIT = 86  # the exit status of a process the audit hook ended
REFUSED_PREFIX = b"refused "


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


def _kill(process: subprocess.Popen) -> None:
    """Kill the child and its process group, and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _exchange(process: subprocess.Popen, message: bytes, channel: int, wall_s: float) -> tuple[bytes, bool]:
    """Send `message` to the child's stdin, then read its result channel until the child closes
    it and exits; True when `wall_s` ran out first (the child's process group is then killed)."""
    deadline = time.monotonic() + wall_s
    assert process.stdin is not None
    stdin = process.stdin.fileno()
    os.set_blocking(stdin, False)
    pending, received, size = memoryview(message), [], 0
    with selectors.DefaultSelector() as selector:
        selector.register(stdin, selectors.EVENT_WRITE)
        selector.register(channel, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in selector.select(remaining):
                if key.fd == stdin:
                    try:
                        pending = pending[os.write(stdin, pending) :]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # the child is gone: its exit status says why
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(stdin)
                        process.stdin.close()
                else:
                    data = os.read(channel, 1 << 16)
                    if not data:
                        selector.unregister(channel)
                    elif size < CHANNEL_LIMIT:
                        received.append(data)
                        size += len(data)
    try:
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(process)
    if not process.stdin.closed:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
    return b"".join(received), timed_out


def _valid_result(loaded: object) -> dict[str, Any] | None:
    """The harness's result when it has the shape the harness writes, else None."""
    if not isinstance(loaded, dict) or not isinstance(loaded.get("functions"), dict):
        return None
    error = loaded.get("error")
    if error is not None and not (isinstance(error, dict) and isinstance(error.get("text"), str)):
        return None
    for outcomes in loaded["functions"].values():
        if not isinstance(outcomes, list) or not all(
            isinstance(o, dict) and ("value" in o or isinstance(o.get("error"), dict)) for o in outcomes
        ):
            return None
    return loaded


def _read_channel(data: bytes, nonce: bytes) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
    """The result that carries the nonce (None if none does) and the refusal reasons on the
    channel, in the order written (only the exit status says whether the hook refused)."""
    result, refusals = None, []
    for line in data.split(b"\n"):
        if line.startswith(REFUSED_PREFIX):
            refusals.append(line[len(REFUSED_PREFIX) :].decode("utf-8", errors="replace"))
        elif line.startswith(nonce + b" "):
            try:
                result = _valid_result(json.loads(line[len(nonce) + 1 :]))
            except ValueError:
                result = None
    return result, tuple(refusals)


def _verdict_from(
    result: dict[str, Any] | None,
    refusals: tuple[str, ...],
    returncode: int | None,
    timed_out: bool,
    limits: Limits,
    stderr: str,
) -> tuple[str, str]:
    if timed_out:
        return "timeout", f"timed out: still running after {limits.wall_s:g} s (killed)"
    if returncode == REFUSED_EXIT:
        # The hook's refusal is the last line: the process ended right after writing it.
        return "refused", "refused: " + (refusals[-1] if refusals else "(the reason was not received)")
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
    error = result.get("error")
    if error:
        where = f" (line {error['line']})" if error.get("line") else ""
        if error.get("kind") == "memory":
            return "memory", f"ran out of memory (limit {limits.memory_mb} MB){where}"
        if "[Errno 27]" in error["text"]:
            return "exception", f"wrote more than {limits.file_size_mb} MB to a file or its output{where}"
        return "exception", f"raised {error['text']}{where}"
    return "ok", "ran to the end"


def run_python(
    source: str,
    calls: list[list[Any]] | None = None,
    *,
    function: str | None = None,
    limits: Limits = Limits(),
) -> SandboxRun:
    """Run `source` in the sandbox; then call its functions with each argument list in `calls`.

    Without `function`, every function the code defines that accepts that many positional
    arguments is called; with it, only that one. Results come back in `functions`.
    """
    folder = Path(tempfile.mkdtemp(prefix="peft-sandbox-"))
    nonce = secrets.token_hex(16).encode("ascii")
    started = time.monotonic()
    channel, child_end = os.pipe()
    process = None
    try:
        (folder / HARNESS_FILE).write_text(_HARNESS, encoding="utf-8")
        request = json.dumps(
            {
                "source": source,
                "calls": calls,
                "function": function,
                "channel": child_end,
                "refused_exit": REFUSED_EXIT,
                "limits": {
                    "cpu_s": limits.cpu_s,
                    "memory_mb": limits.memory_mb,
                    "file_size_mb": limits.file_size_mb,
                },
            }
        )
        with open(folder / "stdout.txt", "wb") as out, open(folder / "stderr.txt", "wb") as err:
            try:
                process = subprocess.Popen(
                    [sys.executable, "-I", "-B", "-u", "-X", "utf8", HARNESS_FILE],
                    cwd=folder,
                    env={},
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    pass_fds=(child_end,),
                )
            finally:
                os.close(child_end)  # the child holds the only write end: end of file when it exits
            received, timed_out = _exchange(
                process, nonce + b"\n" + request.encode("utf-8"), channel, limits.wall_s
            )
        seconds = time.monotonic() - started
        stdout, stderr = _read_limited(folder / "stdout.txt"), _read_limited(folder / "stderr.txt")
        result, refusals = _read_channel(received, nonce)
        outcome, reason = _verdict_from(result, refusals, process.returncode, timed_out, limits, stderr)
        return SandboxRun(
            outcome=outcome,
            reason=reason,
            functions=result["functions"] if result and outcome != "refused" else {},
            refused=refusals if outcome == "refused" else (),
            stdout=stdout,
            stderr=stderr,
            seconds=seconds,
        )
    finally:
        if process is not None and process.poll() is None:  # interrupted (a stopped job): no orphan left
            _kill(process)
        os.close(channel)
        shutil.rmtree(folder, ignore_errors=True)


def _shown(value: Any) -> str:
    text = value["repr"] if isinstance(value, dict) and set(value) == {"repr"} else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def run_function_cases(
    source: str, cases: list[tuple[list[Any], Any]], *, function: str | None = None, limits: Limits = Limits()
) -> FunctionVerdict:
    """Run `source` and check that a function it defines maps each case's arguments to its expected value.

    Without `function`, any function the code defines may pass (the first that returns every
    expected value is named); the reason names what went wrong otherwise.
    """
    run = run_python(source, [list(args) for args, _ in cases], function=function, limits=limits)
    if not run.ok:
        return FunctionVerdict(False, run.reason, None, run.seconds)
    if not run.functions:
        wanted = (
            f"function named {function}"
            if function
            else (f"function taking {len(cases[0][0])} argument(s)" if cases else "function")
        )
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
                problem = (
                    f"wrong output: {call} returned {_shown(outcome['value'])}, expected {_shown(expected)}"
                )
                break
        if not problem:
            return FunctionVerdict(True, f"{name} passed {len(cases)} case(s)", name, run.seconds)
        first_problem = first_problem or problem
    return FunctionVerdict(False, first_problem, None, run.seconds)
