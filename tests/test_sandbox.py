"""The sandbox runs real untrusted code in real child processes and keeps it in its box."""

import _posixsubprocess
import base64
import contextlib
import dis
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import types
from pathlib import Path

import pytest

from core.evaluate import sandbox
from core.evaluate.checks import answer_verdict, run_check
from core.evaluate.sandbox import Limits, run_function_cases, run_python

CASES = [([""], ""), (["abc"], "cba"), (["åäö 🙂"], "🙂 öäå")]
REVERSE_CHECK = {
    "type": "python_function",
    "cases": [{"args": args, "expected": expected} for args, expected in CASES],
    "timeout_s": 5,
}


def test_correct_code_passes_and_names_its_function():
    verdict = run_function_cases(
        "def helper(a, b):\n    return a\n\ndef rev(s):\n    return s[::-1]\n", CASES
    )
    assert verdict.passed and verdict.function == "rev" and verdict.reason == "rev passed 3 case(s)"


def test_wrong_code_fails_with_the_wrong_output():
    verdict = run_function_cases("def rev(s):\n    return s.upper()\n", CASES)
    assert not verdict.passed and verdict.reason == "wrong output: rev('abc') returned 'ABC', expected 'cba'"
    verdict = run_function_cases("def rev(s):\n    print(s[::-1])\n", CASES)
    assert verdict.reason == "wrong output: rev('') returned None, expected ''"
    verdict = run_function_cases("def rev(s):\n    return s[0]\n", CASES)
    assert verdict.reason == "rev('') raised IndexError: string index out of range"
    verdict = run_function_cases("x = 1\n", CASES)
    assert verdict.reason == "defines no function taking 1 argument(s)"


def test_an_endless_loop_is_killed_within_the_wall_limit():
    started = time.monotonic()
    run = run_python("import time\nwhile True:\n    time.sleep(0.01)\n", limits=Limits(wall_s=1.0))
    elapsed = time.monotonic() - started
    assert run.outcome == "timeout" and run.reason == "timed out: still running after 1 s (killed)"
    assert elapsed < 2.5, elapsed


def test_a_busy_loop_is_stopped_by_the_cpu_limit():
    started = time.monotonic()
    run = run_python("while True:\n    pass\n", limits=Limits(wall_s=10, cpu_s=1))
    assert run.outcome == "cpu" and "more than its 1 s of CPU time" in run.reason
    assert time.monotonic() - started < 4


def test_deleting_a_file_outside_is_refused_and_the_file_survives(tmp_path):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    for code in (
        f"import os\nos.remove({str(sentinel)!r})\n",
        f"import os\nos.unlink({str(sentinel)!r})\n",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
        f"import os\nos.rename({str(sentinel)!r}, 'stolen.txt')\n",
        f"open({str(sentinel)!r}, 'w').write('overwritten')\n",
        f"import os\nos.system('rm -f {sentinel}')\n",
        # a refusal the code swallows is still a refusal
        f"import os\ntry:\n    os.remove({str(sentinel)!r})\nexcept OSError:\n    pass\n",
    ):
        run = run_python(code)
        assert run.outcome == "refused" and run.reason.startswith("refused: "), (code, run)
        assert sentinel.read_text() == "keep me"
    assert run_python(f"import os\nos.remove({str(sentinel)!r})\n").refused == (
        f"os.remove outside the sandbox ({str(sentinel)!r})",
    )


def test_files_inside_its_own_folder_are_allowed():
    run = run_python("import os\nopen('scratch.txt', 'w').write('x')\nos.remove('scratch.txt')\n")
    assert run.ok, run.reason


def test_network_processes_and_ctypes_are_refused():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    run = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n")
    server.settimeout(0.1)
    with pytest.raises(TimeoutError):  # the kernel would have queued a connection without accept()
        server.accept()
    server.close()
    assert run.outcome == "refused" and run.reason.startswith("refused: socket."), run.reason
    assert run_python("import subprocess\nsubprocess.run(['true'])\n").reason == "refused: subprocess.Popen"
    assert run_python("import os\nos.fork()\n").reason == "refused: os.fork"
    assert run_python("import ctypes\n").outcome == "refused"
    assert (
        run_python("import resource\nresource.setrlimit(resource.RLIMIT_CPU, (99, 99))\n").outcome
        == "refused"
    )


def test_too_much_memory_is_stopped():
    run = run_python("data = bytearray(1024 * 2**20)\n", limits=Limits(memory_mb=128))
    assert run.outcome == "memory" and run.reason == "ran out of memory (limit 128 MB) (line 1)"
    grow = "chunks = []\nwhile True:\n    chunks.append(bytearray(8 * 2**20))\n"
    run = run_python(grow, limits=Limits(memory_mb=128))
    assert run.outcome == "memory"


def test_big_files_and_output_are_capped():
    run = run_python("open('big.bin', 'wb').write(b'x' * 5 * 2**20)\n", limits=Limits(file_size_mb=1))
    assert run.outcome == "exception" and run.reason == "wrote more than 1 MB to a file (line 1)"
    # Output goes through pipes the parent reads to the end, keeping the first 4000 bytes of each.
    run = run_python(
        "import sys\nfor _ in range(100000):\n    print('spam' * 10)\n    print('eggs', file=sys.stderr)\n"
    )
    assert run.ok and run.stdout == (("spam" * 10 + "\n") * 100)[: sandbox.OUTPUT_LIMIT]
    assert run.stderr == ("eggs\n" * 1000)[: sandbox.OUTPUT_LIMIT]
    assert run_python("print('fine')\n").stdout == "fine\n"


