"""Push an exported run to the Hugging Face Hub: its LoRA adapter, its verified GGUF files and a
generated model card, in one commit.

The upload plan (which files go where, and the card's text) is a pure function of the run
folder, so it can be checked without the Hub. The token comes from the caller (the page
passes Streamlit secrets) or `$HF_TOKEN`; it is handed to huggingface_hub only, and never
written to a file, a log or an error message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import first_line, markdown_cell
from core.evaluate.answers import load_eval_results, pass_count, pass_text
from core.export.pipeline import gguf_file_path, read_export, record_push, sha256_file
from core.store.files import read_json_or_empty
from core.store.runs import (
    ADAPTER_DIR,
    CONFIG_FILE,
    EXPORT_FILE,
    GGUF_DIR,
    METRICS_FILE,
    now_iso,
)
from core.train.config import is_hub_id

TOKEN_ENV = "HF_TOKEN"
CARD_FILE = "README.md"
# The Hub's rule for a repo id: owner/name, each 1-96 of letters, digits, '-', '_', '.';
# no '--' or '..', not starting or ending with '-' or '.', and no '.git' at the end.
REPO_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")
# peft writes its own README.md into the adapter folder; the repo's card replaces it.
ADAPTER_SKIP = {"README.md"}


class HubError(ValueError):
    """A push that cannot be done: bad repo id, no token, no permission, no network."""


@dataclass(frozen=True)
class UploadFile:
    """One file of the push: where it is here, where it goes in the repo, and its size."""

    local: Path
    path_in_repo: str
    size: int
    sha256: str | None = None  # a GGUF file's, as export.json recorded it when the file was verified


@dataclass(frozen=True)
class UploadPlan:
    """Everything one push commits: the files and the model card text."""

    repo_id: str
    files: tuple[UploadFile, ...]
    card: str
    commit_message: str

    @property
    def total_bytes(self) -> int:
        """Bytes uploaded, the card included."""
        return sum(f.size for f in self.files) + len(self.card.encode("utf-8"))


def pushed_repo(export: dict[str, Any]) -> tuple[str, str] | None:
    """The repo an export.json says it was pushed to, with its page's address built here from
    the validated repo id (never a URL from the file); None when it names no valid repo."""
    hub = export.get("hub")
    try:
        repo_id = validate_repo_id(hub.get("repo_id") if isinstance(hub, dict) else None)
    except HubError:
        return None
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return repo_id, f"{endpoint}/{repo_id}"


def validate_repo_id(repo_id: object) -> str:
    """`repo_id` if it is a valid `owner/name` Hub model repo id, else HubError saying why."""
    if not isinstance(repo_id, str) or not repo_id.strip():
        raise HubError("a Hub repo id is required, as owner/name (e.g. your-user/my-model)")
    parts = repo_id.split("/")
    if len(parts) != 2:
        raise HubError(f"invalid repo id {repo_id!r}: it must be owner/name, with exactly one '/'")
    for part in parts:
        if not REPO_PART.fullmatch(part) or "--" in part or ".." in part:
            raise HubError(
                f"invalid repo id {repo_id!r}: {part!r} must be 1-96 letters, digits, '-', '_' or '.', start with a "
                "letter or digit, not end with '-' or '.', and have no '--' or '..'"
            )
    if repo_id.endswith(".git"):
        raise HubError(f"invalid repo id {repo_id!r}: it may not end with .git")
    return repo_id


def hub_token(explicit: str | None = None) -> str:
    """The token to push with: `explicit` (the page's secrets), else `$HF_TOKEN`; HubError when neither."""
    token = (explicit or os.environ.get(TOKEN_ENV) or "").strip()
    if not token:
        raise HubError(
            f"no Hugging Face token: set {TOKEN_ENV} in the environment (or in the dashboard's Streamlit secrets) "
            "to a token with write access (huggingface.co/settings/tokens)"
        )
    return token


def eval_summary(run_path: Path) -> dict[str, str]:
    """Per eval variant (`eval/<variant>.jsonl`): answers that passed all their checks, as pass_text says it."""
    return {variant: pass_text(*pass_count(rows)) for variant, rows in load_eval_results(run_path).items()}


def _number(value: object, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _code(value: object) -> str:
    """A value from the run's files as a code span that it cannot close early."""
    return "`" + " ".join(str(value).replace("`", "'").split()).replace("|", "\\|") + "`"


def model_card(run_path: Path, repo_id: str, export: dict[str, Any], gguf_files: list[dict[str, Any]]) -> str:
    """The model card (README.md) of the push: lineage, training, evaluation and how to run it."""
    config = read_json_or_empty(run_path / CONFIG_FILE)
    metrics = read_json_or_empty(run_path / METRICS_FILE)
    base = str(export.get("merged_from") or config.get("base_model") or "unknown")
    dataset = str(config.get("dataset") or "unknown")
    front = ["---", "library_name: peft", "tags:", "- lora", "- peft", "- gguf", "- llama-cpp"]
    if is_hub_id(base):
        front.append(f"base_model: {base}")
    if is_hub_id(dataset):
        front += ["datasets:", f"- {dataset}"]
    front.append("---")

    modules = config.get("target_modules")
    modules_text = ", ".join(modules) if isinstance(modules, list) else str(modules or "-")
    adapter = export.get("adapter") or {}
    lines = [
        *front,
        "",
        f"# {repo_id.split('/')[1]}",
        "",
        f"A LoRA fine-tune of {_code(base)}"
        + (
            f" (trained on its 4-bit version {_code(config.get('base_model'))})"
            if config.get("base_model") not in (None, base)
            else ""
        )
        + f", run `{run_path.name}` of the PEFT dashboard: the adapter, and the adapter merged into the base in "
        f"16-bit and converted to GGUF with llama.cpp's converter.",
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
        f"| base model | {_code(base)} |",
        f"| dataset | {_code(dataset)} |",
        f"| split | {_code(config.get('split', '-'))} |",
        f"| LoRA r / alpha / dropout | {markdown_cell(config.get('lora_r', '-'))} / {markdown_cell(config.get('lora_alpha', '-'))} / {markdown_cell(config.get('lora_dropout', '-'))} |",
        f"| target modules | {markdown_cell(modules_text)} |",
        f"| rsLoRA | {markdown_cell(config.get('use_rslora', '-'))} |",
        f"| steps | {_number(metrics.get('steps', config.get('max_steps')))} |",
        f"| batch x gradient accumulation | {markdown_cell(config.get('batch_size', '-'))} x {markdown_cell(config.get('gradient_accumulation_steps', '-'))} |",
        f"| learning rate | {_number(config.get('learning_rate'))} ({markdown_cell(config.get('lr_scheduler', '-'))}) |",
        f"| max sequence length | {markdown_cell(config.get('max_seq_length', '-'))} |",
        "",
    ]
    if metrics:
        memory = "GPU reserved" if metrics.get("memory_measure") != "process_rss" else "process RSS (CPU)"
        lines += [
            "| metric | value |",
            "|---|---|",
            f"| training loss (mean over steps) | {_number(metrics.get('train_loss'))} |",
            f"| last logged loss | {_number(metrics.get('final_loss'))} |",
            f"| runtime (s) | {_number(metrics.get('train_runtime_s'))} |",
            f"| tokens/s | {_number(metrics.get('tokens_per_s'))} |",
            f"| peak memory (GB, {memory}; the lab's: never reset) | {_number(metrics.get('peak_memory_gb'))} |",
            f"| LoRA memory (GB; the lab's: peak minus the peak before training) | {_number(metrics.get('lora_memory_gb'))} |",
            f"| peak in training (GB; peak reset when training started) | {_number(metrics.get('training_peak_memory_gb'))} |",
            f"| training memory (GB; that peak minus the memory in use at the start) | {_number(metrics.get('training_memory_gb'))} |",
            f"| device | {markdown_cell(metrics.get('device', '-'))} |",
            "",
        ]
    evals = eval_summary(run_path)
    if evals:
        lines += [
            "## Evaluation",
            "",
            "Fixed prompts, answers checked automatically for known failure modes.",
            "",
            "| variant | answers |",
            "|---|---|",
        ]
        lines += [f"| {markdown_cell(variant)} | {passed} |" for variant, passed in evals.items()]
        lines.append("")
    converter = export.get("converter") if isinstance(export.get("converter"), dict) else {}
    adapter = adapter if isinstance(adapter, dict) else {}
    lines += [
        "## Files",
        "",
        "Every GGUF was checked before upload: it loads in llama-cpp, carries the chat template and end-of-turn "
        "token, and its greedy answers to fixed prompts were compared with the merged model's in transformers.",
        "",
        "| file | quant | size (MB) | sha256 | greedy answers equal to transformers | token agreement |",
        "|---|---|---|---|---|---|",
    ]
    for entry in gguf_files:
        check = entry.get("verification") or {}
        lines.append(
            f"| {_code(Path(entry['file']).name)} | {markdown_cell(entry['quant'])} | {entry['size'] / 1e6:.1f} | "
            f"{_code(str(entry['sha256'])[:16] + '…')} | {markdown_cell(check.get('exact_matches', '-'))} of "
            f"{markdown_cell(check.get('prompts', '-'))} | {_number(check.get('agreement'))} |"
        )
    lines += [
        "",
        f"`adapter/` holds the LoRA adapter (step {markdown_cell(adapter.get('step', '-'))}) and the tokenizer with its chat template.",
        f"Converted with {markdown_cell(converter.get('version', 'llama.cpp'))} ({markdown_cell(converter.get('source', '-'))}); "
        f"exported {markdown_cell(export.get('created_at', '-'))}.",
        "",
        "## Use it",
        "",
    ]
    if gguf_files:
        first = Path(gguf_files[0]["file"]).name
        lines += [
            "With llama-cpp-python (`pip install llama-cpp-python huggingface_hub`):",
            "",
            "```python",
            "from llama_cpp import Llama",
            "",
            f'llm = Llama.from_pretrained(repo_id="{repo_id}", filename="{first}", n_ctx=4096)',
            'answer = llm.create_chat_completion(messages=[{"role": "user", "content": "Explain LoRA in two sentences."}])',
            'print(answer["choices"][0]["message"]["content"])',
            "```",
            "",
            f"With llama.cpp: `llama-cli -hf {repo_id} --hf-file {first} -cnv`",
            "",
        ]
    lines += [
        "The adapter with transformers and peft:",
        "",
        "```python",
        "from peft import AutoPeftModelForCausalLM",
        "from transformers import AutoTokenizer",
        "",
        f'model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}", subfolder="adapter")',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}", subfolder="adapter")',
        "```",
        "",
    ]
    return "\n".join(lines)


def adapter_files(run_path: Path) -> list[UploadFile]:
    """The files of the run's adapter/ to push (peft's README.md left out); HubError for a missing
    folder or a symbolic link in it (what it points to may lie anywhere and is never pushed)."""
    adapter = run_path / ADAPTER_DIR
    if not adapter.is_dir():
        raise HubError(f"run {run_path.name} has no {ADAPTER_DIR}/ folder to push")
    files = []
    for path in [adapter, *sorted(adapter.iterdir())]:
        if path.is_symlink():
            raise HubError(
                f"{path.relative_to(run_path).as_posix()} is a symbolic link: only what lies inside the run "
                "folder is pushed; replace the link with a copy of what it points to"
            )
        if path.is_file() and path.name not in ADAPTER_SKIP:
            files.append(UploadFile(path, f"{ADAPTER_DIR}/{path.name}", path.stat().st_size))
    return files


def upload_plan(run_path: Path, repo_id: str) -> UploadPlan:
    """What a push of the run's export sends: adapter/, the verified GGUF files at the top, README.md."""
    repo_id = validate_repo_id(repo_id)
    export = read_export(run_path)
    if export is None:
        raise HubError(f"run {run_path.name} has no {EXPORT_FILE}: export it first")
    files = adapter_files(run_path)
    gguf_files = []
    for entry in export.get("files") or []:
        if (
            not isinstance(entry, dict)
            or not entry.get("file")
            or not (entry.get("verification") or {}).get("passed")
        ):
            continue
        path = gguf_file_path(run_path, entry["file"])
        if path is None:
            raise HubError(
                f"{EXPORT_FILE} names {entry['file']!r} as a GGUF file, which is not {GGUF_DIR}/<name>.gguf "
                "inside the run folder: refusing to push it; export the run again"
            )
        if (
            not path.is_file()
            or path.stat().st_size != entry.get("size")
            or not isinstance(entry.get("sha256"), str)
        ):
            raise HubError(f"{entry['file']} is missing or changed since the export: export the run again")
        files.append(UploadFile(path, path.name, entry["size"], entry["sha256"]))
        gguf_files.append(entry)
    if not gguf_files:
        raise HubError(f"run {run_path.name} has no verified GGUF file to push: export it first")
    card = model_card(run_path, repo_id, export, gguf_files)
    message = f"Upload {run_path.name}: adapter and " + ", ".join(e["quant"] for e in gguf_files) + " GGUF"
    return UploadPlan(repo_id, tuple(files), card, message)


def _network_errors() -> tuple[type[BaseException], ...]:
    """The transport errors of whichever HTTP library this huggingface_hub uses."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx", "requests"):
        try:
            library = __import__(module)
        except ImportError:
            continue
        base = getattr(library, "TransportError", None) or getattr(
            getattr(library, "exceptions", None), "ConnectionError", None
        )
        if isinstance(base, type):
            errors.append(base)
    return tuple(errors)


def _hub_failure(exc: BaseException, repo_id: str, endpoint: str, token: str) -> HubError:
    """A HubError that says what went wrong with a push, the token never included."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    def clean(text: str) -> str:
        return text.replace(token, "***") if token else text

    if isinstance(exc, OfflineModeIsEnabled):
        return HubError("the Hugging Face Hub is switched off here (HF_HUB_OFFLINE is set): unset it to push")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            return HubError(
                f"the Hub refused the token (401): check {TOKEN_ENV}; it may be invalid or expired"
            )
        if status == 403:
            return HubError(
                f"the token may not write to {repo_id} (403): use a token with write access to that "
                "namespace, or a repo id under your own user"
            )
        if status == 404:
            return HubError(
                f"{repo_id} was not found and could not be created (404): check the owner name and the token"
            )
        return HubError(clean(f"the Hub answered {status}: {first_line(exc)}"))
    return HubError(
        clean(
            f"could not reach the Hub at {endpoint} ({type(exc).__name__}: {first_line(exc)}); "
            "check the network and try again"
        )
    )


def push_plan(
    plan: UploadPlan,
    token: str,
    *,
    endpoint: str | None = None,
    private: bool = False,
    say: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Create the repo if needed and commit the plan's files and card; return the Hub record."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(endpoint=endpoint, token=token)
    try:
        say(f"creating {plan.repo_id} on the Hub if it does not exist")
        repo = api.create_repo(plan.repo_id, repo_type="model", private=private, exist_ok=True)
        operations = [
            CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.local)) for f in plan.files
        ]
        operations.append(
            CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=plan.card.encode("utf-8"))
        )
        say(f"uploading {len(operations)} files ({plan.total_bytes / 1e6:.1f} MB) to {plan.repo_id}")
        commit = api.create_commit(plan.repo_id, operations=operations, commit_message=plan.commit_message)
    except (HfHubHTTPError, OfflineModeIsEnabled, *_network_errors()) as exc:
        raise _hub_failure(exc, plan.repo_id, api.endpoint, token) from None
    return {
        "repo_id": plan.repo_id,
        "url": str(repo),
        "commit": commit.oid,
        "commit_url": commit.commit_url,
        "files": [f.path_in_repo for f in plan.files] + [CARD_FILE],
        "pushed_at": now_iso(),
    }


def push_export(
    run_path: Path,
    repo_id: str,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    private: bool = False,
    say: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Push the run's export (adapter, verified GGUF files, model card); record repo and commit in export.json.

    Every GGUF's sha256 is checked against export.json first: a file changed since it was
    verified is not shipped.
    """
    plan = upload_plan(run_path, repo_id)
    secret = hub_token(token)
    for upload in plan.files:
        if upload.sha256 is not None and sha256_file(upload.local) != upload.sha256:
            raise HubError(
                f"{upload.path_in_repo} changed since it was verified (sha256 differs): export the run again"
            )
    hub = push_plan(plan, secret, endpoint=endpoint, private=private, say=say)
    record_push(run_path, hub)
    return hub
