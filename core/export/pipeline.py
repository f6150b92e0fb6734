"""Export a run: merge its LoRA adapter into the base model in 16-bit, convert the merged model
to GGUF with llama.cpp's own converter, make k-quants with llama.cpp's quantizer, verify every
file against the merged model, and record the lineage in `<run>/export.json`.

Layout in the run folder: `merged/` (the merged float16 model with its tokenizer and chat
template), `gguf/<run>-<quant>.gguf`, `export.json`. Everything is built under a temporary
name and renamed when whole; a GGUF that fails verification is deleted, never left under its
final name. The converter and the quantizer run in child processes (their logging, their
sys.path and a crash in C code stay out of this one). Unsloth's GGUF saver is never used.

Quants: `f16` and `q8_0` come from convert_hf_to_gguf.py; the k-quants from the f16 file
with `llama_cpp.llama_model_quantize`. Verification: the file loads in llama-cpp, its chat
template is the run's and its end-of-turn token ends generation, and its greedy answers to
fixed prompts equal the merged model's in transformers token for token. For f16 and q8_0 this
is required, except where the answers part at a near-tie: the GGUF's token is among the merged
model's best and within a small logit distance of its choice (quantization noise can flip such
a tie; a broken conversion picks tokens far from it). For k-quants the agreement is measured
and recorded, not required.
"""

from __future__ import annotations

import gc
import hashlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from core import first_line
from core.export.converter import ConverterLocation, fetch_converter
from core.export.gguf_files import (
    CONVERTER_QUANTS,
    EXACT_QUANTS,
    K_QUANTS,
    ExportError,
    convert,
    converter_record,
    quantize,
)
from core.export.verify import (
    NEAR_TIE_LOGITS,
    VERIFY_PROMPTS,
    VERIFY_TOKENS,
    Expectations,
    end_of_turn_token,
    file_verdict,
    merged_expectations,
    verify_gguf,
)
from core.jobs.protocol import JobStopped, Progress
from core.models.generation import (
    adapter_weights,
    check_adapter,
    configured_base_model,
    full_precision_base,
    load_run_model,
)
from core.store.files import (
    delete_dir,
    finite_number,
    folder_size,
    hidden_beside,
    is_real_dir,
    read_json_object,
    read_json_or_empty,
    replace_dir,
    staging_dir,
    write_json_atomic,
)
from core.store.runs import (
    ADAPTER_DIR,
    EXPORT_FILE,
    GGUF_DIR,
    MERGED_DIR,
    STATUS_FILE,
    now_iso,
)
from core.train.tiny import TINY_MODEL_ID

MERGED_DTYPE = "float16"  # the lab's merge (fp16 on a T4); f16 GGUF weights are then exactly merged/'s


QUANTS = CONVERTER_QUANTS + tuple(K_QUANTS)


DEFAULT_QUANTS = ("q8_0",)  # what the lab shipped


# Bytes per parameter of each file, rounded up, for the free-disk check.
BYTES_PER_PARAMETER = {
    "f16": 2.0,
    "q8_0": 1.1,
    "q6_k": 0.85,
    "q5_k_m": 0.75,
    "q5_k_s": 0.72,
    "q4_k_m": 0.65,
    "q4_k_s": 0.62,
    "q3_k_m": 0.55,
    "q2_k": 0.45,
}


DISK_MARGIN = 1.1


DISK_SLACK_BYTES = 64 * 2**20


# The tiny model's tokenizer is Llama 3's split regex on a locally trained vocabulary: its
# pre-tokenizer hash is unknown to llama.cpp, and the right pre-tokenizer is Llama 3's.
PRE_TOKENIZER_OVERRIDES = {TINY_MODEL_ID: "llama-bpe"}


# How export.json names a GGUF file: gguf/<run>-<quant>.gguf, nothing that leads elsewhere.
GGUF_ENTRY = re.compile(rf"{GGUF_DIR}/[A-Za-z0-9][A-Za-z0-9._-]*\.gguf")


