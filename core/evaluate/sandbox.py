"""Run untrusted Python (a model's answer) in a separate, limited process.

The boundary is the operating system. `code_check_isolation()` says what is in use here:

- "bwrap" (bubblewrap, probed once per process): the code runs in new user, PID, network,
  IPC, UTS, cgroup and mount namespaces, as uid and gid 65534, unable to create further user
  namespaces, in its own session, killed when its parent dies, with an empty environment.
  It sees /usr and the Python installation read-only (the standard library and the base
  installation's packages, not the venv's), its own /proc (its own processes only), a minimal
  /dev, and one writable place: a fresh tmpfs at /sandbox of `Limits.folder_mb`, its working
  folder; the root and /dev are read-only. Nothing else of the host is there: no /etc, no
  home or runs folder, no host process to read or signal, no network but its own loopback.
  Every process it starts dies with it.
  When the dashboard runs as root, bubblewrap itself runs as uid and gid 65534 ("nobody") with no
  other group, started by setpriv (util-linux): it makes the user namespace unprivileged, uid
  65534 inside is uid 65534 on the host, and the kernel's process limit holds (it exempts root).
  A first bubblewrap, still root, only gives it a private view of the host in which the Python
  installation's folders that uid 65534 could not enter (a pyenv build under /root, mode 700) are
  reachable: under a fresh world-searchable tmpfs, bound read-only. Otherwise bubblewrap runs as
  the dashboard's user, which uid 65534 inside then is on the host.
- "audit-hook": bubblewrap is missing or does not work here and the operator set
  PEFT_UNISOLATED_CODE_CHECKS=1: the code runs in a host temporary folder behind the audit
  hook alone, which is no boundary (see below); code checks say "unisolated".
- "none": otherwise. The code is not run; code checks say "not run: no isolation on this
  machine" and count neither as passed nor as failed.

Either way the code runs in a fresh `python -I` process under CPU, memory, file-size and
process rlimits and the parent's wall clock (the process group is killed when it runs out). It
may start no process (under bubblewrap, `Limits.processes` of them: RLIMIT_NPROC is the number
of processes of its uid in its user namespace plus that). The limit holds under bubblewrap
whoever runs the dashboard; behind the audit hook alone, only when that is not root.
Its stdout and stderr come back through pipes the parent reads, keeping OUTPUT_LIMIT bytes
of each; the result comes back through a pipe the parent holds (an inherited descriptor,
never a file the code could replace).

The audit hook, a second layer inside the sandbox, installed before the code runs, refuses:
- network use, starting processes (subprocess's fork_exec included), ctypes, mmap,
  changing the limits, tracing or profiling, walking the garbage collector's objects,
  replacing the code or defaults of the sandbox's own functions;
- writing, deleting, renaming or os.open-ing anything outside the folder, symbolic links;
- reading or listing anything outside the folder and the Python installation (sys.prefix,
  sys.base_prefix, sys.exec_prefix and the stdlib and site-packages folders), all of /proc,
  devices and pipes, and relative paths that climb with '..' (os.chdir stays in the folder).
Under bubblewrap it turns the plain attempts into a clear "refused: <reason>" verdict.

How a verdict comes back, and why the code cannot forge one:
- A refusal ends the process at once: the hook writes the reason to the result channel and
  calls os._exit with REFUSED_EXIT. No code runs after it, so none can catch, clear or hide
  it; the parent reads the refusal from the exit status, which the code cannot undo.
- The hook cannot be changed from inside: it and its helpers take everything they use as
  default arguments (bound before the code runs, immutable) and read no global, builtin or
  closure cell, so replacing os.path.realpath, a builtin or a global of the harness changes
  nothing; replacing their defaults or code is refused.
- The result is prefixed with a random nonce that the parent sends on stdin and the harness
  reads before the code runs (stdin is then at its end), and encoded by json's C encoder
  bound before the code runs. A result written into the pipe without the nonce, or a
  replaced json.dumps, counts for nothing.
- CPU and memory kills are the kernel's, and the wall clock is the parent's.

What the audit hook alone does not stop (reproduced; under bubblewrap each meets the
namespaces instead): a second copy of an extension module loaded under another name (a
fresh _posixsubprocess starts /bin/sh), a native extension written to the folder, calls
that raise no audit event (os.pidfd_open with signal.pidfd_send_signal, os.mknod,
os.mkfifo, os.setpriority, C code that opens files itself, sqlite's ATTACH), os.stat on any
path, and code that digs through the interpreter's frames to the nonce (CPython 3.11 audits
neither a signal handler's frame argument nor frame.f_back or f_locals) to send a result of
its own. A forged result can only claim values its functions could have returned: to pass,
the code must know the expected values, which stay in the parent.

What bubblewrap does not stop: there is no seccomp filter, so the kernel's system calls are the
attack surface. An escape lands as the user bubblewrap runs as: "nobody" when the dashboard is
root, a user every concurrent sandbox (and any host service running as nobody) shares; the
dashboard's own user otherwise. As root, the first bubblewrap and setpriv run as root, before
any of the code and with none of its input.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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
    # Under bubblewrap /proc lists the sandbox's own processes (its init and this one): the code may
    # start limits["processes"] more. Behind the audit hook alone (None), none.
    processes = limits["processes"]
    allowed = 0 if processes is None else sum(name.isdigit() for name in os.listdir("/proc")) + processes
    limit(resource.RLIMIT_NPROC, allowed, allowed)
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

OUTPUT_LIMIT = 4000  # bytes of stdout and of stderr kept; more is read and dropped
CHANNEL_LIMIT = 4 * 2**20  # bytes of the result channel kept; more is read and dropped
REFUSED_EXIT = 86  # the exit status of a process the audit hook ended
REFUSED_PREFIX = b"refused "
PYTHON_FLAGS = ("-I", "-B", "-u", "-X", "utf8")
DEFAULT_TIMEOUT_S = 5.0
UNISOLATED_ENV = "PEFT_UNISOLATED_CODE_CHECKS"
NOT_RUN = "not run: no isolation on this machine"
SANDBOX_FOLDER = "/sandbox"  # the working folder under bubblewrap: a fresh tmpfs, the only writable place
NOBODY = 65534  # the uid and gid the code runs as (and, when the dashboard is root, bubblewrap on the host)
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # symlinks into /usr, or folders


@dataclass(frozen=True)
class Limits:
    """What the sandboxed process may use."""

    wall_s: float = DEFAULT_TIMEOUT_S
    cpu_s: int = 5
    memory_mb: int = 256
    file_size_mb: int = 1
    folder_mb: int = 16  # the size of the writable tmpfs under bubblewrap
    processes: int = 0  # how many processes the code may start under bubblewrap (none behind the hook alone)


TIMEOUT_RANGE_S = (0.1, 60.0)  # what a code check's timeout may be


def valid_timeout(seconds: object) -> bool:
    """Whether `seconds` is a number within TIMEOUT_RANGE_S."""
    low, high = TIMEOUT_RANGE_S
    return not isinstance(seconds, bool) and isinstance(seconds, (int, float)) and low <= seconds <= high


def limits_for_timeout(seconds: float) -> Limits:
    """The limits a code check with `seconds` of wall clock runs under (CPU time rounded up)."""
    if not valid_timeout(seconds):
        raise ValueError(f"the timeout must be from 0.1 to 60 seconds (got {seconds!r})")
    return Limits(wall_s=seconds, cpu_s=max(1, math.ceil(seconds)))


@dataclass(frozen=True)
class Isolation:
    """How answer code is kept from the machine: kind "bwrap", "audit-hook" or "none" (not run),
    a one-line description for people, and the bwrap program when the kind is "bwrap"."""

    kind: str
    description: str
    bwrap: str | None = None


AUDIT_HOOK_ONLY = Isolation(
    "audit-hook",
    f"answer code runs unisolated, behind an audit hook only ({UNISOLATED_ENV}=1): "
    "that is no security boundary",
)


def find_bwrap() -> str | None:
    """The bubblewrap program on PATH, or None."""
    return shutil.which("bwrap")


def _interpreter() -> str:
    """The Python the sandbox runs: this one's real file (a venv's python is a link to it)."""
    return os.path.realpath(sys.executable)


def _python_folders() -> list[str]:
    """The Python installation's folders outside /usr, outermost only."""
    folders = sorted(
        {
            os.path.realpath(folder)
            for folder in (
                sys.base_prefix,
                sys.base_exec_prefix,
                os.path.dirname(os.path.dirname(_interpreter())),
            )
        }
    )
    chosen: list[str] = []
    for folder in folders:
        if not any(folder == kept or folder.startswith(kept + "/") for kept in ["/usr", *chosen]):
            chosen.append(folder)
    return chosen


