"""Pushing an export to the Hugging Face Hub: repo ids, the token, the upload plan and model card,
and the real huggingface_hub client against a fake Hub.

The Hub cannot be reached from these machines, so `FakeHub` stands in for it: a local HTTP
server thread on 127.0.0.1 that answers the four API calls a push makes (create repo, validate
the card's YAML, preupload, commit) the way the Hub documents them, and keeps what it was
sent. huggingface_hub itself is not faked: it builds and sends real requests. Its offline
switch (set for every test) is lifted only for these loopback calls. The run folders here are
written by hand because the plan is a pure function of the files in them; test_export.py
pushes a real export through the command line.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.export import pipeline as export
from core.export.hub import (
    HubError,
    eval_summary,
    hub_token,
    model_card,
    push_export,
    push_plan,
    upload_plan,
    validate_repo_id,
)
from core.store.files import write_json_atomic
from core.store.runs import EXPORT_FILE

TOKEN = "hf_fake_token_for_tests_0123456789"


class FakeHub:
    """A local stand-in for the Hub's API: repos, preupload and commits, with a token per namespace.

    `tokens` maps a token to the namespaces it may write; any other token gets 401, a known
    token on another namespace gets 403. Every request is kept in `requests` (method, path,
    Authorization header); committed files in `repos[repo_id][path]` as bytes.
    """

    def __init__(self, tokens: dict[str, set[str]]):
        self.tokens = tokens
        self.requests: list[tuple[str, str, str]] = []
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, str] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _reply(self, status: int, document: dict) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _allowed(self, namespace: str) -> int:
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if token not in hub.tokens:
                    return 401
                return 200 if namespace in hub.tokens[token] else 403

            def do_GET(self) -> None:
                hub.requests.append(("GET", self.path, self.headers.get("Authorization") or ""))
                self._reply(404, {"error": "Repository not found"})

            def do_POST(self) -> None:
                hub.requests.append(("POST", self.path, self.headers.get("Authorization") or ""))
                body = self._body()
                if self.path == "/api/repos/create":
                    payload = json.loads(body)
                    repo_id = (
                        f"{payload['organization']}/{payload['name']}"
                        if payload.get("organization")
                        else None
                    )
                    status = self._allowed(payload.get("organization") or "")
                    if status != 200:
                        return self._reply(
                            status, {"error": "Invalid credentials" if status == 401 else "Forbidden"}
                        )
                    url = f"http://{self.headers['Host']}/{repo_id}"
                    if repo_id in hub.repos:  # the Hub names the existing repo in its 409 answer
                        return self._reply(409, {"error": "You already created this model repo", "url": url})
                    hub.repos[repo_id] = {}
                    return self._reply(200, {"url": url})
                if self.path == "/api/validate-yaml":
                    return self._reply(200, {"errors": [], "warnings": []})
                parts = self.path.split("/")  # /api/models/OWNER/NAME/(preupload|commit)/main
                if len(parts) == 7 and parts[:3] == ["", "api", "models"]:
                    repo_id, action = f"{parts[3]}/{parts[4]}", parts[5]
                    status = self._allowed(parts[3])
                    if status != 200 or repo_id not in hub.repos:
                        return self._reply(status if status != 200 else 404, {"error": "no access"})
                    if action == "preupload":
                        files = json.loads(body)["files"]
                        return self._reply(
                            200,
                            {
                                "files": [
                                    {
                                        "path": f["path"],
                                        "uploadMode": "regular",
                                        "shouldIgnore": False,
                                        "oid": None,
                                    }
                                    for f in files
                                ]
                            },
                        )
                    if action == "commit":
                        for line in body.splitlines():
                            item = json.loads(line)
                            if item["key"] == "file":
                                hub.repos[repo_id][item["value"]["path"]] = base64.b64decode(
                                    item["value"]["content"]
                                )
                        oid = hashlib.sha1(body).hexdigest()
                        hub.commits[repo_id] = oid
                        return self._reply(
                            200,
                            {
                                "commitUrl": f"http://{self.headers['Host']}/{repo_id}/commit/{oid}",
                                "commitOid": oid,
                            },
                        )
                self._reply(404, {"error": f"unknown path {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def push_requests_authorized(requests: list[tuple[str, str, str]]) -> bool:
    """Every push call carries the token; no request carries another. (huggingface_hub also fetches its
    agent-harness registry from the endpoint, without a token.)"""
    push = [auth for _, path, auth in requests if path.startswith(("/api/repos/", "/api/models/"))]
    return (
        bool(push)
        and set(push) == {f"Bearer {TOKEN}"}
        and {auth for _, _, auth in requests} <= {"", f"Bearer {TOKEN}"}
    )


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lift huggingface_hub's offline switch for calls that only go to a FakeHub on loopback."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def exported_run(root: Path, name: str = "r1", evals: dict[str, list[bool]] | None = None) -> Path:
    """A run folder as an export leaves it: config, metrics, adapter, one verified GGUF, export.json."""
    run = root / name
    (run / "adapter").mkdir(parents=True)
    (run / "gguf").mkdir()
    write_json_atomic(
        run / "config.json",
        {
            "base_model": "unsloth/Llama-3.2-1B-Instruct-bnb-4bit",
            "dataset": "mlabonne/FineTome-100k",
            "split": "train[:10000]",
            "lora_r": 16,
            "lora_alpha": 16,
            "lora_dropout": 0.0,
            "target_modules": ["q_proj", "v_proj"],
            "use_rslora": False,
            "max_steps": 60,
            "batch_size": 2,
            "gradient_accumulation_steps": 4,
            "learning_rate": 2e-4,
            "lr_scheduler": "linear",
            "max_seq_length": 1024,
        },
    )
    write_json_atomic(
        run / "metrics.json",
        {
            "train_loss": 1.2345678,
            "final_loss": 0.9,
            "train_runtime_s": 412.5,
            "steps": 60,
            "tokens_per_s": 1500.0,
            "peak_memory_gb": 5.1,
            "lora_memory_gb": 1.2,
            "memory_measure": "cuda_reserved",
            "device": "cuda",
        },
    )
    for filename, content in {
        "adapter_config.json": b'{"r": 16}',
        "adapter_model.safetensors": b"weights" * 10,
        "tokenizer.json": b"{}",
        "chat_template.jinja": b"{{ messages }}",
        "README.md": b"peft's own card",
    }.items():
        (run / "adapter" / filename).write_bytes(content)
    gguf = run / "gguf" / f"{name}-q8_0.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    failed = run / "gguf" / f"{name}-q4_k_m.gguf.left-by-hand"
    failed.write_bytes(b"not part of the export")
    write_json_atomic(
        run / EXPORT_FILE,
        {
            "run": name,
            "state": "completed",
            "base_model": "unsloth/Llama-3.2-1B-Instruct-bnb-4bit",
            "merged_from": "unsloth/Llama-3.2-1B-Instruct",
            "adapter": {"path": "adapter", "step": 60},
            "converter": {"source": "llama-cpp-python sdist", "version": "llama-cpp-python 0.3.36"},
            "created_at": "2026-11-28T12:00:00Z",
            "hub": None,
            "files": [
                {
                    "quant": "q8_0",
                    "file": f"gguf/{gguf.name}",
                    "size": gguf.stat().st_size,
                    "sha256": hashlib.sha256(gguf.read_bytes()).hexdigest(),
                    "verification": {"passed": True, "prompts": 3, "exact_matches": 3, "agreement": 1.0},
                },
                {
                    "quant": "q4_k_m",
                    "file": None,
                    "size": 10,
                    "sha256": "0" * 64,
                    "verification": {"passed": False, "prompts": 3, "exact_matches": 0, "agreement": 0.1},
                },
            ],
        },
    )
    for variant, passed in (evals or {}).items():
        (run / "eval").mkdir(exist_ok=True)
        (run / "eval" / f"{variant}.jsonl").write_text(
            "".join(json.dumps({"prompt_id": f"p{i}", "passed": p}) + "\n" for i, p in enumerate(passed))
            + '{"torn'
        )
    return run


@pytest.mark.parametrize("repo_id", ["user/model", "Org-1/my_model.v2", "a/b", "u/" + "x" * 96])
def test_valid_repo_ids_pass(repo_id):
    assert validate_repo_id(repo_id) == repo_id


@pytest.mark.parametrize(
    ("repo_id", "reason"),
    [
        ("", "a Hub repo id is required"),
        ("model", "exactly one '/'"),
        ("a/b/c", "exactly one '/'"),
        ("user/my model", "'my model' must be 1-96 letters"),
        ("user/-model", "must be 1-96 letters"),
        ("user/model.", "not end with '-' or '.'"),
        ("user/a--b", "no '--' or '..'"),
        ("user/a..b", "no '--' or '..'"),
        ("user/" + "x" * 97, "must be 1-96"),
        ("user/model.git", "may not end with .git"),
    ],
)
def test_invalid_repo_ids_say_why(repo_id, reason):
    with pytest.raises(HubError) as caught:
        validate_repo_id(repo_id)
    assert reason in str(caught.value)


def test_the_token_comes_from_the_caller_or_the_environment(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(HubError, match="no Hugging Face token: set HF_TOKEN"):
        hub_token()
    with pytest.raises(HubError, match="no Hugging Face token"):
        hub_token("  ")
    monkeypatch.setenv("HF_TOKEN", "from-env")
    assert hub_token() == "from-env"
    assert hub_token("from-secrets") == "from-secrets"


def test_the_plan_sends_the_adapter_the_verified_gguf_and_a_card(tmp_path):
    run = exported_run(tmp_path, evals={"adapter": [True, True, False], "base": [False, True]})
    plan = upload_plan(run, "tester/lab-model")
    assert [(f.path_in_repo, f.size) for f in plan.files] == [
        ("adapter/adapter_config.json", 9),
        ("adapter/adapter_model.safetensors", 70),
        ("adapter/chat_template.jinja", 14),
        ("adapter/tokenizer.json", 2),
        ("r1-q8_0.gguf", 1028),
    ]  # peft's adapter README is replaced by the card; the failed q4_k_m is not shipped
    assert plan.commit_message == "Upload r1: adapter and q8_0 GGUF"
    assert plan.total_bytes == 9 + 70 + 14 + 2 + 1028 + len(plan.card.encode())
    card = plan.card
    assert card.startswith("---\nlibrary_name: peft\n")
    assert "base_model: unsloth/Llama-3.2-1B-Instruct\n" in card and "- mlabonne/FineTome-100k\n" in card
    assert "(trained on its 4-bit version `unsloth/Llama-3.2-1B-Instruct-bnb-4bit`)" in card
    for row in (
        "| LoRA r / alpha / dropout | 16 / 16 / 0.0 |",
        "| target modules | q_proj, v_proj |",
        "| split | `train[:10000]` |",
        "| training loss (mean over steps) | 1.235 |",
        "| peak memory (GB, GPU reserved; the lab's: never reset) | 5.1 |",
        "| variant | answers |",
        "| adapter | 2/3 passed |",
        "| base | 1/2 passed |",
        "| `r1-q8_0.gguf` | q8_0 | 0.0 |",
        "3 of 3 | 1 |",
        'Llama.from_pretrained(repo_id="tester/lab-model", filename="r1-q8_0.gguf", n_ctx=4096)',
        'AutoPeftModelForCausalLM.from_pretrained("tester/lab-model", subfolder="adapter")',
        "Converted with llama-cpp-python 0.3.36 (llama-cpp-python sdist)",
    ):
        assert row in card, row
    assert "q4_k_m" not in card


def test_the_card_leaves_out_what_the_run_does_not_have(tmp_path):
    run = exported_run(tmp_path)
    (run / "metrics.json").unlink()
    config = json.loads((run / "config.json").read_text())
    write_json_atomic(
        run / "config.json", {**config, "base_model": "tiny-llama", "dataset": "data/sample.jsonl"}
    )
    export = json.loads((run / EXPORT_FILE).read_text())
    export["merged_from"] = "tiny-llama"
    card = model_card(run, "tester/tiny", export, export["files"][:1])
    assert "base_model:" not in card and "datasets:" not in card  # not Hub ids
    assert "## Evaluation" not in card and "| metric |" not in card
    assert eval_summary(run) == {}


def test_a_plan_is_refused_for_bad_ids_unexported_runs_and_changed_files(tmp_path):
    run = exported_run(tmp_path)
    with pytest.raises(HubError, match="invalid repo id"):
        upload_plan(run, "no-slash")
    (run / "gguf" / "r1-q8_0.gguf").write_bytes(b"GGUF changed")
    with pytest.raises(HubError, match="gguf/r1-q8_0.gguf is missing or changed since the export"):
        upload_plan(run, "tester/x")
    (run / EXPORT_FILE).unlink()
    with pytest.raises(HubError, match="has no export.json: export it first"):
        upload_plan(run, "tester/x")


def test_a_gguf_changed_since_its_verification_is_not_pushed(tmp_path):
    """Same size, other bytes: the sha256 check stops the push before any request (none could reach a Hub here)."""
    run = exported_run(tmp_path)
    gguf = run / "gguf" / "r1-q8_0.gguf"
    gguf.write_bytes(gguf.read_bytes()[::-1])
    with pytest.raises(HubError, match=r"^r1-q8_0.gguf changed since it was verified \(sha256 differs\)"):
        push_export(run, "tester/x", token=TOKEN)
    document = json.loads((run / EXPORT_FILE).read_text())
    del document["files"][0]["sha256"]
    write_json_atomic(run / EXPORT_FILE, document)
    with pytest.raises(HubError, match="gguf/r1-q8_0.gguf is missing or changed since the export"):
        upload_plan(run, "tester/x")


def secret_file(tmp_path: Path) -> Path:
    """A file outside the run folder that must never be pushed (a private key, say)."""
    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\n")
    return secret


def point_entry_at(run: Path, name: str, target: Path) -> None:
    """Make export.json's verified q8_0 entry name `name`, with the size and sha256 of `target`."""
    document = json.loads((run / EXPORT_FILE).read_text())
    document["files"][0].update(
        file=name, size=target.stat().st_size, sha256=hashlib.sha256(target.read_bytes()).hexdigest()
    )
    write_json_atomic(run / EXPORT_FILE, document)