def test_an_empty_environment_and_its_own_folder(monkeypatch):
    """Nothing of the parent's environment (bubblewrap sets PWD); TMPDIR is the folder, so tempfile
    works there; it runs as uid and gid 65534 with its own process numbers."""
    monkeypatch.setenv("HF_TOKEN", "hf_fake_parent_secret")
    run = run_python(
        "import os, sys, tempfile\nassert set(os.environ) <= {'LC_CTYPE', 'TMPDIR', 'PWD'}, dict(os.environ)\n"
        f"assert os.getcwd() == {sandbox.SANDBOX_FOLDER!r}\nassert sys.flags.isolated\n"
        "assert os.environ['TMPDIR'] == os.getcwd() == tempfile.gettempdir()\n"
        "with tempfile.TemporaryFile() as scratch:\n    scratch.write(b'x')\n"
        "print(os.getuid(), os.getgid(), os.getpid())\n"
    )
    assert run.ok and run.isolation == "bwrap", run.reason
    uid, gid, pid = map(int, run.stdout.split())
    assert (uid, gid) == (65534, 65534) and pid < 10


def test_errors_in_the_code_are_reported_with_their_line():
    assert run_python("x = 1\nraise ValueError('boom')\n").reason == "raised ValueError: boom (line 2)"
    assert run_python("def f(:\n").outcome == "exception"
    assert run_python("input()\n").reason == "raised EOFError: EOF when reading a line (line 1)"
    assert run_python("import os\nos._exit(3)\n").reason == "exited without a result (exit code 3)"


# --- forging a verdict -----------------------------------------------------------------------

# What the harness sends for CASES when a function `rev` passes them all.
PASSING = json.dumps({"error": None, "functions": {"rev": [{"value": expected} for _, expected in CASES]}})
WRONG = "def rev(s):\n    return s\n"  # passes only the first case


def test_a_result_file_written_by_the_code_counts_for_nothing():
    forged = (
        f"import json, os\nopen('result.json', 'w').write({PASSING!r})\n"
        f"json.dump({{'refused': [], **json.loads({PASSING!r})}}, open('../result.json', 'w'))\n"
    )
    verdict = run_function_cases(
        WRONG + forged.replace("'../result.json'", "'result2.json'") + "os._exit(0)\n", CASES
    )
    assert not verdict.passed and verdict.reason == "exited without a result (exit code 0)", verdict.reason


def test_a_result_written_into_the_result_channel_by_the_code_counts_for_nothing():
    """The code can write to every descriptor it has, the result pipe included, but not with the nonce."""
    forged = (
        "import os\n"
        f"for line in ({PASSING!r}, 'x' * 32 + ' ' + {PASSING!r}, 'ok ' + {PASSING!r}):\n"
        "    for fd in range(3, 64):\n"
        "        try:\n"
        "            os.write(fd, line.encode() + b'\\n')\n"
        "        except OSError:\n"
        "            pass\n"
        "os._exit(0)\n"
    )
    verdict = run_function_cases(WRONG + forged, CASES)
    assert not verdict.passed and verdict.reason == "exited without a result (exit code 0)", verdict.reason
    honest = run_function_cases(WRONG + forged.replace("os._exit(0)\n", ""), CASES)
    assert (
        honest.reason == "wrong output: rev('abc') returned 'abc', expected 'cba'"
    )  # the harness's own result


def test_replacing_json_does_not_change_the_result_sent():
    forged = (
        "import json, json.encoder\n"
        f"json.dumps = lambda *args, **kwargs: {PASSING!r}\n"
        "json.encoder.c_make_encoder = json.encoder.encode_basestring_ascii = None\n"
        "json._default_encoder = None\n"
    )
    verdict = run_function_cases(WRONG + forged, CASES)
    assert verdict.reason == "wrong output: rev('abc') returned 'abc', expected 'cba'"


def test_a_refusal_cannot_be_caught_cleared_or_outvoted(tmp_path):
    """A refusal ends the process: code after it never runs, a result sent before it does not count."""
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    correct = "def rev(s):\n    return s[::-1]\n"
    caught = (
        f"import os, sys\ntry:\n    os.remove({str(sentinel)!r})\nexcept BaseException:\n    pass\n"
        "main = vars(sys.modules['__main__'])\n"
        "main.get('refused', []).clear()\n"
        "for name in ('REFUSED', 'WRITES'):\n    main[name] = ()\n"
    )
    verdict = run_function_cases(correct + caught, CASES)
    assert (
        not verdict.passed and verdict.reason == f"refused: os.remove outside the sandbox ({str(sentinel)!r})"
    )
    forged_first = (
        "import os\nfor fd in range(3, 64):\n    try:\n"
        f"        os.write(fd, b'refused nothing\\n' + {PASSING!r}.encode() + b'\\n')\n"
        "    except OSError:\n        pass\n"
        f"os.remove({str(sentinel)!r})\n"
    )
    run = run_python(correct + forged_first, [[args[0]] for args, _ in CASES])
    assert (
        run.outcome == "refused" and run.functions == {} and run.refused[-1].startswith("os.remove outside")
    )
    assert sentinel.read_text() == "keep me"


