"""The system report: installed stacks, converter lookup and GPU detection."""

import os
import stat

from core.export.converter import CONVERTER_SCRIPT, find_converter
from core.machine.devices import detect_gpus
from core.machine.installed import package_version
from core.machine.system import system_report


def test_dev_environment_has_the_training_stack(runs_root):
    report = system_report(runs_root, gpus=[])
    training = report.capabilities[0]
    assert training.name == "Training stack" and training.available
    assert f"torch {package_version('torch')}" in training.detail
    assert "on the CPU" in training.detail
    assert report.cpu_count >= 1 and report.free_disk_gb is not None


def test_converter_from_a_llama_cpp_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path))
    missing = find_converter()
    assert missing.script is None and "has no convert_hf_to_gguf.py" in missing.explanation
    (tmp_path / CONVERTER_SCRIPT).write_text("# converter\n")
    found = find_converter()
    assert found.script == tmp_path / CONVERTER_SCRIPT
    assert "LLAMA_CPP_DIR" in found.explanation


def test_gpu_detection_parses_nvidia_smi(tmp_path, monkeypatch):
    # No GPU can exist here: a stand-in nvidia-smi prints what the real one prints on an H200.
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA H200, 143771'\necho 'Tesla T4, 15360'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    gpus = detect_gpus()
    assert [(g.name, g.memory_gb) for g in gpus] == [("NVIDIA H200", 140.4), ("Tesla T4", 15.0)]
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert detect_gpus() == []
