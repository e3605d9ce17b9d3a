"""Helpers shared by the benchmark scripts: where results go and how they are recorded."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def write_results(name: str, payload: dict, table: str) -> Path:
    """Writes `results/<name>.json` and `results/<name>.md` (the printed table plus provenance)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"command": command_line(), "date": time.strftime("%Y-%m-%d %H:%M"), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    machine = payload.get("machine", {})
    md = (f"# {name}\n\nCommand: `{payload['command']}`  \nDate: {payload['date']}  \n"
          f"Machine: {machine.get('cpu', '?')}, {machine.get('cpu_count', '?')} cores, "
          f"jax {machine.get('jax', '?')}\n\n{table}\n")
    (RESULTS / f"{name}.md").write_text(md)
    return RESULTS / f"{name}.json"
