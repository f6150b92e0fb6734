"""Making GGUF files: llama.cpp's converter and quantizer, each in a child process.

Their logging, their sys.path and a crash in C code stay out of the job's process; the child
gets no Hub token. `f16` and `q8_0` come from convert_hf_to_gguf.py, the k-quants from the f16
file with `llama_cpp.llama_model_quantize`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from core.export.converter import LLAMA_CPP_DIR_ENV, ConverterLocation
from core.machine.installed import package_version
from core.store.paths import PROJECT_DIR

# k-quants made from the f16 file, with the llama_cpp ftype constant of each.
CONVERTER_QUANTS = ("f16", "q8_0")  # made by convert_hf_to_gguf.py
EXACT_QUANTS = CONVERTER_QUANTS  # verified token for token


class ExportError(ValueError):
    """An export that cannot be done or did not verify; the message says why and what to do."""


K_QUANTS = {
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
}


TOOL_TIMEOUT_S = 6 * 3600


GIT_TIMEOUT_S = 30


# Hugging Face token variables, kept from the converter and the quantizer, which never need them.
HUB_TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def environment_token() -> str | None:
    """This process's Hub token: $HF_TOKEN, else $HUGGING_FACE_HUB_TOKEN (Streamlit copies
    root-level secrets into the environment); None when there is none."""
    return next((value for name in HUB_TOKEN_VARIABLES if (value := os.environ.get(name, "").strip())), None)


def git_revision(folder: Path) -> str | None:
    """The short git revision of the checkout at `folder`; None when it is not one or git is not installed."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    revision = done.stdout.strip()
    return revision if done.returncode == 0 and revision else None


def converter_record(location: ConverterLocation) -> dict[str, Any]:
    """Where the converter came from and its version, for export.json."""
    folder = location.script.parent
    if os.environ.get(LLAMA_CPP_DIR_ENV):
        revision = git_revision(folder)
        version = f"llama.cpp {revision}" if revision else "llama.cpp checkout (no git revision)"
        source = f"${LLAMA_CPP_DIR_ENV}"
    else:
        version = f"llama-cpp-python {package_version('llama_cpp_python')}"
        source = "llama-cpp-python sdist"
    return {"source": source, "path": str(folder), "version": version, "explanation": location.explanation}


def tool_environment(environment: dict[str, str]) -> dict[str, str]:
    """The environment of a converter or quantizer child: `environment` without the Hub tokens (they
    read local files only) and with this project on PYTHONPATH."""
    child = {name: value for name, value in environment.items() if name not in HUB_TOKEN_VARIABLES}
    child["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_DIR), environment.get("PYTHONPATH")]))
    return child


def _run_tool(arguments: list[str], what: str) -> None:
    """Run `python -c` a tool entry point of this module in a child process; ExportError on failure."""
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, core.export.gguf_files as e; e.tool_main(sys.argv[1:])",
                *arguments,
            ],
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT_S,
            env=tool_environment(dict(os.environ)),
        )
    except subprocess.TimeoutExpired:
        raise ExportError(
            f"{what} did not finish within {TOOL_TIMEOUT_S:g} s and was stopped; "
            "check the machine's load and free memory, then try again"
        ) from None
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        tail = lines[-1] if lines else f"exit status {done.returncode}"
        sys.stderr.write("".join(f"  | {line}\n" for line in lines[-15:]))
        raise ExportError(f"{what} failed: {tail}")


def tool_main(argv: list[str]) -> None:
    """Child-process entry point: `convert SCRIPT PRE_TOKENIZER ARGS...` or `quantize SRC DST QUANT`."""
    if argv[0] == "convert":
        import runpy

        script, pre_tokenizer, rest = Path(argv[1]), argv[2], argv[3:]
        # The converter's own gguf-py first: the registry's gguf lacks names it needs.
        sys.path[:0] = [str(script.parent / "gguf-py"), str(script.parent)]
        if pre_tokenizer:
            from conversion.base import TextModel

            TextModel.get_vocab_base_pre = lambda self, tokenizer: pre_tokenizer
        sys.argv = [str(script), *rest]
        runpy.run_path(str(script), run_name="__main__")
    elif argv[0] == "quantize":
        import llama_cpp

        source, target, quant = argv[1:4]
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, K_QUANTS[quant])
        params.nthread = os.cpu_count() or 1
        if llama_cpp.llama_model_quantize(source.encode(), target.encode(), params) != 0:
            raise SystemExit(f"llama_model_quantize could not make {quant} from {Path(source).name}")
    else:
        raise SystemExit(f"unknown tool {argv[0]!r}")


def convert(
    script: Path, merged: Path, outtype: str, target: Path, *, pre_tokenizer: str | None, model_name: str
) -> None:
    """convert_hf_to_gguf.py on the merged model into `target` (f16 or q8_0)."""
    _run_tool(
        [
            "convert",
            str(script),
            pre_tokenizer or "",
            str(merged),
            "--outtype",
            outtype,
            "--outfile",
            str(target),
            "--model-name",
            model_name,
        ],
        f"converting to {outtype}",
    )
    if not target.is_file():
        raise ExportError(f"converting to {outtype} wrote no file")


def quantize(source: Path, target: Path, quant: str) -> None:
    """A k-quant of the f16 GGUF `source` into `target` with llama.cpp's quantizer."""
    _run_tool(["quantize", str(source), str(target), quant], f"quantizing to {quant}")
    if not target.is_file():
        raise ExportError(f"quantizing to {quant} wrote no file")
