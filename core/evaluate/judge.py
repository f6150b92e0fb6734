"""A pairwise judge: an OpenAI-compatible chat endpoint compares two variants' answers, prompt by prompt.

The answers are those the two variants gave in their evaluations (`<run>/eval/<variant>.jsonl`),
so both answered the same prompts the same way. Each prompt is put to the judge twice, once with
each answer first (position swap). A verdict counts only when both orders agree; otherwise the
prompt is a tie, and so is a reply that is not a verdict. The rubric is a text file users edit
(data/judge_rubric.md by default). The win rate counts a tie as half a win, with a 95% bootstrap
interval over prompts; where the person rated both answers of a prompt (ratings.json), the judge's
agreement with those ratings says how far to trust it. The endpoint is any server that speaks
the chat completions API: a local llama.cpp server, Ollama or a hosted API (key from the
environment or the app's secrets, never from a file in a run folder).
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.evaluate.answers import load_eval_results, parse_variant
from core.evaluate.ratings import is_rating, load_ratings, rating_applies
from core.store.files import FileProblem, finite_number, read_capped, read_json_object, write_json_atomic
from core.store.paths import DATA_DIR
from core.store.runs import EVAL_DIR, now_iso

DEFAULT_RUBRIC = DATA_DIR / "judge_rubric.md"
MAX_RUBRIC_BYTES = 64 << 10
MAX_REPLY_CHARS = 4000
BOOTSTRAP_SAMPLES = 2000
KEY_SETTING = "JUDGE_API_KEY"  # in the environment or the app's secrets; OPENAI_API_KEY is taken too
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"reason": {"type": "string"}, "winner": {"type": "string", "enum": ["1", "2", "tie"]}},
    "required": ["reason", "winner"],
}
A, B, TIE = "A", "B", "tie"


class JudgeError(ValueError):
    """A judgement that cannot be made (no answers, an unreachable endpoint); the message says why."""


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a run and the variant whose answers it offers."""

    run_path: Path
    variant: str  # as the command line names it: adapter, base, gguf:FILE

    @property
    def label(self) -> str:
        return f"{self.run_path.name}:{self.variant}"


def read_rubric(path: Path = DEFAULT_RUBRIC) -> str:
    """The rubric's text; JudgeError when it cannot be read."""
    try:
        text = read_capped(path, MAX_RUBRIC_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JudgeError(f"cannot read the rubric {path}: {exc}") from None
    if not text.strip():
        raise JudgeError(f"the rubric {path} is empty")
    return text


def paired_answers(first: Side, second: Side) -> list[dict[str, str]]:
    """The prompts both sides answered in their evaluations: id, prompt, and each side's answer."""

    def answers(side: Side) -> dict[str, dict[str, Any]]:
        variant = parse_variant(side.run_path, side.variant)
        rows = load_eval_results(side.run_path).get(variant.file_name)
        if not rows:
            raise JudgeError(
                f"{side.label} has no evaluation: run python -m core eval {side.run_path.name} --variant {side.variant}"
            )
        return {row["prompt_id"]: row for row in rows if isinstance(row.get("answer"), str)}

    left, right = answers(first), answers(second)
    pairs = [
        {
            "id": prompt_id,
            "prompt": str(row.get("prompt", "")),
            "a": row["answer"],
            "b": right[prompt_id]["answer"],
        }
        for prompt_id, row in left.items()
        if prompt_id in right
    ]
    if not pairs:
        raise JudgeError(f"{first.label} and {second.label} answered no prompt in common")
    return pairs


def judge_messages(rubric: str, prompt: str, first: str, second: str) -> list[dict[str, str]]:
    """The chat that asks the judge which of two answers is better."""
    return [
        {"role": "system", "content": rubric.strip()},
        {
            "role": "user",
            "content": (
                f"[Question]\n{prompt}\n\n[Answer 1]\n{first}\n\n[Answer 2]\n{second}\n\n"
                'Reply with JSON only: {"reason": "<one sentence>", "winner": "1" | "2" | "tie"}'
            ),
        },
    ]


def read_verdict(reply: str) -> tuple[str | None, str]:
    """The winner ("1", "2", "tie", or None when the reply is not a verdict) and the reason."""
    match = re.search(r"\{.*\}", reply, re.S)
    try:
        data = json.loads(match[0]) if match else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return None, reply.strip()[:MAX_REPLY_CHARS]
    winner = str(data.get("winner", "")).strip().lower()
    reason = str(data.get("reason", "")).strip()[:MAX_REPLY_CHARS]
    return (winner if winner in ("1", "2", "tie") else None), reason


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise urllib.error.HTTPError(req.full_url, code, f"redirected to {newurl}: refused", headers, fp)


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects)
MAX_RESPONSE_BYTES = 1 << 20


