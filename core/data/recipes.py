"""Recipes: which rows of a dataset a run trains on, and which it holds out for validation.

A recipe is a source, filters (score, sources, token lengths, regular expressions, exact
duplicates), a per-source mix, a sample size and seed, and a validation share. Saving one
measures the source (core.data.stats), selects its rows and stores them, by index, in
`<runs>/.recipes/NAME.json` with the content hash of the rows selected. A run that names the
recipe (`recipe=NAME`) is pinned to that hash when it is created (`recipe=NAME@HASH`) and keeps
a copy of the recipe in its folder (recipe.json); the job trains on exactly those rows, or fails
before training when the data no longer hashes the same.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.data.sources import DataSource, check_source, load_source
from core.data.stats import RowStats, conversation_hash, usable
from core.store.files import FileProblem, read_json_object, write_json_atomic
from core.store.runs import RECIPE_FILE, RUN_NAME_PATTERN, now_iso
from core.train.config import RECIPE_PATTERN, RunConfig
from core.train.data import DataError, DataReport, MalformedRow, standardize_conversation

RECIPES_DIR = ".recipes"
RECIPE_VERSION = 1
MAX_RECIPE_BYTES = 32 << 20  # row indices of a few million rows
MAX_VALIDATION = 0.5
TAKES = ("random", "top-score")
HASH_SHOWN = 16  # hex digits of the hash a pinned recipe name carries


class RecipeError(ValueError):
    """A recipe that cannot be saved or used; the message says why."""


@dataclass(frozen=True)
class RecipeSpec:
    """What a recipe asks for; `mix` maps a source to a weight (with `rows`) or a count (without)."""

    source: DataSource
    model: str
    min_score: float | None = None
    max_score: float | None = None
    sources: tuple[str, ...] = ()
    min_tokens: int | None = None
    max_tokens: int | None = None
    match: str = ""
    exclude: str = ""
    drop_duplicates: bool = True
    mix: dict[str, float] = field(default_factory=dict)
    take: str = "random"
    rows: int | None = None
    seed: int = 3407
    validation: float = 0.0

    def problems(self) -> list[str]:
        """What is wrong with the spec itself, before any data is read."""
        found = []
        try:
            check_source(self.source)
        except DataError as exc:
            found.append(str(exc))
        if self.min_score is not None and self.max_score is not None and self.min_score > self.max_score:
            found.append(f"min score {self.min_score} is above max score {self.max_score}")
        if self.min_tokens is not None and self.max_tokens is not None and self.min_tokens > self.max_tokens:
            found.append(f"min tokens {self.min_tokens} is above max tokens {self.max_tokens}")
        for label, pattern in (("match", self.match), ("exclude", self.exclude)):
            try:
                re.compile(pattern)
            except re.error as exc:
                found.append(f"{label} {pattern!r} is not a regular expression: {exc}")
        if self.take not in TAKES:
            found.append(f"take must be one of {', '.join(TAKES)} (got {self.take!r})")
        if self.rows is not None and self.rows < 1:
            found.append(f"rows must be at least 1 (got {self.rows})")
        if not 0 <= self.validation <= MAX_VALIDATION:
            found.append(
                f"the validation share must be between 0 and {MAX_VALIDATION} (got {self.validation})"
            )
        if any(not math.isfinite(v) or v <= 0 for v in self.mix.values()):
            found.append("mix values must be positive numbers")
        elif self.mix and self.rows is None and any(v != int(v) for v in self.mix.values()):
            found.append("a mix of weights needs a number of rows; without one give counts per source")
        return found

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON."""
        data = asdict(self)
        data["source"] = self.source.to_dict()
        data["sources"] = list(self.sources)
        return data


def spec_from_dict(data: Mapping[str, Any]) -> RecipeSpec:
    """The RecipeSpec a recipe document holds; RecipeError when it is malformed."""
    for key in ("source", "model"):
        if key not in data:
            raise RecipeError(f"malformed recipe: no {key}")
    source = data["source"]
    if not (isinstance(source, dict) and all(isinstance(source.get(k), str) for k in ("dataset", "split"))):
        raise RecipeError("malformed recipe: its source must name a dataset and a split as text")
    if not isinstance(data["model"], str):
        raise RecipeError("malformed recipe: its model must be text")
    try:
        values = {
            key: data[key] for key in RecipeSpec.__dataclass_fields__ if key in data and key != "source"
        }
        values["sources"] = tuple(str(name) for name in values.get("sources", ()))
        values["mix"] = {str(k): float(v) for k, v in dict(values.get("mix", {})).items()}
        spec = RecipeSpec(source=DataSource(str(source["dataset"]), str(source["split"])), **values)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RecipeError(f"malformed recipe: {exc}") from None
    return spec


