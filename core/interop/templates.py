"""Check an imported chat template before any page renders it.

jinja's sandbox bounds neither time nor memory (`{{ 'x' * 400000000 }}`, nested loops of 100,000),
and the Arena renders a run's template in the dashboard's own process. So an imported template is
at most MAX_TEMPLATE_CHARS long and must render a probe conversation, as transformers renders
templates (an immutable sandbox, loop controls, trim_blocks and lstrip_blocks), in a child Python
with an address-space limit (set by the child itself: no preexec_fn in a threaded server) and a
timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

MAX_TEMPLATE_CHARS = 64 << 10
RENDER_TIMEOUT_S = 3.0
RENDER_MEMORY_BYTES = 512 << 20
PROBE = [
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there."},
    {"role": "user", "content": "Name a colour."},
]

_RENDER = """
import json, resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # before the template is read
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

def raise_exception(message):
    raise ValueError(message)

def strftime_now(format):
    return "1 Jan 2026"

request = json.load(sys.stdin)
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
text = env.from_string(request["template"]).render(
    messages=request["messages"], add_generation_prompt=True, bos_token="<s>", eos_token="</s>"
)
sys.stdout.write(str(len(text)))
"""


def template_problem(template: Any) -> str | None:
    """Why the chat template `template` (text, or transformers' list of named templates) may not
    be imported, or None when each renders the probe conversation within the limits."""
    if isinstance(template, list):
        texts = [item.get("template") if isinstance(item, dict) else None for item in template]
    else:
        texts = [template]
    for text in texts:
        if not isinstance(text, str):
            return "the chat template is not text"
        if len(text) > MAX_TEMPLATE_CHARS:
            return f"the chat template is {len(text):,} characters long; at most {MAX_TEMPLATE_CHARS:,}"
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-c", _RENDER, str(RENDER_MEMORY_BYTES)],
                input=json.dumps({"template": text, "messages": PROBE}),
                capture_output=True,
                text=True,
                timeout=RENDER_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"the chat template does not render a short conversation within {RENDER_TIMEOUT_S:g} s"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["it ran out of memory"])[-1][:200]
            return f"the chat template does not render a short conversation ({last})"
    return None
