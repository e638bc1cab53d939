"""Run the ```python blocks of Markdown files, as a reader would paste them.

Blocks of one file run in order in one fresh interpreter (a later block may use what an
earlier one defined, as a reader following the page would), in an empty working directory
holding a copy of ``examples/``, with the providers' base URLs pointed at a fake LLM server
on 127.0.0.1 (``$OPENAI_BASE_URL``, ``$OPENAI_API_BASE``, ``$ANTHROPIC_BASE_URL``...), so
nothing leaves the machine. Top-level ``await`` works, as in an asyncio REPL.

A block that needs a running server says so in its first line, and runs in an interpreter
of its own with that server started for it::

    # needs: llmbudget serve                                   $LLMBUDGET_SERVER, $LLMBUDGET_ADMIN_KEY
    # needs: llmbudget serve --config examples/gateway.yaml    the same, with the gateway mounted
    # needs: postgresql                                        $DATABASE_URL (a private schema)

>>> [s.needs for s in parse("```python\\n# needs: postgresql\\nx = 1\\n```\\n", "doc.md")]
['postgresql']
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunResult", "Snippet", "parse", "run"]

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_NEEDS = re.compile(r"^#\s*needs:\s*(.+?)\s*$")


@dataclass(frozen=True)
class Snippet:
    where: str  # "docs/page.md:12", the line of the opening fence
    code: str
    needs: str | None


@dataclass(frozen=True)
class RunResult:
    ok: bool
    output: str


def parse(text: str, name: str) -> list[Snippet]:
    """The ```python blocks of ``text`` (a Markdown page called ``name``)."""
    found = []
    for match in _FENCE.finditer(text):
        code = match.group(1)
        line = text.count("\n", 0, match.start()) + 1
        first = code.split("\n", 1)[0]
        needs = _NEEDS.match(first)
        found.append(Snippet(f"{name}:{line}", code, needs.group(1) if needs else None))
    return found


# Executes the blocks given as JSON on stdin, in order, in one namespace; names the block
# that failed. Compiled with top-level await allowed, so `await ledger.reserve(...)` works.
_RUNNER = r"""
import ast, asyncio, inspect, json, sys, traceback
blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for block in blocks:
    print(f"--- {block['where']}", flush=True)
    try:
        code = compile(block["code"], block["where"], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)
        if inspect.iscoroutine(result):
            asyncio.run(result)
    except BaseException:
        traceback.print_exc(file=sys.stdout)
        print(f"FAILED: the block at {block['where']}", flush=True)
        sys.exit(1)
print("ALL BLOCKS RAN", flush=True)
"""


def run(
    snippets: Sequence[Snippet],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float = 120.0,
) -> RunResult:
    """Run ``snippets`` in order in one new interpreter; ``ok`` when every block ran."""
    blocks = [{"where": s.where, "code": s.code} for s in snippets]
    try:
        done = subprocess.run(
            [sys.executable, "-c", _RUNNER],
            input=json.dumps(blocks),
            cwd=cwd,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else ""
        return RunResult(False, f"{out}\nTIMED OUT after {timeout} s")
    output = done.stdout + done.stderr
    return RunResult(done.returncode == 0 and "ALL BLOCKS RAN" in done.stdout, output)
