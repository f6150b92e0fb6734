"""The transformers + peft backend: runs on CPU and CUDA alike."""

from __future__ import annotations

from typing import Any

from core.train.backends import lora_arguments, prepare_tokenizer, resolve_base_model
from core.train.config import RunConfig
from core.train.distributed import local_rank


def load_model(config: RunConfig, plan: Any) -> tuple[Any, Any]:
    """Base model (4-bit through bitsandbytes when asked) wrapped with a fresh LoRA adapter."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    source = resolve_base_model(config.base_model)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(plan.precision, torch.float32)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if plan.device == "cuda":
        kwargs["device_map"] = {"": local_rank()}  # each process of a distributed run on its own GPU
    if config.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(source), config.chat_template)
    set_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if config.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=plan.gradient_checkpointing)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora_arguments(config)))
    return model, tokenizer
