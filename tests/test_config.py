"""RunConfig: the lab notebook's defaults, every field validated, --set typed, presets valid."""

import pytest

from core.train.config import (
    BACKENDS,
    FORM_GROUPS,
    OPTIMIZERS,
    PROJECTION_MODULES,
    SCHEDULERS,
    ConfigError,
    RunConfig,
    apply_overrides,
    default_config,
    field_problem,
    field_specs,
    parse_config,
    set_help,
)
from core.train.presets import PRESETS, PresetError, get_preset, overrides_from


def test_defaults_are_the_lab_notebooks():
    config = RunConfig()
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (16, 16, 0.0)
    assert config.target_modules == PROJECTION_MODULES and len(PROJECTION_MODULES) == 7
    assert (config.batch_size, config.gradient_accumulation_steps, config.warmup_steps) == (2, 4, 5)
    assert (config.learning_rate, config.weight_decay, config.lr_scheduler) == (2e-4, 0.01, "linear")
    assert (config.seed, config.packing, config.max_seq_length) == (3407, False, 1024)  # see below
    assert (config.save_steps, config.save_total_limit, config.optimizer) == (100, 2, "auto")
    assert config.num_processes == 1  # the notebook's one GPU
    assert parse_config({}) == config
    assert parse_config(config.to_dict()) == config


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lora_r", 0, "must be from 1 to 1024 (got 0)"),
        ("lora_r", 8.5, "must be a whole number"),
        ("lora_r", True, "must be a whole number"),
        ("lora_alpha", -1, "from 1 to 4096"),
        ("lora_dropout", 1.0, "from 0 below 1"),
        ("learning_rate", 0, "above 0 to 1"),
        ("learning_rate", float("nan"), "must be a number"),
        ("max_steps", 0, "from 1 to 1000000"),
        ("max_seq_length", 8, "from 16 to 131072"),
        ("batch_size", "2", "must be a whole number"),
        ("split", "train[:ten]", "is not a split"),
        ("split", "train[:150%]", "more than 100%"),
        ("target_modules", [], "non-empty list"),
        ("target_modules", ["q_proj", "q_proj"], "twice"),
        ("target_modules", ["q proj"], "not module names"),
        ("lr_scheduler", "cosine_wild", "must be one of linear"),
        ("optimizer", "adam", "must be one of auto"),
        ("backend", "vllm", "must be one of auto, unsloth, hf"),
        ("packing", "yes", "true or false"),
        ("base_model", "", "is required"),
        ("base_model", "not a model", "is not a Hub model id"),
        ("dataset", "missing/file.jsonl", "no such file"),
        ("dataset", "just-a-name", "neither a Hub dataset id"),
        ("save_total_limit", 0, "from 1 to 1000"),
        ("warmup_steps", -1, "must be from 0 to 1000000 (got -1)"),
        ("warmup_steps", 1_000_001, "must be from 0 to 1000000 (got 1000001)"),
        ("save_steps", 10**20, f"must be from 1 to 1000000 (got {10**20})"),
        ("logging_steps", 0, "must be from 1 to 1000000 (got 0)"),
        ("logging_steps", 2_000_000, "from 1 to 1000000"),
        ("num_processes", 0, "must be from 1 to 64 (got 0)"),
        ("num_processes", 65, "must be from 1 to 64 (got 65)"),
        ("num_processes", 2.0, "must be a whole number"),
    ],
)
def test_a_bad_field_is_reported_by_name(field, value, message):
    with pytest.raises(ConfigError) as caught:
        parse_config({field: value})
    assert set(caught.value.problems) == {field}
    assert message in caught.value.problems[field]
    assert f"{field}: " in str(caught.value)


