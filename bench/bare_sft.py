"""The baseline arm of bench/training.py: LoRA fine-tuning as a notebook does it, with plain
transformers + peft + trl's SFTTrainer and none of the dashboard's code.

Run: .venv/bin/python bench/bare_sft.py MODEL_DIR DATA_FILE OUTPUT_DIR (bench/training.py runs
it; no target of its own). Trains with SETTINGS (the cpu_smoke preset's; bench/training.py checks that they agree)
and prints, as the last line of stdout, JSON with the wall-clock seconds of every optimizer
step (on_step_end to on_step_end, the first from on_train_begin) and the logged losses.

Answers-only loss: trl's `assistant_only_loss` needs `{% generation %}` markers, which the tiny
model's Llama 3 template lacks; trl adds them only to templates it knows (Llama 3's full one,
not this trimmed copy) and otherwise refuses. So this script does what a notebook
author would: it sets the same template with the markers around each answer and its
`<|eot_id|>`, which renders the same text and puts the same tokens in the loss as our own
masking (the answer and its end-of-turn token, not the header). The script checks that the
text is the same; the token ids and labels of all 300 sample conversations were found equal
to ours when this was written.
"""

from __future__ import annotations

import argparse
import json
import time

SETTINGS = {
    "split": "train",
    "backend": "hf",
    "load_in_4bit": False,
    "chat_template": "model",
    "max_seq_length": 256,
    "lora_r": 16,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "use_rslora": False,
    "batch_size": 2,
    "gradient_accumulation_steps": 4,
    "num_processes": 1,
    "warmup_steps": 5,
    "max_steps": 30,
    "learning_rate": 1e-2,
    "weight_decay": 0.01,
    "lr_scheduler": "linear",
    "optimizer": "adamw_torch",
    "seed": 3407,
    "packing": True,
    "save_steps": 10,
    "save_total_limit": 2,
    "logging_steps": 1,
    "train_on_responses_only": True,
    "precision": "fp32",
    "gradient_checkpointing": False,
}
"""The cpu_smoke preset's settings under RunConfig's names (the model folder and data file come as
arguments), and the backend, optimizer, precision and gradient checkpointing as our training plan
resolves them on a CPU."""

MARKED_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- generation %}{{- message['content'] | trim + '<|eot_id|>' }}{%- endgeneration %}"
    "{%- else %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
"""The tiny model's Llama 3 chat template with `{% generation %}` markers around each answer."""
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def to_messages(row: dict) -> dict:
    """A ShareGPT row's `conversations` as role/content `messages`."""
    return {
        "messages": [{"role": ROLES[turn["from"]], "content": turn["value"]} for turn in row["conversations"]]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir", help="the tiny model's folder")
    parser.add_argument("data_file", help="a ShareGPT .jsonl file")
    parser.add_argument("output_dir", help="where checkpoints and the adapter go")
    args = parser.parse_args()
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        TrainerCallback,
        set_seed,
    )
    from trl import SFTConfig, SFTTrainer

    class StepTimes(TrainerCallback):
        """Wall-clock seconds of each optimizer step, and the logged losses."""

        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.losses: list[float] = []
            self.last = time.perf_counter()

        def on_train_begin(self, args, state, control, **kwargs) -> None:
            self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs) -> None:
            now = time.perf_counter()
            self.seconds.append(now - self.last)
            self.last = now

        def on_log(self, args, state, control, logs=None, **kwargs) -> None:
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])

    dataset = load_dataset("json", data_files=args.data_file, split=SETTINGS["split"])
    dataset = dataset.map(to_messages, remove_columns=dataset.column_names)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    plain = tokenizer.apply_chat_template(dataset[0]["messages"], tokenize=False)
    tokenizer.chat_template = MARKED_TEMPLATE
    if tokenizer.apply_chat_template(dataset[0]["messages"], tokenize=False) != plain:
        raise SystemExit("the marked template renders differently from the model's own")
    set_seed(SETTINGS["seed"])  # the adapter's initialisation too, not only the trainer's data order
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(
            r=SETTINGS["lora_r"],
            lora_alpha=SETTINGS["lora_alpha"],
            lora_dropout=SETTINGS["lora_dropout"],
            target_modules=SETTINGS["target_modules"],
            use_rslora=SETTINGS["use_rslora"],
            bias="none",
            task_type="CAUSAL_LM",
        ),
    )
    times = StepTimes()
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(
            output_dir=args.output_dir,
            per_device_train_batch_size=SETTINGS["batch_size"],
            gradient_accumulation_steps=SETTINGS["gradient_accumulation_steps"],
            warmup_steps=SETTINGS["warmup_steps"],
            max_steps=SETTINGS["max_steps"],
            learning_rate=SETTINGS["learning_rate"],
            weight_decay=SETTINGS["weight_decay"],
            lr_scheduler_type=SETTINGS["lr_scheduler"],
            optim=SETTINGS["optimizer"],
            seed=SETTINGS["seed"],
            max_length=SETTINGS["max_seq_length"],
            packing=SETTINGS["packing"],
            assistant_only_loss=SETTINGS["train_on_responses_only"],
            save_steps=SETTINGS["save_steps"],
            save_total_limit=SETTINGS["save_total_limit"],
            logging_steps=SETTINGS["logging_steps"],
            bf16=SETTINGS["precision"] == "bf16",  # trl's defaults are bf16 and checkpointing on
            fp16=SETTINGS["precision"] == "fp16",
            activation_checkpointing=SETTINGS["gradient_checkpointing"],
            report_to="none",
        ),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[times],
    )
    trainer.train()
    trainer.save_model(f"{args.output_dir}/adapter")
    print(json.dumps({"step_s": times.seconds, "losses": times.losses}))


if __name__ == "__main__":
    main()