def test_replacing_what_the_hook_uses_changes_nothing(tmp_path):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    tamper = (
        "import builtins, os, os.path, posixpath, stat, sys\n"
        "inside = os.path.join(os.getcwd(), 'x')\n"
        "os.path.realpath = posixpath.realpath = posixpath.abspath = lambda *a, **k: inside\n"
        "os.getcwd = lambda: '/'\n"
        "stat.S_ISLNK = lambda mode: False\n"
        "builtins.isinstance = builtins.issubclass = lambda *a: True\n"
        "builtins.type = lambda *a: str\n"
        "main = vars(sys.modules['__main__'])\n"
        "main.update(REFUSED=(), WRITES=(), READS=(), WRITE_FLAGS=0)\n"
    )
    for action in (f"open({str(sentinel)!r}, 'w').write('overwritten')\n", f"os.remove({str(sentinel)!r})\n"):
        run = run_python(tamper + action)
        assert run.outcome == "refused" and "outside the sandbox" in run.reason, (action, run)
    assert sentinel.read_text() == "keep me"
    for code, reason in [
        (
            "import sys\nsys.modules['__main__'].limit.__defaults__ = (2,)\n",
            "refused: changing a sandbox function's __defaults__",
        ),
        (
            "import sys\nsys.modules['__main__'].make_hook.__code__ = (lambda *a: 1).__code__\n",
            "refused: changing a sandbox function's __code__",
        ),
        ("import gc\ngc.get_objects()\n", "refused: gc.get_objects"),
        ("import gc\ngc.get_referrers(gc)\n", "refused: gc.get_referrers"),
        ("import sys\nsys.settrace(lambda *a: None)\n", "refused: sys.settrace"),
        ("import sys\nsys.setprofile(lambda *a: None)\n", "refused: sys.setprofile"),
        ("import _posixsubprocess\n_posixsubprocess.fork_exec()\n", "refused: _posixsubprocess.fork_exec"),
        (
            "import sys\ndel sys.modules['_posixsubprocess']\nimport _posixsubprocess\n",
            "refused: importing _posixsubprocess",
        ),
    ]:
        assert run_python(code).reason == reason, code


def test_the_hook_reads_no_global_builtin_or_closure_at_call_time():
    """What keeps the hook's decisions out of the code's reach (see test above): make_hook's
    functions take everything as default arguments."""
    module = compile(sandbox._HARNESS, "harness.py", "exec")
    make_hook = next(const for const in module.co_consts if getattr(const, "co_name", None) == "make_hook")
    nested = [const for const in make_hook.co_consts if isinstance(const, types.CodeType)]
    assert {code.co_name for code in nested} >= {
        "refuse",
        "plain",
        "resolve",
        "below",
        "special",
        "writing",
        "reading",
        "check",
        "hook",
    }
    assert make_hook.co_cellvars == ()
    for code in nested:
        assert code.co_freevars == () and not [
            const for const in code.co_consts if isinstance(const, types.CodeType)
        ]
        loads = {i.opname for i in dis.get_instructions(code)} & {
            "LOAD_GLOBAL",
            "LOAD_NAME",
            "LOAD_DEREF",
            "LOAD_CLOSURE",
            "LOAD_CLASSDEREF",
        }
        assert not loads, (code.co_name, loads)


# --- reading -------------------------------------------------------------------------------


def test_reading_outside_the_folder_and_the_python_installation_is_refused(tmp_path):
    secrets = tmp_path / ".streamlit" / "secrets.toml"
    secrets.parent.mkdir()
    secrets.write_text('HF_TOKEN = "hf_secret"\n')
    for code, reason in [
        (
            f"print(open({str(secrets)!r}).read())\n",
            f"refused: reading outside the sandbox and the Python installation ({str(secrets)!r})",
        ),
        (
            "print(open('/etc/passwd').read())\n",
            "refused: reading outside the sandbox and the Python installation",
        ),
        (
            "import os\nprint(open(f'/proc/{os.getppid()}/environ', 'rb').read())\n",
            "refused: reading in /proc",
        ),
        (
            "print(open('/proc/self/environ', 'rb').read())\n",
            "refused: reading in /proc ('/proc/self/environ')",
        ),
        (
            "import os\nos.close(os.open('/proc/self/mem', os.O_RDONLY))\n",
            "refused: os.open outside the sandbox",
        ),
        (
            "import os\nprint(os.listdir('/'))\n",
            "refused: os.listdir outside the sandbox and the Python installation",
        ),
        (f"import os\nos.chdir({str(tmp_path)!r})\n", "refused: os.chdir outside the sandbox"),
        ("print(open('../' * 8 + 'etc/passwd').read())\n", "refused: reading of a relative path that climbs"),
        ("import os\nos.chdir('..')\n", "refused: os.chdir outside the sandbox ('..')"),
        (
            "import os\nos.mkdir('sub')\nfd = os.open('sub', os.O_RDONLY)\nos.mkdir('../../x', dir_fd=fd)\n",
            "refused: os.mkdir of a relative path that climbs with '..' ('../../x')",
        ),
        (
            "import os\nos.mkdir('sub')\nos.chdir('sub')\nopen('../x', 'w')\n",
            "refused: writing of a relative path",
        ),
        (
            f"import os\nos.symlink({str(secrets)!r}, 'link')\nprint(open('link').read())\n",
            "refused: os.symlink",
        ),
        (
            f"import sqlite3\nsqlite3.connect({str(tmp_path / 'x.db')!r})\n",
            "refused: sqlite3.connect outside",
        ),
        (
            f"import sqlite3\nsqlite3.connect('file:{secrets}?mode=ro', uri=True)\n",
            "refused: sqlite3.connect to a URI",
        ),
        (
            "import os\nos.mkfifo('fifo')\nopen('fifo', 'rb')\n",
            "refused: reading of a device or pipe ('fifo')",
        ),
    ]:
        run = run_python(code)
        assert run.outcome == "refused" and run.reason.startswith(reason) and "hf_secret" not in run.stdout, (
            code,
            run,
        )


