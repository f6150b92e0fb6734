"""Training data: load conversations, standardize them, and tokenize them with loss masks.

Datasets are ShareGPT (`conversations` of `from`/`value` turns: human, gpt, system) or
role/content `messages`, from the Hub or a local .jsonl/.json/.parquet/.csv file. A row that
cannot be a training conversation is skipped and counted by reason, never fatal on its own.

Rows go to trl already tokenized, as `input_ids` and, for responses-only loss, `labels` with
-100 on every token outside the answers: trl 1.15+ keeps given labels through packing and
its collator, with either backend.

Tokenization renders each conversation with the tokenizer's chat template and finds every
assistant turn by rendering the conversation up to it (with the generation prompt) and
through it: the characters in between are that answer, its end-of-turn token included.
That needs no `{% generation %}` markers, so it works with Llama 3.x's own template, and
it fails loudly (TemplateError) for a template that renders earlier turns differently.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.train.config import (
    DATASET_SUFFIXES,
    SPLIT_PATTERN,
    RunConfig,
    resolve_local_file,
)

IGNORED_LABEL = -100  # the label cross-entropy skips

ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
}


class DataError(ValueError):
    """The dataset cannot be used at all (unreadable, wrong split, nothing usable)."""


class TemplateError(ValueError):
    """The chat template cannot mark assistant answers (it is not prefix-stable)."""


class MalformedRow(ValueError):
    """One row that is not a usable conversation; the message is the reason counted."""


class UnparsableLine:
    """A line of a JSON-lines file that is not JSON: kept in place so slices count lines."""


@dataclass
class DataReport:
    """What became of the dataset's rows."""

    source: str
    rows_read: int = 0
    rows_used: int = 0
    skipped: Counter = field(default_factory=Counter)
    truncated: int = 0
    tokens: int = 0
    trained_tokens: int = 0

    def summary(self) -> str:
        """One line for train.log."""
        line = f"{self.source}: {self.rows_used} of {self.rows_read} rows used"
        if self.skipped:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in self.skipped.most_common())
            line += f"; skipped {sum(self.skipped.values())} ({reasons})"
        if self.tokens:
            line += f"; {self.tokens} tokens, {self.trained_tokens} in the loss"
        if self.truncated:
            line += f"; {self.truncated} conversations longer than max_seq_length were cut to it"
        return line

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON for metrics.json."""
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_used": self.rows_used,
            "skipped": dict(self.skipped),
            "truncated": self.truncated,
            "tokens": self.tokens,
            "trained_tokens": self.trained_tokens,
        }


def standardize_conversation(row: Any) -> list[dict[str, str]]:
    """Role/content messages of one dataset row; MalformedRow with the reason otherwise."""
    if isinstance(row, UnparsableLine):
        raise MalformedRow("not JSON")
    if not isinstance(row, dict):
        raise MalformedRow("not an object")
    turns = row.get("conversations")
    if turns is None:  # a dataset with both columns has None in the one a row lacks
        turns = row.get("messages")
    if isinstance(turns, str):
        try:
            turns = json.loads(turns)
        except ValueError:
            raise MalformedRow("conversation is not JSON") from None
    if turns is not None and not isinstance(turns, (list, tuple)) and hasattr(turns, "tolist"):
        turns = turns.tolist()
    if not isinstance(turns, (list, tuple)) or not turns:
        raise MalformedRow("no conversation")
    messages = []
    for turn in turns:
        if not isinstance(turn, dict):
            raise MalformedRow("malformed turn")
        role = turn.get("from", turn.get("role"))
        content = turn.get("value", turn.get("content"))
        if not isinstance(role, str) or not isinstance(content, str):
            raise MalformedRow("malformed turn")
        if role.strip().lower() not in ROLES:
            raise MalformedRow("unknown role")
        if not content.strip():
            raise MalformedRow("empty turn")
        messages.append({"role": ROLES[role.strip().lower()], "content": content})
    if any(m["role"] == "system" for m in messages[1:]):
        raise MalformedRow("system turn not first")
    if not any(m["role"] == "assistant" for m in messages):
        raise MalformedRow("no assistant turn")
    return messages


def slice_bounds(count: int, split: str) -> tuple[int, int]:
    """The [start, stop) rows that a split such as `train[:100]` or `train[10%:]` selects."""
    match = SPLIT_PATTERN.fullmatch(split)
    if not match:
        raise DataError(f"{split!r} is not a split such as train[:10000]")

    def bound(text: str | None, default: int) -> int:
        if not text:
            return default
        if text.endswith("%"):
            return min(count, int(round(count * int(text[:-1]) / 100)))
        return min(count, int(text))

    start, stop = bound(match["start"], 0), bound(match["stop"], count)
    return start, max(start, stop)


def _parse_line(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return UnparsableLine()


def _read_local(path: Path) -> list[Any]:
    """The rows of a local file; a JSON line that does not parse stays as an UnparsableLine."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            lines = path.read_text(encoding="utf-8-sig").split(
                "\n"
            )  # not splitlines: U+2028 may sit in a string
            return [_parse_line(line) for line in lines if line.strip()]
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8-sig"))
            if not isinstance(data, list):
                raise DataError(f"{path.name} must hold a JSON list of conversations")
            return data
        import pandas as pd

        frame = (
            pd.read_parquet(path)
            if suffix == ".parquet"
            else pd.read_csv(path, dtype=str, keep_default_na=False)
        )
        return frame.to_dict("records")
    except DataError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, ImportError) as exc:
        raise DataError(f"cannot read {path.name}: {exc}") from None


