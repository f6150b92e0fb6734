"""TensorBoard event files in and out, with TensorBoard's own event reader and writer (the
`tensorboard` package; no TensorFlow, no torch).

In: one run per folder holding event files (`runs/<name>/`, `logs/`, a run's `tensorboard/`):
the scalars transformers' TensorBoardCallback writes (`train/loss`, `train/learning_rate`,
`train/grad_norm`, `train/epoch`, `eval/loss`, `train/train_loss`, `train/train_runtime`; bare
names too) and the hparams of the HParams plugin, where logged. Out: one folder per run, written
from its events.jsonl with those same tags and its config as hparams, and the experiment's
summary at the top, so that TensorBoard's HParams view lays a sweep out.
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from core.interop.runs import (
    ImportedRun,
    InteropError,
    checked_fields,
    eval_event,
    fit_events,
    origin,
    run_metrics,
    thinned_steps,
    training_event,
    valid_step,
)
from core.store.files import (
    finite_number,
    is_real_dir,
    read_jsonl,
    regular_files,
    replace_dir,
    staging_dir,
)
from core.store.runs import EVENTS_FILE, Run, validate_run_name
from core.train.config import field_specs

EVENT_FILE_MARK = "tfevents"
MAX_EVENT_BYTES = 32 << 20  # the event files of one folder read at most
MAX_EVENTS_READ = 200_000
"""The events of one folder read at most (~13 s with TensorBoard's reader): ~50,000 logged steps
of the callback's four scalars, what events.jsonl holds (fit_events thins a denser log)."""
MAX_EXPORT_RUNS = 200
MAX_EXPORT_STEPS = 5_000
"""An export writes at most this many logged steps of a run, evenly spread (first and last kept)."""
_INT64 = range(-(2**63), 2**63)
MAX_HPARAM_CHARS = 256
TRAIN_TAGS = {"loss": "loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm", "epoch": "epoch"}
FINAL_TAGS = {"train_loss": "train_loss", "train_runtime": "train_runtime"}
EVAL_LOSS_TAGS = ("eval/loss", "eval_loss")
EXPORT_MARKER = ".peft-dashboard-tensorboard"
"""A file an export leaves at the top of its folder: a later export may replace that folder."""
FINAL_METRICS = {"train_loss": "final/train_loss", "train_runtime_s": "final/train_runtime_s"}
_HPARAM_SKIPPED = ("origin", "imported_from", "note")
_NAME_JUNK = re.compile(r"[^A-Za-z0-9._-]+")


def _scalar_name(tag: str) -> str | None:
    """The events.jsonl key a scalar tag feeds, or None."""
    if tag in EVAL_LOSS_TAGS:
        return "eval_loss"
    bare = tag.removeprefix("train/")
    return TRAIN_TAGS.get(bare) or FINAL_TAGS.get(bare)


def _value_of(value: Any) -> float | None:
    """A summary value's number: a simple_value, or a one-element tensor (any float dtype)."""
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return finite_number(float(value.simple_value))
    if kind == "tensor":
        from tensorboard.util import tensor_util

        tensor = value.tensor
        if not tensor.tensor_shape.dim and len(tensor.double_val) + len(tensor.float_val) == 1:
            return finite_number(float((tensor.double_val or tensor.float_val)[0]))  # the common case, fast
        try:
            array = tensor_util.make_ndarray(value.tensor)
        except (ValueError, TypeError):
            return None
        return finite_number(array.item()) if array.size == 1 and array.dtype.kind in "fiu" else None
    return None


def _hparams_of(value: Any) -> dict[str, Any]:
    """The hparams of an HParams session-start summary value ({} when it is none)."""
    from tensorboard.plugins.hparams import metadata

    if (
        value.metadata.plugin_data.plugin_name != metadata.PLUGIN_NAME
        or value.tag != metadata.SESSION_START_INFO_TAG
    ):
        return {}
    try:
        info = metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content)
    except Exception:  # a protobuf that does not parse: no hparams, the scalars still import
        return {}
    found: dict[str, Any] = {}
    for name, item in info.hparams.items():
        kind = item.WhichOneof("kind")
        found[name] = getattr(item, kind) if kind in ("number_value", "string_value", "bool_value") else None
    return found