def validate_quants(quants: list[str]) -> list[str]:
    """The requested quants, lower-cased, without repeats; ExportError for an unknown one."""
    chosen: list[str] = []
    for quant in quants:
        name = quant.strip().lower()
        if name not in QUANTS:
            raise ExportError(f"unknown quant {quant!r}; choose from {', '.join(QUANTS)}")
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ExportError(f"no quant asked for; choose from {', '.join(QUANTS)}")
    return chosen


def gguf_name(run_name: str, quant: str) -> str:
    """The file name of a run's GGUF: `<run>-<quant>.gguf`."""
    return f"{run_name}-{quant}.gguf"


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the file system that holds `path`."""
    return shutil.disk_usage(path).free


def bytes_needed(parameters: int, quants: list[str]) -> int:
    """Disk an export of a model of `parameters` needs: the merged model, the GGUF files
    (and the f16 file that k-quants are made from), with a margin."""
    files = set(quants) | ({"f16"} if any(q in K_QUANTS for q in quants) else set())
    per_parameter = 2.0 + sum(BYTES_PER_PARAMETER[q] for q in files)
    return int(parameters * per_parameter * DISK_MARGIN) + DISK_SLACK_BYTES


def check_disk(run_path: Path, parameters: int, quants: list[str]) -> None:
    """ExportError when the run folder's disk cannot hold the export."""
    needed = bytes_needed(parameters, quants)
    free = free_disk_bytes(run_path)
    if free < needed:
        raise ExportError(
            f"not enough free disk for the export: it needs about {needed / 1e9:.2f} GB (a {parameters / 1e6:.1f}M-parameter "
            f"model in 16-bit plus {', '.join(quants)}), and {run_path} has {free / 1e9:.2f} GB free; free some space "
            "(delete other runs' merged/ folders) and try again"
        )


def sha256_file(path: Path) -> str:
    """The sha256 of a file's content, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def delete_merged(run_path: Path) -> int:
    """Delete the run's merged/ model (the GGUF files stay); return the bytes freed. The folder is
    renamed away first (delete_dir), so no half-deleted merged/ is ever seen under its name."""
    folder = run_path / MERGED_DIR
    if not is_real_dir(folder):
        return 0
    size = folder_size(folder)
    delete_dir(folder)
    return size


def read_export(run_path: Path) -> dict[str, Any] | None:
    """The run's export.json, or None when it has not been exported (or the file is unreadable)."""
    return read_json_or_empty(run_path / EXPORT_FILE) or None


def gguf_file_path(run_path: Path, name: object) -> Path | None:
    """The file an export.json entry's `file` names, when that is `gguf/<name>.gguf` (a plain file
    name) and the file, links resolved, lies inside the run folder; else None."""
    if not isinstance(name, str) or not GGUF_ENTRY.fullmatch(name):
        return None
    path = run_path / name
    return path if path.resolve().is_relative_to(run_path.resolve()) else None


def adapter_record(run_path: Path) -> dict[str, Any]:
    """The adapter the export merges, for export.json: its folder, training step, and the weights
    file peft loads (safetensors before bin) with its sha256."""
    weights = adapter_weights(check_adapter(run_path))
    step = read_json_or_empty(run_path / STATUS_FILE).get("step")
    return {"path": ADAPTER_DIR, "step": step, "weights": weights.name, "sha256": sha256_file(weights)}


def _previous_files(run_path: Path, quants: list[str]) -> list[dict[str, Any]]:
    """Files of earlier exports that this one does not redo and that are still on disk, unchanged in size."""
    previous = read_export(run_path) or {}
    kept = []
    for entry in previous.get("files") or []:
        if not isinstance(entry, dict) or entry.get("quant") in quants:
            continue
        path = gguf_file_path(run_path, entry.get("file"))
        if path is not None and path.is_file() and path.stat().st_size == entry.get("size"):
            kept.append(entry)
    return kept


