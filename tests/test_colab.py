"""The Colab install: the notebook, the README and requirements-gpu.txt say the same thing, and
it keeps Colab's torch and leaves out llama-cpp-python. Colab itself cannot be reached from
here: the notebook was never run there (README, "Never run on a GPU")."""

import json
import shlex

from conftest import PROJECT_DIR
from packaging.requirements import Requirement

from core.cli import build_parser
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


def test_the_notebooks_commands_are_ones_the_command_line_takes():
    parser = build_parser()
    commands = [line[1:] for line in notebook_lines() if line.startswith("!python -m core ")]
    assert len(commands) == 2
    for command in commands:
        parsed = parser.parse_args(shlex.split(command)[3:])
        if getattr(parsed, "preset", None):
            get_preset(parsed.preset)  # PresetError for a name that is not one
    make = [line[1:] for line in notebook_lines() if line.startswith("!make ")]
    assert make == ["make gpu-check"] and "\ngpu-check:\n" in (PROJECT_DIR / "Makefile").read_text()
