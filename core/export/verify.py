"""Verifying a GGUF file against the merged model it was made from.

The file loads in llama-cpp, its chat template is the run's and its end-of-turn token ends
generation, and its greedy answers to fixed prompts equal the merged model's in transformers
token for token. For f16 and q8_0 this is required, except where the answers part at a
near-tie: the GGUF's token is among the merged model's best and within a small logit distance
of its choice (quantization noise can flip such a tie; a broken conversion picks tokens far
from it). For k-quants the agreement is measured and recorded, not required.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.export.gguf_files import EXACT_QUANTS, ExportError
from core.models.generation import (
    END_OF_TURN,
    Generation,
    greedy_generate,
    inference_placement,
    render_prompt,
)
from core.models.gguf import gguf_greedy_with
from core.store.files import finite_number

# How far below the merged model's choice (in logits) a token may be for a divergence to count
# as a near-tie, per quant that must match exactly; the candidates considered are its top ones.
NEAR_TIE_LOGITS = {"f16": 0.1, "q8_0": 0.5}


NEAR_TIE_CANDIDATES = 8


VERIFY_PROMPTS: tuple[tuple[dict[str, str], ...], ...] = (
    ({"role": "user", "content": "What colour is the sky?"},),
    ({"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a fruit."}),
    (
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "Hello there!"},
        {"role": "user", "content": "Explain in one sentence why leaves are green."},
    ),
)


VERIFY_TOKENS = 32


VERIFY_CONTEXT = 1024


@dataclass(frozen=True)
class Reference:
    """The merged model's greedy answer to one verification prompt, with its candidates at each
    position: token id -> logits below the best, for its top tokens (the stop token included)."""

    messages: tuple[dict[str, str], ...]
    answer: Generation
    sequence: list[int]
    candidates: list[dict[int, float]]


@dataclass(frozen=True)
class Expectations:
    """What every GGUF of the export must show: the merged model's answers, its chat template,
    its end-of-turn token, and the special tokens that must never appear in an answer."""

    references: list[Reference]
    chat_template: str
    end_of_turn: str
    special_tokens: list[str]


def answered_sequence(answer: Generation, stop_id: int) -> list[int]:
    """An answer's tokens with the stop token that ended it (none when it ran to the token limit)."""
    return answer.token_ids + ([stop_id] if len(answer.token_ids) < VERIFY_TOKENS else [])


