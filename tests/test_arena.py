"""The Arena: real GGUF runs (the tiny Llama exported to q8_0 by the real commands, and a run whose
export is the bundled SmolLM2) and a real adapter stream answers in llama-cpp and transformers;
the model pool's budget; votes appended under a lock, read back tolerantly, ranked and exported
as a preference dataset that trl reads; the page in AppTest, unlocked and locked."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import app_at, heavy_modules_after_rendering, rerun, shown

from core.evaluate.arena import (
    ArenaError,
    Contender,
    Side,
    bradley_terry,
    cast_vote,
    contenders,
    leaderboard,
    preference_jsonl,
    preference_records,
    read_votes,
    stream_answer,
    votes_path,
)
from core.evaluate.ratings import answer_sha256
from core.models.generation import greedy_generate, load_run_model
from core.models.gguf import GgufModel
from core.models.pool import ModelPool, PoolError, budget_from_environment
from core.models.sources import bundled_path
from core.store.files import FileProblem

PROMPT = "What colour is the sky?"
ASKED = "Say *hi* in [one](http://x) word."
TINY, SMOL = "tiny · gguf:tiny-q8_0.gguf", "smol · gguf:smol-q4_1.gguf"
TOKENS = 24


def arena_root(root: Path, exported: Path) -> Path:
    """`root` with two GGUF runs: `tiny` (the session's exported tiny Llama, with its adapter) and
    `smol` (a run whose export is the bundled SmolLM2-135M, no adapter)."""
    shutil.copytree(exported, root / "tiny", ignore=shutil.ignore_patterns("merged", "checkpoints", "jobs"))
    shutil.copytree(
        exported,
        root / "smol",
        ignore=shutil.ignore_patterns("merged", "checkpoints", "jobs", "adapter", "gguf"),
    )
    (root / "smol" / "gguf").mkdir()
    shutil.copyfile(bundled_path(), root / "smol" / "gguf" / "smol-q4_1.gguf")
    return root


@pytest.fixture
def arena(runs_root: Path, exported_tiny_run: Path) -> Path:
    return arena_root(runs_root, exported_tiny_run)


def by_key(root: Path, adapters: bool = False) -> dict[str, Contender]:
    return {c.key: c for c in contenders(root, adapters=adapters)}


def bare_answer(path: Path, prompt: str, max_tokens: int) -> str:
    """The same request made to llama-cpp directly, without streaming."""
    from llama_cpp import Llama

    llama = Llama(model_path=str(path), n_ctx=4096, verbose=False)
    reply = llama.create_chat_completion(
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0.0,
        repeat_penalty=1.0,
    )
    llama.close()
    return reply["choices"][0]["message"]["content"]


def test_two_gguf_runs_stream_the_answers_bare_llama_cpp_gives_and_stay_loaded(arena):
    found = by_key(arena)
    assert sorted(found) == ["smol/gguf-smol-q4_1", "tiny/gguf-tiny-q8_0"]
    assert found["tiny/gguf-tiny-q8_0"].label == "tiny · gguf:tiny-q8_0.gguf"
    pool, texts = ModelPool(1 << 30), {}
    for key, contender in found.items():
        stream = stream_answer(pool, contender, PROMPT, TOKENS)
        pieces = list(stream)
        texts[key] = stream.text
        assert stream.done and stream.text == "".join(pieces) == bare_answer(contender.path, PROMPT, TOKENS)
        assert stream.tokens == len(pieces) > 0 and stream.tokens <= TOKENS
        assert stream.first_token_s > 0 and stream.seconds > 0  # speed: bench/arena.py, not a timed test
        assert stream.tokens_per_s == stream.tokens / stream.seconds
    loaded = pool.loaded()
    assert [size for _, size in loaded] == [c.path.stat().st_size for c in found.values()]
    first_key = next(iter(found))
    assert "".join(stream_answer(pool, found[first_key], PROMPT, TOKENS)) == texts[first_key]
    assert pool.loaded() == [loaded[1], loaded[0]], "used again: now the most recently used, not reloaded"
    tiny, smol = found["tiny/gguf-tiny-q8_0"], found["smol/gguf-smol-q4_1"]
    small = ModelPool(smol.path.stat().st_size)  # room for one of them
    handed_out = stream_answer(small, tiny, PROMPT, TOKENS)  # its model handed out, not yet generating
    assert "".join(stream_answer(small, smol, PROMPT, TOKENS)) == texts[smol.key]  # tiny unloaded for it
    with pytest.raises(ArenaError, match="unloaded to make room for another session's: ask again"):
        list(handed_out)
    assert [key[1][0] for key, _ in small.loaded()] == [str(smol.path)]
    with pytest.raises(ArenaError, match="at most 4000"):
        stream_answer(pool, found["tiny/gguf-tiny-q8_0"], "x" * 4001, TOKENS)
    with pytest.raises(ArenaError, match="between 1 and 1024"):
        stream_answer(pool, found["tiny/gguf-tiny-q8_0"], PROMPT, 0)


def test_the_pool_unloads_the_least_recently_used_idle_model_first(arena):
    files = [arena / "tiny" / "gguf" / "tiny-q8_0.gguf"]
    for number in (2, 3):
        files.append(shutil.copyfile(files[0], arena / "tiny" / "gguf" / f"copy{number}.gguf"))
    size = files[0].stat().st_size
    closed: list[str] = []

    def loader(path: Path):
        def load():
            model = GgufModel(path)
            return model, model.lock, lambda: (closed.append(path.name), model.llama.close())

        return load

    pool = ModelPool(int(2.5 * size))
    first = pool.get("1", size, loader(files[0]))
    pool.get("2", size, loader(files[1]))
    assert pool.get("1", size, loader(files[0])) is first  # cached, and now most recent
    pool.get("3", size, loader(files[2]))
    assert closed == ["copy2.gguf"] and [key for key, _ in pool.loaded()] == ["1", "3"]
    third = pool.get("3", size, loader(files[2]))
    with first.lock, third.lock, pytest.raises(PoolError, match="in use fill the"):  # both generating
        pool.get("2", size, loader(files[1]))
    big = ModelPool(size // 2)  # a model larger than the whole budget still loads, alone
    big.get("1", size, loader(files[0]))
    big.get("2", size, loader(files[1]))
    assert [key for key, _ in big.loaded()] == ["2"]
    assert budget_from_environment({"PEFT_ARENA_MEMORY_MB": "300"}) == 300_000_000
    assert budget_from_environment({"PEFT_ARENA_MEMORY_MB": "lots"}) == 2 << 30


def test_an_adapter_streams_its_greedy_answer_and_stops_when_the_reader_does(arena, tiny_model):
    contender = by_key(arena, adapters=True)["tiny/adapter"]
    assert "smol/adapter" not in by_key(arena, adapters=True)
    pool = ModelPool(1 << 30)
    stream = stream_answer(pool, contender, PROMPT, TOKENS)
    text = "".join(stream)
    model, tokenizer = load_run_model(arena / "tiny")
    assert text == greedy_generate(model, tokenizer, [{"role": "user", "content": PROMPT}], TOKENS).text
    assert stream.done and stream.tokens > 0
    for _ in stream_answer(pool, contender, PROMPT, 200):
        break  # a rerun stops reading: generation stops and the model is free again at once
    (entry,) = pool.entries.values()
    assert not entry.lock.locked()


def side(run: str, answer: str, variant: str = "gguf-x") -> Side:
    return Side(run, variant, answer)


def test_votes_rank_the_runs_and_export_the_preferences_trl_reads(runs_root, tiny_model):
    runs_root.mkdir()
    for _ in range(3):
        cast_vote(runs_root, "Say hi.", side("a", "Hi!"), side("b", "Bye."), "a")
    cast_vote(runs_root, "Say hi.", side("b", "Bye."), side("c", "Hm."), "a")
    cast_vote(runs_root, "Say hi.", side("b", "Bye."), side("c", "Hm."), "tie")
    cast_vote(runs_root, "Say hi.", side("a", "Same."), side("c", "Same."), "a")  # no preference in it
    votes, skipped = read_votes(runs_root)
    assert skipped == 0 and [v.winner for v in votes] == ["a", "a", "a", "a", "tie", "a"]
    rows = leaderboard(votes)
    assert [row.entry for row in rows] == ["a/gguf-x", "b/gguf-x", "c/gguf-x"]
    assert [(r.votes, r.wins, r.losses, r.ties) for r in rows] == [(4, 4, 0, 0), (5, 1, 3, 1), (3, 0, 2, 1)]
    assert rows[1].low < rows[1].score < rows[1].high and rows[0].score > 1000 > rows[-1].score
    assert rows[0].low is None and rows[2].high is None, "no interval under 5 votes"
    records = preference_records(votes)
    assert len(records) == 4 and records[3] == {
        "prompt": [{"role": "user", "content": "Say hi."}],
        "chosen": [{"role": "assistant", "content": "Bye."}],
        "rejected": [{"role": "assistant", "content": "Hm."}],
    }
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    exported = runs_root / "preferences.jsonl"
    exported.write_text(preference_jsonl(votes), encoding="utf-8")
    dataset = load_dataset("json", data_files=str(exported), split="train")
    assert dataset.column_names == ["prompt", "chosen", "rejected"] and is_conversational(dataset[0])
    rendered = maybe_apply_chat_template(dataset[0], AutoTokenizer.from_pretrained(str(tiny_model)))
    assert rendered["prompt"].endswith("assistant<|end_header_id|>\n\n") and "Say hi." in rendered["prompt"]
    assert rendered["chosen"].startswith("Hi!") and rendered["rejected"].startswith("Bye.")


def test_the_fitted_strengths_solve_the_bradley_terry_equations():
    games = np.array([(0, 1, 1.0), (0, 1, 1.0), (1, 0, 1.0), (1, 2, 0.5), (2, 0, 0.0), (1, 2, 1.0)])
    strength = bradley_terry(games, 3)
    expected = np.full(3, 0.5)  # each side's score, the virtual half-won game included
    for i, j, score in games:
        expected[int(i)] += score
        expected[int(j)] += 1 - score
    predicted = np.array(
        [
            sum(
                strength[k] / (strength[k] + strength[int(j if k == i else i)])
                for i, j, _ in games
                if k in (i, j)
            )
            + strength[k] / (strength[k] + 1.0)
            for k in range(3)
        ]
    )
    assert predicted == pytest.approx(expected, abs=1e-8)
    assert strength[0] > strength[1] > strength[2]
    even = bradley_terry(np.array([(0, 1, 1.0), (1, 0, 1.0), (0, 1, 0.5)]), 2)
    unbeaten = bradley_terry(np.array([(0, 1, 1.0)] * 50), 2)  # never lost: still a finite strength
    assert np.isfinite(unbeaten).all() and unbeaten[0] > 10 * unbeaten[1]
    assert even == pytest.approx([1.0, 1.0])  # the virtual player's strength: 1000 on the Elo scale


def test_torn_planted_and_forged_lines_are_skipped_and_counted(runs_root):
    runs_root.mkdir()
    vote = cast_vote(runs_root, "Q?", side("a", "yes"), side("b", "no"), "b")
    good = votes_path(runs_root).read_text()
    record = json.loads(good)
    forged = {**record, "a": {**record["a"], "answer": "edited"}}  # the text no longer matches its hash
    bad_winner = {**record, "winner": "both"}
    same = {**record, "b": record["a"]}
    lines = [
        json.dumps(forged),
        json.dumps(bad_winner),
        json.dumps(same),
        "[1, 2]",
        "not json",
        '{"prompt": 5}',
    ]
    with votes_path(runs_root).open("a") as handle:
        handle.write("\n".join(lines) + "\n" + good[:40])  # and a torn last line
    votes, skipped = read_votes(runs_root)
    assert votes == [vote] and skipped == 7
    cast_vote(runs_root, "Q?", side("a", "yes"), side("b", "no"), "a")  # the torn line is closed first
    assert [v.winner for v in read_votes(runs_root)[0]] == ["b", "a"]
    for prompt, a, b, winner, message in [
        ("Q?", side("a", "x"), side("a", "y"), "a", "both answers are a/gguf-x's"),
        ("Q?", side("../x", "x"), side("b", "y"), "a", "invalid run name"),
        ("Q?", side("a", "x", "gguf/../x"), side("b", "y"), "a", "invalid variant"),
        ("Q?", side("a", "x"), side("b", "y"), "maybe", "the winner is a, b or tie"),
        ("", side("a", "x"), side("b", "y"), "a", "the prompt must be"),
    ]:
        with pytest.raises(ArenaError, match=message):
            cast_vote(runs_root, prompt, a, b, winner)
    assert len(read_votes(runs_root)[0]) == 2, "refused votes are not stored"
    assert answer_sha256(json.loads(good)["prompt"]) == record["prompt_sha256"]


def test_a_linked_votes_file_or_folder_is_never_followed(runs_root, tmp_path):
    runs_root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "votes.jsonl").write_text("")
    (runs_root / ".arena").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ArenaError, match="not a folder"):
        cast_vote(runs_root, "Q?", side("a", "x"), side("b", "y"), "a")
    with pytest.raises(FileProblem, match="votes.jsonl cannot be read"):
        read_votes(runs_root)
    (runs_root / ".arena").unlink()
    (runs_root / ".arena").mkdir()
    (runs_root / ".arena" / "votes.jsonl").symlink_to(elsewhere / "votes.jsonl")
    with pytest.raises(ArenaError, match="not stored"):
        cast_vote(runs_root, "Q?", side("a", "x"), side("b", "y"), "a")
    assert (elsewhere / "votes.jsonl").read_text() == ""


def _cast_many(root: str, number: int) -> None:
    for index in range(25):
        cast_vote(Path(root), f"prompt {number}-{index}", side("a", "x" * 3000), side("b", "y" * 3000), "a")


def test_votes_cast_at_once_by_several_processes_are_all_kept(runs_root):
    runs_root.mkdir()
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_cast_many, args=(str(runs_root), n)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    votes, skipped = read_votes(runs_root)
    assert skipped == 0 and len(votes) == 100 and len({v.prompt for v in votes}) == 100


def ask(app, prompt: str, tokens: int = TOKENS):
    app.text_area(key="arena_typed").set_value(prompt)
    app.number_input(key="arena_tokens").set_value(tokens)
    app.button(key="arena_ask").click()
    return rerun(app)


def test_the_page_streams_two_runs_a_vote_reaches_the_leaderboard_and_the_export(arena):
    app = rerun(app_at("pages/6_Arena.py"))
    assert app.title[0].value == "Arena"
    assert sorted(app.multiselect(key="arena_variants").value) == [SMOL, TINY], (
        "two GGUF runs, adapters after"
    )
    assert "tiny · adapter" in app.multiselect(key="arena_variants").options
    ask(app, ASKED)
    texts = [shown(m.value) for m in app.markdown]
    answers = {
        label: bare_answer(by_key(arena)[key].path, ASKED, TOKENS)
        for label, key in [("tiny", "tiny/gguf-tiny-q8_0"), ("smol", "smol/gguf-smol-q4_1")]
    }
    for answer in answers.values():
        assert answer.strip() and any(answer.strip() in text for text in texts), (answer, texts)
    assert ASKED in [shown(c.value) for c in app.caption]  # the prompt, shown as typed: escaped, no link
    assert all("[one](" not in c.value for c in app.caption) and all(
        "[one](" not in m.value for m in app.markdown
    )
    stats = [c.value for c in app.caption if " tokens · first token " in c.value]
    assert len(stats) == 2
    rerun(app)  # a rerun shows the cached answers: the same figures, nothing generated again
    assert [c.value for c in app.caption if " tokens · first token " in c.value] == stats
    app.selectbox(key="arena_a").set_value(TINY)
    app.selectbox(key="arena_b").set_value(SMOL)
    app.button(key="arena_vote_b").click()
    rerun(app)
    assert shown(app.success[0].value).startswith("Stored: B is better")
    (vote,) = read_votes(arena)[0]
    assert (vote.a.key, vote.b.key, vote.winner) == ("tiny/gguf-tiny-q8_0", "smol/gguf-smol-q4_1", "b")
    assert (vote.a.answer, vote.b.answer) == (answers["tiny"], answers["smol"])
    table = app.dataframe[0].value
    assert list(table["Run · variant"]) == ["smol/gguf-smol-q4_1", "tiny/gguf-tiny-q8_0"]
    assert list(table["Votes"]) == [1, 1] and list(table["Won"]) == [1, 0]
    assert list(table["95% interval"]) == ["under 5 votes"] * 2
    download = next(
        b for b in app.get("download_button") if b.proto.label.startswith("Download the preference")
    )
    assert download.proto.label == "Download the preference dataset (JSONL)"


def test_a_locked_deploy_shows_gguf_answers_but_no_adapters_and_stores_no_vote(arena, monkeypatch):
    monkeypatch.setenv("PEFT_OWNER_PASSWORD", "secret-owner-password")
    app = rerun(app_at("pages/6_Arena.py"))
    app.selectbox(key="arena_set").set_value("lab")
    rerun(app)
    app.number_input(key="arena_tokens").set_value(8)
    app.button(key="arena_ask").click()
    rerun(app)
    assert len([c for c in app.caption if " tokens · first token " in c.value]) == 2
    app.button(key="arena_vote_a").click()
    rerun(app)
    assert "Only the owner" in app.warning[0].value
    assert not votes_path(arena).exists()
    assert all("adapter" not in option for option in app.multiselect(key="arena_variants").options)
    assert any("Adapters answer for the owner only" in caption.value for caption in app.caption)


def test_the_page_renders_on_an_app_only_install_and_counts_bad_votes(runs_root):
    runs_root.mkdir()
    (runs_root / ".arena").mkdir()
    (runs_root / ".arena" / "votes.jsonl").write_text("torn {\n")
    app = rerun(app_at("pages/6_Arena.py"))
    assert "No run has an exported GGUF file" in app.info[-1].value or any(
        "No run has" in i.value for i in app.info
    )
    assert "1 line(s) of the votes file are not valid votes" in app.warning[0].value
    assert heavy_modules_after_rendering("pages/6_Arena.py") == []


def test_without_the_training_stack_adapters_are_said_to_be_unavailable(arena, monkeypatch):
    import core.evaluate.arena as arena_module

    real = arena_module.package_version
    monkeypatch.setattr(arena_module, "package_version", lambda name: None if name == "torch" else real(name))
    app = rerun(app_at("pages/6_Arena.py"))
    assert any("Adapters cannot answer here (missing torch" in i.value for i in app.info)
    assert all("adapter" not in option for option in app.multiselect(key="arena_variants").options)


def test_an_adapter_answers_beside_a_gguf_file_on_the_page(arena, tiny_model):
    app = rerun(app_at("pages/6_Arena.py"))
    app.multiselect(key="arena_variants").set_value([TINY, "tiny · adapter"])
    ask(app, PROMPT)
    stats = [c.value for c in app.caption if " · first token " in c.value]
    assert len(stats) == 2 and " tokens · " in stats[0] and " pieces · " in stats[1], stats
    assert "**tiny · adapter**" in [shown(m.value) for m in app.markdown]
