"""The sandbox runs real untrusted code in real child processes and keeps it in its box."""

import socket
import time

import pytest

from core.sandbox import Limits, run_function_cases, run_python

CASES = [([""], ""), (["abc"], "cba"), (["åäö 🙂"], "🙂 öäå")]


def test_correct_code_passes_and_names_its_function():
    verdict = run_function_cases("def helper(a, b):\n    return a\n\ndef rev(s):\n    return s[::-1]\n", CASES)
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
        f"os.remove outside the sandbox ({str(sentinel)!r})",)


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
    assert run_python("import resource\nresource.setrlimit(resource.RLIMIT_CPU, (99, 99))\n").outcome == "refused"


def test_too_much_memory_is_stopped():
    run = run_python("data = bytearray(1024 * 2**20)\n", limits=Limits(memory_mb=128))
    assert run.outcome == "memory" and run.reason == "ran out of memory (limit 128 MB) (line 1)"
    grow = "chunks = []\nwhile True:\n    chunks.append(bytearray(8 * 2**20))\n"
    run = run_python(grow, limits=Limits(memory_mb=128))
    assert run.outcome == "memory"


def test_big_files_and_output_are_capped():
    run = run_python("open('big.bin', 'wb').write(b'x' * 5 * 2**20)\n", limits=Limits(file_size_mb=1))
    assert run.outcome == "exception" and run.reason == "wrote more than 1 MB to a file or its output (line 1)"
    run = run_python("for _ in range(100000):\n    print('spam' * 10)\n", limits=Limits(file_size_mb=1))
    assert run.reason == "wrote more than 1 MB to a file or its output (line 2)" and len(run.stdout) <= 4000
    assert run_python("print('fine')\n").stdout == "fine\n"


def test_an_empty_environment_and_its_own_folder():
    run = run_python("import os, sys\nassert os.environ == {} or set(os.environ) <= {'LC_CTYPE'}, dict(os.environ)\n"
                     "assert os.getcwd().split(os.sep)[-1].startswith('peft-sandbox-')\nassert sys.flags.isolated\n")
    assert run.ok, run.reason


def test_errors_in_the_code_are_reported_with_their_line():
    assert run_python("x = 1\nraise ValueError('boom')\n").reason == "raised ValueError: boom (line 2)"
    assert run_python("def f(:\n").outcome == "exception"
    assert run_python("input()\n").reason == "raised EOFError: EOF when reading a line (line 1)"
    assert run_python("import os\nos._exit(3)\n").reason == "exited without a result (exit code 3)"