class ChatEndpoint:
    """An OpenAI-compatible chat completions endpoint (base URL such as http://127.0.0.1:8080/v1)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 120.0):
        if not re.fullmatch(r"https?://[^\s/$.?#][^\s]*", base_url):
            raise JudgeError(f"{base_url!r} is not an http(s) URL")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout_s = model, api_key, timeout_s
        self.schema = True  # a JSON schema for the reply, until the endpoint refuses one

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the endpoint itself (a redirect is refused: it would carry the key elsewhere) and
        read at most MAX_RESPONSE_BYTES of the reply within timeout_s in all."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        deadline = time.monotonic() + self.timeout_s
        with _NO_REDIRECTS.open(request, timeout=self.timeout_s) as response:
            chunks, size = [], 0
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise ValueError(f"a reply of more than {MAX_RESPONSE_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no whole reply within {self.timeout_s:g} s")
            return json.loads(b"".join(chunks))

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The judge's reply to `messages`, greedy; JudgeError when the endpoint fails."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": 300,
        }
        try:
            if self.schema:
                try:
                    reply = self._post(
                        {**body, "response_format": {"type": "json_object", "schema": VERDICT_SCHEMA}}
                    )
                except urllib.error.HTTPError as exc:
                    if exc.code != 400:
                        raise
                    self.schema = False  # a hosted API that takes no schema: ask for JSON in words only
                    reply = self._post(body)
            else:
                reply = self._post(body)
            return str(reply["choices"][0]["message"]["content"] or "")
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise JudgeError(f"the judge at {self.url} failed: {exc}") from None


def combined(first_order: str | None, second_order: str | None) -> str:
    """The verdict of both orders: A or B when they agree on it (in the swapped order "1" is B), else a tie."""
    forward = {"1": A, "2": B}.get(first_order or "", TIE)
    backward = {"1": B, "2": A}.get(second_order or "", TIE)
    return forward if forward == backward else TIE


def win_rate(verdicts: Sequence[str], seed: int = 0) -> tuple[float, float, float]:
    """A's win rate (ties count half) and its 95% bootstrap interval over prompts."""
    scores = np.array([1.0 if v == A else 0.5 if v == TIE else 0.0 for v in verdicts])
    rng = np.random.default_rng(seed)
    samples = scores[rng.integers(0, len(scores), (BOOTSTRAP_SAMPLES, len(scores)))].mean(axis=1)
    low, high = np.quantile(samples, [0.025, 0.975])
    return float(scores.mean()), float(low), float(high)