class EventFolder(NamedTuple):
    """What one folder's event files hold: scalars by step (the last value of a tag at a step
    wins, with the step's first wall time), hparams, the first wall time and how many events
    were read (none: not event files, or torn before the first record)."""

    by_step: dict[int, dict[str, float]]
    hparams: dict[str, Any]
    start: float | None
    events_read: int


def read_event_folder(files: list[Path]) -> EventFolder:
    """One folder's event files, read in name order (which is write order); InteropError past
    MAX_EVENTS_READ events."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    by_step: dict[int, dict[str, float]] = {}
    hparams: dict[str, Any] = {}
    start: float | None = None
    read = 0
    for path in sorted(files):
        for event in EventFileLoader(str(path)).Load():
            read += 1
            if read > MAX_EVENTS_READ:
                raise InteropError(f"more than {MAX_EVENTS_READ:,} events; an import reads at most that many")
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                hparams.update(_hparams_of(value))
                key = _scalar_name(value.tag)
                number = _value_of(value) if key else None
                if key is None or number is None:
                    continue
                if not valid_step(int(event.step)) or finite_number(event.wall_time) is None:
                    continue
                start = event.wall_time if start is None else min(start, event.wall_time)
                record = by_step.setdefault(int(event.step), {})
                record[key] = number
                record.setdefault("wall_time", event.wall_time)
    return EventFolder(by_step, hparams, start, read)


def _events(
    by_step: dict[int, dict[str, float]], start: float | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    events: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    for step in sorted(by_step):
        record = by_step[step]
        elapsed = finite_number(round(record["wall_time"] - start, 3)) if start is not None else None
        if "loss" in record:
            events.append(training_event(step, record["loss"], record, elapsed))
        if "eval_loss" in record:
            events.append(eval_event(step, record["eval_loss"], record.get("epoch"), elapsed))
        final.update({key: record[key] for key in FINAL_TAGS if key in record})
    return events, final


def event_folders(folder: Path) -> dict[str, list[Path]]:
    """The folders under `folder` that hold event files, by `/`-separated relative path ("." for
    `folder` itself), with their event files: regular files only, no link followed."""
    found: dict[str, list[Path]] = {}
    for relative in regular_files(folder):
        if EVENT_FILE_MARK in PurePosixPath(relative).name:
            parent = str(PurePosixPath(relative).parent)
            found.setdefault(parent, []).append(folder / relative)
    return dict(sorted(found.items()))


def run_name_for(relative: str, name: str | None, fallback: str) -> str:
    """The run name of the event folder at `relative`: `name` for the top folder, else `name` (or
    `fallback`) and the folder's path, in the characters a run name may hold."""
    if relative == ".":
        candidate = name or fallback
    else:
        candidate = f"{name}-{relative}" if name else relative
    cleaned = _NAME_JUNK.sub("-", candidate.replace("/", "-")).lstrip("._-")[:64]
    return validate_run_name(cleaned or "tensorboard")


def unique_name(candidate: str, taken: set[str]) -> str:
    """`candidate`, or `candidate`-2, -3... (cut to fit a run name) when another folder of the same
    import already took it: folders whose names clean up alike stay apart."""
    number = 1
    name = candidate
    while name in taken:
        number += 1
        suffix = f"-{number}"
        name = validate_run_name(candidate[: 64 - len(suffix)] + suffix)
    return name


