"""Where the card model comes from: the Hub (unreachable here, so a cached copy or the bundled
fallback, decided by one quick probe), runs' exports, local files, and refusals of files that are
not GGUF models. The Hub's HTTP cannot exist here: loopback servers stand in for it."""

import http.server
import socket
import threading
import time

import pytest
from huggingface_hub import constants

from core.models import sources
from core.models.gguf import GgufModel, ModelError, ModelSlot
from core.models.sources import (
    BUNDLED_CAVEAT,
    HUB_PROBE_SECONDS,
    LAB_FILE,
    LAB_REPO,
    bundled_choice,
    bundled_path,
    falls_back,
    hub_choice,
    hub_unreachable,
    local_choice,
    resolve_model,
    run_choices,
)
from core.store.runs import create_run


def test_the_hub_model_defaults_to_the_labs_and_settings_override_it(monkeypatch):
    assert (hub_choice().repo, hub_choice().filename) == (LAB_REPO, LAB_FILE)
    monkeypatch.setenv("CARD_MODEL_REPO", "me/my-model")
    assert hub_choice().repo == "me/my-model"
    secrets = {"CARD_MODEL_REPO": "team/cards", "CARD_MODEL_FILE": "cards-q8_0.gguf"}
    assert (hub_choice(secrets).repo, hub_choice(secrets).filename) == ("team/cards", "cards-q8_0.gguf")


def test_an_unreachable_hub_falls_back_to_the_bundled_model_and_says_so():
    # HF_HUB_OFFLINE=1 (conftest): decided at once, without a request.
    assert hub_unreachable() == "HF_HUB_OFFLINE is set" and falls_back(hub_choice())
    resolved = resolve_model(hub_choice())
    assert resolved.choice.kind == "bundled" and resolved.path == bundled_path()
    assert f"Could not fetch {LAB_REPO}/{LAB_FILE} from the Hub" in resolved.notice
    assert "HF_HUB_OFFLINE is set" in resolved.notice
    assert BUNDLED_CAVEAT in resolved.notice and "unreliable" in resolved.notice


@pytest.fixture
def online(monkeypatch):
    """No HF_HUB_OFFLINE, and no probe verdict remembered from another test."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(sources, "_probes", {})


def test_without_a_network_and_without_the_variable_one_quick_probe_decides(online):
    started = time.monotonic()
    resolved = resolve_model(hub_choice())  # this machine has no route to the Hub
    first = time.monotonic() - started
    assert resolved.choice.kind == "bundled" and "the Hub cannot be reached" in resolved.notice
    assert first < HUB_PROBE_SECONDS + 2  # not the Hub client's ~20 s of retries
    started = time.monotonic()
    assert hub_unreachable() and time.monotonic() - started < 0.05  # the verdict is remembered
    assert len(sources._probes) == 1


def serve(handler) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class Answers(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.send_response(404)  # any answer means the Hub is there
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_hub_that_answers_is_reachable_and_one_that_hangs_is_not_waited_for(online, monkeypatch):
    server, url = serve(Answers)
    monkeypatch.setenv("HF_ENDPOINT", url)
    assert hub_unreachable() is None
    server.shutdown()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts connections, never answers
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    started = time.monotonic()
    reason = hub_unreachable()
    assert reason and time.monotonic() - started < HUB_PROBE_SECONDS + 1
    silent.close()


def test_a_cached_copy_is_used_when_the_hub_cannot_be_reached(online, monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    folder = tmp_path / f"models--{LAB_REPO.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / LAB_FILE).write_bytes(bundled_path().read_bytes())
    assert not falls_back(hub_choice())
    resolved = resolve_model(hub_choice())
    assert resolved.choice.kind == "hub" and resolved.path.name == LAB_FILE
    assert "using the copy of" in resolved.notice and "Hugging Face cache" in resolved.notice


def test_the_bundled_model_ships_with_the_package_and_carries_its_caveat():
    resolved = resolve_model(bundled_choice())
    assert resolved.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and resolved.notice == BUNDLED_CAVEAT


def test_missing_folders_and_non_gguf_files_are_refused(tmp_path):
    with pytest.raises(ModelError, match="no model file at"):
        resolve_model(local_choice(str(tmp_path / "missing.gguf")))
    with pytest.raises(ModelError, match="is a folder"):
        resolve_model(local_choice(str(tmp_path)))
    (tmp_path / "fake.gguf").write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(ModelError, match="fake.gguf is not a GGUF file"):
        resolve_model(local_choice(str(tmp_path / "fake.gguf")))
    (tmp_path / "torn.gguf").write_bytes(b"GGUF" + b"\x00" * 12)
    with pytest.raises(ModelError, match="llama.cpp cannot load torn.gguf"):
        GgufModel(tmp_path / "torn.gguf")


def test_gguf_files_exported_by_runs_are_offered(runs_root):
    create_run(runs_root, "t2", {})
    (runs_root / "t2" / "gguf").mkdir()
    (runs_root / "t2" / "gguf" / "model-q8_0.gguf").write_bytes(b"GGUF")
    create_run(runs_root, "no_export", {})
    choices = run_choices(runs_root)
    assert [(c.kind, c.label) for c in choices] == [("run", "t2 / model-q8_0.gguf (exported run)")]


def test_the_model_counts_tokens_and_streams_progress():
    model = GgufModel(bundled_path())
    assert model.context == 4096 and 0 < model.count_tokens("The water cycle moves water.") < 20
    seen = []
    result = model.chat(
        [{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0.0, on_token=seen.append
    )
    assert result.text and result.tokens == len(seen) == seen[-1] <= 8


def test_one_model_per_process_replaced_only_when_idle(tmp_path):
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(bundled_path().read_bytes())
    slot = ModelSlot()
    first = slot.get(bundled_path())
    assert slot.get(bundled_path()) is first  # loaded once
    with first.lock, pytest.raises(ModelError, match="another session is generating with SmolLM2"):
        slot.get(copy)  # another session is generating
    second = slot.get(copy)
    assert second is not first and slot.model is second and second.path == copy
