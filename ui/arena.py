"""The Arena page's parts: the app's model pool, an answer streamed (or shown from this session's
cache) in a column, the vote buttons and the leaderboard."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import streamlit as st

from core import describe
from core.evaluate.arena import (
    MIN_INTERVAL_VOTES,
    AnswerStream,
    ArenaError,
    Contender,
    LeaderRow,
    Side,
    cast_vote,
    stream_answer,
)
from core.models.pool import ModelPool, PoolError, budget_from_environment
from core.store.files import file_stamp
from ui.owner import OWNER_ONLY, is_owner
from ui.text import escape_markdown

ANSWERS = "arena_answers"
MAX_CACHED_ANSWERS = 64
VOTE_CHOICES = {"a": "A is better", "tie": "Tie", "b": "B is better"}


@st.cache_resource
def model_pool() -> ModelPool:
    """The app's loaded models, shared by every session, within $PEFT_ARENA_MEMORY_MB."""
    return ModelPool(budget_from_environment())


def stats_line(answer: AnswerStream) -> str:
    """Tokens (an adapter's streamer gives words or so: "pieces"), time to the first one, their rate
    and the whole answer's time."""
    unit = "pieces" if answer.contender.variant == "adapter" else "tokens"
    first = f"{answer.first_token_s:.2f} s" if answer.first_token_s is not None else "none"
    speed = f"{answer.tokens_per_s:.1f} {unit}/s" if answer.tokens_per_s is not None else f"no {unit}"
    return f"{answer.tokens} {unit} · first token {first} · {speed} · {answer.seconds:.2f} s"


def show_answer(contender: Contender, prompt: str, max_tokens: int) -> AnswerStream | None:
    """The contender's answer in the current column: from this session's cache when it answered this
    prompt already (its file unchanged), else streamed as it is generated; None when it failed."""
    cache: dict = st.session_state.setdefault(ANSWERS, {})
    key = (contender.key, file_stamp(contender.path), prompt, max_tokens)
    st.markdown(f"**{escape_markdown(contender.label)}**")
    answer = cache.get(key)
    if answer is not None:
        st.markdown(escape_markdown(answer.text) or "*(an empty answer)*")
    else:
        try:
            answer = stream_answer(model_pool(), contender, prompt, max_tokens)
            st.write_stream(escape_markdown(piece) for piece in answer)
        except (ArenaError, PoolError) as exc:
            st.error(escape_markdown(exc))
            return None
        cache[key] = answer
        while len(cache) > MAX_CACHED_ANSWERS:
            cache.pop(next(iter(cache)))
    st.caption(stats_line(answer))
    return answer


def store_vote(root: Path, prompt: str, by_label: dict[str, AnswerStream], winner: str) -> None:
    """Button callback: append the vote on the answers picked as A and B (read now: a pick changed
    in the same interaction counts), when this session is the owner's."""
    if not is_owner():
        st.session_state["arena_problem"] = f"The vote was not stored. {OWNER_ONLY}"
        return
    a, b = (by_label[st.session_state[key]] for key in ("arena_a", "arena_b"))
    sides = [Side(x.contender.run, x.contender.variant, x.text) for x in (a, b)]
    try:
        cast_vote(root, prompt, *sides, winner)
    except (OSError, ValueError) as exc:
        st.session_state["arena_problem"] = f"The vote was not stored: {describe(exc)}"
    else:
        st.session_state["arena_voted"] = (
            f"Stored: {VOTE_CHOICES[winner]} ({a.contender.label} vs {b.contender.label})."
        )


def vote_panel(root: Path, prompt: str, answers: Sequence[AnswerStream]) -> None:
    """Pick two of the answers shown (A and B) and vote for the better one, or a tie."""
    by_label = {answer.contender.label: answer for answer in answers}
    labels = list(by_label)
    left, right = st.columns(2)
    a = left.selectbox("Answer A", labels, index=0, key="arena_a")
    b = right.selectbox("Answer B", labels, index=1, key="arena_b")
    if a == b:
        st.info("Pick two different answers to vote on.")
        return
    for column, (winner, text) in zip(st.columns(len(VOTE_CHOICES)), VOTE_CHOICES.items()):
        column.button(
            text,
            key=f"arena_vote_{winner}",
            use_container_width=True,
            on_click=store_vote,
            args=(root, prompt, by_label, winner),
        )
    if problem := st.session_state.pop("arena_problem", None):
        st.warning(escape_markdown(problem), icon=":material/lock:")
    if voted := st.session_state.pop("arena_voted", None):
        st.success(escape_markdown(voted))


def leaderboard_frame(rows: Sequence[LeaderRow]) -> pd.DataFrame:
    """The leaderboard as the page's table."""
    return pd.DataFrame(
        {
            "Run · variant": [row.entry for row in rows],
            "Score": [round(row.score) for row in rows],
            "95% interval": [
                f"{row.low:.0f}-{row.high:.0f}"
                if row.low is not None
                else f"under {MIN_INTERVAL_VOTES} votes"
                for row in rows
            ],
            "Votes": [row.votes for row in rows],
            "Won": [row.wins for row in rows],
            "Lost": [row.losses for row in rows],
            "Tied": [row.ties for row in rows],
        }
    )
