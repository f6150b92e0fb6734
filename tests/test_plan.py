"""How a config trains on a machine: backend choice, CPU guards, trainer and Unsloth arguments.

There is no GPU here, so the CUDA side is covered by passing DeviceFacts describing one
(a Colab T4: CUDA, no bf16); what Unsloth and bitsandbytes then do on a real GPU is not
exercised by these tests.
"""

import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from core.machine.devices import DeviceFacts, PlanError
from core.train.backend_unsloth import from_pretrained_arguments, peft_arguments
from core.train.backends import lora_arguments, named_template
from core.train.config import PROJECTION_MODULES, parse_config
from core.train.plan import build_sft_config, plan_training, sft_arguments
from core.train.presets import get_preset

CPU = DeviceFacts(cuda=False)
T4 = DeviceFacts(cuda=True, bf16=False, gpu_name="Tesla T4", gpu_memory_gb=14.7, unsloth_installed=True)
T4_WITHOUT_UNSLOTH = DeviceFacts(cuda=True, bf16=False, gpu_name="Tesla T4", gpu_memory_gb=14.7)
A100 = DeviceFacts(cuda=True, bf16=True, gpu_name="NVIDIA A100", gpu_memory_gb=40.0, unsloth_installed=True)
TWO_T4 = DeviceFacts(
    cuda=True, bf16=False, gpu_name="Tesla T4", gpu_memory_gb=14.7, gpu_count=2, unsloth_installed=True
)


def lab(**changes):
    return parse_config({**get_preset("t1_baseline").config(), **changes})


def test_auto_picks_unsloth_on_a_gpu_with_unsloth_and_hf_otherwise():
    assert plan_training(lab(), T4).backend == "unsloth"
    assert plan_training(lab(), T4_WITHOUT_UNSLOTH).backend == "hf"
    assert plan_training(lab(backend="hf"), T4).backend == "hf"
    smoke = parse_config(get_preset("cpu_smoke").config())
    plan = plan_training(smoke, CPU)
    assert (plan.backend, plan.device, plan.optimizer, plan.precision) == ("hf", "cpu", "adamw_torch", "fp32")
    assert not plan.gradient_checkpointing and not plan.warnings


def test_gpu_plans_use_the_notebooks_optimizer_and_the_best_precision():
    t4 = plan_training(lab(), T4)
    assert (t4.device, t4.optimizer, t4.precision, t4.gradient_checkpointing) == (
        "cuda",
        "adamw_8bit",
        "fp16",
        True,
    )
    assert plan_training(lab(), A100).precision == "bf16"
    assert plan_training(lab(optimizer="adamw_torch"), T4).optimizer == "adamw_torch"


@pytest.mark.parametrize(
    ("changes", "facts", "message"),
    [
        ({}, CPU, "load_in_4bit needs a CUDA GPU"),
        ({"load_in_4bit": False}, CPU, "is stored in 4-bit and loads only on a CUDA GPU"),
        ({"backend": "unsloth"}, CPU, "the unsloth backend needs a CUDA GPU"),
        ({"backend": "unsloth"}, T4_WITHOUT_UNSLOTH, "needs the unsloth package"),
        (
            {
                "base_model": "meta-llama/Llama-3.2-1B-Instruct",
                "load_in_4bit": False,
                "optimizer": "adamw_8bit",
            },
            CPU,
            "adamw_8bit needs a CUDA GPU",
        ),
        ({"chat_template": "llama-3.1", "backend": "hf"}, T4, "one of Unsloth's named templates"),
    ],
)
def test_configs_that_cannot_run_here_are_refused_with_the_reason(changes, facts, message):
    with pytest.raises(PlanError, match=message):
        plan_training(lab(**changes), facts)


def test_processes_need_a_gpu_each_and_train_on_the_cpu_only_with_a_warning(monkeypatch):
    monkeypatch.setattr("core.train.plan.package_version", lambda name: "2026.10.9")
    plan = plan_training(lab(num_processes=2), TWO_T4)
    assert (plan.backend, plan.processes, plan.warnings) == ("unsloth", 2, ())
    assert plan.to_dict()["processes"] == 2 and plan_training(lab(), TWO_T4).processes == 1
    with pytest.raises(
        PlanError, match="num_processes=3 needs 3 GPUs, one per process, and this machine has 2"
    ):
        plan_training(lab(num_processes=3), TWO_T4)
    smoke = parse_config({**get_preset("cpu_smoke").config(), "num_processes": 2})
    assert plan_training(smoke, CPU).warnings == (
        "no CUDA GPU here: 2 processes train on the CPU (gloo) and share its cores, which tests DDP but is "
        "slower than one process",
    )