def test_a_gguf_entry_that_leads_out_of_the_run_folder_is_never_pushed(tmp_path):
    """export.json of a run folder from elsewhere, naming a file outside it with a matching size and sha256."""
    runs = tmp_path / "runs"
    secret = secret_file(tmp_path)
    for number, name in enumerate(
        [
            "../../home/.ssh/id_rsa",
            str(secret),
            "gguf/../../../home/.ssh/id_rsa",
            "gguf/sub/r.gguf",
            "r1-q8_0.gguf",
            "gguf/.gguf",
        ]
    ):
        run = exported_run(runs, f"r{number}")
        point_entry_at(run, name, secret)
        with pytest.raises(HubError, match="refusing to push it"):
            upload_plan(run, "tester/x")
    run = exported_run(runs, "linked")  # gguf/<name>.gguf itself a link to the key
    (run / "gguf" / "linked-q8_0.gguf").unlink()
    (run / "gguf" / "linked-q8_0.gguf").symlink_to(secret)
    point_entry_at(run, "gguf/linked-q8_0.gguf", secret)
    with pytest.raises(
        HubError,
        match="'gguf/linked-q8_0.gguf' as a GGUF file, which is not gguf/<name>.gguf inside "
        "the run folder: refusing to push it; export the run again",
    ):
        upload_plan(run, "tester/x")
    run = exported_run(runs, "folder")  # gguf/ a link to a folder elsewhere
    elsewhere = tmp_path / "elsewhere"
    (run / "gguf").rename(elsewhere)
    (run / "gguf").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(HubError, match="refusing to push it"):
        upload_plan(run, "tester/x")
    assert export.gguf_file_path(run, "gguf/folder-q8_0.gguf") is None
    run = exported_run(runs, "plain")
    assert export.gguf_file_path(run, "gguf/plain-q8_0.gguf") == run / "gguf" / "plain-q8_0.gguf"


