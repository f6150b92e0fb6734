"""The sandbox runs real untrusted code in real child processes and keeps it in its box."""

import dis
import json
import os
import signal
import socket
import time
import types
from pathlib import Path

import pytest

from core.evaluate import sandbox
from core.evaluate.sandbox import Limits, run_function_cases, run_python

CASES = [([""], ""), (["abc"], "cba"), (["åäö 🙂"], "🙂 öäå")]


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
    assert (
        run.outcome == "exception" and run.reason == "wrote more than 1 MB to a file or its output (line 1)"
    )
    run = run_python("for _ in range(100000):\n    print('spam' * 10)\n", limits=Limits(file_size_mb=1))
    assert run.reason == "wrote more than 1 MB to a file or its output (line 2)" and len(run.stdout) <= 4000
    assert run_python("print('fine')\n").stdout == "fine\n"


def test_an_empty_environment_and_its_own_folder():
    """Nothing of the parent's environment; TMPDIR is the folder, so tempfile works there."""
    run = run_python(
        "import os, sys, tempfile\nassert set(os.environ) <= {'LC_CTYPE', 'TMPDIR'}, dict(os.environ)\n"
        "assert os.getcwd().split(os.sep)[-1].startswith('peft-sandbox-')\nassert sys.flags.isolated\n"
        "assert os.environ['TMPDIR'] == os.getcwd() == tempfile.gettempdir()\n"
        "with tempfile.TemporaryFile() as scratch:\n    scratch.write(b'x')\n"
    )
    assert run.ok, run.reason


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


def harness_children() -> list[int]:
    """This process's children that run the sandbox harness."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"harness.py" in command:
            found.append(int(entry))
    return found


def test_an_interrupted_run_leaves_no_process_behind():
    """A stopped eval job interrupts run_python with an exception: the child must not live on."""

    class Stop(Exception):
        pass

    def stop(*_):
        raise Stop

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(Stop):
            run_python("import time\nwhile True:\n    time.sleep(0.01)\n", limits=Limits(wall_s=30, cpu_s=30))
        left = harness_children()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == []
