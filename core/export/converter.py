"""Where llama.cpp's HF-to-GGUF converter comes from.

Either a llama.cpp checkout named by `$LLAMA_CPP_DIR`, or the sdist of the installed
llama-cpp-python version (it vendors llama.cpp), fetched with pip into the cache. pip runs with
a minimal environment (pip_environment): what it needs, never a Hub token or another secret.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.jobs.processes import NETWORK_VARIABLES, SYSTEM_VARIABLES, chosen_environment
from core.machine.installed import package_version
from core.store.files import replace_dir, staging_dir
from core.store.paths import cache_dir

LLAMA_CPP_DIR_ENV = "LLAMA_CPP_DIR"
CONVERTER_SCRIPT = "convert_hf_to_gguf.py"
# What the converter needs from the sdist's vendor/llama.cpp/ (the rest is C++ sources: ~170 MB).
CONVERTER_PARTS = (CONVERTER_SCRIPT, "conversion/", "gguf-py/", "models/templates/", "LICENSE")
FETCH_TIMEOUT_S = 900
# What pip may see of the environment: paths, locale, its cache and config folders, its own
# settings (PIP_INDEX_URL, PIP_CERT, ...), proxies and certificates.
PIP_VARIABLES = SYSTEM_VARIABLES | NETWORK_VARIABLES | {"XDG_CONFIG_HOME", "PIP_KEYRING_PROVIDER"}
PIP_VARIABLE_PREFIXES = ("LC_", "PIP_")


class ConverterError(ValueError):
    """llama.cpp's converter is not at hand and cannot be fetched; the message says what to do."""


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
        return ConverterLocation(None, f"${LLAMA_CPP_DIR_ENV} is {checkout}, which has no {CONVERTER_SCRIPT}")
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


def _extract_converter(archive: Path, target: Path) -> None:
    """Unpack the converter's parts of a llama-cpp-python sdist into `target`/vendor/llama.cpp."""
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            top, _, rest = member.name.partition("/")
            inside = rest.removeprefix("vendor/llama.cpp/")
            if inside != rest and any(inside == part or inside.startswith(part) for part in CONVERTER_PARTS):
                member.name = f"vendor/llama.cpp/{inside}"
                members.append(member)
        tar.extractall(target, members=members, filter="data")


def pip_environment() -> dict[str, str]:
    """The whole environment of the pip that fetches the sdist: PIP_VARIABLES and
    PIP_VARIABLE_PREFIXES of this process's (core.jobs.processes.chosen_environment)."""
    return chosen_environment(PIP_VARIABLES, PIP_VARIABLE_PREFIXES)


def fetch_converter(say: Callable[[str], None]) -> ConverterLocation:
    """The converter, fetching the installed llama-cpp-python's source with pip when it is not cached.

    `say` hears one sentence on where the converter comes from. Raises ConverterError when
    neither `$LLAMA_CPP_DIR` nor the fetch gives one.
    """
    location = find_converter()
    if location.script is not None:
        say(f"converter: {location.explanation}")
        return location
    version = package_version("llama_cpp_python")
    if os.environ.get(LLAMA_CPP_DIR_ENV) or version is None:
        raise ConverterError(f"llama.cpp's converter: {location.explanation}")
    say(
        f"converter: fetching the llama-cpp-python {version} source with pip (about 77 MB, once) "
        f"into {cache_dir()}"
    )
    target = sdist_llama_cpp_dir(version).parent.parent
    try:
        with staging_dir(target) as staging:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-binary",
                    ":all:",
                    "--no-deps",
                    "--disable-pip-version-check",
                    f"llama-cpp-python=={version}",
                    "-d",
                    str(staging / "download"),
                ],
                capture_output=True,
                text=True,
                timeout=FETCH_TIMEOUT_S,
                env=pip_environment(),
            )
            archives = sorted((staging / "download").glob("*.tar.gz"))
            if done.returncode != 0 or not archives:
                lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
                raise ConverterError(
                    f"could not fetch the llama-cpp-python {version} source with pip "
                    f"({lines[-1] if lines else 'no archive'}); "
                    f"set ${LLAMA_CPP_DIR_ENV} to a llama.cpp checkout instead"
                )
            _extract_converter(archives[0], staging / "tree")
            if not (staging / "tree" / "vendor" / "llama.cpp" / CONVERTER_SCRIPT).is_file():
                raise ConverterError(
                    f"the llama-cpp-python {version} source has no {CONVERTER_SCRIPT}; "
                    f"set ${LLAMA_CPP_DIR_ENV}"
                )
            # Unless another fetch has put a converter there meanwhile, replace what is there
            # (an incomplete earlier copy, if anything).
            if not sdist_llama_cpp_dir(version).joinpath(CONVERTER_SCRIPT).is_file():
                replace_dir(staging / "tree", target)
    except subprocess.TimeoutExpired:
        raise ConverterError(
            f"fetching the llama-cpp-python {version} source took over {FETCH_TIMEOUT_S} s; "
            f"set ${LLAMA_CPP_DIR_ENV} to a llama.cpp checkout instead"
        ) from None
    location = find_converter()
    say(f"converter: {location.explanation}")
    return location