def person_preferences(first: Side, second: Side, pairs: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """Where the person rated both answers of a prompt (the answers now in the results): A, B or tie."""
    left = load_ratings(first.run_path).get(parse_variant(first.run_path, first.variant).file_name, {})
    right = load_ratings(second.run_path).get(parse_variant(second.run_path, second.variant).file_name, {})
    preferences = {}
    for pair in pairs:
        a, b = left.get(pair["id"]), right.get(pair["id"])
        if not (a and b and is_rating(a.get("rating")) and is_rating(b.get("rating"))):
            continue
        if rating_applies(a, pair["a"]) and rating_applies(b, pair["b"]):
            preferences[pair["id"]] = (
                A if a["rating"] > b["rating"] else B if b["rating"] > a["rating"] else TIE
            )
    return preferences


def judge_pair(
    first: Side,
    second: Side,
    endpoint: ChatEndpoint,
    rubric: str,
    progress: Callable[[str, float], None] = lambda stage, fraction: None,
) -> dict[str, Any]:
    """Judge every prompt both sides answered, in both orders; the whole judgement as a document."""
    pairs = paired_answers(first, second)
    rows = []
    for index, pair in enumerate(pairs):
        progress(f"prompt {index + 1}/{len(pairs)}: {pair['id']}", index / len(pairs))
        forward, forward_reason = read_verdict(
            endpoint.complete(judge_messages(rubric, pair["prompt"], pair["a"], pair["b"]))
        )
        backward, backward_reason = read_verdict(
            endpoint.complete(judge_messages(rubric, pair["prompt"], pair["b"], pair["a"]))
        )
        rows.append(
            {
                "prompt_id": pair["id"],
                "verdict": combined(forward, backward),
                "a_first": {"winner": forward, "reason": forward_reason},
                "b_first": {"winner": backward, "reason": backward_reason},
            }
        )
    verdicts = [row["verdict"] for row in rows]
    rate, low, high = win_rate(verdicts)
    preferences = person_preferences(first, second, pairs)
    agreed = [
        preferences[row["prompt_id"]] == row["verdict"] for row in rows if row["prompt_id"] in preferences
    ]
    progress("done", 1.0)
    return {
        "a": first.label,
        "b": second.label,
        "judge": {"endpoint": endpoint.url, "model": endpoint.model},
        "created_at": now_iso(),
        "wins": verdicts.count(A),
        "ties": verdicts.count(TIE),
        "losses": verdicts.count(B),
        "consistent": sum(row["a_first"]["winner"] is not None and row["verdict"] != TIE for row in rows),
        "win_rate": rate,
        "interval": [low, high],
        "agreement": {"prompts": len(agreed), "agreed": sum(agreed)} if agreed else None,
        "prompts": rows,
    }


def judgement_path(first: Side, second: Side) -> Path:
    """Where a judgement is kept: in the first run's eval/ folder, named by both sides."""

    def part(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:100]

    name = f"judge-{part(first.variant)}-vs-{part(second.run_path.name)}-{part(second.variant)}.json"
    return first.run_path / EVAL_DIR / name


def save_judgement(first: Side, second: Side, document: dict[str, Any]) -> Path:
    """Write the judgement beside the first run's evaluations; its path."""
    path = judgement_path(first, second)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, document)
    return path


def load_judgements(run_path: Path) -> list[dict[str, Any]]:
    """The judgements kept in a run's eval/ folder, as summaries (read as hostile: capped, checked;
    a malformed file is left out)."""
    folder = run_path / EVAL_DIR
    found = []
    for path in sorted(folder.glob("judge-*.json")) if folder.is_dir() else []:
        try:
            document = read_json_object(path)
        except FileProblem:
            continue
        counts = [document.get(key) for key in ("wins", "ties", "losses")]
        rate, interval, judge = (
            finite_number(document.get("win_rate")),
            document.get("interval"),
            document.get("judge"),
        )
        if not all(isinstance(c, int) and c >= 0 for c in counts) or rate is None:
            continue
        if not (
            isinstance(interval, list)
            and len(interval) == 2
            and all(finite_number(x) is not None for x in interval)
        ):
            continue
        agreement, rows = document.get("agreement"), document.get("prompts")
        found.append(
            {
                "a": str(document.get("a", ""))[:200],
                "b": str(document.get("b", ""))[:200],
                "judge": str(judge.get("model", ""))[:200] if isinstance(judge, dict) else "",
                "wins": counts[0],
                "ties": counts[1],
                "losses": counts[2],
                "win_rate": rate,
                "interval": (float(interval[0]), float(interval[1])),
                "agreement": (
                    (int(agreement["agreed"]), int(agreement["prompts"]))
                    if isinstance(agreement, dict)
                    and all(isinstance(agreement.get(k), int) for k in ("agreed", "prompts"))
                    else None
                ),
                "prompts": [_stored_row(row) for row in rows if isinstance(row, dict)]
                if isinstance(rows, list)
                else [],
            }
        )
    return found


def _stored_row(row: dict[str, Any]) -> dict[str, str]:
    """One prompt's verdict and the judge's reasons in both orders, as text for a table."""

    def reason(order: object) -> str:
        return str(order.get("reason", ""))[:MAX_REPLY_CHARS] if isinstance(order, dict) else ""

    return {
        "prompt": str(row.get("prompt_id", ""))[:100],
        "verdict": str(row.get("verdict", ""))[:10],
        "reason, A first": reason(row.get("a_first")),
        "reason, B first": reason(row.get("b_first")),
    }
