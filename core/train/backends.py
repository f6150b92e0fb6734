"""Model loading backends behind one interface: `load_model(config, plan)` gives a LoRA-wrapped
model and its tokenizer, ready for trl's SFTTrainer.

`hf` is transformers + peft and runs anywhere; `unsloth` is Unsloth's FastLanguageModel and
needs a CUDA GPU. The job imports unsloth only when the run uses it, first of the training
stack (core.machine.devices.detect_device); an hf run never imports it.
"""

from __future__ import annotations

from typing import Any

from core.train.config import MODEL_TEMPLATE, RunConfig, resolve_local_file
from core.train.tiny import TINY_MODEL_ID, ensure_tiny_model

PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<pad>", "[PAD]")


class BackendError(RuntimeError):
    """A model or tokenizer that cannot be prepared for training as configured."""


def lora_arguments(config: RunConfig) -> dict[str, Any]:
    """LoRA settings under the names both peft's LoraConfig and Unsloth's get_peft_model take."""
    modules = config.target_modules
    return {
        "r": config.lora_r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": "all-linear" if modules == "all-linear" else list(modules),
        "use_rslora": config.use_rslora,
        "bias": "none",
    }


def resolve_base_model(spec: str) -> str:
    """What to pass to from_pretrained: the tiny model's folder (built if needed) or `spec`."""
    return str(ensure_tiny_model()) if spec == TINY_MODEL_ID else spec


def template_file_text(chat_template: str) -> str | None:
    """The text of a .jinja chat template file, or None for 'model' and named templates."""
    if not chat_template.endswith(".jinja"):
        return None
    path = resolve_local_file(chat_template)
    if path is None:
        raise BackendError(f"chat template file not found: {chat_template}")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BackendError(f"cannot read chat template {chat_template}: {exc}") from None


def named_template(chat_template: str) -> str | None:
    """The Unsloth template name `chat_template` gives (not 'model', not a .jinja file), or None."""
    if chat_template == MODEL_TEMPLATE or chat_template.endswith(".jinja"):
        return None
    return chat_template


def prepare_tokenizer(tokenizer: Any, chat_template: str) -> Any:
    """Give the tokenizer the configured template and a pad token distinct from EOS."""
    text = template_file_text(chat_template)
    if text is not None:
        tokenizer.chat_template = text
    if not getattr(tokenizer, "chat_template", None):
        raise BackendError(
            "the base model's tokenizer has no chat template; set chat_template to a .jinja file"
        )
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        vocab = tokenizer.get_vocab()
        pad = next((token for token in PAD_CANDIDATES if token in vocab), None)
        tokenizer.pad_token = pad or tokenizer.eos_token
    return tokenizer


def load_model(config: RunConfig, plan: Any) -> tuple[Any, Any]:
    """The LoRA-wrapped model and tokenizer from the backend the plan chose."""
    if plan.backend == "unsloth":
        from core.train import backend_unsloth

        return backend_unsloth.load_model(config, plan)
    from core.train import backend_hf

    return backend_hf.load_model(config, plan)
