"""One results schema for every benchmark, and its renderers: `Result` (what was measured, by
which command, when, on which machine, with which settings; the rows; the paper's figure and its
source, and the goal, where there are), `write(result, directory)` (`<name>.json`, `<name>.md`
and, when asked, `<name>.png`) and `read(path)`.

Reproductions of papers (accuracies, MSEs, losses) put every number in one row layout,
`ROW_FIELDS` (built by `row`, checked by `check_row`): a method, a setting in words, a metric and its
value with a 95% CI, the paper's figure with its source, the goal, the run's config, and the
command, machine and date that made the row. Accuracies are fractions (0.9783), never percent; the
markdown shows them as percent. A file of such rows is marked `"schema": ROWS_SCHEMA`, which is how
`benchmarks/make_results.py` recognises it. Speed and memory measurements keep their own rows under
`results` (the `Result` fields around them are the same).
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
      schema: `ROWS_SCHEMA` where `rows` are reproduction rows (`ROW_FIELDS`); when `table` is
        empty their markdown is then a table of the rows with `extra["columns"]` (header -> key of
        the rows' `details` or `config`), followed by `extra["notes"]` (paragraphs).
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
    schema: str | None = None


# Top-level JSON fields that are `Result` attributes (the rows' key aside), in the JSON's order.
_FIELDS = ("command", "date", "schema", "machine", "settings", "paper", "goal", "wall_time_s")


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


# --- reproduction rows ---------------------------------------------------------------------------

ROWS_SCHEMA = "metajax.bench.results/rows-1"
ROW_FIELDS = ("method", "setting", "metric", "value", "ci95", "episodes", "steps", "paper", "goal",
              "config", "wall_time_s", "command", "machine", "date", "details")
# metric -> whether higher values are better; accuracies are fractions
METRICS = {"accuracy": True, "mse": False, "final_loss": False}
FRACTIONS = ("accuracy",)
PAPER_FIELDS = ("value", "ci95", "source", "note")


def paper(value: float | None, source: str, ci95: float | None = None,
          note: str | None = None) -> dict:
    """A paper's figure: its value and CI in the row's metric (accuracy as a fraction; None where
    the paper has no number for this setting), where it stands (`"Snell et al. 2017, Table 1"`) and
    what differs (`note`)."""
    return {"value": value, "ci95": ci95, "source": source, "note": note}


def row(method: str, setting: str, metric: str, value: float | None, ci95: float | None = None,
        **fields) -> dict:
    """A reproduction row: every key of `ROW_FIELDS` (those not given are None; `details`, the
    measurements that have no field of their own, defaults to `{}`), checked by `check_row`."""
    unknown = set(fields) - set(ROW_FIELDS)
    if unknown:
        raise TypeError(f"not fields of a results row: {sorted(unknown)} (put them in details)")
    out = dict.fromkeys(ROW_FIELDS)
    out.update(method=method, setting=setting, metric=metric, value=value, ci95=ci95, **fields)
    out["details"] = dict(out["details"] or {})
    check_row(out)
    return out


def check_row(r: dict) -> None:
    """Raises `ValueError` where `r` is not a reproduction row: other keys than `ROW_FIELDS`, an
    unknown metric, an accuracy (ours, its CI, the paper's or the goal) outside [0, 1] (percent
    instead of a fraction), or a paper figure without its source."""
    if set(r) != set(ROW_FIELDS):
        raise ValueError(f"a results row has the keys {ROW_FIELDS}; got {sorted(r)}")
    if r["metric"] not in METRICS:
        raise ValueError(f"unknown metric {r['metric']!r}; choose one of {', '.join(METRICS)}")
    numbers = [r["value"], r["ci95"], r["goal"] if not isinstance(r["goal"], str) else None]
    if r["paper"] is not None:
        if set(r["paper"]) != set(PAPER_FIELDS) or not r["paper"]["source"]:
            raise ValueError(f"a paper's figure is {PAPER_FIELDS} with a source; got {r['paper']}")
        numbers += [r["paper"]["value"], r["paper"]["ci95"]]
    if r["metric"] in FRACTIONS and any(x is not None and not 0 <= x <= 1 for x in numbers):
        raise ValueError(f"{r['method']}, {r['setting']}: accuracies are fractions in [0, 1] "
                         f"(0.9783, not 97.83); got {numbers}")


def goal_met(r: dict) -> bool | None:
    """Whether the row meets its goal: a number is a bound (at least, or at most for a metric where
    lower is better); a sentence is met where `details["goal_met"]` says so; None: no goal, or no
    value."""
    goal = r["goal"]
    if isinstance(goal, str):
        return r["details"].get("goal_met")
    if goal is None or r["value"] is None:
        return None
    return r["value"] >= goal if METRICS[r["metric"]] else r["value"] <= goal


def number_text(metric: str, value: float | None, ci95: float | None = None) -> str:
    """`value ± ci95` as people read it: accuracies in percent with two decimals, MSEs with three,
    losses with three significant digits; "–" for None."""
    if value is None:
        return "–"
    if metric in FRACTIONS:
        text, ci = f"{100 * value:.2f}", None if ci95 is None else f"{100 * ci95:.2f}"
    elif metric == "mse":
        text, ci = f"{value:.3f}", None if ci95 is None else f"{ci95:.3f}"
    else:
        text, ci = f"{value:.3g}", None if ci95 is None else f"{ci95:.2g}"
    return text + ("" if ci is None else f" ± {ci}")


def value_text(r: dict) -> str:
    """The row's value and CI (`number_text`); "diverged" where `details["diverged"]` says so."""
    if r["value"] is None and r["details"].get("diverged"):
        return "diverged"
    return number_text(r["metric"], r["value"], r["ci95"])


