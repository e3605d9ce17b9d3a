"""Generates `benchmarks/RESULTS.md` from `benchmarks/results/*.json`. Never edit RESULTS.md by hand.

    python benchmarks/make_results.py            # after any benchmark run

Reproduction results are read in their one schema (`metajax.bench.results.ROW_FIELDS`: a method,
a setting, our value with its CI, the paper's figure and source, the goal, the command, machine and
wall time), one table per results file. Speed and memory measurements keep their own layouts: the
MAML speed-ups over the PyTorch libraries are read by `speed_ratio_lines`, the others are linked. A
file in none of these is listed at the end with the command that converts it, so nothing is
silently left out.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from metajax.bench.results import ROWS_SCHEMA, from_json, goal_text, paper_text, value_text, wall_text

HERE = Path(__file__).resolve().parent
COLUMNS = ("method", "setting", "ours", "paper", "goal", "steps", "episodes", "wall time",
           "machine")
# speed, memory and sizing measurements: their own layouts, linked
OTHER = ("maml_speed", "maml_compile_memory", "sampling_share", "relation_speed",
         "regression_speed", "conv_impls", "suite_time", "eval_memory", "imaml_memory",
         "streaming_share", "omniglot_drawers", "proxy_by_alphabet", "onednn_conv",
         "step_profile")


def _machine(m: dict | None) -> str:
    if not m:
        return "?"
    load = m.get("load_average_1min")
    text = f"{m.get('cpu', '?')}, {m.get('cpu_count', '?')} cores"
    return text + (f", load {load:g}" if isinstance(load, int | float) else "")


def _portable(command: str) -> str:
    """The command as anyone can run it from the repository root: a `--peer-python` that points at
    the default peers venv (`.venv-peers`, made by benchmarks/peers/install.sh) of some checkout is
    dropped."""
    return re.sub(r" --peer-python \S*/\.venv-peers/bin/python(?=\s|$)", "", command)


def is_other(stem: str) -> bool:
    """Speed and memory files (the test suite's time among them), and `*_timing` sizing runs (a
    few steps each: not accuracies)."""
    return stem.startswith(OTHER) or stem.endswith("_timing")


def row_cells(r: dict) -> dict:
    """A reproduction row as the table shows it (accuracies in percent)."""
    cells = (r["method"], r["setting"], value_text(r), paper_text(r), goal_text(r), r["steps"],
             r["episodes"], wall_text(r), _machine(r["machine"]))
    return {c: "" if v is None else str(v).replace("|", "/")
            for c, v in zip(COLUMNS, cells, strict=True)}


def reproduction_section(path: Path, payload: dict) -> list[str]:
    """A results file's rows: one table, its command above it when every row shares one, else a
    column."""
    result = from_json(path.stem, payload)
    commands = list(dict.fromkeys(_portable(r["command"] or result.command) for r in result.rows))
    link = f"results/{path.stem}.md" if path.with_suffix(".md").exists() else f"results/{path.name}"
    head = [*COLUMNS] + ([] if len(commands) == 1 else ["command"])
    lines = [f"### [{path.stem}]({link})", ""]
    if len(commands) == 1:
        lines += [f"Command: `{commands[0]}`", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result.rows:
        cells = list(row_cells(r).values())
        if len(commands) > 1:
            cells.append(f"`{_portable(r['command'] or result.command)}`")
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def speed_ratio_lines(results: Path) -> list[str]:
    """The metajax speed-up over each peer, as ratios measured in one run (the `ratios` of
    `maml_speed_*.json`, written by benchmarks/maml_speed.py)."""
    lines = []
    for path in sorted(results.glob("maml_speed_*.json")):
        d = json.loads(path.read_text())
        m = d.get("machine", {})
        acc = m.get("accelerator") or {"platform": "cpu"}
        where = (m.get("cpu_model", "?") if acc["platform"] == "cpu"
                 else f"{acc['device_kind']} ({acc['platform']})")
        for r in d.get("ratios", []):
            if r.get("vs_fastest_correct_peer") is None or r.get("remat"):
                continue
            lines.append(
                f"| {path.stem} | order {r['order']}, {r['inner_steps']} inner step(s), "
                f"meta-batch {r['meta_batch']} | {r['fastest_correct_peer']} | "
                f"{r['vs_fastest_correct_peer']:.2f}x | {where} | "
                f"`{_portable(d.get('command', '?'))}` |")
    if not lines:
        return []
    return ["## Speed (metajax tasks/s over the fastest correct peer, one run each)", "",
            "| file | workload | peer | metajax speed-up | machine | command |",
            "|---|---|---|---|---|---|", *lines, ""]


def collect(results: Path) -> tuple[dict[Path, dict], list[str], list[str]]:
    """The reproduction files (path -> JSON), the other measurements' stems and the names of files
    in no known layout."""
    reproductions, others, unknown = {}, [], []
    for path in sorted(results.glob("*.json")):
        if is_other(path.stem):
            others.append(path.stem)
            continue
        payload = json.loads(path.read_text())
        if payload.get("schema") == ROWS_SCHEMA:
            reproductions[path] = payload
        else:
            unknown.append(path.name)
    return reproductions, others, unknown


def render(results: Path) -> str:
    reproductions, others, unknown = collect(results)
    out = ["# Results", "",
           "Generated by `python benchmarks/make_results.py` from `benchmarks/results/*.json`; "
           "do not edit by hand. One table per results file; each row's command re-runs it (the "
           "command above a table, where all its rows share one). Accuracies are percent with a 95% "
           "confidence interval over the test episodes (the files hold fractions); the paper's "
           "figure is given with its source, and what differs in its protocol. Times are from the "
           "machine named in the row (2-core CPUs unless said otherwise), and include other work on "
           "it (see the load).", "", "## Reproductions", ""]
    for path, payload in reproductions.items():
        out += reproduction_section(path, payload)
    out += speed_ratio_lines(results)
    if others:
        out += ["## Other measurements", ""]
        out += [f"- [{s}](results/{s}.md)" for s in others]
        out.append("")
    if unknown:
        out += ["## Files in an older layout (convert with `python benchmarks/convert_results.py`)",
                ""]
        out += [f"- {u}" for u in unknown]
        out.append("")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = p.parse_args(argv)
    text = render(Path(args.results))
    Path(args.out).write_text(text)
    print(f"wrote {args.out} ({text.count(chr(10))} lines)")


if __name__ == "__main__":
    main()
