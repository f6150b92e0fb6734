"""Training data: ShareGPT standardization, skipped rows counted, slices, and loss masks."""

import json

import pandas as pd
import pytest
from conftest import write_conversations

from core.train.config import parse_config
from core.train.data import (
    DataError,
    MalformedRow,
    TemplateError,
    load_conversations,
    slice_bounds,
    standardize_conversation,
    tokenize_conversation,
    tokenize_conversations,
)
from core.train.presets import SAMPLE_DATASET

CONVERSATION = [
    ("system", "Answer briefly."),
    ("human", "Say hello."),
    ("gpt", "Hello there!"),
    ("human", "Say bye."),
    ("gpt", "Goodbye!"),
]


def sharegpt(turns):
    return {"conversations": [{"from": f, "value": v} for f, v in turns]}


def test_sharegpt_and_role_content_rows_become_messages():
    messages = standardize_conversation(sharegpt(CONVERSATION))
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[2] == {"role": "assistant", "content": "Hello there!"}
    as_messages = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]}
    assert standardize_conversation(as_messages)[1]["role"] == "assistant"
    as_csv_cell = {"conversations": json.dumps(sharegpt(CONVERSATION[1:3])["conversations"])}
    assert len(standardize_conversation(as_csv_cell)) == 2


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"text": "no conversation here"}, "no conversation"),
        ({"conversations": []}, "no conversation"),
        ({"conversations": "not json ["}, "conversation is not JSON"),
        ({"conversations": ["just a string"]}, "malformed turn"),
        ({"conversations": [{"from": "human", "value": 3}]}, "malformed turn"),
        (sharegpt([("human", "Hi"), ("robot", "Beep")]), "unknown role"),
        (sharegpt([("human", "Hi"), ("gpt", "   ")]), "empty turn"),
        (sharegpt([("human", "Hi"), ("system", "Be terse."), ("gpt", "Hey")]), "system turn not first"),
        (sharegpt([("system", "Be terse."), ("human", "Hi")]), "no assistant turn"),
        ("a string row", "not an object"),
    ],
)
def test_a_malformed_row_is_rejected_with_its_reason(row, reason):
    with pytest.raises(MalformedRow, match=reason):
        standardize_conversation(row)


@pytest.mark.parametrize(
    ("split", "bounds"),
    [
        ("train", (0, 10)),
        ("train[:3]", (0, 3)),
        ("train[4:]", (4, 10)),
        ("train[2:5]", (2, 5)),
        ("train[:50%]", (0, 5)),
        ("train[:1000]", (0, 10)),
        ("train[7:2]", (7, 7)),
    ],
)
def test_split_slices_select_rows_like_the_datasets_library(split, bounds):
    assert slice_bounds(10, split) == bounds


def test_bad_rows_are_counted_by_reason_and_the_rest_used(tmp_path):
    path = write_conversations(
        tmp_path / "mixed.jsonl", [CONVERSATION[1:3]] * 3 + [[("human", "Hi"), ("robot", "x")]]
    )
    with path.open("a") as handle:
        handle.write('{"conversations": [{"from": "human"\n')  # a torn line
        handle.write(json.dumps({"conversations": []}) + "\n")
    conversations, report = load_conversations(str(path), "train")
    assert len(conversations) == 3
    assert (report.rows_read, report.rows_used) == (6, 3)
    assert report.skipped == {"unknown role": 1, "not JSON": 1, "no conversation": 1}
    assert "3 of 6 rows used; skipped 3 (" in report.summary()
    _, sliced = load_conversations(str(path), "train[:2]")
    assert (sliced.rows_read, sliced.rows_used) == (2, 2)


