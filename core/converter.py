"""Where llama.cpp's HF-to-GGUF converter comes from.

Either a llama.cpp checkout named by `$LLAMA_CPP_DIR`, or the sdist of the installed
llama-cpp-python version (it vendors llama.cpp), fetched with pip into the cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.paths import cache_dir
from core.installed import package_version

LLAMA_CPP_DIR_ENV = "LLAMA_CPP_DIR"
CONVERTER_SCRIPT = "convert_hf_to_gguf.py"


@dataclass(frozen=True)
class ConverterLocation:
    """The converter script if one is at hand, and a sentence on where it is or why not."""

    script: Path | None
    explanation: str


def sdist_llama_cpp_dir(version: str) -> Path:
    """Where the llama.cpp tree of the llama-cpp-python `version` sdist is cached."""
    return cache_dir() / f"llama-cpp-python-{version}" / "vendor" / "llama.cpp"


def find_converter() -> ConverterLocation:
    """Locate convert_hf_to_gguf.py without fetching anything."""
    checkout = os.environ.get(LLAMA_CPP_DIR_ENV)
    if checkout:
        script = Path(checkout).expanduser() / CONVERTER_SCRIPT
        if script.is_file():
            return ConverterLocation(script, f"llama.cpp checkout at {script.parent} (${LLAMA_CPP_DIR_ENV})")
        return ConverterLocation(
            None, f"${LLAMA_CPP_DIR_ENV} is {checkout}, which has no {CONVERTER_SCRIPT}"
        )
    version = package_version("llama_cpp_python")
    if version is None:
        return ConverterLocation(
            None,
            f"not available: set ${LLAMA_CPP_DIR_ENV} to a llama.cpp checkout, or install "
            "llama-cpp-python so that its source can be fetched",
        )
    script = sdist_llama_cpp_dir(version) / CONVERTER_SCRIPT
    if script.is_file():
        return ConverterLocation(script, f"llama-cpp-python {version} source, cached at {script.parent}")
    return ConverterLocation(
        None,
        f"not fetched yet: the first export fetches the llama-cpp-python {version} source "
        f"with pip (or set ${LLAMA_CPP_DIR_ENV} to a llama.cpp checkout)",
    )
