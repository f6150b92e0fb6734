"""The tiny local Llama: a 254k-parameter model with a Llama 3 style tokenizer and chat template.

It is built on this machine in seconds, never downloaded, and drives every CPU training,
evaluation and export test and the CPU smoke preset. Its tokenizer is byte-level BPE with the
Llama 3 pre-tokenizer regex, trained on the bundled sample conversations, and it carries the
Llama 3 special tokens and chat template, so llama.cpp's converter and llama-cpp accept it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from core.store.files import place_new_dir, replace_dir, staging_dir
from core.store.paths import DATA_DIR, cache_dir

log = logging.getLogger(__name__)

TINY_MODEL_ID = "tiny-llama"
TINY_VERSION = 1
VOCAB_SIZE = 2048
SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
)
# Llama 3's pre-tokenizer split: contractions, words, 1-3 digit groups, punctuation, newlines.
LLAMA3_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# The Llama 3 chat template, without the date header of Llama 3.1+.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
SAMPLE_FILE = DATA_DIR / "sample_sharegpt.jsonl"


def tiny_model_dir(sample: Path = SAMPLE_FILE) -> Path:
    """Where the tiny model lives in the cache (built on first use from `sample`'s text)."""
    digest = hashlib.sha256(sample.read_bytes()).hexdigest()[:10]
    return cache_dir() / "models" / f"tiny-llama-v{TINY_VERSION}-{digest}"


def _training_text(sample: Path) -> list[str]:
    texts = []
    for line in sample.read_text(encoding="utf-8").split("\n"):
        try:
            turns = json.loads(line).get("conversations") or []
        except (ValueError, AttributeError):
            continue
        texts.extend(
            turn["value"] for turn in turns if isinstance(turn, dict) and isinstance(turn.get("value"), str)
        )
    return texts


def build_tokenizer(texts: list[str]):
    """A byte-level BPE tokenizer with Llama 3's split, special tokens and chat template."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos = SPECIAL_TOKENS[0]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:4]),
        model_max_length=2048,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_model(tokenizer):
    """A randomly initialised 2-layer Llama sized for q8_0 (rows divisible by 32)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rope_theta=500000.0,
        tie_word_embeddings=True,
        # At the default 0.02 the tied embeddings cap every logit near 1: the loss cannot fall.
        initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def ensure_tiny_model(sample: Path = SAMPLE_FILE) -> Path:
    """The tiny model's folder, built into the cache if it is not there yet.

    The folder is assembled under a temporary name and renamed into place, so a crash
    leaves nothing half-built and two builders do not step on each other.
    """
    target = tiny_model_dir(sample)
    if (target / "config.json").is_file():
        return target
    log.info("building the tiny local model in %s (first use: a few seconds)", target)
    with staging_dir(target) as staging:
        tokenizer = build_tokenizer(_training_text(sample))
        model = build_model(tokenizer)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        # Another builder may have finished first: keep its model; replace anything else there.
        if not place_new_dir(staging, target) and not (target / "config.json").is_file():
            replace_dir(staging, target)
    return target