def load_rows(dataset: str, split: str) -> list[Any]:
    """The rows a dataset and split select."""
    local = resolve_local_file(dataset)
    if local is not None:
        name = SPLIT_PATTERN.fullmatch(split)
        if name is None or name["name"] != "train":
            raise DataError(f"a local file has one split, 'train' (got {split!r})")
        rows = _read_local(local)
        start, stop = slice_bounds(len(rows), split)
        return rows[start:stop]
    if Path(dataset).suffix.lower() in DATASET_SUFFIXES:
        raise DataError(f"no such file: {dataset}")
    import datasets

    try:
        loaded = datasets.load_dataset(dataset, split=split)
    except Exception as exc:  # the Hub and datasets raise many types; the message is what matters
        raise DataError(f"cannot load {dataset} [{split}] from the Hub: {exc}") from None
    return list(loaded)


def load_conversations(dataset: str, split: str) -> tuple[list[list[dict[str, str]]], DataReport]:
    """Standardized conversations and the report of skipped rows; DataError if none is usable."""
    rows = load_rows(dataset, split)
    report = DataReport(source=f"{dataset} [{split}]", rows_read=len(rows))
    conversations = []
    for row in rows:
        try:
            conversations.append(standardize_conversation(row))
        except MalformedRow as exc:
            report.skipped[str(exc)] += 1
    report.rows_used = len(conversations)
    if not conversations:
        detail = report.summary() if report.rows_read else f"{report.source} has no rows"
        raise DataError(f"no usable conversations: {detail}")
    return conversations, report


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant answers."""
    text = _render(tokenizer, messages, False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:index], True) if index else ""
        through = _render(tokenizer, messages[: index + 1], False)
        if not (text.startswith(through) and through.startswith(before)):
            raise TemplateError(
                "the chat template renders earlier turns differently once later turns follow, so answers "
                "cannot be told apart; set train_on_responses_only=false or use another chat_template"
            )
        spans.append((len(before), len(through)))
    return text, spans


def tokenize_conversation(
    tokenizer: Any, messages: list[dict[str, str]], responses_only: bool, needs_bos: bool
) -> dict[str, list[int]]:
    """Token ids of one conversation, with `labels` (-100 outside the answers) if responses_only.

    The template's own BOS is kept and the tokenizer adds none, so there is never a double
    BOS; where the model `needs_bos` and the template leaves it out, one is put in front.
    """
    if responses_only:
        text, spans = assistant_spans(tokenizer, messages)
    else:
        text, spans = _render(tokenizer, messages, False), []
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    mask = [
        int(any(start <= begin < stop for start, stop in spans)) for begin, _ in encoded["offset_mapping"]
    ]
    if needs_bos and not text.startswith(tokenizer.bos_token):
        ids, mask = [tokenizer.bos_token_id] + ids, [0] + mask
    if not responses_only:
        return {"input_ids": ids}
    return {"input_ids": ids, "labels": [token if bit else IGNORED_LABEL for token, bit in zip(ids, mask)]}


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts BOS in front of plain text by itself."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("a").input_ids
    return bos is not None and bool(ids) and ids[0] == bos


def tokenize_conversations(
    tokenizer: Any, conversations: Iterable[list[dict[str, str]]], config: RunConfig, report: DataReport
) -> list[dict[str, list[int]]]:
    """Tokenize every conversation for training, cut to max_seq_length, as trl would.

    Rows left with no trained token are dropped; tokens, truncations and drops go into
    `report`. Done here rather than left to the trainer so both backends get the same rows.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TemplateError("training needs a fast (Rust) tokenizer to locate answers in the text")
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError("the tokenizer has no chat template; set chat_template to a .jinja file")
    needs_bos = tokenizer_adds_bos(tokenizer)
    rows = []
    for messages in conversations:
        row = tokenize_conversation(tokenizer, messages, config.train_on_responses_only, needs_bos)
        if len(row["input_ids"]) > config.max_seq_length:
            report.truncated += 1
            row = {key: values[: config.max_seq_length] for key, values in row.items()}
        trained = sum(label != IGNORED_LABEL for label in row.get("labels", row["input_ids"]))
        if not trained:
            report.skipped["no answer within max_seq_length"] += 1
            report.rows_used -= 1
            continue
        rows.append(row)
        report.tokens += len(row["input_ids"])
        report.trained_tokens += trained
    if not rows:
        raise DataError(
            f"no conversation has an answer within max_seq_length={config.max_seq_length}: {report.summary()}"
        )
    return rows