@dataclass
class Selection:
    """The rows a recipe selects (indices into its source), and how many each step kept."""

    train: list[int]
    validation: list[int]
    funnel: list[tuple[str, int]]
    notes: list[str]


def _conversation_text(rows: Any, indices: np.ndarray) -> pd.Series:
    """Every turn's text of the given rows, joined, for the regular-expression filters."""
    texts = {}
    for index in indices.tolist():
        try:
            texts[index] = "\n".join(m["content"] for m in standardize_conversation(rows[index]))
        except MalformedRow:
            texts[index] = ""
    return pd.Series(texts, dtype=object)


def _mix_counts(spec: RecipeSpec) -> dict[str, int]:
    """Rows to take from each source of the mix: its count, or its share of `rows` by weight, the
    rows a rounding leaves over given to the largest remainders (the counts add up to `rows`)."""
    if spec.rows is None:
        return {name: int(value) for name, value in spec.mix.items()}
    total = sum(spec.mix.values())
    shares = {name: spec.rows * value / total for name, value in spec.mix.items()}
    counts = {name: math.floor(share) for name, share in shares.items()}
    left = spec.rows - sum(counts.values())
    for name in sorted(shares, key=lambda n: shares[n] - counts[n], reverse=True)[:left]:
        counts[name] += 1
    return counts


def select_rows(spec: RecipeSpec, stats: RowStats, dataset: Any = None) -> Selection:
    """Apply the recipe to measured rows; RecipeError when nothing is left to train on.

    `dataset` (the loaded source) is needed only for the regular-expression filters.
    """
    problems = spec.problems()
    if problems:
        raise RecipeError("; ".join(problems))
    table = stats.table
    funnel = [("rows read", len(table))]
    kept = usable(table)
    funnel.append(("usable conversations", len(kept)))
    score = pd.to_numeric(kept["score"], errors="coerce")
    if spec.min_score is not None or spec.max_score is not None:
        low = -math.inf if spec.min_score is None else spec.min_score
        high = math.inf if spec.max_score is None else spec.max_score
        kept = kept[(score >= low) & (score <= high)]
        funnel.append((f"score in [{low:g}, {high:g}]", len(kept)))
    if spec.sources:
        kept = kept[kept["source"].astype(str).isin(spec.sources)]
        funnel.append((f"source in {', '.join(spec.sources)}", len(kept)))
    if spec.min_tokens is not None or spec.max_tokens is not None:
        low = spec.min_tokens if spec.min_tokens is not None else 0
        high = spec.max_tokens if spec.max_tokens is not None else math.inf
        kept = kept[(kept["tokens"] >= low) & (kept["tokens"] <= high)]
        funnel.append((f"tokens in [{low}, {high:g}]", len(kept)))
    if spec.match or spec.exclude:
        text = _conversation_text(
            dataset if dataset is not None else load_source(stats.source), kept.index.to_numpy()
        )
        if spec.match:
            kept = kept[text.loc[kept.index].str.contains(spec.match, regex=True)]
            funnel.append((f"matching /{spec.match}/", len(kept)))
        if spec.exclude:
            kept = kept[~text.loc[kept.index].str.contains(spec.exclude, regex=True)]
            funnel.append((f"not matching /{spec.exclude}/", len(kept)))
    if spec.drop_duplicates:
        kept = kept[~kept["row_hash"].duplicated()]
        funnel.append(("without exact duplicates", len(kept)))
    rng = np.random.default_rng(spec.seed)
    notes: list[str] = []

    def take(rows: pd.DataFrame, count: int | None) -> pd.DataFrame:
        if count is None or count >= len(rows):
            return rows
        if spec.take == "top-score":
            order = pd.to_numeric(rows["score"], errors="coerce").fillna(-math.inf)
            return rows.loc[order.sort_values(ascending=False, kind="stable").index[:count]]
        return rows.iloc[np.sort(rng.choice(len(rows), size=count, replace=False))]

    if spec.mix:
        available = kept["source"].astype(str)
        parts = []
        for name, count in _mix_counts(spec).items():
            rows = kept[available == name]
            if len(rows) < count:
                notes.append(f"source {name}: {count} rows asked, {len(rows)} available")
            parts.append(take(rows, count))
        kept = pd.concat(parts) if parts else kept.iloc[:0]
        funnel.append(("mixed: " + ", ".join(f"{k} {v:g}" for k, v in spec.mix.items()), len(kept)))
    elif spec.rows is not None:
        if len(kept) < spec.rows:
            notes.append(f"{spec.rows} rows asked, {len(kept)} available")
        kept = take(kept, spec.rows)
        funnel.append((f"{spec.take} {spec.rows}", len(kept)))
    indices = np.sort(kept.index.to_numpy(dtype=np.int64))
    held = int(round(len(indices) * spec.validation))
    if spec.validation > 0 and len(indices) >= 2:
        held = min(len(indices) - 1, max(1, held))
    chosen = np.sort(rng.permutation(len(indices))[:held])
    validation = indices[chosen]
    train = np.delete(indices, chosen)
    if not len(train):
        steps = "; ".join(f"{label}: {count}" for label, count in funnel)
        raise RecipeError(f"the recipe selects no rows to train on ({steps})")
    if held:
        funnel.append((f"held out for validation ({spec.validation:.1%})", held))
    return Selection([int(i) for i in train], [int(i) for i in validation], funnel, notes)


