"""A run's model for generation: its base in full precision with its LoRA adapter, and greedy
answers from it in transformers or from a GGUF file in llama-cpp.

Both generators render the conversation with the model's own chat template and return only
the answer: the new tokens, up to (not including) the end-of-turn token that stopped them,
decoded without special tokens. Greedy decoding makes the two comparable token for token.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import first_line
from core.store.files import FileProblem, read_json_object
from core.store.runs import ADAPTER_DIR, ADAPTER_WEIGHTS, CONFIG_FILE
from core.train.backends import resolve_base_model

DTYPES = ("float32", "float16", "bfloat16")
END_OF_TURN = "<|eot_id|>"
# Unsloth publishes each pre-quantized model next to its full-precision original under the
# same name without the suffix (unsloth/Llama-3.2-1B-Instruct-bnb-4bit -> unsloth/Llama-3.2-1B-Instruct).
FOUR_BIT_SUFFIXES = ("-unsloth-bnb-4bit", "-bnb-4bit")


class InferenceError(ValueError):
    """A run whose model cannot be loaded or run: no adapter, a broken one, or no base model."""


@dataclass(frozen=True)
class Generation:
    """One greedy answer: its text, the generated token ids (without the stop token), the
    prompt's length in tokens and the wall time of generation."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    seconds: float


def full_precision_base(base_model: str) -> str:
    """The full-precision model a 4-bit base was made from: the name without its bnb-4bit suffix.

    Reliable for Unsloth's naming (every `...-bnb-4bit` repo has its original beside it);
    any other name is returned unchanged.
    """
    for suffix in FOUR_BIT_SUFFIXES:
        if base_model.endswith(suffix):
            return base_model[: -len(suffix)]
    return base_model


def configured_base_model(run_path: Path) -> str:
    """The run's base model as its config.json names it (possibly a 4-bit one); InferenceError when
    config.json is missing, unreadable or names none."""
    try:
        config = read_json_object(run_path / CONFIG_FILE)
    except FileProblem as exc:
        raise InferenceError(f"run {run_path.name}: {exc}") from None
    base = config.get("base_model")
    if not isinstance(base, str) or not base:
        raise InferenceError(f"run {run_path.name}: {CONFIG_FILE} has no base_model")
    return base


def run_base_model(run_path: Path) -> str:
    """The run's base model (config.json `base_model`) in its full-precision form."""
    return full_precision_base(configured_base_model(run_path))


def adapter_weights(folder: Path) -> Path | None:
    """The adapter weights file peft loads from `folder` (safetensors before bin), or None when there is none."""
    return next((folder / name for name in ADAPTER_WEIGHTS if (folder / name).is_file()), None)


def check_adapter(run_path: Path) -> Path:
    """The run's adapter folder, after checking that its config reads and its weights are there."""
    folder = run_path / ADAPTER_DIR
    if not folder.is_dir():
        raise InferenceError(
            f"run {run_path.name} has no adapter (no {ADAPTER_DIR}/ folder): train it to the end first"
        )
    try:
        read_json_object(folder / "adapter_config.json")
    except FileProblem as exc:
        raise InferenceError(f"run {run_path.name} has a broken adapter: {exc}") from None
    if adapter_weights(folder) is None:
        raise InferenceError(f"run {run_path.name} has a broken adapter: no {' or '.join(ADAPTER_WEIGHTS)}")
    return folder


def _torch_dtype(dtype: str) -> Any:
    import torch

    if dtype not in DTYPES:
        raise InferenceError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def load_tokenizer(run_path: Path) -> Any:
    """The run's tokenizer: the one saved with its adapter (it carries the run's chat template),
    else the base model's."""
    from transformers import AutoTokenizer

    folder = run_path / ADAPTER_DIR
    source = folder if (folder / "tokenizer_config.json").is_file() else None
    base = run_base_model(run_path)
    try:
        return AutoTokenizer.from_pretrained(str(source) if source else resolve_base_model(base))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        where = f"{folder}" if source else f"base model {base}"
        raise InferenceError(f"cannot load the tokenizer of {where}: {exc}") from None


def load_base_model(base: str, dtype: str) -> Any:
    """The base model `base` (a Hub id, a local folder or the tiny model) in `dtype`."""
    from transformers import AutoModelForCausalLM

    torch_dtype = _torch_dtype(dtype)
    try:
        return AutoModelForCausalLM.from_pretrained(resolve_base_model(base), dtype=torch_dtype)
    except OSError as exc:
        raise InferenceError(
            f"base model {base} cannot be loaded ({first_line(exc) or type(exc).__name__}); "
            "if this machine is offline, download it into the Hugging Face cache first"
        ) from None


def inference_placement() -> tuple[str, str]:
    """Where and in which dtype a run's model answers prompts: a CUDA GPU in bfloat16 (float16
    where bfloat16 is only emulated, as on a T4) when there is one, else the CPU in float32."""
    import torch

    if not torch.cuda.is_available():
        return "cpu", "float32"
    return "cuda", "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16"


def load_run_model(
    run_path: Path, *, adapter: bool = True, merge: bool = False, dtype: str = "float32", device: str = "cpu"
) -> tuple[Any, Any]:
    """The run's base model in full precision (never its 4-bit weights) and the run's tokenizer.

    With `adapter` the run's LoRA adapter is applied by peft, and with `merge` it is merged
    into the weights (merge_and_unload). The model is in eval mode on `device`.
    """
    _torch_dtype(dtype)
    adapter_dir = check_adapter(run_path) if adapter else None
    tokenizer = load_tokenizer(run_path)
    model = load_base_model(run_base_model(run_path), dtype)
    if adapter_dir is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(adapter_dir))
        except Exception as exc:  # safetensors, torch and peft each raise their own kind for a bad file
            raise InferenceError(
                f"run {run_path.name} has a broken adapter: {first_line(exc) or type(exc).__name__}"
            ) from None
        if merge:
            model = model.merge_and_unload()
    model.to(device)
    model.eval()
    return model, tokenizer


def stop_token_ids(tokenizer: Any) -> list[int]:
    """The ids that end an answer: the tokenizer's EOS and, when it has one, `<|eot_id|>`."""
    ids = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    eot = tokenizer.get_vocab().get(END_OF_TURN)
    if eot is not None and eot not in ids:
        ids.append(int(eot))
    return ids


def render_prompt(tokenizer: Any, messages: list[dict]) -> str:
    """The conversation as the chat template renders it, ending with the assistant's header."""
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # jinja errors, a template that rejects a role, no template at all
        raise InferenceError(f"the chat template cannot render this conversation: {exc}") from None


def greedy_generate(model: Any, tokenizer: Any, messages: list[dict], max_new_tokens: int) -> Generation:
    """The model's greedy answer to `messages`: only the new tokens, decoded without special tokens."""
    import torch

    prompt = render_prompt(tokenizer, messages)
    # The template writes BOS itself: adding special tokens again would double it.
    encoded = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(model.device)
    stops = stop_token_ids(tokenizer)
    started = time.monotonic()
    with torch.inference_mode():
        output = model.generate(
            **encoded,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0],
        )
    seconds = time.monotonic() - started
    prompt_tokens = int(encoded["input_ids"].shape[1])
    new = [int(token) for token in output[0][prompt_tokens:]]
    if new and new[-1] in stops:
        new = new[:-1]
    return Generation(tokenizer.decode(new, skip_special_tokens=True), new, prompt_tokens, seconds)