def paper_text(r: dict) -> str:
    """The paper's figure, its source and note: `98.80 (Snell et al. 2017, Table 1)`."""
    p = r["paper"]
    if p is None:
        return "–"
    value = "" if p["value"] is None else number_text(r["metric"], p["value"], p["ci95"]) + " "
    note = f"; {p['note']}" if p["note"] else ""
    return f"{value}({p['source']}{note})"


def goal_text(r: dict) -> str:
    """`>= 97.50: met`, `<= 0.5: NOT met`, or the goal's sentence and whether it is met."""
    goal = r["goal"]
    if goal is None:
        return ""
    if isinstance(goal, str):
        text = goal
    else:
        text = (">= " if METRICS[r["metric"]] else "<= ") + number_text(r["metric"], goal)
    met = goal_met(r)
    return text if met is None else f"{text}: {'met' if met else 'NOT met'}"


def seconds_text(s: float | None) -> str:
    """`832 s`, or `13.9 min` from two minutes on; empty for None."""
    if s is None:
        return ""
    return f"{s / 60:.1f} min" if s >= 120 else f"{s:.0f} s"


def wall_text(r: dict) -> str:
    """The row's wall time, else its training time (`details["train_time_s"]`) so labelled."""
    if r["wall_time_s"] is not None:
        return seconds_text(r["wall_time_s"])
    train = r["details"].get("train_time_s")
    return "" if train is None else f"{seconds_text(train)} training"


def _column_cell(r: dict, key: str) -> str:
    """A row's `details[key]` (else `config[key]`) for the markdown: an accuracy or error (`*accuracy`,
    `*error`) in percent, with its CI (`*ci95` under the same prefix) where there is one."""
    details = r["details"]
    value = details[key] if key in details else (r["config"] or {}).get(key)
    if isinstance(value, float) and key.endswith(("accuracy", "error")):
        prefix = key.removesuffix("accuracy").removesuffix("error")
        return number_text("accuracy", value, details.get(f"{prefix}ci95"))
    return _cell(value)


def reproduction(name: str, rows: list[dict], *, notes=(), columns: dict | None = None,
                 extra: dict | None = None, **fields) -> Result:
    """A `Result` of reproduction rows (each checked by `check_row`), with the markdown's extra
    `columns` (header -> key of the rows' `details` or `config`) and `notes`; `fields` are
    `Result`'s."""
    for r in rows:
        check_row(r)
    extra = dict(extra or {})
    if columns:
        extra["columns"] = dict(columns)
    if notes:
        extra["notes"] = list(notes)
    return Result(name=name, rows=rows, rows_key="rows", schema=ROWS_SCHEMA, extra=extra, **fields)


def rows_markdown(result: Result) -> str:
    """The table of a reproduction result's rows (accuracies in percent), its extra columns and
    notes, and the provenance of rows an earlier command made."""
    columns = result.extra.get("columns") or {}
    head = ["method", "setting", "ours", "paper", "goal", "episodes", "steps", "wall time",
            *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result.rows or []:
        cells = [r["method"], r["setting"], value_text(r), paper_text(r), goal_text(r),
                 _cell(r["episodes"]), _cell(r["steps"]), wall_text(r),
                 *(_column_cell(r, key) for key in columns.values())]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if any(r["metric"] in FRACTIONS for r in result.rows or []):
        lines.append("\nAccuracies in percent, with their 95% confidence intervals.")
    lines += [f"\n{note}" for note in result.extra.get("notes", [])]
    earlier: dict[tuple, list[str]] = {}
    for r in result.rows or []:
        if r["command"] not in (None, result.command):
            methods = earlier.setdefault((r["date"], r["command"]), [])
            methods += [] if r["method"] in methods else [r["method"]]
    if earlier:
        lines.append("\nRows from earlier commands:\n")
        lines += [f"- {date}, `{command}`: {', '.join(methods)}"
                  for (date, command), methods in earlier.items()]
    return "\n".join(lines)


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
    if result.table:
        body = result.table
    elif result.schema == ROWS_SCHEMA:
        body = rows_markdown(result)
    else:
        body = rows_table(result.rows or [])
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