def _merge(
    run_path: Path, progress: Progress, quants: list[str], timings: dict[str, float]
) -> tuple[Any, Any, int]:
    """Load, disk-check and merge; save merged/; return the merged model, tokenizer and parameter count."""
    started = time.monotonic()
    progress("loading the base model in 16-bit with the run's adapter", 0.08)
    model, tokenizer = load_run_model(run_path, adapter=True, merge=False, dtype=MERGED_DTYPE)
    end_of_turn_token(tokenizer)  # refused here, before the merge writes anything, rather than after it
    parameters = sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)
    check_disk(run_path, parameters, quants)
    progress("merging the adapter into the base model", 0.15)
    model = model.merge_and_unload()
    with staging_dir(run_path / MERGED_DIR) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        replace_dir(staging, run_path / MERGED_DIR)
    timings["merge_s"] = round(time.monotonic() - started, 3)
    return model, tokenizer, parameters


class FileMaker:
    """Makes the export's GGUF files from merged/: f16 and q8_0 by the converter, k-quants from an
    f16 file (this export's verified one, else a scratch one converted once and removed by `cleanup`)."""

    def __init__(self, run_path: Path, location: ConverterLocation, pre_tokenizer: str | None):
        self.run_path, self.script, self.pre_tokenizer = run_path, location.script, pre_tokenizer
        self.folder = run_path / GGUF_DIR
        self.verified_f16: Path | None = None
        self.scratch: Path | None = None

    def _convert(self, outtype: str, target: Path) -> None:
        convert(
            self.script,
            self.run_path / MERGED_DIR,
            outtype,
            target,
            pre_tokenizer=self.pre_tokenizer,
            model_name=self.run_path.name,
        )

    def _f16(self) -> Path:
        if self.verified_f16 is not None:
            return self.verified_f16
        if self.scratch is None:
            self.scratch = hidden_beside(self.folder / "f16-for-quantizing", "partial")
            self._convert("f16", self.scratch)
        return self.scratch

    def make(self, quant: str, target: Path) -> str:
        """Write the GGUF for `quant` at `target`; return how it was made."""
        if quant in CONVERTER_QUANTS:
            self._convert(quant, target)
            return "convert_hf_to_gguf"
        quantize(self._f16(), target, quant)
        return "llama_model_quantize"

    def cleanup(self) -> None:
        """Remove the scratch f16 file, if one was made."""
        if self.scratch is not None:
            self.scratch.unlink(missing_ok=True)


def _export_file(
    quant: str, maker: FileMaker, expected: Expectations, progress: Progress, share: float
) -> dict[str, Any]:
    """Make, verify and place one GGUF file; return its export.json entry (file None when it failed)."""
    name = gguf_name(maker.run_path.name, quant)
    final = maker.folder / name
    partial = hidden_beside(final, "partial")
    try:
        progress(f"making {name}", share)
        started = time.monotonic()
        method = maker.make(quant, partial)
        made_s = round(time.monotonic() - started, 3)
        progress(f"verifying {name} in llama-cpp", None)
        verification = verify_gguf(partial, quant, expected)
        entry = {
            "quant": quant,
            "file": f"{GGUF_DIR}/{name}",
            "method": method,
            "size": partial.stat().st_size,
            "sha256": sha256_file(partial),
            "seconds": made_s,
            "verification": verification,
        }
        if verification["passed"]:
            os.replace(partial, final)
            if quant == "f16":
                maker.verified_f16 = final
        else:
            final.unlink(missing_ok=True)  # an older file of this quant must not pass for this export's
            entry["file"] = None
        return entry
    finally:
        partial.unlink(missing_ok=True)