def reference_answer(
    model: Any, tokenizer: Any, messages: tuple[dict[str, str], ...], stop_id: int
) -> Reference:
    """The merged model's greedy answer and, from one forward pass over it, its candidates at each position."""
    import torch

    answer = greedy_generate(model, tokenizer, list(messages), VERIFY_TOKENS)
    sequence = answered_sequence(answer, stop_id)
    prompt = tokenizer(render_prompt(tokenizer, list(messages)), add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        ids = torch.tensor([prompt + sequence], device=model.device)
        logits = model(ids).logits[0, len(prompt) - 1 : len(prompt) - 1 + len(sequence)]
    candidates = []
    for row in logits.float():
        values, tokens = row.topk(NEAR_TIE_CANDIDATES)
        candidates.append({int(t): round(float(values[0] - v), 4) for v, t in zip(values, tokens)})
    return Reference(messages, answer, sequence, candidates)


def reference_device() -> str:
    """Where the merged model answers the verification prompts: a CUDA GPU when there is one (a 3B
    model in float32 takes 13 GB, more than a Colab machine's memory), else the CPU."""
    return inference_placement()[0]


def end_of_turn_token(tokenizer: Any) -> str:
    """The token that ends an answer: `<|eot_id|>` when the vocabulary has it, else the EOS token;
    ExportError when there is neither (the GGUF could not be checked to stop)."""
    vocabulary = tokenizer.get_vocab()
    if END_OF_TURN in vocabulary:
        return END_OF_TURN
    if tokenizer.eos_token and tokenizer.eos_token in vocabulary:
        return tokenizer.eos_token
    raise ExportError(
        f"the run's tokenizer has neither {END_OF_TURN} nor an EOS token in its vocabulary, so nothing would end "
        "the model's answers; set eos_token in the adapter's tokenizer_config.json to its end-of-turn token"
    )


def merged_expectations(model: Any, tokenizer: Any) -> Expectations:
    """The merged model's answers to the verification prompts, in float32 (as llama.cpp computes)."""
    import torch

    end_of_turn = end_of_turn_token(tokenizer)
    stop_id = tokenizer.get_vocab()[end_of_turn]
    model = model.to(reference_device(), dtype=torch.float32)
    references = [reference_answer(model, tokenizer, messages, stop_id) for messages in VERIFY_PROMPTS]
    special = [token for token in tokenizer.all_special_tokens if token]
    return Expectations(references, tokenizer.chat_template, end_of_turn, special)


def first_difference(reference: list[int], tokens: list[int]) -> int | None:
    """The first position where two token sequences differ, or None when they are equal."""
    for position, (left, right) in enumerate(zip(reference, tokens)):
        if left != right:
            return position
    return None if len(reference) == len(tokens) else min(len(reference), len(tokens))


def _agreement(reference: list[int], tokens: list[int]) -> float:
    """The share of the longer answer that both answers share from the start (1.0 when equal)."""
    longest = max(len(reference), len(tokens))
    if longest == 0:
        return 1.0
    shared = 0
    for left, right in zip(reference, tokens):
        if left != right:
            break
        shared += 1
    return shared / longest


def _compare_answer(
    model: Any, reference: Reference, stop_id: int, quant: str, special_tokens: list[str]
) -> dict[str, Any]:
    """The GGUF's greedy answer to one verification prompt, compared with the merged model's."""
    answer = gguf_greedy_with(model, list(reference.messages), VERIFY_TOKENS)
    sequence = answered_sequence(answer, stop_id)
    position = first_difference(reference.sequence, sequence)
    gap = None
    if position is not None and position < min(len(reference.sequence), len(sequence)):
        gap = reference.candidates[position].get(sequence[position])
    tolerance = NEAR_TIE_LOGITS.get(quant)
    return {
        "prompt": reference.messages[-1]["content"],
        "reference": reference.answer.text,
        "gguf": answer.text,
        "exact": position is None,
        "first_difference": position,
        "logit_gap": gap,
        "near_tie": position is not None and gap is not None and tolerance is not None and gap <= tolerance,
        "agreement": round(_agreement(reference.answer.token_ids, answer.token_ids), 4),
        "leaks": [token for token in special_tokens if token in answer.text],
    }


def verify_gguf(path: Path, quant: str, expected: Expectations) -> dict[str, Any]:
    """Check a GGUF file against the merged model; return the verification record."""
    import llama_cpp

    from core.models.gguf import GgufModel, ModelError

    started = time.monotonic()
    references = expected.references
    record: dict[str, Any] = {
        "passed": False,
        "loads": False,
        "chat_template": False,
        "end_of_turn": None,
        "exact_required": quant in EXACT_QUANTS,
        "prompts": len(references),
        "exact_matches": 0,
        "near_ties": 0,
        "agreement": 0.0,
        "answers": [],
        "problems": [],
    }
    try:
        model = GgufModel(path, context=VERIFY_CONTEXT)
    except ModelError as exc:
        record["problems"].append(str(exc))
        return record
    record["loads"] = True
    llama, problems = model.llama, record["problems"]
    stored = llama.metadata.get("tokenizer.chat_template")
    record["chat_template"] = stored == expected.chat_template
    if not stored:
        problems.append("no chat template in the GGUF metadata")
    elif stored != expected.chat_template:
        problems.append("the GGUF's chat template differs from the run's")
    ids = llama.tokenize(expected.end_of_turn.encode("utf-8"), add_bos=False, special=True)
    if len(ids) == 1 and llama_cpp.llama_vocab_is_eog(llama._model.vocab, ids[0]):
        record["end_of_turn"] = expected.end_of_turn
    else:
        problems.append(f"{expected.end_of_turn} is not an end-of-generation token in the GGUF")
    stop_id = ids[0] if len(ids) == 1 else -1
    answers = [
        _compare_answer(model, reference, stop_id, quant, expected.special_tokens) for reference in references
    ]
    record["answers"] = answers
    record["exact_matches"] = sum(answer["exact"] for answer in answers)
    record["near_ties"] = sum(answer["near_tie"] for answer in answers)
    record["agreement"] = (
        round(sum(answer["agreement"] for answer in answers) / len(answers), 4) if answers else 0.0
    )
    leaks = sorted({token for answer in answers for token in answer["leaks"]})
    if leaks:
        problems.append(f"template text in an answer: {', '.join(leaks)}")
    apart = len(answers) - record["exact_matches"] - record["near_ties"]
    if record["exact_required"] and apart:
        problems.append(
            f"greedy tokens differ from the merged model's on {apart} of {len(answers)} prompts beyond a "
            f"near-tie (agreement {record['agreement']:.2f})"
        )
    record["passed"] = not problems
    record["seconds"] = round(time.monotonic() - started, 3)
    return record


def file_verdict(verification: dict[str, Any]) -> str:
    """One line on a file's verification: passed or failed, exact matches, near-ties, agreement."""

    def count(key: str) -> int:
        return int(finite_number(verification.get(key)) or 0)

    counts = f"{count('exact_matches')}/{count('prompts')} greedy answers exact"
    if count("near_ties"):
        counts += f", {count('near_ties')} apart at a near-tie"
    counts += f", token agreement {finite_number(verification.get('agreement')) or 0.0:.2f}"
    if verification.get("passed") is True:
        return f"verified ({counts})"
    problems = verification.get("problems")
    listed = (
        [str(problem) for problem in problems]
        if isinstance(problems, list) and problems
        else ["see export.json"]
    )
    return f"FAILED verification: {'; '.join(listed)} ({counts})"