def read_tensorboard_folder(
    folder: Path, *, name: str | None, source: str
) -> tuple[list[ImportedRun], list[str]]:
    """The runs to create from the event files under `folder`, one per folder holding them, and
    what was left out and why; InteropError when there are no event files or none logs a loss."""
    if folder.is_symlink() or not folder.is_dir():
        raise InteropError(f"{folder}: not a folder (a symbolic link is not followed)")
    folders = event_folders(folder)
    if not folders:
        raise InteropError(f"{folder.name}: no TensorBoard event files (events.out.tfevents.*) in it")
    runs: list[ImportedRun] = []
    problems: list[str] = []
    names: set[str] = set()
    for relative, files in folders.items():
        where = f"{folder.name}/{relative}" if relative != "." else folder.name
        size = sum(path.lstat().st_size for path in files)
        if size > MAX_EVENT_BYTES:
            problems.append(
                f"{where}: not imported ({size:,} bytes of event files; at most {MAX_EVENT_BYTES:,})"
            )
            continue
        try:
            found = read_event_folder(files)
        except InteropError as exc:
            problems.append(f"{where}: not imported ({exc})")
            continue
        except Exception as exc:  # a corrupt record: TensorBoard's reader raises its own errors
            problems.append(f"{where}: not imported (the event files cannot be read: {exc})")
            continue
        events, final = _events(found.by_step, found.start)
        events = fit_events(events, where, problems)
        if not found.events_read:
            problems.append(f"{where}: not imported (no event could be read: not TensorBoard event files)")
            continue
        if not any("loss" in event for event in events):
            if found.by_step:  # an experiment's summary or hparams alone hold no run: left out silently
                problems.append(f"{where}: not imported (no train/loss scalars)")
            continue
        config = {key: value for key, value in found.hparams.items() if key not in _HPARAM_SKIPPED}
        config = checked_fields(
            {key: _hparam_value(key, value) for key, value in config.items()}, where, problems
        )
        config["origin"] = origin("tensorboard", source, folder=relative)
        try:
            run_name = unique_name(run_name_for(relative, name, folder.name), names)
        except ValueError as exc:
            problems.append(f"{where}: not imported ({exc})")
            continue
        names.add(run_name)
        runs.append(ImportedRun(run_name, config, events, run_metrics(events, final)))
    if not runs:
        raise InteropError(f"{folder.name}: nothing to import ({'; '.join(problems)})")
    return runs, problems


def _hparam_value(key: str, value: Any) -> Any:
    """A config field's value from its hparam: numbers come back as floats, lists as joined text."""
    spec = field_specs().get(key)
    if spec is None:
        return None  # not a config field: left out
    if spec.kind == "whole" and isinstance(value, float) and value.is_integer():
        return int(value)
    if spec.kind == "modules" and isinstance(value, str) and value != "all-linear":
        return [part for part in value.split(",") if part]
    return value


# --- export ----------------------------------------------------------------------------------


def hparams_of(config: dict[str, Any]) -> dict[str, bool | float | str]:
    """A run's config as HParams values: booleans, finite numbers and text of at most
    MAX_HPARAM_CHARS; lists joined by commas; where it came from, its note and anything else left
    out (a config.json from elsewhere may hold anything)."""
    values: dict[str, bool | float | str] = {}
    for key, value in config.items():
        if key in _HPARAM_SKIPPED or len(key) > MAX_HPARAM_CHARS:
            continue
        if isinstance(value, list):
            value = ",".join(map(str, value))
        if isinstance(value, bool) or (isinstance(value, str) and len(value) <= MAX_HPARAM_CHARS):
            values[key] = value
        elif (number := finite_number(value)) is not None:
            values[key] = number
    return values


def _scalar_value(tag: str, number: float) -> Any:
    """A summary value holding `number` as TensorFlow 2's tf.summary.scalar writes it: a float32
    scalar tensor of the scalars plugin (TensorBoard's fast loader reads no other dtype)."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, types_pb2

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR,
    )
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[number])
    tensor.tensor_shape.SetInParent()  # a scalar: a shape with no dimensions
    return summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=metadata)


def _write_events(folder: Path, summaries: Iterable[tuple[int, float, Any]]) -> None:
    """An event file in `folder` of (step, wall time, Summary) records."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder), filename_suffix=".peft-dashboard")
    try:
        for step, wall_time, summary in summaries:
            writer.add_event(event_pb2.Event(step=step, wall_time=wall_time, summary=summary))
    finally:
        writer.close()


def _epoch_seconds(stamp: Any) -> float:
    """An ISO 8601 time of status.json in seconds since the epoch (0 when it is none)."""
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _exportable_step(step: Any) -> bool:
    """Whether `step` can be an event's step: an int (not a bool) within int64."""
    return isinstance(step, int) and not isinstance(step, bool) and step in _INT64