def export_run(run_path: Path, quants: list[str], progress: Progress) -> dict[str, Any]:
    """Export the run: merged/, verified GGUF files in gguf/, and export.json; return export.json's document.

    Raises ExportError (or InferenceError, a ValueError too) before any work for an unknown
    quant, a run without a usable adapter or config.json, no converter, a tokenizer with no
    end-of-turn token or too little disk; a converter or quantizer that fails or runs past
    TOOL_TIMEOUT_S is an ExportError too (export.json records it, state failed); a file that fails
    verification is deleted, the others are kept, export.json records all of it (state
    failed) and ExportError says which failed.
    """
    quants = validate_quants(quants)
    run_path = Path(run_path)
    adapter = adapter_record(run_path)
    base = configured_base_model(run_path)
    location = fetch_converter(lambda line: progress(line, 0.02))
    pre_tokenizer = PRE_TOKENIZER_OVERRIDES.get(base)
    converter = {**converter_record(location), "pre_tokenizer_override": pre_tokenizer}
    timings: dict[str, float] = {}
    model, tokenizer, parameters = _merge(run_path, progress, quants, timings)
    progress("answering the verification prompts with the merged model in transformers", 0.3)
    started = time.monotonic()
    expected = merged_expectations(model, tokenizer)
    timings["reference_s"] = round(time.monotonic() - started, 3)
    del model
    gc.collect()

    (run_path / GGUF_DIR).mkdir(exist_ok=True)
    document: dict[str, Any] = {
        "run": run_path.name,
        "state": "running",
        "error": None,
        "base_model": base,
        "merged_from": full_precision_base(base),
        "adapter": adapter,
        "merged": {"path": MERGED_DIR, "dtype": MERGED_DTYPE, "parameters": parameters},
        "converter": converter,
        "verification": {
            "prompts": len(VERIFY_PROMPTS),
            "max_new_tokens": VERIFY_TOKENS,
            "exact_required_for": list(EXACT_QUANTS),
            "near_tie_logits": NEAR_TIE_LOGITS,
        },
        "files": [],
        "hub": None,
        "timings": timings,
        "created_at": now_iso(),
    }
    maker = FileMaker(run_path, location, pre_tokenizer)
    order = sorted(quants, key=QUANTS.index)  # f16 first: the k-quants are made from it
    try:
        for number, quant in enumerate(order):
            document["files"].append(
                _export_file(quant, maker, expected, progress, 0.35 + 0.6 * number / len(order))
            )
    except BaseException as exc:
        document["state"] = "stopped" if isinstance(exc, (JobStopped, KeyboardInterrupt)) else "failed"
        document["error"] = first_line(exc) or type(exc).__name__
        raise
    else:
        failed = [
            f"{e['quant']} ({'; '.join(e['verification']['problems'])})"
            for e in document["files"]
            if not e["file"]
        ]
        document["state"] = "failed" if failed else "completed"
        document["error"] = "verification failed: " + ", ".join(failed) if failed else None
    finally:
        maker.cleanup()
        document["files"] = (
            _previous_files(run_path, [e["quant"] for e in document["files"]]) + document["files"]
        )
        document["finished_at"] = now_iso()
        write_json_atomic(run_path / EXPORT_FILE, document)
    if document["error"]:
        raise ExportError(document["error"])
    progress("export done", 1.0)
    return document


def record_push(run_path: Path, hub: dict[str, Any]) -> dict[str, Any]:
    """Add the Hub repo and commit of a push to export.json; return the new document."""
    document = read_json_object(run_path / EXPORT_FILE)
    document["hub"] = hub
    write_json_atomic(run_path / EXPORT_FILE, document)
    return document


def export_file_rows(export: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per GGUF file export.json lists: file, type, size in MB, hash prefix and verdict;
    entries that are not objects are left out (the file may come from anywhere)."""
    files = export.get("files")
    return [
        {
            "file": entry.get("file") if isinstance(entry.get("file"), str) else None,
            "quant": entry.get("quant") if isinstance(entry.get("quant"), str) else None,
            "size_mb": round((finite_number(entry.get("size")) or 0) / 1e6, 2),
            "sha256": str(entry.get("sha256") or "")[:12] or None,
            "verification": file_verdict(
                entry["verification"] if isinstance(entry.get("verification"), dict) else {}
            ),
        }
        for entry in (files if isinstance(files, list) else [])
        if isinstance(entry, dict)
    ]
