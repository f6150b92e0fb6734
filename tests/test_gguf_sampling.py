"""The GGUF chat's own sampling loop, with the bundled SmolLM2 model in real llama-cpp: the grammar
is checked after a token is drawn, and decode threads are chosen by timing them."""

import json
import os
import re

import llama_cpp
import pytest

from core.models.gguf import DecodeThreads, GgufModel, ModelError, token_text, usable_cores
from core.models.sources import bundled_path

HELLO = [{"role": "user", "content": "Say hello to the class."}]


@pytest.fixture(scope="module")
def model() -> GgufModel:
    return GgufModel(bundled_path())


def test_the_grammar_holds_where_the_model_would_write_something_else(model):
    # A greeting prompt makes the model want to write "Hello": nearly every token it draws first is
    # refused by the grammar and drawn again from the tokens the grammar allows.
    schema = {
        "type": "object",
        "properties": {
            "animal": {"type": "string", "enum": ["zebra", "quokka"]},
            "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
        },
        "required": ["animal", "code"],
    }
    for seed in range(3):
        reply = model.chat(HELLO, schema=schema, max_tokens=40, temperature=1.0, seed=seed)
        answer = json.loads(reply.text)
        assert answer["animal"] in ("zebra", "quokka") and re.fullmatch("[A-Z]{3}-[0-9]{2}", answer["code"])


def test_a_greedy_answer_under_a_grammar_is_llama_cpps_own(model):
    # Greedy decoding under a grammar has one right answer: the most likely token the grammar allows
    # at each step, after the repeat penalty. Ours draws first and checks; llama-cpp-python's chat
    # completion applies the grammar to the whole vocabulary first. With the same decode threads
    # the logits are the same.
    schema = {"type": "object", "properties": {"greeting": {"type": "string", "maxLength": 60}}}
    model.threads = DecodeThreads(model.llama, choices=[model.llama.n_threads])
    answers = {}
    try:
        for penalty in (1.0, 1.5):
            ours = model.chat(HELLO, schema=schema, max_tokens=48, temperature=0.0, repeat_penalty=penalty)
            model.llama.reset()
            theirs = model.llama.create_chat_completion(
                messages=HELLO,
                max_tokens=48,
                temperature=0.0,
                repeat_penalty=penalty,
                response_format={"type": "json_object", "schema": schema},
            )
            assert ours.text == theirs["choices"][0]["message"]["content"], penalty
            answers[penalty] = json.loads(ours.text)["greeting"]
    finally:
        model.threads = DecodeThreads(model.llama)
    assert answers[1.0] != answers[1.5]  # the penalty is applied, as llama-cpp-python applies it


def test_a_prompt_the_context_already_holds_in_part_is_read_from_where_it_differs(model, monkeypatch):
    system = {"role": "system", "content": "You answer in one short sentence about rivers. " * 20}
    first = [system, {"role": "user", "content": "Name a long river."}]
    second = [system, {"role": "user", "content": "Name a river in Asia."}]
    model.threads = DecodeThreads(model.llama, choices=[model.llama.n_threads])
    try:
        model.llama.reset()
        fresh = model.chat(second, max_tokens=24, temperature=0.0).text
        read = []
        real_eval = model.llama.eval
        monkeypatch.setattr(model.llama, "eval", lambda tokens: (read.append(len(tokens)), real_eval(tokens)))
        model.llama.reset()
        model.chat(first, max_tokens=24, temperature=0.0)
        prompt_read = len(read)
        reused = model.chat(second, max_tokens=24, temperature=0.0).text
    finally:
        model.threads = DecodeThreads(model.llama)
    assert reused == fresh  # the same answer as from an empty context
    assert read[0] > 150 and read[prompt_read] < 30  # the shared system prompt was not read again


def test_long_token_pieces_and_a_cut_character_decode_cleanly(model):
    dashes = model.llama.tokenize(b"-" * 64, add_bos=False)
    assert len(dashes) == 1 and token_text(model.llama, dashes) == "-" * 64  # 64 bytes in one piece
    dragons = model.llama.tokenize("🐉🔥".encode(), add_bos=False)
    assert token_text(model.llama, dragons) == "🐉🔥"
    assert token_text(model.llama, dragons[:-1]) == "🐉"  # the cut fire is dropped, not "\ufffd"


def test_a_schema_without_a_grammar_is_refused_as_a_model_error(model):
    with pytest.raises(ModelError, match="no grammar can be made"):
        model.chat(HELLO, schema={"type": "object", "properties": {"x": {"$ref": "#/nowhere"}}}, max_tokens=4)
    assert model.chat(HELLO, max_tokens=4, temperature=0.0).tokens == 4  # the model is still usable


def test_the_faster_thread_count_decodes_after_both_are_timed(model):
    threads = DecodeThreads(model.llama, choices=[1, 2])
    probes = threads.PROBE * 2
    used = []
    for _ in range(threads.PERIOD + probes):
        count = threads.next()
        assert llama_cpp.llama_n_threads(model.llama._ctx.ctx) == count  # set in llama.cpp itself
        used.append(count)
        threads.record(count, 0.010 if count == 2 else 0.020)  # two threads timed faster
    assert used[:probes] == [1] * threads.PROBE + [2] * threads.PROBE
    assert set(used[probes : threads.PERIOD]) == {2}  # the faster one decodes the rest
    assert used[threads.PERIOD :] == used[:probes]  # and every period both are timed again
    threads.timings = {1: [0.01] * 4, 2: [0.05] * 4}  # the other core got busy: one thread wins
    threads.position = probes
    assert threads.next() == 1


def test_usable_cores_follow_the_affinity_and_a_cgroup_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("max 100000\n")
    assert usable_cores(quota) == affinity
    quota.write_text("50000 100000\n")  # half a core: still one thread
    assert usable_cores(quota) == 1
    quota.write_text("garbage")
    assert usable_cores(quota) == usable_cores(tmp_path / "absent") == affinity


def test_a_prompt_longer_than_the_context_is_refused_with_a_reason(model):
    with pytest.raises(ModelError, match="the prompt takes .* tokens of a 4096-token context"):
        model.chat([{"role": "user", "content": "volcano " * 5000}], max_tokens=8)