def test_the_python_installation_and_the_folder_can_be_read():
    code = (
        "import collections, decimal, difflib, json, os, pathlib, shutil, sqlite3, sys, tempfile\n"
        "Point = collections.namedtuple('Point', 'x y', defaults=(0,))\n"  # sets __new__.__defaults__
        "def f(x=1):\n    return x\nf.__defaults__ = (2,)\nassert f() == 2\n"
        "assert open(json.__file__).read().startswith('r')\n"
        "assert 'decoder.py' in os.listdir(os.path.dirname(json.__file__))\n"
        "pathlib.Path('notes.txt').write_text('hi')\n"
        "assert pathlib.Path('notes.txt').read_text() == 'hi' and 'notes.txt' in os.listdir()\n"
        "os.mkdir('sub')\nos.chdir('sub')\nopen('deeper.txt', 'w').write('x')\nos.chdir(os.environ['TMPDIR'])\n"
        "sqlite3.connect(':memory:').execute('select 1')\nsqlite3.connect('local.db').execute('select 1')\n"
        "shutil.rmtree('sub')\nprint(Point(1, 2), difflib.SequenceMatcher(None, 'ab', 'abc').ratio())\n"
    )
    run = run_python(code)
    assert run.ok and run.stdout == "Point(x=1, y=2) 0.8\n", (run.reason, run.stderr)