def _run_summaries(run: Run, events: list[dict[str, Any]]) -> list[tuple[int, float, Any]]:
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp

    created = _epoch_seconds(run.status.get("started_at") or run.status.get("created_at"))
    records: list[tuple[int, float, Any]] = [
        (0, created, hp.hparams_pb(hparams_of(run.config), trial_id=run.name))
    ]
    last_step = 0
    steps = sorted({step for event in events if _exportable_step(step := event.get("step"))})
    kept = thinned_steps(steps, MAX_EXPORT_STEPS)
    for event in events:
        step = event.get("step")
        if not _exportable_step(step) or step not in kept:
            continue
        last_step = max(last_step, step)
        elapsed = finite_number(event.get("elapsed_s")) or 0.0
        values = []
        if finite_number(event.get("loss")) is not None:
            values += [
                _scalar_value(f"train/{key}", number)
                for key in TRAIN_TAGS
                if (number := finite_number(event.get(key))) is not None
            ]
        if (eval_loss := finite_number(event.get("eval_loss"))) is not None:
            values.append(_scalar_value(EVAL_LOSS_TAGS[0], eval_loss))
        if values:
            records.append((step, created + elapsed, summary_pb2.Summary(value=values)))
    finals = [
        _scalar_value(tag, number)
        for key, tag in FINAL_METRICS.items()
        if (number := finite_number(run.metrics.get(key))) is not None
    ]
    if finals:
        records.append((last_step, created, summary_pb2.Summary(value=finals)))
    return records


def export_tensorboard(runs: Iterable[Run], target: Path) -> tuple[list[str], list[str]]:
    """Write TensorBoard event files of `runs` into the folder `target`, one folder per run with
    its hparams and curves and the experiment's summary at the top; return the runs written and
    the ones left out (broken, or no logged loss), each with the reason. `target` is replaced
    whole; InteropError when it is a folder this export did not make. At most MAX_EXPORT_RUNS runs
    are written (the rest left out) and MAX_EXPORT_STEPS logged steps of each."""
    from tensorboard.plugins.hparams import summary_v2 as hp

    if target.is_symlink() or (target.exists() and not is_real_dir(target)):
        raise InteropError(f"{target}: not a folder")
    if is_real_dir(target) and any(target.iterdir()) and not (target / EXPORT_MARKER).is_file():
        raise InteropError(f"{target} holds files this export did not write: pick a new or empty folder")
    written: list[str] = []
    left_out: list[str] = []
    names: set[str] = set()
    with staging_dir(target) as staging:
        for run in runs:
            if len(written) >= MAX_EXPORT_RUNS:
                left_out.append(f"{run.name} (an export writes at most {MAX_EXPORT_RUNS} runs)")
                continue
            try:
                events, _ = read_jsonl(run.path / EVENTS_FILE)
                if run.broken or not any(finite_number(event.get("loss")) is not None for event in events):
                    left_out.append(f"{run.name} ({'; '.join(run.problems) or 'no logged loss'})")
                    continue
                folder = staging / run.name
                folder.mkdir()
                _write_events(folder, _run_summaries(run, events))
            except Exception as exc:  # one run's files from elsewhere must not stop the others
                shutil.rmtree(staging / run.name, ignore_errors=True)
                left_out.append(f"{run.name} (cannot be written: {type(exc).__name__}: {exc})")
                continue
            names |= set(hparams_of(run.config))
            written.append(run.name)
        metrics = [hp.Metric(tag) for tag in ("train/loss", EVAL_LOSS_TAGS[0], *FINAL_METRICS.values())]
        experiment = hp.hparams_config_pb([hp.HParam(name) for name in sorted(names)], metrics)
        _write_events(staging, [(0, time.time(), experiment)])
        (staging / EXPORT_MARKER).write_text(
            "written by python -m core runs export-tensorboard\n", encoding="utf-8"
        )
        replace_dir(staging, target)
    return written, left_out


def tensorboard_zip(runs: Iterable[Run]) -> tuple[bytes, list[str], list[str]]:
    """export_tensorboard of `runs` as a zip of a `tensorboard/` folder (for a download), with the
    runs written and left out."""
    with tempfile.TemporaryDirectory(prefix="peft-tensorboard-") as temporary:
        folder = Path(temporary) / "tensorboard"
        written, left_out = export_tensorboard(runs, folder)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for relative in sorted(regular_files(folder)):
                archive.write(folder / relative, f"tensorboard/{relative}")
    return buffer.getvalue(), written, left_out
