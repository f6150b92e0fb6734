"""The Colab install: the notebook, the README and requirements-gpu.txt say the same thing, and
it keeps Colab's torch and leaves out llama-cpp-python. Colab itself cannot be reached from
here: the notebook was never run there (README, "Never run on a GPU")."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import PROJECT_DIR
from packaging.requirements import Requirement

from core.cli import build_parser
from core.store.runs import read_run_folder
from core.train.presets import get_preset

# One shell line: where no torch is found, grep fails and nothing is installed.
INSTALL = [
    "pip list --format=freeze | grep -iE '^(torch|torchvision|torchaudio)==' > keep-torch.txt &&",
    "pip install -r requirements-gpu.txt -c keep-torch.txt",
]


def notebook_lines() -> list[str]:
    notebook = json.loads((PROJECT_DIR / "notebooks" / "train_on_colab.ipynb").read_text())
    assert notebook["nbformat"] == 4 and notebook["metadata"]["colab"]["gpuType"] == "T4"
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)
    return [line.rstrip("\n") for cell in code for line in cell["source"]]


def requirements(name: str) -> list[str]:
    lines = (PROJECT_DIR / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_the_notebook_the_readme_and_the_requirements_give_one_install():
    shell = [line[1:] for line in notebook_lines() if line.startswith("!")]
    assert " ".join(INSTALL) in shell
    readme = (PROJECT_DIR / "README.md").read_text()
    assert "```bash\n" + "\n  ".join(INSTALL) + "\n```" in readme
    header = (PROJECT_DIR / "requirements-gpu.txt").read_text()
    assert f"#   {INSTALL[0]}\n#     {INSTALL[1]}\n" in header


def test_the_colab_install_keeps_torch_and_needs_no_compile():
    gpu = [Requirement(line) for line in requirements("requirements-gpu.txt")]
    names = {requirement.name for requirement in gpu}
    assert {"unsloth", "torch", "transformers", "peft", "trl", "bitsandbytes"} <= names
    assert "llama-cpp-python" not in names  # a compile of minutes that training does not need
    assert "-c keep-torch.txt" in INSTALL[1] and "torch" in INSTALL[0]
    assert requirements("requirements-train.txt") == ["-r requirements.txt", "-r requirements-gpu.txt"]
    assert "llama-cpp-python" in (PROJECT_DIR / "requirements.txt").read_text()


def parameters() -> dict:
    """The notebook's parameter cell, run."""
    notebook = json.loads((PROJECT_DIR / "notebooks" / "train_on_colab.ipynb").read_text())
    namespace: dict = {}
    exec("".join(notebook["cells"][1]["source"]), namespace)
    return {key: value for key, value in namespace.items() if key.isupper()}


def test_the_notebooks_commands_are_ones_the_command_line_takes():
    parser = build_parser()
    values = parameters()
    assert set(values) == {"REPO", "PRESET", "RUN", "REMOTE"}
    commands = [line[1:].format(**values) for line in notebook_lines() if line.startswith("!python -m core ")]
    assert len(commands) == 3
    for command in commands:
        parsed = parser.parse_args(shlex.split(command)[3:])
        if getattr(parsed, "preset", None):
            get_preset(parsed.preset)  # PresetError for a name that is not one
    make = [line[1:] for line in notebook_lines() if line.startswith("!make ")]
    assert make == ["make gpu-check"] and "\ngpu-check:\n" in (PROJECT_DIR / "Makefile").read_text()


STANDIN_PIP = """#!/bin/sh
# pip, except that an install is recorded, not run: unsloth and bitsandbytes need a GPU stack
if [ "$1" = install ]; then echo "$@" >> "$PIP_RECORD"; exit 0; fi
exec python -m pip "$@"
"""


def run_notebook(values: dict, workdir: Path, environment: dict) -> None:
    """Run every cell not tagged optional as Colab does: `!` lines in a shell (with {NAME}
    taken from the notebook's variables), `%cd` lines, and Python."""
    notebook = json.loads((PROJECT_DIR / "notebooks" / "train_on_colab.ipynb").read_text())
    namespace: dict = {}
    cwd = workdir
    for number, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code" or "optional" in cell["metadata"].get("tags", []):
            continue
        python = []
        for line in "".join(cell["source"]).splitlines():
            if line.startswith("!"):
                command = line[1:].format(**{k: v for k, v in namespace.items() if k.isupper()})
                done = subprocess.run(
                    ["bash", "-c", command], cwd=cwd, env=environment, capture_output=True, text=True
                )
                assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
            elif line.startswith("%cd "):
                cwd = cwd / line[4:].strip()
            else:
                python.append(line)
        previous = Path.cwd()
        os.chdir(cwd)
        try:
            exec("\n".join(python), namespace)
        finally:
            os.chdir(previous)
        if number == 1:  # the parameter cell: this test's values instead of a user's
            namespace.update(values)


def test_the_notebook_runs_a_cpu_smoke_run_synced_to_a_folder_remote(tmp_path, tiny_model, monkeypatch):
    """The notebook's cells, run here with the CPU smoke preset and a folder remote: the clone is
    of this repository, pip's installs are recorded (the GPU stack cannot be installed here), and
    Colab's own module (google.colab, for Drive and secrets) is not needed for a folder remote."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "pip").write_text(STANDIN_PIP)
    (shim / "pip").chmod(0o755)
    environment = {
        **os.environ,
        "PATH": f"{shim}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PIP_RECORD": str(tmp_path / "pip.txt"),
        "OMP_NUM_THREADS": "1",
    }
    remote = tmp_path / "remote"
    values = {"REPO": str(PROJECT_DIR), "PRESET": "cpu_smoke", "RUN": "colab_smoke", "REMOTE": str(remote)}
    run_notebook(values, tmp_path, environment)
    assert (tmp_path / "pip.txt").read_text().split() == [
        "install",
        "-r",
        "requirements-gpu.txt",
        "-c",
        "keep-torch.txt",
    ]
    assert "torch==" in (tmp_path / "project" / "keep-torch.txt").read_text()
    run = read_run_folder(remote / "colab_smoke")  # the remote holds the whole run, synced by the job
    assert (
        run.state == "completed"
        and (remote / "colab_smoke" / "adapter" / "adapter_model.safetensors").is_file()
    )