@pytest.mark.parametrize("version", ["2025.11.6", "2026.10.8", "not-a-version", None])
def test_an_unsloth_older_than_its_checked_ddp_support_is_refused_for_processes(monkeypatch, version):
    monkeypatch.setattr("core.train.plan.package_version", lambda name: version)
    with pytest.raises(
        PlanError, match=r"trains on one GPU only here: multi-GPU \(DDP\) training needs unsloth>=2026.10.9"
    ):
        plan_training(lab(num_processes=2), TWO_T4)
    assert plan_training(lab(num_processes=2, backend="hf"), TWO_T4).backend == "hf"
    assert plan_training(lab(), TWO_T4).backend == "unsloth"  # one process: any unsloth


def test_a_full_size_model_on_cpu_is_allowed_with_a_warning():
    plan = plan_training(lab(base_model="meta-llama/Llama-3.2-1B-Instruct", load_in_4bit=False), CPU)
    assert plan.device == "cpu" and "very slowly" in plan.warnings[0]


def test_trainer_arguments_carry_the_config_and_the_plan(tmp_path: Path):
    config = lab(max_steps=50, save_steps=10, save_total_limit=None)
    cpu_args = sft_arguments(
        parse_config(get_preset("cpu_smoke").config()),
        plan_training(parse_config(get_preset("cpu_smoke").config()), CPU),
        tmp_path,
        progress_bar=False,
    )
    assert cpu_args["use_cpu"] and not cpu_args["bf16"] and not cpu_args["fp16"]
    assert cpu_args["ddp_find_unused_parameters"] is False  # every LoRA parameter gets a gradient
    assert not cpu_args["gradient_checkpointing"] and cpu_args["disable_tqdm"]
    gpu_args = sft_arguments(config, plan_training(config, T4), tmp_path, progress_bar=True)
    expected = {
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 4,
        "warmup_steps": 5,
        "max_steps": 50,
        "learning_rate": 2e-4,
        "weight_decay": 0.01,
        "lr_scheduler_type": "linear",
        "optim": "adamw_8bit",
        "seed": 3407,
        "max_length": 1024,
        "packing": False,
        "save_steps": 10,
        "save_total_limit": None,
        "fp16": True,
        "bf16": False,
        "use_cpu": False,
        "output_dir": str(tmp_path),
        "report_to": "none",
    }
    assert {key: gpu_args[key] for key in expected} == expected
    assert gpu_args[
        "gradient_checkpointing"
    ]  # Unsloth's trainer hands it to for_training(); off would undo it
    hf_args = sft_arguments(
        lab(backend="hf"), plan_training(lab(backend="hf"), T4), tmp_path, progress_bar=True
    )
    assert hf_args["gradient_checkpointing"]


def test_trainer_arguments_are_accepted_by_the_installed_trl(tmp_path: Path):
    config = parse_config(get_preset("cpu_smoke").config())
    arguments = sft_arguments(config, plan_training(config, CPU), tmp_path, progress_bar=False)
    sft = build_sft_config(arguments)
    assert (sft.max_length, sft.packing, sft.use_cpu, sft.max_steps) == (256, True, True, 30)
    assert not sft.gradient_checkpointing


def test_unsloth_arguments_are_the_lab_notebooks():
    config = lab(lora_r=64, lora_alpha=64)
    assert from_pretrained_arguments(config) == {
        "model_name": "unsloth/Llama-3.2-1B-Instruct-bnb-4bit",
        "max_seq_length": 1024,
        "dtype": None,
        "load_in_4bit": True,
    }
    assert peft_arguments(config) == {
        "r": 64,
        "lora_alpha": 64,
        "lora_dropout": 0.0,
        "target_modules": list(PROJECTION_MODULES),
        "use_rslora": False,
        "bias": "none",
        "use_gradient_checkpointing": "unsloth",
        "random_state": 3407,
        "loftq_config": None,
    }
    assert lora_arguments(lab(target_modules="all-linear"))["target_modules"] == "all-linear"


def test_the_lora_arguments_build_a_peft_lora_config():
    from peft import LoraConfig

    lora = LoraConfig(task_type="CAUSAL_LM", **lora_arguments(lab(use_rslora=True, lora_dropout=0.05)))
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.use_rslora) == (16, 16, 0.05, True)
    assert set(lora.target_modules) == set(PROJECTION_MODULES)


def test_named_templates_are_told_apart_from_the_models_own_and_files():
    assert named_template("model") is None
    assert named_template("templates/mine.jinja") is None
    assert named_template("llama-3.1") == "llama-3.1"


