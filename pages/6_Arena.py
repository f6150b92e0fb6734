"""Arena: one prompt, several runs' variants answering side by side as they stream; a vote for the
better of two answers feeds a leaderboard across runs and a preference dataset for DPO."""

import streamlit as st

from core.evaluate.arena import (
    DEFAULT_MAX_TOKENS,
    MAX_TOKENS_LIMIT,
    adapter_capability,
    contenders,
    leaderboard,
    preference_jsonl,
    read_votes,
)
from core.evaluate.prompt_sets import MAX_PROMPT_CHARS, list_prompt_sets
from core.machine.system import llama_cpp_capability
from core.store.files import FileProblem
from core.store.paths import runs_root
from ui.arena import leaderboard_frame, show_answer, vote_panel
from ui.owner import access_panel, is_owner
from ui.text import escape_markdown

TYPED = "Type a prompt"

st.set_page_config(page_title="Arena · PEFT Dashboard", page_icon="🧪", layout="wide")
access_panel()
root = runs_root()
state = st.session_state
st.title("Arena")
st.caption(
    "Runs' variants answer the same prompt side by side (greedy, as evaluations answer); vote for the "
    "better of two. Votes rank the variants across runs and download as a preference dataset for DPO."
)

gguf_ready, adapters = llama_cpp_capability(), adapter_capability()
if not gguf_ready.available:
    st.warning(f"GGUF files cannot answer here: {escape_markdown(gguf_ready.detail)}.")
if not adapters.available:
    st.info(f"Adapters cannot answer here ({escape_markdown(adapters.detail)}); exported GGUF files can.")

owner = is_owner()
if adapters.available and not owner:  # a base model in transformers in this process: the owner's call
    st.caption(
        "Adapters answer for the owner only (unlock in the sidebar); exported GGUF files answer for anyone."
    )
offered = {c.label: c for c in contenders(root, adapters=adapters.available and owner)}
if not offered:
    st.info("No run has an exported GGUF file or an adapter yet: export a run on its Run page first.")
chosen = st.multiselect(
    "Variants",
    list(offered),
    default=list(offered)[:2],
    key="arena_variants",
    help="GGUF files run in llama-cpp on the CPU; adapters in transformers on their base model.",
)

sets = {entry.name: entry.prompt_set for entry in list_prompt_sets(root) if entry.prompt_set}
source, pick = st.columns(2)
set_name = source.selectbox("Prompt from", [TYPED, *sets], key="arena_set")
from_set = None
if set_name != TYPED:
    prompts = {p.id: p.prompt for p in sets[set_name].prompts}
    from_set = prompts[pick.selectbox("Prompt of the set", list(prompts), key="arena_prompt_id")]
with st.form("arena_ask"):
    if from_set is None:
        typed = st.text_area("Prompt", max_chars=MAX_PROMPT_CHARS, key="arena_typed")
    else:
        st.caption(escape_markdown(from_set))
    max_tokens = st.number_input(
        "New tokens at most", 1, MAX_TOKENS_LIMIT, DEFAULT_MAX_TOKENS, key="arena_tokens"
    )
    asked = st.form_submit_button("Ask", type="primary", key="arena_ask")
if asked:
    state["arena_asked"] = typed if from_set is None else from_set
    state["arena_max_tokens"] = int(max_tokens)

prompt = state.get("arena_asked", "")
if prompt.strip() and chosen:
    st.subheader("Answers")
    st.caption(escape_markdown(prompt))
    answers = []
    for column, label in zip(st.columns(len(chosen)), chosen):
        with column:
            answer = show_answer(offered[label], prompt, state["arena_max_tokens"])
        if answer is not None:
            answers.append(answer)
    if len(answers) >= 2:
        st.subheader("Vote")
        vote_panel(root, prompt, answers)
elif asked:
    st.warning("Type a prompt (or pick one from a set) and choose at least one variant.")

st.subheader("Leaderboard")
try:
    votes, skipped = read_votes(root)
except FileProblem as exc:
    st.error(f"The votes cannot be read: {escape_markdown(exc)}")
    st.stop()
if skipped:
    st.warning(
        f"{skipped} line(s) of the votes file are not valid votes (torn or altered) and are not counted."
    )
if not votes:
    st.caption("No votes yet.")
    st.stop()
st.caption(
    "Bradley-Terry scores on the Elo scale (1000: an entry with even results), with 95% bootstrap intervals over "
    "the votes; a tie counts half a win for each side."
)
st.dataframe(leaderboard_frame(leaderboard(votes)), hide_index=True, key="arena_leaderboard")
st.download_button(
    "Download the preference dataset (JSONL)",
    preference_jsonl(votes),
    file_name="arena_preferences.jsonl",
    mime="application/jsonl",
    help="prompt, chosen and rejected in trl's conversational format (DPOTrainer reads it); ties left out.",
)
