"""The Run page's Evaluate panel: answer a prompt set with a variant of the run, as a job."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core import MISSING
from core.evaluate.answers import (
    DEFAULT_MAX_NEW_TOKENS,
    MAX_NEW_TOKENS_LIMIT,
    EvalError,
    check_request,
    find_prompt,
    load_eval_results,
    try_answer,
    variant_summaries,
)
from core.evaluate.checks import CHECK_MARKS, MAX_ANSWER_CHARS
from core.evaluate.prompt_sets import PromptSet, PromptSetError, list_prompt_sets, save_prompt_set
from core.evaluate.sandbox import code_check_isolation
from core.jobs.lifecycle import start_job
from core.store.runs import run_gguf_files
from ui.answers import VERDICT_WORDS, check_lines
from ui.jobs import act, job_panel
from ui.owner import owner_only
from ui.text import escape_markdown

SUMMARY_COLUMNS = {
    "variant": "Variant",
    "prompt_set": "Prompt set",
    "passed": "Answers",
    "mean_latency_s": "Mean latency (s)",
    "evaluated": "Evaluated",
}


def evaluate_panel(root: Path, path: Path, models_here: bool) -> None:
    """Start an evaluation, follow it, list the results, add a prompt set, try an answer."""
    st.markdown("#### Evaluate")
    st.caption(
        "Greedy answers to a prompt set, checked automatically; compare them side by side on **Compare**."
    )
    isolation = code_check_isolation()
    if isolation.kind == "bwrap":
        st.caption(f"Code checks: {isolation.description}.")
    else:
        st.warning(f"Code checks: {escape_markdown(isolation.description)}.", icon=":material/shield:")
    view = job_panel(path, "eval", "Evaluation")
    ggufs = run_gguf_files(path)
    variants = [*(["adapter", "base"] if models_here else []), *(f"gguf:{gguf.name}" for gguf in ggufs)]
    if not models_here:
        st.info(
            "The adapter and the base model need the training stack (torch, transformers, peft), which this "
            "installation lacks; exported GGUF files can be evaluated here."
        )
    sets = list_prompt_sets(root)
    if variants:
        columns = st.columns(3)
        variant = columns[0].selectbox(
            "Answer with",
            variants,
            key="eval_variant",
            help="the run's adapter on its base model, the base model alone, or an exported GGUF",
        )
        prompt_set = columns[1].selectbox(
            "Prompt set", [entry.name for entry in sets if entry.prompt_set], key="eval_prompt_set"
        )
        max_new_tokens = columns[2].number_input(
            "Max new tokens", 1, MAX_NEW_TOKENS_LIMIT, DEFAULT_MAX_NEW_TOKENS, key="eval_max_new_tokens"
        )
        for entry in sets:
            if entry.problem:
                st.warning(
                    f"Prompt set {escape_markdown(entry.name)} cannot be used: {escape_markdown(entry.problem)}"
                )
        if st.button("Evaluate", disabled=view.active, key="eval_start"):
            try:
                check_request(path, variant, int(max_new_tokens))
            except (EvalError, PromptSetError) as exc:
                st.error(escape_markdown(exc))
            else:
                act(
                    lambda: start_job(
                        path,
                        "eval",
                        [
                            "--variant",
                            variant,
                            "--prompts",
                            prompt_set,
                            "--max-new-tokens",
                            str(int(max_new_tokens)),
                        ],
                    )
                )
    results = load_eval_results(path)
    if results:
        st.dataframe(
            pd.DataFrame(variant_summaries(results), columns=list(SUMMARY_COLUMNS)).rename(
                columns=SUMMARY_COLUMNS
            ),
            hide_index=True,
            placeholder=MISSING,
        )
    with st.expander("Add a prompt set"):
        st.caption(
            "JSON in the schema of data/eval_prompts.json: a name, a title and prompts with their checks."
        )
        upload = st.file_uploader("Prompt set (.json)", type=["json"], key="eval_upload")
        set_name = st.text_input("Save as", key="eval_set_name", placeholder="my_prompts")
        if st.button("Save prompt set", key="eval_save_set") and upload is not None and owner_only():
            try:
                saved = save_prompt_set(root, set_name, upload.getvalue().decode("utf-8-sig"))
            except (PromptSetError, UnicodeDecodeError) as exc:
                st.error(f"Not saved: {escape_markdown(exc)}")
            else:
                st.success(f"Saved {escape_markdown(set_name)}: {len(saved.prompts)} prompts.")
    try_answer_box([entry.prompt_set for entry in sets if entry.prompt_set])


def try_answer_box(prompt_sets: list[PromptSet]) -> None:
    """Pick a prompt set and a prompt, paste an answer, see each check's verdict and detail."""
    with st.expander("Try an answer"):
        st.caption(
            "Runs a prompt's checks on an answer you paste, as an evaluation would "
            "(`python -m core check PROMPT_ID ANSWER` on the command line)."
        )
        columns = st.columns(2)
        by_name = {prompt_set.name: prompt_set for prompt_set in prompt_sets}
        prompt_set = by_name[columns[0].selectbox("Prompt set", list(by_name), key="try_set")]
        ids = [p.id for p in prompt_set.prompts]
        if st.session_state.get("try_prompt") not in ids:  # a prompt of the set picked before: start over
            st.session_state.pop("try_prompt", None)
        prompt = find_prompt(prompt_set, columns[1].selectbox("Prompt", ids, key="try_prompt"))
        st.caption(escape_markdown(prompt.prompt))
        answer = st.text_area("Answer", key="try_answer", max_chars=MAX_ANSWER_CHARS)
        runs_code = any(spec["type"] == "python_function" for spec in prompt.checks)
        if not st.button("Check the answer", key="try_check") or (runs_code and not owner_only()):
            return
        try:
            result = try_answer(prompt, answer)
        except EvalError as exc:
            st.error(escape_markdown(exc))
            return
        st.markdown(f"**{CHECK_MARKS[result['verdict']]} {VERDICT_WORDS[result['verdict']]}**")
        st.markdown(check_lines(result["checks"]))