def test_symbolic_links_in_the_adapter_folder_are_refused(tmp_path):
    runs = tmp_path / "runs"
    secret = secret_file(tmp_path)
    run = exported_run(runs, "r1")
    (run / "adapter" / "extra.json").symlink_to(secret)
    with pytest.raises(
        HubError,
        match="^adapter/extra.json is a symbolic link: only what lies inside the run folder "
        "is pushed; replace the link with a copy of what it points to$",
    ):
        upload_plan(run, "tester/x")
    run = exported_run(runs, "r2")
    (run / "adapter").rename(tmp_path / "adapter-elsewhere")
    (run / "adapter").symlink_to(tmp_path / "adapter-elsewhere", target_is_directory=True)
    with pytest.raises(HubError, match="^adapter is a symbolic link"):
        upload_plan(run, "tester/x")


def test_a_push_commits_every_file_of_the_plan_and_records_the_commit(tmp_path, hub_online):
    run = exported_run(tmp_path)
    stages: list[str] = []
    with FakeHub({TOKEN: {"tester"}}) as hub:
        record = push_export(run, "tester/lab-model", token=TOKEN, endpoint=hub.endpoint, say=stages.append)
    stored = hub.repos["tester/lab-model"]
    assert sorted(stored) == [
        "README.md",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/chat_template.jinja",
        "adapter/tokenizer.json",
        "r1-q8_0.gguf",
    ]
    assert stored["r1-q8_0.gguf"] == (run / "gguf" / "r1-q8_0.gguf").read_bytes()
    assert stored["README.md"].decode() == upload_plan(run, "tester/lab-model").card
    assert record["commit"] == hub.commits["tester/lab-model"] and record["repo_id"] == "tester/lab-model"
    assert record["url"] == f"{hub.endpoint}/tester/lab-model"
    assert json.loads((run / EXPORT_FILE).read_text())["hub"] == record
    assert push_requests_authorized(hub.requests)
    assert stages == [
        "creating tester/lab-model on the Hub if it does not exist",
        f"uploading 6 files ({upload_plan(run, 'tester/lab-model').total_bytes / 1e6:.1f} MB) to tester/lab-model",
    ]
    assert TOKEN not in "".join(p.read_text(errors="replace") for p in run.rglob("*") if p.is_file())

    with FakeHub({TOKEN: {"tester"}}) as hub:  # a second push to an existing repo (409 on create) works too
        hub.repos["tester/lab-model"] = {}
        assert push_export(run, "tester/lab-model", token=TOKEN, endpoint=hub.endpoint)["commit"]