def _enterable_by_nobody(folder: str) -> bool:
    """True when uid 65534, with gid 65534 and no other group, may enter `folder`."""
    info = os.stat(folder)
    if info.st_uid == NOBODY:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == NOBODY:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _hidden_ancestor(folder: str) -> str | None:
    """The outermost folder above `folder` that uid 65534 cannot enter (/root, mode 700), or None."""
    above = ""
    for name in folder.strip("/").split("/")[:-1]:
        above += "/" + name
        if not _enterable_by_nobody(above):
            return above
    return None


def _reveal_python(bwrap: str) -> list[str]:
    """A root bubblewrap, up to the command it runs, that shows that command the host as it is but
    with each Python folder that uid 65534 could not reach reachable: a fresh world-searchable
    tmpfs over the folder that hides it (the host's own is untouched), the folders leading down to
    the Python folder, and the folder bound read-only. Empty when nothing is hidden.

    (bubblewrap's --ro-bind-fd does not do it: it resolves the descriptor to its path, as the user
    it runs as, and uid 65534 cannot enter /root.)"""
    command: list[str] = []
    made: set[str] = set()
    for folder in _python_folders():
        hidden = _hidden_ancestor(folder)
        if hidden is None:
            continue
        made_here, mounts = hidden, [("--tmpfs", hidden)]
        for name in folder[len(hidden) + 1 :].split("/")[:-1]:
            made_here += "/" + name
            mounts.append(("--dir", made_here))
        for option, path in mounts:
            if path not in made:
                command += ["--perms", "0755", option, path]
                made.add(path)
        command += ["--ro-bind", folder, folder]
    # Its own PID namespace: when it dies (with its parent) the kernel kills all below it. Its
    # monitor drops its capabilities, so its death signal could not reach a uid 65534 child.
    view = [bwrap, "--dev-bind", "/", "/", "--unshare-pid", "--die-with-parent"]
    view += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]  # setpriv's
    return [*view, *command, "--"] if command else []