def test_a_t4_is_not_taken_for_a_bf16_gpu(monkeypatch):
    """A T4 only emulates bf16; torch says yes unless asked for native support (faked: no GPU here)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda index: SimpleNamespace(name="Tesla T4", total_memory=15 * 1024**3),
    )
    from core.machine.devices import detect_device

    detect_device.cache_clear()
    facts = detect_device("hf")
    detect_device.cache_clear()
    assert (facts.cuda, facts.bf16, facts.gpu_name, facts.gpu_memory_gb) == (True, False, "Tesla T4", 15.0)
    assert plan_training(lab(backend="hf"), facts).precision == "fp16"


def test_a_broken_unsloth_install_falls_back_to_hf_with_a_warning():
    broken = DeviceFacts(
        cuda=True, gpu_name="Tesla T4", unsloth_installed=True, unsloth_error="ImportError: no triton"
    )
    plan = plan_training(lab(), broken)
    assert plan.backend == "hf" and "unsloth does not import (ImportError: no triton)" in plan.warnings[0]
    with pytest.raises(PlanError, match="installed but does not import"):
        plan_training(lab(backend="unsloth"), broken)


def test_unsloth_gets_module_names_for_all_linear():
    assert peft_arguments(lab(target_modules="all-linear"))["target_modules"] == list(PROJECTION_MODULES)


def test_the_unsloth_backend_drives_fast_language_model_as_the_notebook_does(monkeypatch, tiny_model):
    """unsloth cannot run without a GPU, so a stand-in module records the calls; the tokenizer is real."""
    from transformers import AutoTokenizer

    from core.train.backends import load_model

    calls = []
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**kwargs):
            calls.append(("from_pretrained", kwargs))
            return "base model", tokenizer

        @staticmethod
        def get_peft_model(model, **kwargs):
            calls.append(("get_peft_model", model, kwargs))
            return "lora model"

    def get_chat_template(tok, chat_template):
        calls.append(("get_chat_template", chat_template))
        return tok

    unsloth = ModuleType("unsloth")
    unsloth.FastLanguageModel = FastLanguageModel
    templates = ModuleType("unsloth.chat_templates")
    templates.get_chat_template = get_chat_template
    monkeypatch.setitem(sys.modules, "unsloth", unsloth)
    monkeypatch.setitem(sys.modules, "unsloth.chat_templates", templates)

    config = lab(lora_r=64, lora_alpha=64, chat_template="llama-3.1")
    model, tok = load_model(config, plan_training(config, T4))
    assert (model, tok) == ("lora model", tokenizer)
    assert [call[0] for call in calls] == ["from_pretrained", "get_chat_template", "get_peft_model"]
    assert calls[0][1] == from_pretrained_arguments(config) and calls[1][1] == "llama-3.1"
    assert calls[2][1:] == ("base model", peft_arguments(config))
    assert tok.pad_token == "<|finetune_right_pad_id|>"


@pytest.mark.parametrize(
    "precision, trainable_dtype", [("fp16", "torch.float32"), ("bf16", "torch.bfloat16")]
)
def test_fp16_training_gets_float32_adapters_after_trl_casts_a_quantized_models_to_bf16(
    tmp_path: Path, tiny_model, precision, trainable_dtype
):
    """trl casts a 4-bit model's trainable parameters to bf16 when the trainer is built; fp16
    loss scaling cannot unscale bf16 gradients (a T4's first optimizer step died), so fp16
    training casts them back. The trainer is real; the 4-bit flag is faked (bitsandbytes'
    4-bit needs a GPU), and it makes trl cast: without the rule the adapters stay bf16."""
    from core.train.backend_hf import load_model
    from core.train.plan import TrainingPlan
    from core.train.training import build_trainer

    config = parse_config(get_preset("cpu_smoke").config())
    plan = TrainingPlan("hf", "cpu", "adamw_torch", precision, gradient_checkpointing=False)
    model, tokenizer = load_model(config, plan_training(config, CPU))
    model.get_base_model().is_loaded_in_4bit = True  # what bitsandbytes sets on a GPU
    rows = [{"input_ids": tokenizer("a short example")["input_ids"]}] * 4
    trainer = build_trainer(model, tokenizer, rows, config, plan, tmp_path, [])
    trainable = {str(p.dtype) for p in trainer.model.parameters() if p.requires_grad}
    assert trainable == {trainable_dtype}


STANDIN_SITE = """
import atexit, json, os, sys
from types import SimpleNamespace

import torch

calls = []


def noted(name, answer):
    def call(*args, **kwargs):
        calls.append(name)
        return answer(*args, **kwargs)

    return call


torch.cuda.is_available = lambda: True
torch.cuda.get_device_properties = noted(
    "get_device_properties", lambda index: SimpleNamespace(name="Tesla T4", total_memory=15 * 1024**3)
)
torch.cuda.is_bf16_supported = noted("is_bf16_supported", lambda including_emulation=True: including_emulation)
torch.cuda.standin_calls = calls


def record(**fields):
    with open(os.environ["STANDIN_RECORD"], "a") as out:
        out.write(json.dumps({"pid": os.getpid(), **fields}) + "\\n")


torch.cuda.standin_record = record
atexit.register(lambda: record(event="exit", unsloth_loaded="unsloth" in sys.modules))
"""
STANDIN_UNSLOTH = """
import os, sys

import torch

torch.cuda.standin_record(
    event="import unsloth",
    cuda_calls_before=list(torch.cuda.standin_calls),
    loaded_before=sorted(m for m in ("transformers", "trl", "peft", "datasets") if m in sys.modules),
)
if os.environ.get("STANDIN_UNSLOTH_FAILS"):
    raise ImportError("the stand-in unsloth does not import")
"""


@pytest.fixture
def gpu_standin(tmp_path: Path) -> Path:
    """A site folder that makes torch report a T4 (no GPU here) and holds a stand-in unsloth
    package (the real one needs a GPU) that records, when imported, which CUDA calls and
    which training libraries came before it."""
    site = tmp_path / "site"
    (site / "unsloth").mkdir(parents=True)
    (site / "sitecustomize.py").write_text(STANDIN_SITE)
    (site / "unsloth" / "__init__.py").write_text(STANDIN_UNSLOTH)
    info = site / "unsloth-2026.10.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: unsloth\nVersion: 2026.10.9\n")
    return site


def plan_in_a_job_process(site: Path, tmp_path: Path, backend: str, *, unsloth_fails: bool = False):
    """`python -m core train --dry-run` for the lab's T1 on the stand-in T4: its plan (or error)
    and the records of every process that imported the stand-in unsloth."""
    import json
    import os
    import subprocess

    record = tmp_path / "record.jsonl"
    record.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(site), "STANDIN_RECORD": str(record), "OMP_NUM_THREADS": "1"}
    if unsloth_fails:
        env["STANDIN_UNSLOTH_FAILS"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "core", "--runs-dir", str(tmp_path / "runs"), "train", "t1"]
        + ["--preset", "t1_baseline", "--set", f"backend={backend}", "--dry-run"],
        cwd=Path(__file__).parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    job = [line for line in lines if line["event"] == "exit"][-1]  # the command ends last
    imports = [line for line in lines if line["event"] == "import unsloth"]
    return result, job, imports


def test_unsloth_is_imported_in_the_job_before_cuda_starts_and_before_the_training_libraries(
    gpu_standin: Path, tmp_path: Path
):
    import json

    result, job, imports = plan_in_a_job_process(gpu_standin, tmp_path, "unsloth")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["plan"]["backend"] == "unsloth"
    assert job["unsloth_loaded"] and [i["pid"] for i in imports] == [job["pid"]]
    assert imports[0]["cuda_calls_before"] == [] and imports[0]["loaded_before"] == []


def test_auto_checks_unsloth_in_another_process_and_imports_it_only_when_it_is_used(
    gpu_standin: Path, tmp_path: Path
):
    import json

    result, job, imports = plan_in_a_job_process(gpu_standin, tmp_path, "auto")
    assert json.loads(result.stdout)["plan"]["backend"] == "unsloth"
    assert [i["pid"] == job["pid"] for i in imports] == [False, True]  # the check, then the job's own
    assert imports[1]["cuda_calls_before"] == [] and imports[1]["loaded_before"] == []

    result, job, imports = plan_in_a_job_process(gpu_standin, tmp_path, "auto", unsloth_fails=True)
    plan = json.loads(result.stdout)["plan"]
    assert plan["backend"] == "hf" and "the stand-in unsloth does not import" in plan["warnings"][0]
    assert not job["unsloth_loaded"] and [i["pid"] == job["pid"] for i in imports] == [False]


def test_the_hf_backend_on_a_gpu_never_imports_unsloth(gpu_standin: Path, tmp_path: Path):
    """An hf run is plain transformers + peft + trl: unsloth would replace trl's SFTTrainer."""
    import json

    result, job, imports = plan_in_a_job_process(gpu_standin, tmp_path, "hf")
    assert json.loads(result.stdout)["plan"]["backend"] == "hf"
    assert not job["unsloth_loaded"] and imports == []


def test_a_broken_unsloth_stops_an_unsloth_run_with_the_reason(gpu_standin: Path, tmp_path: Path):
    result, job, imports = plan_in_a_job_process(gpu_standin, tmp_path, "unsloth", unsloth_fails=True)
    assert result.returncode != 0 and "the stand-in unsloth does not import" in result.stderr
