"""The owner's lock on shared state, as the pages show it: the sidebar's access panel, and the
check every action that changes shared state makes first (core/access/owner.py says who the
owner is)."""

from __future__ import annotations

import streamlit as st

from core.access.owner import AccessPolicy, LockedOut, PasswordGate, access_policy, is_owner_email
from ui.secrets import app_secrets

UNLOCKED = "owner_unlocked"
OWNER_ONLY = "Only the owner can change runs here: unlock in the sidebar."


@st.cache_resource
def password_gate() -> PasswordGate:
    """The app's one password gate: failed tries count across every session."""
    return PasswordGate()


def policy() -> AccessPolicy:
    """This deploy's access policy, from secrets or the environment."""
    return access_policy(app_secrets())


def is_owner() -> bool:
    """Whether this session may change shared state."""
    current = policy()
    if current.mode == "open":
        return True
    if current.mode == "password":
        return st.session_state.get(UNLOCKED) is True
    user = st.user
    return bool(user.is_logged_in) and is_owner_email(current, user.get("email"), user.get("email_verified"))


def owner_only() -> bool:
    """True when this session may change shared state; otherwise says why not, and the caller
    does nothing. Every action that changes runs, ratings or prompt sets asks first."""
    if is_owner():
        return True
    st.warning(OWNER_ONLY, icon=":material/lock:")
    return False


def unlock(given: str) -> None:
    """Form callback: unlock the session when `given` is the owner password."""
    try:
        unlocked = password_gate().check(policy(), given)
    except LockedOut as exc:
        st.session_state["owner_problem"] = str(exc).capitalize() + "."
        return
    st.session_state[UNLOCKED] = unlocked
    if not unlocked:
        st.session_state["owner_problem"] = "That is not the owner password."


def access_panel() -> None:
    """The sidebar's panel: who may change things on this deploy, and how to become the owner."""
    current = policy()
    with st.sidebar:
        if current.mode == "open":
            st.caption(
                "🔓 Open to everyone: anyone with the link can train, delete and push. "
                "Set PEFT_OWNER_PASSWORD to keep changes to an owner."
            )
        elif is_owner():
            st.caption("🔓 Owner: you can train, evaluate, export, rate and delete.")
            if current.mode == "password":
                st.button(
                    "Lock", key="owner_lock", on_click=lambda: st.session_state.update({UNLOCKED: False})
                )
            elif st.button("Log out", key="owner_logout"):
                st.logout()
        else:
            st.caption(
                "🔒 Browsing: compare runs, read answers and make study cards. Changes need the owner."
            )
            if current.mode == "password":
                with st.form("owner_unlock", border=False):
                    st.text_input("Owner password", type="password", key="owner_password")
                    st.form_submit_button(
                        "Unlock", on_click=lambda: unlock(st.session_state.get("owner_password", ""))
                    )
                if problem := st.session_state.pop("owner_problem", None):
                    st.error(problem)
            elif st.user.is_logged_in:
                st.caption("This login is not one of the owners'.")
                if st.button("Log out", key="owner_logout"):
                    st.logout()
            elif st.button("Log in", key="owner_login"):
                st.login()