def test_push_failures_say_what_to_do_and_never_show_the_token(tmp_path, hub_online):
    run = exported_run(tmp_path)
    plan = upload_plan(run, "someone-else/model")
    with FakeHub({TOKEN: {"tester"}}) as hub:
        with pytest.raises(HubError) as refused:
            push_plan(plan, "hf_wrong_token", endpoint=hub.endpoint)
        with pytest.raises(HubError) as forbidden:
            push_plan(plan, TOKEN, endpoint=hub.endpoint)
        endpoint = hub.endpoint
    assert "the Hub refused the token (401): check HF_TOKEN" in str(refused.value)
    assert "may not write to someone-else/model (403)" in str(forbidden.value)
    with pytest.raises(HubError) as unreachable:  # the server is gone: connection refused
        push_plan(plan, TOKEN, endpoint=endpoint)
    assert f"could not reach the Hub at {endpoint}" in str(unreachable.value)
    for error in (refused, forbidden, unreachable):
        assert TOKEN not in str(error.value) and "hf_wrong_token" not in str(error.value)
    assert json.loads((run / EXPORT_FILE).read_text())["hub"] is None


def test_offline_mode_is_reported_as_such(tmp_path):
    """HF_HUB_OFFLINE is set for every test: the push must say so, not pretend a network error."""
    run = exported_run(tmp_path)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):
        push_export(run, "tester/x", token=TOKEN, endpoint="http://127.0.0.1:9")


def test_text_from_the_run_files_cannot_put_an_image_or_link_in_the_card(tmp_path):
    """A run folder from elsewhere: its device, split and converter carry markdown (rendered by
    markdown-it as the Hub would render the card)."""
    from markdown_it import MarkdownIt

    run = exported_run(tmp_path)
    image = "![p](http://127.0.0.1:9/pixel.png)"
    metrics = json.loads((run / "metrics.json").read_text())
    write_json_atomic(run / "metrics.json", {**metrics, "device": f"cpu {image}"})
    config = json.loads((run / "config.json").read_text())
    write_json_atomic(run / "config.json", {**config, "split": f"train` {image} `"})
    export = json.loads((run / EXPORT_FILE).read_text())
    export["converter"] = {"version": "[click](http://127.0.0.1:9/)", "source": "<img src=x>"}
    export["files"][0]["quant"] = image
    card = model_card(run, "tester/tiny", export, export["files"][:1])
    html = MarkdownIt("commonmark").enable("table").render(card)
    assert "pixel" in html and "127.0.0.1" in html  # the text is there...
    assert "<img" not in html and 'href="http://127' not in html  # ...as text only