def selection_hash(row_hashes: list[str], validation_hashes: list[str]) -> str:
    """The content hash of a selection: its rows' conversations, in order, train then validation."""
    digest = hashlib.sha256()
    for part in (row_hashes, ["--validation--"], validation_hashes):
        digest.update("\n".join(part).encode("ascii"))
        digest.update(b"\n")
    return digest.hexdigest()


def build_recipe(name: str, spec: RecipeSpec, stats: RowStats, dataset: Any = None) -> dict[str, Any]:
    """The recipe document for `spec` over the measured rows; RecipeError for a bad name or selection."""
    if not RUN_NAME_PATTERN.fullmatch(name or ""):
        raise RecipeError(f"{name!r} is not a recipe name: 1-64 letters, digits, '.', '_' or '-'")
    selection = select_rows(spec, stats, dataset)
    hashes = stats.table["row_hash"]
    return {
        "version": RECIPE_VERSION,
        "name": name,
        "created_at": now_iso(),
        **spec.to_dict(),
        "hash": selection_hash(
            [hashes[i] for i in selection.train], [hashes[i] for i in selection.validation]
        ),
        "train_count": len(selection.train),
        "validation_count": len(selection.validation),
        "funnel": [[label, count] for label, count in selection.funnel],
        "notes": selection.notes,
        "train_rows": selection.train,
        "validation_rows": selection.validation,
    }


def recipe_path(root: Path, name: str) -> Path:
    """Where the recipe `name` is saved under the runs root."""
    if not RUN_NAME_PATTERN.fullmatch(name or ""):
        raise RecipeError(f"{name!r} is not a recipe name: 1-64 letters, digits, '.', '_' or '-'")
    return root / RECIPES_DIR / f"{name}.json"