def _bwrap_command(bwrap: str, folder_bytes: int) -> list[str]:
    """bubblewrap with the sandbox's options, up to the command it runs. As root it is started as
    uid and gid 65534 with no other group (by setpriv, after _reveal_python), so that it makes its
    user namespace unprivileged and the kernel's process limit holds for what runs inside."""
    command = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"]
    command += ["--new-session", "--uid", str(NOBODY), "--gid", str(NOBODY), "--ro-bind", "/usr", "/usr"]
    for path in SYSTEM_LINKS:
        if os.path.islink(path):
            command += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            command += ["--ro-bind", path, path]
    for folder in _python_folders():
        command += ["--ro-bind", folder, folder]
    command += ["--size", str(folder_bytes), "--tmpfs", SANDBOX_FOLDER, "--proc", "/proc", "--dev", "/dev"]
    command += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", SANDBOX_FOLDER, "--clearenv"]
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv") or "setpriv"  # util-linux; when it is missing the probe says so
    as_nobody = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return [*_reveal_python(bwrap), *as_nobody, "--", *command]


@functools.cache
def _bwrap_problem(bwrap: str) -> str | None:
    """Why `bwrap` cannot run this Python in the sandbox, or None when it can: it is tried once
    per process, started as a run starts it (as root: as uid 65534, which a host may refuse user
    namespaces, or which may not reach the Python installation)."""
    try:
        probe = subprocess.run(
            [*_bwrap_command(bwrap, 2**20), _interpreter(), *PYTHON_FLAGS, "-c", "pass"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env={},
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{bwrap} could not be run: {exc}"
    if probe.returncode != 0:
        lines = probe.stderr.decode("utf-8", errors="replace").strip().splitlines()
        return f"{bwrap} failed: {lines[-1] if lines else f'exit code {probe.returncode}'}"
    return None


def code_check_isolation() -> Isolation:
    """What keeps answer code from the machine here: bubblewrap when it works, else the audit hook
    alone when the operator set PEFT_UNISOLATED_CODE_CHECKS=1, else nothing (code is not run)."""
    bwrap = find_bwrap()
    problem = "bubblewrap (bwrap) is not installed" if bwrap is None else _bwrap_problem(bwrap)
    if problem is None:
        return Isolation(
            "bwrap",
            "answer code runs under bubblewrap: own namespaces, uid 65534, no network, the Python "
            "installation read-only and a small scratch folder, behind an audit hook",
            bwrap,
        )
    if os.environ.get(UNISOLATED_ENV) == "1":
        return AUDIT_HOOK_ONLY
    return Isolation(
        "none",
        f"code checks are not run: {problem} (install bubblewrap, or set {UNISOLATED_ENV}=1 to run "
        "them behind an audit hook only)",
    )


@dataclass(frozen=True)
class SandboxRun:
    """What happened to one piece of code in the sandbox.

    outcome: "ok" (ran to the end; functions may still have raised, see `functions`),
    "timeout", "cpu", "memory", "refused", "exception", "crashed" or "not run" (no
    isolation here); `reason` says it in words; `isolation` is the Isolation kind it ran under.
    """

    outcome: str
    reason: str
    functions: dict[str, list[dict[str, Any]]]
    refused: tuple[str, ...]
    stdout: str
    stderr: str
    seconds: float
    isolation: str

    @property
    def ok(self) -> bool:
        """True when the code ran to the end without refusals or errors."""
        return self.outcome == "ok"

    def report(self) -> dict[str, str]:
        """What the `sandbox` command prints: outcome, reason, stdout, stderr and isolation."""
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "isolation": self.isolation,
        }


@dataclass(frozen=True)
class FunctionVerdict:
    """Whether a function in the code returned the expected values (None: the code was not run), and why not."""

    passed: bool | None
    reason: str
    function: str | None
    seconds: float
    isolation: str


def _kill(process: subprocess.Popen) -> None:
    """Kill the child and its process group, and reap it (under bubblewrap the sandbox's
    processes die with it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _exchange(
    process: subprocess.Popen, message: bytes, channel: int, wall_s: float
) -> tuple[bytes, bytes, bytes, bool]:
    """Send `message` to the child's stdin, then read its result channel, stdout and stderr
    until the child closes them and exits: what each said (up to its limit) and True when
    `wall_s` ran out first (the child's process group is then killed)."""
    deadline = time.monotonic() + wall_s
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    stdin = process.stdin.fileno()
    os.set_blocking(stdin, False)
    pending = memoryview(message)
    limits = {
        channel: CHANNEL_LIMIT,
        process.stdout.fileno(): OUTPUT_LIMIT,
        process.stderr.fileno(): OUTPUT_LIMIT,
    }
    received: dict[int, bytearray] = {fd: bytearray() for fd in limits}
    with selectors.DefaultSelector() as selector:
        selector.register(stdin, selectors.EVENT_WRITE)
        for fd in limits:
            selector.register(fd, selectors.EVENT_READ)
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
                    continue
                data = os.read(key.fd, 1 << 16)
                if not data:
                    selector.unregister(key.fd)
                elif len(received[key.fd]) < limits[key.fd]:
                    received[key.fd] += data[: limits[key.fd] - len(received[key.fd])]
    try:
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(process)
    if not process.stdin.closed:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
    return (
        bytes(received[channel]),
        bytes(received[process.stdout.fileno()]),
        bytes(received[process.stderr.fileno()]),
        timed_out,
    )


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


def _killed_by(returncode: int | None, under_bwrap: bool) -> int | None:
    """The signal that ended the code, from its exit status (bubblewrap exits with 128 + the signal)."""
    if returncode is None:
        return None
    if returncode < 0:
        return -returncode
    if under_bwrap and returncode > 128:
        return returncode - 128
    return None


def _verdict_from(
    result: dict[str, Any] | None,
    refusals: tuple[str, ...],
    returncode: int | None,
    killed_by: int | None,
    timed_out: bool,
    limits: Limits,
    stderr: str,
) -> tuple[str, str]:
    if timed_out:
        return "timeout", f"timed out: still running after {limits.wall_s:g} s (killed)"
    if returncode == REFUSED_EXIT:
        # The hook's refusal is the last line: the process ended right after writing it.
        return "refused", "refused: " + (refusals[-1] if refusals else "(the reason was not received)")
    if killed_by is not None:
        if killed_by == signal.SIGXCPU:
            return "cpu", f"used more than its {limits.cpu_s} s of CPU time (killed)"
        try:
            name = signal.Signals(killed_by).name
        except ValueError:
            name = f"signal {killed_by}"
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
            return "exception", f"wrote more than {limits.file_size_mb} MB to a file{where}"
        if "[Errno 28]" in error["text"]:
            return "exception", f"filled its {limits.folder_mb} MB folder{where}"
        return "exception", f"raised {error['text']}{where}"
    return "ok", "ran to the end"


def run_python(
    source: str,
    calls: list[list[Any]] | None = None,
    *,
    function: str | None = None,
    limits: Limits = Limits(),
    isolation: Isolation | None = None,
) -> SandboxRun:
    """Run `source` in the sandbox; then call its functions with each argument list in `calls`.

    Without `function`, every function the code defines that accepts that many positional
    arguments is called; with it, only that one. Results come back in `functions`.
    `isolation` defaults to code_check_isolation(); with kind "none" nothing runs.
    """
    isolation = isolation or code_check_isolation()
    if isolation.kind == "none":
        return SandboxRun("not run", NOT_RUN, {}, (), "", "", 0.0, isolation.kind)
    under_bwrap = isolation.kind == "bwrap"
    assert not under_bwrap or isolation.bwrap is not None
    folder = None if under_bwrap else tempfile.mkdtemp(prefix="peft-sandbox-")
    nonce = secrets.token_hex(16).encode("ascii")
    started = time.monotonic()
    channel, child_end = os.pipe()
    process = None
    try:
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
                    "processes": limits.processes if under_bwrap else None,
                },
            }
        )
        python = [_interpreter() if under_bwrap else sys.executable, *PYTHON_FLAGS, "-c", _HARNESS]
        try:
            process = subprocess.Popen(
                _bwrap_command(isolation.bwrap, limits.folder_mb * 2**20) + python if under_bwrap else python,
                cwd=folder,
                env={},  # under bubblewrap its /proc/1/environ is this: nothing of the dashboard's
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                pass_fds=(child_end,),
            )
        finally:
            os.close(child_end)  # the child holds the only write end: end of file when it exits
        received, stdout, stderr, timed_out = _exchange(
            process, nonce + b"\n" + request.encode("utf-8"), channel, limits.wall_s
        )
        seconds = time.monotonic() - started
        out, err = stdout.decode("utf-8", errors="replace"), stderr.decode("utf-8", errors="replace")
        result, refusals = _read_channel(received, nonce)
        killed_by = _killed_by(process.returncode, under_bwrap)
        outcome, reason = _verdict_from(
            result, refusals, process.returncode, killed_by, timed_out, limits, err
        )
        return SandboxRun(
            outcome=outcome,
            reason=reason,
            functions=result["functions"] if result and outcome != "refused" else {},
            refused=refusals if outcome == "refused" else (),
            stdout=out,
            stderr=err,
            seconds=seconds,
            isolation=isolation.kind,
        )
    finally:
        if process is not None:
            if process.poll() is None:  # interrupted (a stopped job): no orphan left
                _kill(process)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        os.close(channel)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _shown(value: Any) -> str:
    text = value["repr"] if isinstance(value, dict) and set(value) == {"repr"} else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def run_function_cases(
    source: str,
    cases: list[tuple[list[Any], Any]],
    *,
    function: str | None = None,
    limits: Limits = Limits(),
    isolation: Isolation | None = None,
) -> FunctionVerdict:
    """Run `source` and check that a function it defines maps each case's arguments to its expected value.

    Without `function`, any function the code defines may pass (the first that returns every
    expected value is named); the reason names what went wrong otherwise. Without isolation
    here the code is not run: `passed` is None and the reason says so.
    """
    run = run_python(
        source, [list(args) for args, _ in cases], function=function, limits=limits, isolation=isolation
    )
    if run.outcome == "not run":
        return FunctionVerdict(None, run.reason, None, run.seconds, run.isolation)
    if not run.ok:
        return FunctionVerdict(False, run.reason, None, run.seconds, run.isolation)
    if not run.functions:
        wanted = (
            f"function named {function}"
            if function
            else (f"function taking {len(cases[0][0])} argument(s)" if cases else "function")
        )
        return FunctionVerdict(False, f"defines no {wanted}", None, run.seconds, run.isolation)
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
            return FunctionVerdict(
                True, f"{name} passed {len(cases)} case(s)", name, run.seconds, run.isolation
            )
        first_problem = first_problem or problem
    return FunctionVerdict(False, first_problem, None, run.seconds, run.isolation)