def test_json_csv_and_parquet_files_load_too(tmp_path):
    rows = [sharegpt(CONVERSATION[1:3]), sharegpt(CONVERSATION)]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    pd.DataFrame({"conversations": [json.dumps(r["conversations"]) for r in rows]}).to_csv(
        tmp_path / "rows.csv", index=False
    )
    pd.DataFrame({"conversations": [r["conversations"] for r in rows]}).to_parquet(tmp_path / "rows.parquet")
    for name in ("rows.json", "rows.csv", "rows.parquet"):
        conversations, report = load_conversations(str(tmp_path / name), "train")
        assert report.rows_used == 2 and conversations[1][4] == {
            "role": "assistant",
            "content": "Goodbye!",
        }, name


def test_unusable_datasets_are_refused_with_the_reason(tmp_path):
    bad = write_conversations(tmp_path / "bad.jsonl", [[("human", "Hi")], [("gpt", "")]])
    with pytest.raises(
        DataError,
        match=r"no usable conversations: .*0 of 2 rows used; skipped 2 \(no assistant turn: 1, empty turn: 1\)",
    ):
        load_conversations(str(bad), "train")
    with pytest.raises(DataError, match="has no rows"):
        load_conversations(str(bad), "train[5:]")
    with pytest.raises(DataError, match="a local file has one split, 'train'"):
        load_conversations(str(bad), "test")
    (tmp_path / "object.json").write_text('{"data": []}')
    with pytest.raises(DataError, match="must hold a JSON list"):
        load_conversations(str(tmp_path / "object.json"), "train")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read broken.parquet"):
        load_conversations(str(tmp_path / "broken.parquet"), "train")


def test_the_bundled_sample_is_clean_and_fits_the_cpu_smoke_length(tiny_model):
    from transformers import AutoTokenizer

    conversations, report = load_conversations(SAMPLE_DATASET, "train")
    assert report.rows_used == report.rows_read >= 300 and not report.skipped
    assert sum(m["role"] == "system" for c in conversations for m in c[:1]) >= 30
    assert sum(sum(m["role"] == "user" for m in c) >= 2 for c in conversations) >= 50
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = tokenize_conversations(tokenizer, conversations, parse_config({"max_seq_length": 256}), report)
    assert len(rows) == len(conversations) and report.truncated <= len(rows) // 20
    assert 0 < report.trained_tokens < report.tokens


@pytest.fixture
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_responses_only_masks_everything_but_the_answers_and_their_end_of_turn(tokenizer):
    messages = standardize_conversation(sharegpt(CONVERSATION))
    row = tokenize_conversation(tokenizer, messages, responses_only=True, needs_bos=True)
    ids, labels = row["input_ids"], row["labels"]
    assert len(ids) == len(labels) and all(label in (token, -100) for token, label in zip(ids, labels))
    mask = [label != -100 for label in labels]
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(messages, tokenize=False)
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id  # no double BOS
    trained = [token for token, bit in zip(ids, mask) if bit]
    assert tokenizer.decode(trained) == "Hello there!<|eot_id|>Goodbye!<|eot_id|>"
    answers = tokenizer("Hello there!<|eot_id|>Goodbye!<|eot_id|>", add_special_tokens=False).input_ids
    assert len(trained) == len(answers)
    masked_text = tokenizer.decode([token for token, bit in zip(ids, mask) if not bit])
    for prompt_part in (
        "Answer briefly.",
        "Say hello.",
        "Say bye.",
        "<|start_header_id|>assistant<|end_header_id|>",
    ):
        assert prompt_part in masked_text
    whole = tokenize_conversation(tokenizer, messages, responses_only=False, needs_bos=True)
    assert whole == {"input_ids": ids}


def test_bos_is_added_once_when_the_template_leaves_it_to_the_tokenizer(tokenizer):
    tokenizer.chat_template = tokenizer.chat_template.replace("{{- bos_token }}", "")
    messages = standardize_conversation(sharegpt(CONVERSATION[1:3]))
    row = tokenize_conversation(tokenizer, messages, responses_only=True, needs_bos=True)
    assert (
        row["input_ids"][0] == tokenizer.bos_token_id and row["input_ids"].count(tokenizer.bos_token_id) == 1
    )
    assert row["labels"][0] == -100