def save_recipe(root: Path, document: dict[str, Any], *, replace_existing: bool = False) -> Path:
    """Write the recipe under the runs root; RecipeError when the name is taken and not replaced."""
    path = recipe_path(root, document["name"])
    if path.exists() and not replace_existing:
        raise RecipeError(f"a recipe named {document['name']} exists: pick another name or replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, document)
    return path


def _indices(document: Mapping[str, Any], key: str) -> list[int]:
    values = document.get(key)
    if not isinstance(values, list) or not all(type(v) is int and v >= 0 for v in values):
        raise RecipeError(f"malformed recipe: {key} must be a list of row numbers")
    return values


def read_recipe(path: Path) -> dict[str, Any]:
    """A recipe document from a file (treated as hostile: capped, checked); RecipeError if unusable."""
    try:
        document = read_json_object(path, limit=MAX_RECIPE_BYTES)
    except FileProblem as exc:
        raise RecipeError(f"cannot read the recipe {path.name}: {exc}") from None
    spec_from_dict(document)
    if not RUN_NAME_PATTERN.fullmatch(str(document.get("name", ""))):
        raise RecipeError("malformed recipe: no valid name")
    if not re.fullmatch(r"[0-9a-f]{64}", str(document.get("hash", ""))):
        raise RecipeError("malformed recipe: no content hash")
    train, validation = _indices(document, "train_rows"), _indices(document, "validation_rows")
    if not train:
        raise RecipeError(f"the recipe {document['name']} selects no rows to train on")
    if len(set(train + validation)) != len(train) + len(validation):
        raise RecipeError(
            f"the recipe {document['name']} names a row twice (or both to train on and to hold out)"
        )
    # The counts shown are those of the rows themselves, whatever the file says.
    created = str(document.get("created_at", ""))[:40]
    return {**document, "train_count": len(train), "validation_count": len(validation), "created_at": created}


def load_recipe(root: Path, name: str) -> dict[str, Any]:
    """The saved recipe `name`; RecipeError when there is none, it is unusable, or it names another."""
    path = recipe_path(root, name)
    if not path.is_file():
        raise RecipeError(
            f"no recipe named {name} in {root / RECIPES_DIR}: save it on the Data page or "
            "with python -m core data recipe"
        )
    document = read_recipe(path)
    if document["name"] != name:
        raise RecipeError(f"the recipe file {path.name} names another recipe ({document['name']})")
    return document


def saved_recipes(root: Path) -> dict[str, dict[str, Any]]:
    """Every readable recipe under the runs root, by name, newest first; unreadable ones left out."""
    folder = root / RECIPES_DIR
    found = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            found[path.stem] = load_recipe(root, path.stem)
        except RecipeError:
            continue
    return dict(sorted(found.items(), key=lambda item: str(item[1].get("created_at")), reverse=True))


def pinned_name(document: Mapping[str, Any]) -> str:
    """`NAME@HASH` as a run's config records the recipe it trains on."""
    return f"{document['name']}@{str(document['hash'])[:HASH_SHOWN]}"


def pin_recipe(config: RunConfig, root: Path) -> tuple[RunConfig, dict[str, Any] | None]:
    """A new run's config pinned to its recipe (name@hash, dataset and split from the recipe) and
    the recipe to keep in the run folder; unchanged with None when the config names no recipe.

    RecipeError when the recipe is missing, selects nothing, or no longer has the hash given."""
    if not config.recipe:
        return config, None
    match = RECIPE_PATTERN.fullmatch(config.recipe)
    if match is None:
        raise RecipeError(f"recipe {config.recipe!r} is not NAME or NAME@HASH")
    document = load_recipe(root, match["name"])
    if match["hash"] and not str(document["hash"]).startswith(match["hash"]):
        raise RecipeError(
            f"the recipe {match['name']} has changed since {config.recipe} (its hash is now "
            f"{str(document['hash'])[:HASH_SHOWN]}): use recipe={match['name']} to train on it as it is"
        )
    source = document["source"]
    pinned = replace(config, recipe=pinned_name(document), dataset=source["dataset"], split=source["split"])
    return pinned, document


def new_run_files(config: RunConfig, root: Path) -> tuple[RunConfig, dict[str, dict[str, Any]]]:
    """What a new run is created with: its config pinned to its recipe, and the run folder's copy
    of the recipe as a further document (none without a recipe); RecipeError when it cannot be."""
    pinned, document = pin_recipe(config, root)
    if config.early_stopping_patience and not (document and document.get("validation_rows")):
        raise RecipeError(
            "early stopping watches the validation loss: name a recipe with a validation share, "
            "or set early_stopping_patience=none"
        )
    return pinned, ({RECIPE_FILE: document} if document else {})


def recipe_conversations(
    document: Mapping[str, Any],
) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]], DataReport]:
    """The training and validation conversations a recipe selects, read from its source and checked
    against its hash; DataError when the source cannot be read or no longer matches."""
    spec = spec_from_dict(document)
    train_rows, validation_rows = _indices(document, "train_rows"), _indices(document, "validation_rows")
    dataset = load_source(spec.source)
    if max(train_rows + validation_rows) >= len(dataset):
        raise DataError(
            f"the recipe {document.get('name')} selects row {max(train_rows + validation_rows)} but "
            f"{spec.source.label} has {len(dataset)} rows: the data changed since the recipe was saved"
        )

    def conversations(indices: list[int]) -> tuple[list[list[dict[str, str]]], list[str]]:
        found, hashes = [], []
        for row in dataset.select(indices):
            try:
                messages = standardize_conversation(row)
            except MalformedRow as exc:
                raise DataError(
                    f"a row the recipe selected is no longer usable ({exc}): the data changed"
                ) from None
            found.append(messages)
            hashes.append(conversation_hash(messages))
        return found, hashes

    train, train_hashes = conversations(train_rows)
    validation, validation_hashes = conversations(validation_rows)
    if selection_hash(train_hashes, validation_hashes) != document["hash"]:
        raise DataError(
            f"{spec.source.label} no longer holds the rows the recipe {document.get('name')} selected "
            "(its content hash differs): save the recipe again"
        )
    report = DataReport(
        source=f"{spec.source.label}, recipe {pinned_name(document)}",
        rows_read=len(train),
        rows_used=len(train),
    )
    return train, validation, report