def test_every_problem_is_reported_at_once_and_unknown_keys_get_a_suggestion():
    with pytest.raises(ConfigError) as caught:
        parse_config({"lora_rank": 8, "max_steps": -1, "warmup_steps": 3})
    problems = caught.value.problems
    assert problems["lora_rank"] == "is not a config field (did you mean lora_r?)"
    assert "max_steps" in problems and "warmup_steps" not in problems  # no cross-check on a bad max_steps
    with pytest.raises(ConfigError, match="warmup_steps: is more than max_steps"):
        parse_config({"max_steps": 3, "warmup_steps": 5})
    with pytest.raises(ConfigError, match="must be a JSON object"):
        parse_config(["not", "a", "dict"])


def test_a_local_dataset_resolves_from_the_project_folder_and_all_linear_is_allowed():
    config = parse_config({"dataset": "data/sample_sharegpt.jsonl", "target_modules": "all-linear"})
    assert config.target_modules == "all-linear"
    assert parse_config({"save_total_limit": None}).save_total_limit is None


@pytest.mark.parametrize("preset", ["t1_baseline", "t2_model_centric", "t3_data_centric", "t4_3b"])
def test_the_lab_presets_train_unpacked_as_the_lab_really_did(preset):
    """The notebook asked for packing=True, but the Unsloth of its day (before 2025-12-09) had no
    packing and dropped the option when given TrainingArguments: T1-T4 trained unpacked."""
    assert parse_config(get_preset(preset).config()).packing is False


def test_set_assignments_are_typed_by_their_field():
    config = apply_overrides(
        default_config(),
        [
            "lora_r=64",
            "learning_rate=1e-4",
            "packing=true",
            "target_modules=q_proj, v_proj",
            "save_total_limit=none",
            "note=a = b",
            "num_processes=2",
        ],
    )
    parsed = parse_config(config)
    assert (parsed.lora_r, parsed.learning_rate, parsed.packing) == (64, 1e-4, True)
    assert parsed.num_processes == 2
    assert parsed.target_modules == ("q_proj", "v_proj")
    assert parsed.save_total_limit is None and parsed.note == "a = b"


@pytest.mark.parametrize(
    ("assignment", "key", "message"),
    [
        ("lora_r", "lora_r", "key=value"),
        ("lora=8", "lora", "did you mean"),
        ("lora_r=eight", "lora_r", "whole number"),
        ("packing=maybe", "packing", "true or false"),
        ("learning_rate=fast", "learning_rate", "a number"),
    ],
)
def test_a_bad_set_assignment_is_refused(assignment, key, message):
    with pytest.raises(ConfigError) as caught:
        apply_overrides(default_config(), [assignment])
    assert message in caught.value.problems[key]


def test_every_preset_is_a_valid_config_and_reproduces_the_lab():
    for preset in PRESETS.values():
        parse_config(preset.config())
    lab = {
        "cpu_smoke",
        "pipeline_test",
        "smoke",
        "t1_baseline",
        "t2_model_centric",
        "t3_data_centric",
        "t4_3b",
    }
    assert lab <= set(PRESETS)
    t3, t4 = get_preset("t3_data_centric").config(), get_preset("t4_3b").config()
    assert (t3["lora_r"], t3["lora_alpha"], t3["split"], t3["max_steps"]) == (64, 64, "train[:30000]", 600)
    assert "3B" in t4["base_model"] and t4["max_steps"] == 400
    assert get_preset("smoke").config()["save_steps"] == 10
    assert get_preset("pipeline_test").config()["split"] == "train[:64]"
    with pytest.raises(PresetError, match="no preset named 'T9'; presets: cpu_smoke"):
        get_preset("T9")


