"""The owner of a deployed dashboard: everyone may browse, compare, read answers and make study
cards; only the owner may change shared state (train, stop, resume, delete, import, evaluate,
export, push, rate, save a prompt set).

The owner is configured by the operator, in Streamlit secrets or the environment:
- `PEFT_OWNER_PASSWORD`: a session is unlocked by typing it (compared in constant time; after
  a few failed tries the form refuses for a while, for every session of the app);
- `PEFT_OWNERS` (comma-separated emails) with Streamlit's own `[auth]` login (OIDC): a session
  logged in with one of those emails is the owner.
With neither, the dashboard is open: every session may act, and Home says so.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core import setting

PASSWORD_SETTING = "PEFT_OWNER_PASSWORD"
OWNERS_SETTING = "PEFT_OWNERS"
AUTH_SECTION = "auth"  # Streamlit's [auth] section in secrets.toml
MAX_FAILURES = 5
LOCKOUT_S = 60.0


@dataclass(frozen=True)
class AccessPolicy:
    """How this deploy tells the owner from everyone else."""

    mode: str  # "open", "password" or "login"
    password: str = field(default="", repr=False)
    owners: frozenset[str] = frozenset()


def owners_from(text: str) -> frozenset[str]:
    """The owners' emails in a comma- or space-separated list, lower-cased."""
    return frozenset(part.strip().lower() for part in text.replace(",", " ").split() if part.strip())


def access_policy(secrets: Mapping[str, Any]) -> AccessPolicy:
    """The policy the operator configured: a login allowlist where Streamlit's [auth] is set up and
    owners are named, else a password where one is set, else open."""
    owners = owners_from(setting(OWNERS_SETTING, secrets))
    if owners and isinstance(secrets.get(AUTH_SECTION), Mapping):
        return AccessPolicy("login", owners=owners)
    password = setting(PASSWORD_SETTING, secrets)
    if password:
        return AccessPolicy("password", password=password)
    return AccessPolicy("open")


def is_owner_email(policy: AccessPolicy, email: object, verified: object = True) -> bool:
    """Whether a logged-in user's email is one of the owners'; an email the identity provider
    says is not verified (`email_verified` false) is nobody's."""
    return verified is not False and isinstance(email, str) and email.strip().lower() in policy.owners


def _digest(text: str) -> bytes:
    """A fixed-length digest of `text`, so that comparing two of them takes the same time
    whatever the lengths."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class LockedOut(Exception):
    """Too many wrong passwords: no try is taken for a while."""

    def __init__(self, wait_s: float):
        self.wait_s = wait_s
        super().__init__(f"too many wrong passwords: try again in {wait_s:.0f} s")


class PasswordGate:
    """Checks owner passwords in constant time and refuses for LOCKOUT_S after MAX_FAILURES
    failures in a row (one gate per app process: every session shares the count)."""

    def __init__(self, max_failures: int = MAX_FAILURES, lockout_s: float = LOCKOUT_S):
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self._failures = 0
        self._locked_until = 0.0
        self._lock = threading.Lock()

    def wait_s(self) -> float:
        """Seconds before another try is taken; 0 when one is."""
        return max(0.0, self._locked_until - time.monotonic())

    def check(self, policy: AccessPolicy, given: str) -> bool:
        """True when `given` is the owner password. Raises LockedOut while tries are refused."""
        with self._lock:
            wait = self.wait_s()
            if wait > 0:
                raise LockedOut(wait)
            good = bool(policy.password) and hmac.compare_digest(_digest(given), _digest(policy.password))
            if good:
                self._failures = 0
                return True
            self._failures += 1
            if self._failures >= self.max_failures:
                self._failures = 0
                self._locked_until = time.monotonic() + self.lockout_s
            return False