def test_a_template_that_rewrites_earlier_turns_cannot_mark_answers(tokenizer):
    tokenizer.chat_template = (
        "{% for m in messages %}{% if loop.last %}[final]{% endif %}{{ m['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}[final]{% endif %}"
    )
    messages = standardize_conversation(sharegpt(CONVERSATION))
    with pytest.raises(TemplateError, match="set train_on_responses_only=false"):
        tokenize_conversation(tokenizer, messages, responses_only=True, needs_bos=False)


def test_tokens_truncation_and_trained_tokens_are_counted(tokenizer, tmp_path):
    path = write_conversations(tmp_path / "two.jsonl", [CONVERSATION, CONVERSATION[1:3]])
    conversations, report = load_conversations(str(path), "train")
    rows = tokenize_conversations(tokenizer, conversations, parse_config({"max_seq_length": 30}), report)
    assert report.tokens == sum(len(r["input_ids"]) for r in rows)
    assert report.trained_tokens == sum(sum(label != -100 for label in r["labels"]) for r in rows)
    assert report.truncated >= 1 and all(len(r["input_ids"]) <= 30 for r in rows)
    assert "longer than max_seq_length were cut to it" in report.summary()


def test_trl_keeps_the_answer_labels_through_packing(tiny_model, tmp_path):
    import datasets
    from trl import SFTTrainer

    from core.machine.devices import DeviceFacts
    from core.train.backends import load_model
    from core.train.plan import build_sft_config, plan_training, sft_arguments
    from core.train.presets import get_preset

    path = write_conversations(tmp_path / "two.jsonl", [CONVERSATION, CONVERSATION[1:3]] * 3)
    config = parse_config({**get_preset("cpu_smoke").config(), "dataset": str(path)})
    plan = plan_training(config, DeviceFacts(cuda=False))
    model, tokenizer = load_model(config, plan)
    conversations, report = load_conversations(config.dataset, config.split)
    rows = tokenize_conversations(tokenizer, conversations, config, report)
    arguments = sft_arguments(config, plan, tmp_path / "checkpoints", progress_bar=False)
    trainer = SFTTrainer(
        model=model,
        args=build_sft_config(arguments),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    packed = trainer.train_dataset
    assert len(packed) < len(rows)  # packed several conversations per sequence
    trained = [label for row in packed["labels"] for label in row if label != -100]
    assert len(trained) == report.trained_tokens
    assert tokenizer.decode(trained).count("Hello there!<|eot_id|>") == 6
    assert "Say hello." not in tokenizer.decode(trained)


def test_a_line_separator_inside_a_string_does_not_split_the_row(tmp_path):
    path = tmp_path / "unicode.jsonl"
    row = sharegpt([("human", "First line\u2028second line"), ("gpt", "Noted\u2029and\x85done.")])
    path.write_text(
        json.dumps(row, ensure_ascii=False) + "\r\n" + json.dumps(row, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    conversations, report = load_conversations(str(path), "train")
    assert (report.rows_read, report.rows_used) == (2, 2) and conversations[0][0][
        "content"
    ] == "First line\u2028second line"


def test_rows_whose_answer_lies_beyond_max_seq_length_are_dropped_and_counted(tokenizer, tmp_path):
    long_prompt = "Tell me about rivers and lakes and seas and oceans and ponds. " * 4
    path = write_conversations(
        tmp_path / "long.jsonl", [[("human", long_prompt), ("gpt", "Water.")], CONVERSATION[1:3]]
    )
    conversations, report = load_conversations(str(path), "train")
    rows = tokenize_conversations(tokenizer, conversations, parse_config({"max_seq_length": 24}), report)
    assert len(rows) == 1 and report.rows_used == 1
    assert report.skipped == {"no answer within max_seq_length": 1}
    only_long, long_report = load_conversations(str(path), "train[:1]")
    with pytest.raises(DataError, match="no conversation has an answer within max_seq_length=24"):
        tokenize_conversations(tokenizer, only_long, parse_config({"max_seq_length": 24}), long_report)