def test_overrides_from_turns_a_base_into_the_config():
    base = get_preset("t1_baseline").config()
    changed = apply_overrides(base, ["lora_r=32", "packing=true", "target_modules=q_proj,v_proj"])
    assignments = overrides_from(changed, base)
    assert assignments == ["lora_r=32", "target_modules=q_proj,v_proj", "packing=true"]
    assert apply_overrides(base, assignments) == changed


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("split", "train\n", "must be one line without control characters (found '\\n' at character 6)"),
        ("base_model", "owner/model\tx", "must be one line without control characters (found '\\t'"),
        ("chat_template", "model\x1b[31m", "found '\\x1b' at character 6"),
        ("dataset", "owner/data\u2028set", "found '\\u2028'"),
        ("note", "red\x1b[0m", "must not hold control characters other than line breaks and tabs (found"),
        ("note", "a\r\nb", "found '\\r'"),
    ],
)
def test_text_with_control_characters_is_refused_even_in_a_stored_config(field, value, message):
    with pytest.raises(ConfigError) as caught:
        parse_config({field: value}, check_files=False)
    assert set(caught.value.problems) == {field}
    assert message in caught.value.problems[field]


def test_a_note_may_hold_line_breaks_and_tabs():
    assert parse_config({"note": "first line\n\tsecond line\n"}).note == "first line\n\tsecond line\n"


def test_field_specs_declare_every_field_once_in_form_order():
    specs = field_specs()
    assert list(specs) == list(default_config())  # the dataclass is declared in form order
    assert {spec.group for spec in specs.values()} == set(FORM_GROUPS)
    groups = [spec.group for spec in specs.values()]
    assert groups == sorted(groups, key=FORM_GROUPS.index)
    assert [specs[name].label for name in ("lora_r", "lr_scheduler", "load_in_4bit", "use_rslora")] == [
        "LoRA rank (r)",
        "Learning-rate schedule",
        "Load the base model in 4-bit",
        "rsLoRA scaling",
    ]
    defaults = RunConfig()
    for name, spec in specs.items():
        assert spec.help and spec.label and spec.default == getattr(defaults, name)
    assert (specs["lora_r"].kind, specs["lora_r"].low, specs["lora_r"].high) == ("whole", 1, 1024)
    assert (specs["lora_dropout"].high_open, specs["learning_rate"].low_open) == (True, True)
    assert specs["lr_scheduler"].choices == SCHEDULERS and specs["optimizer"].choices == OPTIMIZERS
    assert specs["backend"].choices == BACKENDS and specs["target_modules"].kind == "modules"
    assert [name for name, spec in specs.items() if spec.optional] == [
        "recipe",
        "early_stopping_patience",
        "save_total_limit",
        "eval_steps",
    ]
    checking_files = {name for name, spec in specs.items() if spec.checks_files}
    assert checking_files == {"base_model", "dataset", "chat_template"}
    assert specs["note"].kind == "long_text" and specs["warmup_steps"].high == 1_000_000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lora_r", 0),
        ("lora_dropout", 1.0),
        ("learning_rate", 0),
        ("save_total_limit", 0),
        ("packing", "yes"),
        ("split", "train[:ten]"),
        ("dataset", "missing/file.jsonl"),
        ("note", "x" * 2001),
        ("optimizer", "adam"),
    ],
)
def test_field_problem_is_what_parse_config_reports(field, value):
    with pytest.raises(ConfigError) as caught:
        parse_config({field: value})
    assert field_problem(field, value) == caught.value.problems[field]
    assert field_problem(field, default_config()[field]) is None
    assert field_problem("save_total_limit", None) is None
    assert field_problem("lora_rank", 8) == "is not a config field (did you mean lora_r?)"


def test_set_help_lists_every_field_with_its_bounds_choices_and_default():
    text = set_help()
    for name in default_config():
        assert f"  {name}: " in text
    assert "lora_r: a whole number from 1 to 1024; default 16" in text
    assert "lora_dropout: a number from 0 below 1; default 0.0" in text
    assert "save_total_limit: a whole number from 1 to 1000, or none (keep all); default 2" in text
    assert "lr_scheduler: one of " + ", ".join(SCHEDULERS) in text
    assert all(f"\n{group}:\n" in text for group in FORM_GROUPS)
