"""One results schema for every benchmark, and its renderers: `Result` (what was measured, by
which command, when, on which machine, with which settings; the rows; the paper's figure and its
source, and the goal, where there are), `write(result, directory)` (`<name>.json`, `<name>.md`
and, when asked, `<name>.png`) and `read(path)`.

One schema, so that `benchmarks/make_results.py` can gather every results file into
`benchmarks/RESULTS.md`, and every markdown file opens with the command that re-runs it. The JSON
keeps the layout the scripts wrote before this module (`command`, `date`, `machine`, the rows under
`results` or `rows`, any other fields at the top level), so the files already in
`benchmarks/results/` read back and render unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def command_line() -> str:
    """This process's command line as `python <argv...>` (shell-quoted), to re-run it."""
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M")


@dataclasses.dataclass
class Result:
    """One benchmark's result.

    Attributes:
      name: the files' stem (`<name>.json`, `<name>.md`).
      rows: one dict per measured setting (None: the result has no row list, e.g. a dict of
        results by problem kept in `extra`).
      table: the markdown body (the script's own table and notes); empty: a table of the rows.
      command: the command that re-runs it (default: this process's).
      date: when it ran (default: now, `%Y-%m-%d %H:%M`).
      machine: `metajax.bench.machine.machine_info()` or `speed_machine()`.
      settings: the settings the rows share.
      paper: the paper's figure being reproduced and its source, e.g. `{"figure": "Table 1",
        "source": "Finn et al. 2017, arXiv:1703.03400"}`, or a sentence (None: no paper).
      goal: what the result must show (a number, a sentence, or a dict by setting).
      wall_time_s: the whole run's seconds.
      extra: further top-level JSON fields, written and read back as they are.
      rows_key: the JSON key of `rows` ("results", or "rows" for the layouts that use it).
      machine_in_header: the markdown's header names the machine (off where the table does).
    """

    name: str
    rows: list[dict] | None = None
    table: str = ""
    command: str = dataclasses.field(default_factory=command_line)
    date: str = dataclasses.field(default_factory=now)
    machine: dict | None = None
    settings: dict | None = None
    paper: dict | str | None = None
    goal: Any = None
    wall_time_s: float | None = None
    extra: dict = dataclasses.field(default_factory=dict)
    rows_key: str = "results"
    machine_in_header: bool = True


# Top-level JSON fields that are `Result` attributes (the rows' key aside).
_FIELDS = ("command", "date", "machine", "settings", "paper", "goal", "wall_time_s")


def to_json(result: Result) -> dict:
    """The JSON object of `result`: command and date first, fields that are None left out."""
    out: dict = {"command": result.command, "date": result.date}
    for key in _FIELDS[2:-1]:
        if getattr(result, key) is not None:
            out[key] = getattr(result, key)
    if result.rows is not None:
        out[result.rows_key] = result.rows
    out.update(result.extra)
    if result.wall_time_s is not None:
        out["wall_time_s"] = result.wall_time_s
    return out


def from_json(name: str, payload: dict, table: str = "") -> Result:
    """The `Result` of a JSON object in this layout (rows from a `results` or `rows` list)."""
    payload = dict(payload)
    fields = {k: payload.pop(k) for k in _FIELDS if k in payload}
    rows_key = next((k for k in ("results", "rows") if isinstance(payload.get(k), list)), None)
    rows = payload.pop(rows_key) if rows_key else None
    return Result(name=name, rows=rows, table=table, extra=payload, rows_key=rows_key or "results",
                  **{k: v for k, v in fields.items() if v is not None or k in ("command", "date")})


def read(path: str | Path) -> Result:
    """The `Result` written to `path` (`<name>.json`; the markdown is not read back)."""
    path = Path(path)
    return from_json(path.stem, json.loads(path.read_text()))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value).replace("|", "/")


def rows_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A markdown table of `rows`: `columns`, or every key with a scalar value, in order of first
    appearance."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k, v in r.items()
                                     if v is None or isinstance(v, str | int | float | bool)))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def markdown(result: Result) -> str:
    """`# name`, the command, date, machine and wall time, then the table (`result.table`, or a
    table of the rows)."""
    header = [f"Command: `{result.command}`", f"Date: {result.date}"]
    if result.machine_in_header and result.machine is not None:
        m = result.machine
        header.append(f"Machine: {m.get('cpu', '?')}, {m.get('cpu_count', '?')} cores, "
                      f"jax {m.get('jax', '?')}")
    if result.wall_time_s is not None:
        header.append(f"Wall time: {result.wall_time_s} s")
    body = result.table or rows_table(result.rows or [])
    return f"# {result.name}\n\n" + "  \n".join(header) + f"\n\n{body}\n"


def write(result: Result, directory: str | Path, *,
          plot: Callable[[dict, Path], None] | None = None, indent: int = 2) -> Path:
    """Writes `<directory>/<name>.json` and `<name>.md`, and with `plot` (called with the JSON
    object and the path) `<name>.png`; returns the JSON's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = to_json(result)
    path = directory / f"{result.name}.json"
    path.write_text(json.dumps(payload, indent=indent))
    (directory / f"{result.name}.md").write_text(markdown(result))
    if plot is not None:
        plot(payload, directory / f"{result.name}.png")
    return path


def goal_cell(value: float, goal: float | None) -> str:
    """`>= goal met` / `>= goal NOT met`, or empty where there is no goal."""
    if goal is None:
        return ""
    return f">= {goal} {'met' if value >= goal else 'NOT met'}"