def descendants(of: int | None = None) -> list[int]:
    """The processes below process `of`, by default this one (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, pending = [], [os.getpid() if of is None else of]
    while pending:
        below = children.get(pending.pop(), [])
        found += below
        pending += below
    return found


def alive(pid: int) -> bool:
    """True while `pid` is a process that has not ended (a zombie has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def survivors(pids: list[int], wait_s: float = 2.0) -> list[int]:
    """Those of `pids` still alive after `wait_s`; they are killed so that no test leaves them."""
    deadline = time.monotonic() + wait_s
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = [pid for pid in pids if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def test_an_interrupted_run_leaves_no_process_behind():
    """A stopped eval job interrupts run_python with an exception: neither bubblewrap nor the code
    inside may live on (they get SIGKILL, which the kernel delivers within moments)."""

    class Stop(Exception):
        pass

    running: list[int] = []

    def stop(*_):
        running.extend(descendants())
        raise Stop

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(Stop):
            run_python("import time\nwhile True:\n    time.sleep(0.01)\n", limits=Limits(wall_s=30, cpu_s=30))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    left = survivors(running)
    assert len(running) >= 3 and left == []  # bwrap, its init in the sandbox, the harness


# --- the operating system as the boundary ------------------------------------------------------
# Each attack below got past the audit hook alone (reproduced in a security review); under
# bubblewrap it meets the namespaces. The code is real attack code run in the real sandbox.

# Loads a second copy of _posixsubprocess from the file SO_PATH under another module name (the
# hook replaced fork_exec in the first copy only) and defines start(argv): argv runs, unhooked,
# with the sandbox's stdout and stderr, and start returns its pid; spawn(argv) also waits for it
# and returns its exit status.
SPAWN = """
import importlib.machinery, importlib.util, os
_loader = importlib.machinery.ExtensionFileLoader("copy._posixsubprocess", SO_PATH)
_fresh = importlib.util.module_from_spec(
    importlib.util.spec_from_file_location("copy._posixsubprocess", SO_PATH, loader=_loader)
)

def start(argv):
    errors, errors_end = os.pipe()
    try:
        return _fresh.fork_exec(  # CPython 3.11's signature
            [a.encode() for a in argv], [argv[0].encode()], True, (), None, None,
            -1, -1, -1, -1, -1, -1, errors, errors_end, True, False, -1, -1, None, -1, -1, None, False,
        )
    finally:
        os.close(errors)
        os.close(errors_end)

def spawn(argv):
    return os.waitpid(start(argv), 0)[1]
"""


def spawning(argv: str, so_path: str = "_posixsubprocess.__file__") -> str:
    """Answer code that runs the command the expression `argv` gives through a second copy of
    _posixsubprocess loaded from the file the expression `so_path` names."""
    return f"import _posixsubprocess, sys\nSO_PATH = {so_path}\n{SPAWN}\nprint('status', spawn({argv}), flush=True)\n"


def unhooked_python(code: str, so_path: str = "_posixsubprocess.__file__") -> str:
    """Answer code that runs `code` in a fresh Python started past the hook (no audit hook there)."""
    return spawning(f"[sys.executable, '-I', '-c', {code!r}]", so_path)


# The code may start this many processes past the hook (none by default: RLIMIT_NPROC refuses).
PAST_THE_HOOK = Limits(processes=3)


def assert_past_the_hook(run: sandbox.SandboxRun) -> None:
    """The code started its process past the hook, and it ended well."""
    assert run.ok and "status 0" in run.stdout, run


def host_processes(command: bytes) -> list[int]:
    """Processes on this machine whose command line is exactly `command` (NUL-separated)."""
    found = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if entry.isdigit() and Path(f"/proc/{entry}/cmdline").read_bytes() == command:
                found.append(int(entry))
    return found


def test_a_shell_started_past_the_hook_is_nobody_sees_no_host_files_and_dies_with_the_run():
    """(a) A second copy of _posixsubprocess runs /bin/sh; it leaves a sleep behind."""
    shell = "id -u; id -g; cat /etc/shadow; ls -A /root; ls /work /home; sleep 313.7 & echo started $!"
    run = run_python(spawning(repr(["/bin/sh", "-c", shell])), limits=PAST_THE_HOOK)
    assert_past_the_hook(run)
    lines = run.stdout.splitlines()
    assert lines[:3] == ["65534", "65534", ".pyenv"] and lines[3].startswith("started "), run.stdout
    assert "cat: /etc/shadow: No such file or directory" in run.stderr, run.stderr
    assert "/work" in run.stderr and "/home" in run.stderr and "No such file" in run.stderr  # not there
    assert host_processes(b"sleep\x00313.7\x00") == []  # killed with the sandbox before run_python returned


def test_past_the_hook_the_code_starts_no_more_processes_than_its_limit():
    """RLIMIT_NPROC holds whoever runs the dashboard (the kernel exempts root, so as root bubblewrap
    runs as uid 65534): a loop that starts sleeps past the hook is refused with EAGAIN at its limit,
    and the run ends at once, not at its wall clock, its sleeps with it."""
    bomb = (
        f"import _posixsubprocess, errno\nSO_PATH = _posixsubprocess.__file__\n{SPAWN}\nstarted = 0\n"
        "try:\n    while started < 100:\n        start(['/bin/sleep', '271.3'])\n        started += 1\n"
        "except OSError as exc:\n    print(started, errno.errorcode[exc.errno])\n"
    )
    for processes in (0, 3):
        began = time.monotonic()
        run = run_python(bomb, limits=Limits(wall_s=20, processes=processes))
        assert run.ok and run.stdout == f"{processes} EAGAIN\n", run
        assert time.monotonic() - began < 5
    assert host_processes(b"/bin/sleep\x00271.3\x00") == []


def test_a_killed_dashboard_leaves_no_process_behind():
    """When the dashboard's process is killed outright (none of its code runs) while the code runs,
    every process of the sandbox dies with it: each bubblewrap is killed when its parent dies, and
    as root the first one's PID namespace takes the unprivileged one with it."""
    code = f"import _posixsubprocess\nSO_PATH = _posixsubprocess.__file__\n{SPAWN}\nspawn(['/bin/sleep', '271.7'])\n"
    dashboard = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from core.evaluate.sandbox import Limits, run_python\n"
            f"run_python({code!r}, limits=Limits(wall_s=60, cpu_s=60, processes=1))\n",
        ],
        cwd=Path(__file__).resolve().parent.parent,
    )
    sleeps: list[int] = []
    try:
        deadline = time.monotonic() + 20
        while not sleeps and time.monotonic() < deadline:  # then the code is running
            time.sleep(0.02)
            sleeps = host_processes(b"/bin/sleep\x00271.7\x00")
        running = descendants(dashboard.pid)
    finally:
        dashboard.kill()
        dashboard.wait()
    left = survivors(running)
    assert sleeps and set(sleeps) < set(running) and left == [], (sleeps, running)


