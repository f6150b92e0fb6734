"""What a dataset holds, measured with the run's tokenizer and chat template.

`row_stats` measures every row once (a batched `datasets` map, cached in a file named by the
dataset's fingerprint and the tokenizer's, template included, so a second look reads the cache), and
`DataStats` sums the rows up for any `max_seq_length`: token lengths, truncation, turns, the
share of answer tokens (what train_on_responses_only trains on), sources and scores.

A row's tokens are those of its conversation rendered with the chat template (BOS included
as training adds it). Its answer tokens are the tokens of its assistant turns' text, found in
the rendered text; training also counts each answer's end-of-turn token. A row that is not a
usable conversation has no tokens and a `problem`, the reason training would skip it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.data.sources import DataSource, datasets_cache, load_source
from core.train.config import MODEL_TEMPLATE
from core.train.data import DataError, MalformedRow, standardize_conversation, tokenizer_adds_bos

STATS_VERSION = "1"  # bump when a measured column changes meaning: older caches are not read
ROWS_PER_SHARD = 10_000  # rows measured between two progress reports
MEASURED = ("tokens", "answer_tokens", "turns", "problem", "row_hash")
TEXT_COLUMNS = ("conversations", "messages")
QUANTILES = (0.5, 0.9, 0.99, 1.0)


def load_tokenizer(model: str, chat_template: str = MODEL_TEMPLATE, *, use_token: bool = True) -> Any:
    """The tokenizer (with the chat template) that training would use for `model`; DataError if none.
    Without `use_token` the Hub is asked anonymously (a visitor never borrows the app's token)."""
    from transformers import AutoTokenizer

    from core.train.backends import BackendError, prepare_tokenizer, resolve_base_model

    try:
        loaded = AutoTokenizer.from_pretrained(resolve_base_model(model), token=None if use_token else False)
        tokenizer = prepare_tokenizer(loaded, chat_template)
    except BackendError as exc:
        raise DataError(str(exc)) from None
    except Exception as exc:  # the Hub and transformers raise many types; the message is what matters
        raise DataError(f"cannot load the tokenizer of {model}: {str(exc).splitlines()[0]}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"{model} has no fast (Rust) tokenizer: token statistics need one")
    return tokenizer


def conversation_hash(messages: list[dict[str, str]]) -> str:
    """A row's identity by content: the same conversation always gives the same hash."""
    text = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _answer_spans(text: str, messages: list[dict[str, str]]) -> list[tuple[int, int]] | None:
    """Where each assistant turn's text sits in the rendered conversation; None if one is not found."""
    spans, cursor = [], 0
    for message in messages:
        content = message["content"].strip()
        found = text.find(content, cursor)
        if found < 0:
            return None
        cursor = found + len(content)
        if message["role"] == "assistant":
            spans.append((found, cursor))
    return spans


def _count_in(encoding: Any, spans: list[tuple[int, int]]) -> int:
    """Tokens of `encoding` that cover the character spans."""
    total = 0
    for start, stop in spans:
        first, last = encoding.char_to_token(start), encoding.char_to_token(stop - 1)
        if first is not None and last is not None:
            total += last - first + 1
    return total


def measure_batch(batch: dict[str, list[Any]], tokenizer: Any, needs_bos: bool) -> dict[str, list[Any]]:
    """The measured columns (MEASURED) of a batch of rows, for `datasets.Dataset.map`."""
    size = len(next(iter(batch.values())))
    columns: dict[str, list[Any]] = {name: [] for name in MEASURED}
    texts, parsed = [], []
    for index in range(size):
        row = {name: batch[name][index] for name in TEXT_COLUMNS if name in batch}
        try:
            messages = standardize_conversation(row)
            text = tokenizer.apply_chat_template(messages, tokenize=False)
        except MalformedRow as exc:
            parsed.append((None, str(exc)))
            continue
        except Exception as exc:  # a template that raises on this conversation (jinja's own errors)
            parsed.append(
                (None, f"chat template: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            )
            continue
        parsed.append((messages, ""))
        texts.append(text)
    encodings = iter(
        tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False) if texts else []
    )
    text_of = iter(texts)
    for messages, problem in parsed:
        if messages is None:
            for name, value in zip(MEASURED, (0, 0, 0, problem, "")):
                columns[name].append(value)
            continue
        encoding, text = next(encodings), next(text_of)
        spans = _answer_spans(text, messages)
        extra = int(needs_bos and not text.startswith(tokenizer.bos_token or "\0"))
        columns["tokens"].append(len(encoding) + extra)
        columns["answer_tokens"].append(_count_in(encoding, spans) if spans is not None else 0)
        columns["turns"].append(sum(message["role"] != "system" for message in messages))
        columns["problem"].append("")
        columns["row_hash"].append(conversation_hash(messages))
    return columns


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """What the measurements depend on in a tokenizer: its whole definition (vocabulary, merges,
    normalizers) and chat template, hashed once per tokenizer object."""
    template = tokenizer.chat_template or ""
    remembered = getattr(tokenizer, "_peft_dashboard_fingerprint", None)
    if remembered is None or remembered[0] != template:
        digest = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode("utf-8"))
        digest.update(template.encode("utf-8"))
        remembered = (template, digest.hexdigest())
        tokenizer._peft_dashboard_fingerprint = remembered
    return remembered[1]


def _fingerprint(dataset: Any, shard: int, shards: int, tokenizer: Any) -> str:
    key = f"{dataset._fingerprint}|{shard}/{shards}|{tokenizer_fingerprint(tokenizer)}|{STATS_VERSION}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


@dataclass
class RowStats:
    """Every row of a source measured: `table` has MEASURED plus `source` and `score` (NaN or
    None where the dataset has no such column), one row per dataset row, in order."""

    source: DataSource
    model: str
    table: pd.DataFrame
    measured_shards: int  # shards measured now; 0 when everything came from the cache


def row_stats(
    source: DataSource,
    tokenizer: Any,
    model: str,
    progress: Callable[[int, int], None] | None = None,
) -> RowStats:
    """Measure every row of `source` with `tokenizer` (the rendering of `model`), a shard at a time,
    each shard's result cached by fingerprint; `progress(rows_done, rows)` after each shard."""
    import datasets

    dataset = load_source(source)
    rows = len(dataset)
    shards = max(1, -(-rows // ROWS_PER_SHARD))
    needs_bos = tokenizer_adds_bos(tokenizer)
    keep = [name for name in ("source", "score") if name in dataset.column_names]
    folder = datasets_cache() / "stats"
    folder.mkdir(parents=True, exist_ok=True)
    parts, measured, done = [], 0, 0
    for index in range(shards):
        part = dataset.shard(shards, index, contiguous=True) if shards > 1 else dataset
        fingerprint = _fingerprint(dataset, index, shards, tokenizer)
        cache_file = folder / f"rows-{fingerprint}.arrow"
        measured += not cache_file.is_file()
        parts.append(
            part.map(
                measure_batch,
                batched=True,
                batch_size=1000,
                fn_kwargs={"tokenizer": tokenizer, "needs_bos": needs_bos},
                remove_columns=[name for name in part.column_names if name not in keep],
                cache_file_name=str(cache_file),
                new_fingerprint=fingerprint,
                load_from_cache_file=True,
            )
        )
        done += len(part)
        if progress is not None:
            progress(done, rows)
    joined = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    table = joined.to_pandas()
    for name in ("source", "score"):
        if name not in table:
            table[name] = None
    return RowStats(source=source, model=model, table=table, measured_shards=measured)


@dataclass(frozen=True)
class LengthSummary:
    """Token lengths of the usable rows against max_seq_length."""

    max_seq_length: int
    quantiles: dict[float, int]
    truncated_rows: int
    tokens_lost: int
    tokens: int
    answer_tokens: int

    @property
    def answer_share(self) -> float | None:
        """The share of tokens that are answers (trained on with train_on_responses_only)."""
        return self.answer_tokens / self.tokens if self.tokens else None


def usable(table: pd.DataFrame) -> pd.DataFrame:
    """The rows that are usable conversations."""
    return table[table["problem"] == ""]


def problems(table: pd.DataFrame) -> dict[str, int]:
    """How many rows each reason makes unusable, most common first."""
    counts = table.loc[table["problem"] != "", "problem"].value_counts()
    return {str(reason): int(count) for reason, count in counts.items()}


def length_summary(table: pd.DataFrame, max_seq_length: int) -> LengthSummary:
    """Quantiles of the usable rows' token lengths and what max_seq_length would cut off."""
    rows = usable(table)
    tokens = rows["tokens"].to_numpy(dtype=np.int64)
    over = tokens[tokens > max_seq_length]
    quantiles = {q: int(np.quantile(tokens, q, method="higher")) for q in QUANTILES} if len(tokens) else {}
    return LengthSummary(
        max_seq_length=max_seq_length,
        quantiles=quantiles,
        truncated_rows=int(len(over)),
        tokens_lost=int((over - max_seq_length).sum()),
        tokens=int(tokens.sum()),
        answer_tokens=int(rows["answer_tokens"].sum()),
    )


def duplicate_rows(table: pd.DataFrame) -> int:
    """Usable rows whose conversation repeats an earlier row's exactly."""
    return int(usable(table)["row_hash"].duplicated().sum())


def source_counts(table: pd.DataFrame) -> pd.Series:
    """Usable rows per `source` value, most common first (empty when the dataset has no sources)."""
    names = usable(table)["source"].dropna().astype(str)
    return names.value_counts()


def scores(table: pd.DataFrame) -> np.ndarray:
    """The usable rows' numeric `score` values (rows without one left out)."""
    return pd.to_numeric(usable(table)["score"], errors="coerce").dropna().to_numpy(dtype=float)


def turn_counts(table: pd.DataFrame) -> dict[int, int]:
    """How many usable conversations have each number of turns (system prompts not counted)."""
    counts = usable(table)["turns"].value_counts().sort_index()
    return {int(turns): int(count) for turns, count in counts.items()}


def summary(stats: RowStats, max_seq_length: int) -> dict[str, Any]:
    """Everything `data stats` reports, as JSON."""
    table = stats.table
    lengths = length_summary(table, max_seq_length)
    found_scores = scores(table)
    return {
        "source": stats.source.label,
        "tokenizer": stats.model,
        "rows": len(table),
        "usable": int(len(usable(table))),
        "problems": problems(table),
        "duplicates": duplicate_rows(table),
        "tokens": {
            "total": lengths.tokens,
            "quantiles": {f"p{round(q * 100)}": value for q, value in lengths.quantiles.items()},
            "max_seq_length": max_seq_length,
            "truncated_rows": lengths.truncated_rows,
            "tokens_lost": lengths.tokens_lost,
            "answer_tokens": lengths.answer_tokens,
            "answer_share": lengths.answer_share,
        },
        "turns": turn_counts(table),
        "sources": {str(name): int(count) for name, count in source_counts(table).items()},
        "score": (
            {
                "rows": len(found_scores),
                "min": float(found_scores.min()),
                "median": float(np.median(found_scores)),
                "max": float(found_scores.max()),
            }
            if len(found_scores)
            else None
        ),
        "measured_shards": stats.measured_shards,
    }
