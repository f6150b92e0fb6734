"""The Unsloth backend: FastLanguageModel with the lab notebook's settings (CUDA only).

Unsloth patches transformers and trl when it is imported, so the job has imported it already,
before CUDA started and before the rest of the training stack (detect_device).
"""

from __future__ import annotations

from typing import Any

from core.train.backends import (
    lora_arguments,
    named_template,
    prepare_tokenizer,
    resolve_base_model,
)
from core.train.config import PROJECTION_MODULES, RunConfig


def from_pretrained_arguments(config: RunConfig) -> dict[str, Any]:
    """Keyword arguments of FastLanguageModel.from_pretrained (dtype None: Unsloth picks)."""
    return {
        "model_name": resolve_base_model(config.base_model),
        "max_seq_length": config.max_seq_length,
        "dtype": None,
        "load_in_4bit": config.load_in_4bit,
    }


def peft_arguments(config: RunConfig) -> dict[str, Any]:
    """Keyword arguments of FastLanguageModel.get_peft_model, as in the lab notebook.

    Unsloth iterates over target_modules, so "all-linear" becomes the projection modules it
    means on a Llama.
    """
    arguments = {
        **lora_arguments(config),
        "use_gradient_checkpointing": "unsloth",
        "random_state": config.seed,
        "loftq_config": None,
    }
    if arguments["target_modules"] == "all-linear":
        arguments["target_modules"] = list(PROJECTION_MODULES)
    return arguments


def load_model(config: RunConfig, plan: Any) -> tuple[Any, Any]:
    """The 4-bit (or 16-bit) base model with Unsloth's LoRA and chat template helpers."""
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(**from_pretrained_arguments(config))
    name = named_template(config.chat_template)
    if name is not None:
        from unsloth.chat_templates import get_chat_template

        tokenizer = get_chat_template(tokenizer, chat_template=name)
    tokenizer = prepare_tokenizer(tokenizer, config.chat_template)
    model = FastLanguageModel.get_peft_model(model, **peft_arguments(config))
    return model, tokenizer