def status_of(pid: int) -> dict[str, str]:
    """The fields of /proc/<pid>/status as the host sees them."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {name: value.strip() for name, _, value in (line.partition(":") for line in lines)}


def test_on_the_host_the_code_and_bubblewrap_run_as_nobody():
    """Read from the host while the code runs: the Python running the code and the bubblewrap
    that made its namespaces are uid and gid 65534 with no other group and no capability when the
    dashboard is root (the dashboard's own user otherwise)."""
    uid, gid = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    harness = b"\x00".join(
        part.encode() for part in (sandbox._interpreter(), *sandbox.PYTHON_FLAGS, "-c", sandbox._HARNESS)
    )
    bwrap = str(sandbox.find_bwrap()).encode()
    runs: list[sandbox.SandboxRun] = []
    thread = threading.Thread(target=lambda: runs.append(run_python("import time\ntime.sleep(2)\n")))
    thread.start()
    try:
        found: dict[str, int] = {}
        deadline = time.monotonic() + 5
        while len(found) < 2 and time.monotonic() < deadline:
            for pid in descendants():
                with contextlib.suppress(OSError):
                    command = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if command == harness + b"\x00":
                        found["harness"] = pid
                    elif command.startswith(bwrap + b"\x00--unshare-all\x00"):
                        found["bwrap"] = pid
            time.sleep(0.02)
        statuses = {name: status_of(pid) for name, pid in found.items()}
    finally:
        thread.join()
    assert runs[0].ok and set(statuses) == {"harness", "bwrap"}, (runs, found)
    for status in statuses.values():
        assert status["Uid"].split() == [str(uid)] * 4 and status["Gid"].split() == [str(gid)] * 4, status
        assert status["CapEff"] == status["CapPrm"] == "0000000000000000", status
        if os.geteuid() == 0:
            assert status["Groups"] == "", status


NATIVE_READER = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <fcntl.h>
#include <unistd.h>

static PyObject *read_file(PyObject *self, PyObject *arg) {
    const char *path = PyUnicode_AsUTF8(arg);
    if (path == NULL) return NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return PyErr_SetFromErrnoWithFilename(PyExc_OSError, path);
    char buffer[1 << 16];
    ssize_t size = read(fd, buffer, sizeof buffer);
    close(fd);
    if (size < 0) return PyErr_SetFromErrnoWithFilename(PyExc_OSError, path);
    return PyBytes_FromStringAndSize(buffer, size);
}

static PyMethodDef methods[] = {{"read_file", read_file, METH_O, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "reader", NULL, -1, methods};
PyMODINIT_FUNC PyInit_reader(void) { return PyModule_Create(&module); }
"""


def native_reading(tmp_path: Path, paths: list[str]) -> str:
    """Answer code that writes a native extension into its folder, loads it and prints what native
    code reads at each of `paths`. With a C compiler the extension opens files itself; without
    one it is a copy of _posixsubprocess that starts a Python past the hook to read them."""
    loop = (
        f"for path in {paths!r}:\n"
        "    try:\n        print(path, read(path).decode('utf-8', 'replace'))\n"
        "    except OSError as exc:\n        print(path, exc)\n"
    )
    compiler = shutil.which("cc")
    if compiler is None:
        data = Path(_posixsubprocess.__file__).read_bytes()
        body = unhooked_python("read = lambda path: open(path, 'rb').read()\n" + loop, so_path="path")
    else:
        source = tmp_path / "reader.c"
        source.write_text(NATIVE_READER)
        include = sysconfig.get_paths()["include"]
        built = tmp_path / "reader.so"
        subprocess.run(
            [compiler, "-shared", "-fPIC", f"-I{include}", str(source), "-o", str(built)], check=True
        )
        data = built.read_bytes()
        body = (
            "import importlib.machinery, importlib.util\n"
            "loader = importlib.machinery.ExtensionFileLoader('reader', path)\n"
            "reader = importlib.util.module_from_spec(importlib.util.spec_from_file_location('reader', path, loader=loader))\n"
            "read = reader.read_file\n" + loop
        )
    return (
        f"import base64, os, sys\nopen('native.so', 'wb').write(base64.b64decode({base64.b64encode(data)!r}))\n"
        f"path = os.path.abspath('native.so')\n{body}"
    )


def test_native_code_written_to_the_folder_cannot_read_the_dashboards_environment(tmp_path, monkeypatch):
    """(b) The dashboard's environment held HF_TOKEN: native code read it from /proc/<ppid>/environ."""
    secret = "hf_fake_token_for_the_sandbox_test"
    monkeypatch.setenv("HF_TOKEN", secret)  # what run_python could pass on
    holder = subprocess.Popen(["sleep", "30"], env={"HF_TOKEN": secret})  # a host process holding it
    try:
        paths = [f"/proc/{os.getpid()}/environ", f"/proc/{holder.pid}/environ", "/proc/self/status"]
        paths += [f"/proc/{pid}/environ" for pid in range(1, 8)]
        run = run_python(native_reading(tmp_path, paths), limits=PAST_THE_HOOK)
        assert Path(f"/proc/{holder.pid}/environ").read_bytes().startswith(b"HF_TOKEN=" + secret.encode())
    finally:
        holder.kill()
        holder.wait()
    assert run.ok, run
    lines = run.stdout.splitlines()
    assert secret not in run.stdout + run.stderr
    for host_pid in (os.getpid(), holder.pid):
        assert (
            f"/proc/{host_pid}/environ [Errno 2] No such file or directory: '/proc/{host_pid}/environ'"
            in lines
        )
    assert "Uid:\t65534\t65534\t65534\t65534" in run.stdout  # native code ran past the hook, as nobody


def test_pidfd_cannot_reach_a_host_process():
    """(c) os.pidfd_open with signal.pidfd_send_signal raise no audit event: they killed any process."""
    victim = subprocess.Popen(["sleep", "30"])
    try:
        run = run_python(
            "import os, signal\n"
            f"try:\n    signal.pidfd_send_signal(os.pidfd_open({victim.pid}), signal.SIGKILL)\n"
            "    print('sent')\nexcept OSError as exc:\n    print(type(exc).__name__)\n"
        )
        time.sleep(0.1)
        assert run.ok and run.stdout == "ProcessLookupError\n", run
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_sqlite_attach_cannot_write_or_read_files_outside(tmp_path):
    """(d) sqlite's ATTACH opens files in C: it created and read databases anywhere."""
    created = tmp_path / "created.db"
    secrets_db = tmp_path / "secrets.db"
    with sqlite3.connect(secrets_db) as connection:
        connection.execute("create table secrets (value text)")
        connection.execute("insert into secrets values ('hf_attached_secret')")
    connection.close()
    run = run_python(
        "import sqlite3\n"
        f"for name, sql in (({str(created)!r}, 'create table out.t (a)'), ({str(secrets_db)!r}, 'select * from out.secrets')):\n"
        "    db = sqlite3.connect(':memory:')\n"
        "    try:\n        db.execute(f\"attach database '{name}' as out\")\n"
        "        print(db.execute(sql).fetchall())\n"
        "    except sqlite3.Error as exc:\n        print(exc)\n"
    )
    assert (
        run.ok
        and run.stdout == f"unable to open database: {created}\nunable to open database: {secrets_db}\n"
    )
    assert not created.exists() and "hf_attached_secret" not in run.stdout


def test_fifos_do_not_hang_the_run():
    """(e) The parent read stdout.txt from the folder after the run: a FIFO there hung the job."""
    started = time.monotonic()
    run = run_python(
        "import os\nfor name in ('stdout.txt', 'stderr.txt', 'result.json', 'fifo'):\n    os.mkfifo(name)\n"
        "print(sorted(os.listdir()))\n",
        limits=Limits(wall_s=3),
    )
    assert run.ok and run.stdout == "['fifo', 'result.json', 'stderr.txt', 'stdout.txt']\n", run
    assert time.monotonic() - started < 3


def test_filling_the_folder_stops_at_its_size_and_writes_nothing_on_the_host():
    """(f) Many 1 MB files (each under the file-size limit) filled the host's disk."""
    marker = f"fill-{os.getpid()}-{time.monotonic_ns()}"
    run = run_python(
        "import os\nfor number in range(1000):\n"
        f"    with open('{marker}-' + str(number), 'wb') as out:\n        out.write(b'x' * 2**20)\n",
        limits=Limits(folder_mb=8),
    )
    assert run.outcome == "exception" and run.reason.startswith("filled its 8 MB folder (line "), run
    assert not list(Path(tempfile.gettempdir()).glob(f"**/{marker}-0"))


def test_no_network_even_past_the_hook():
    """A Python started past the hook reaches neither the host's loopback nor anything beyond."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    code = (
        "import socket\n"
        f"for address in (('127.0.0.1', {port}), ('192.0.2.1', 80)):\n"
        "    try:\n        socket.create_connection(address, timeout=2)\n        print('connected')\n"
        "    except OSError as exc:\n        print(exc.strerror)\n"
    )
    run = run_python(unhooked_python(code), limits=PAST_THE_HOOK)
    server.settimeout(0.1)
    with pytest.raises(TimeoutError):  # nothing queued a connection
        server.accept()
    server.close()
    assert_past_the_hook(run)
    assert run.stdout.splitlines()[:2] == ["Connection refused", "Network is unreachable"], run.stdout


# --- when bubblewrap is not there ---------------------------------------------------------------


def test_without_isolation_code_is_not_run(monkeypatch, tmp_path):
    """Simulated: the bwrap lookup finds nothing (bubblewrap is installed here)."""
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)
    monkeypatch.delenv(sandbox.UNISOLATED_ENV, raising=False)
    sentinel = tmp_path / "ran"
    isolation = sandbox.code_check_isolation()
    assert isolation.kind == "none" and "bubblewrap (bwrap) is not installed" in isolation.description
    run = run_python(f"open({str(sentinel)!r}, 'w')\n")
    assert (run.outcome, run.reason, run.isolation, run.ok) == (
        "not run",
        "not run: no isolation on this machine",
        "none",
        False,
    )
    verdict = run_function_cases("def rev(s):\n    return s[::-1]\n", CASES)
    assert verdict.passed is None and verdict.reason == "not run: no isolation on this machine"
    result = run_check(REVERSE_CHECK, "```python\ndef rev(s):\n    return s[::-1]\n```")
    assert (result.passed, result.detail) == (None, "not run: no isolation on this machine")
    results = [result.as_dict(), {"name": "words", "passed": True, "detail": ""}]
    assert results[0]["passed"] is None and answer_verdict(results) == "not_run"  # neither passed nor failed
    assert answer_verdict([*results, {"name": "leakage", "passed": False, "detail": ""}]) == "fail"
    assert not sentinel.exists()


def test_a_bwrap_that_does_not_work_counts_as_none(monkeypatch):
    """/bin/false stands in for a bubblewrap whose user namespaces the host refuses: the probe,
    run with the sandbox's own options, fails, and says so."""
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: "/bin/false")
    monkeypatch.delenv(sandbox.UNISOLATED_ENV, raising=False)
    isolation = sandbox.code_check_isolation()
    assert isolation.kind == "none" and "/bin/false failed: exit code 1" in isolation.description


# Run as root: in a new user namespace where it is root and uid and gid 65534 are themselves, and
# where no further user namespace may be made, it prints what the sandbox makes of that host.
REFUSING_HOST = r"""
import ctypes, json, os, sys
ready, ready_end = os.pipe()
mapped, mapped_end = os.pipe()
pid = os.fork()
if pid:
    os.read(ready, 1)
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as out:
            out.write("0 0 1\n65534 65534 1\n")
    os.write(mapped_end, b"x")
    sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
if ctypes.CDLL(None, use_errno=True).unshare(0x10000000):  # CLONE_NEWUSER
    os._exit(90)
os.write(ready_end, b"x")
os.read(mapped, 1)
with open("/proc/sys/user/max_user_namespaces", "w") as limit:
    limit.write("0")
from core.evaluate import sandbox
isolation = sandbox.code_check_isolation()
verdict = sandbox.run_function_cases("def rev(s):\n    return s[::-1]\n", [(["ab"], "ba")])
print(json.dumps([isolation.kind, isolation.description, verdict.passed, verdict.reason]))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="mapping uid 65534 into a new user namespace needs root")
def test_a_host_that_refuses_user_namespaces_runs_no_code_checks():
    """The probe starts bubblewrap the way a run does, as uid 65534 when root: where the kernel
    refuses it a user namespace (max_user_namespaces 0, in a user namespace of its own here),
    the probe fails with bubblewrap's reason and code checks are not run, neither passed nor failed."""
    env = {key: value for key, value in os.environ.items() if key != sandbox.UNISOLATED_ENV}
    done = subprocess.run(
        [sys.executable, "-c", REFUSING_HOST],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done
    kind, description, passed, reason = json.loads(done.stdout)
    assert kind == "none" and "max_*_namespaces exceeded (ENOSPC)" in description, description
    assert (passed, reason) == (None, "not run: no isolation on this machine")


@pytest.mark.skipif(
    os.geteuid() != 0 or not sandbox._reveal_python("bwrap"),
    reason="only as root with a Python installation that uid 65534 cannot reach",
)
def test_as_root_the_probe_runs_bubblewrap_as_nobody(monkeypatch):
    """Without the root bubblewrap that shows it the Python installation, bubblewrap started as uid
    65534 cannot reach it (a root one could): the probe, started like a run, fails and says why."""
    monkeypatch.setattr(sandbox, "_reveal_python", lambda bwrap: [])
    # probed afresh, not the answer cached for this bwrap
    monkeypatch.setattr(sandbox, "_bwrap_problem", sandbox._bwrap_problem.__wrapped__)
    monkeypatch.delenv(sandbox.UNISOLATED_ENV, raising=False)
    isolation = sandbox.code_check_isolation()
    hidden = next(folder for folder in sandbox._python_folders() if sandbox._hidden_ancestor(folder))
    assert isolation.kind == "none", isolation
    assert f"Can't find source path {hidden}: Permission denied" in isolation.description, isolation


def test_the_operator_can_run_code_behind_the_audit_hook_only(monkeypatch, tmp_path):
    """Simulated: the bwrap lookup finds nothing, and PEFT_UNISOLATED_CODE_CHECKS=1."""
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)
    monkeypatch.setenv(sandbox.UNISOLATED_ENV, "1")
    assert sandbox.code_check_isolation() == sandbox.AUDIT_HOOK_ONLY
    result = run_check(REVERSE_CHECK, "```python\ndef rev(s):\n    return s[::-1]\n```")
    assert (result.passed, result.detail) == (True, "rev passed 3 case(s) (unisolated: audit hook only)")
    run = run_python(f"import os\nprint(os.getcwd().split(os.sep)[-1][:13], os.getuid() == {os.getuid()})\n")
    assert run.ok and run.isolation == "audit-hook" and run.stdout == "peft-sandbox- True\n", run
    sentinel = tmp_path / "keep.txt"
    sentinel.write_text("keep me")
    run = run_python(f"import os\nos.remove({str(sentinel)!r})\n")
    assert run.reason == f"refused: os.remove outside the sandbox ({str(sentinel)!r})" and sentinel.exists()


# --- the command -----------------------------------------------------------------------------


def test_the_sandbox_command_prints_one_json_object(tmp_path):
    def sandbox_command(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "core", "sandbox", *args],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
            timeout=60,
        )

    script = tmp_path / "hello.py"
    script.write_text("import os\nprint('hello from', os.getuid())\n")
    done = sandbox_command(str(script), "--timeout", "5")
    assert done.returncode == 0 and json.loads(done.stdout) == {
        "outcome": "ok",
        "reason": "ran to the end",
        "stdout": "hello from 65534\n",
        "stderr": "",
        "isolation": "bwrap",
    }, done
    script.write_text("raise SystemExit('no')\n")
    done = sandbox_command(str(script), "--timeout", "5")
    report = json.loads(done.stdout)
    assert (
        done.returncode == 1
        and report["outcome"] == "exception"
        and report["reason"] == "raised SystemExit: no (line 1)"
    )
    done = sandbox_command(str(tmp_path / "missing.py"))
    assert done.returncode == 1 and done.stdout == "" and done.stderr.startswith("error: cannot read "), done
