"""Generates `benchmarks/RESULTS.md`: every result the benchmark scripts wrote to
`benchmarks/results/*.json`, one row per method and setting, with our number and CI, the paper's
number, the command that made it, the machine and the wall time. Never edit RESULTS.md by hand.

    python benchmarks/make_results.py            # after any benchmark run

The scripts write a few JSON layouts; one small reader per layout turns a file into rows. A file no
reader knows is listed at the end, so nothing is silently left out.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ("method", "task / setting", "ours", "paper", "command", "machine", "wall time")


def _machine(m: dict | None) -> str:
    if not m:
        return "?"
    load = m.get("load_average_1min")
    text = f"{m.get('cpu', '?')}, {m.get('cpu_count', '?')} cores"
    return text + (f", load {load:g}" if isinstance(load, int | float) else "")


def _pm(value: float | None, ci: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" + ("" if ci is None else f" ± {ci:.{digits}f}")


def _secs(s: float | None) -> str:
    if s is None:
        return "?"
    return f"{s / 60:.1f} min" if s >= 120 else f"{s:.0f} s"


def _paper(value) -> str:
    if value is None:
        return "–"
    return str(value)


def _portable(command: str) -> str:
    """The command as anyone can run it from the repository root: a `--peer-python` that points at
    the default peers venv (`.venv-peers`, made by benchmarks/peers/install.sh) of some checkout is
    dropped."""
    return re.sub(r" --peer-python \S*/\.venv-peers/bin/python(?=\s|$)", "", command)


def _row(method, setting, ours, paper, command, machine, wall) -> dict:
    return dict(zip(COLUMNS, (method, setting, ours, _paper(paper), _portable(command), machine,
                              wall), strict=True))


# --- one reader per layout ----------------------------------------------------------------------

def _episode_rows(path: Path, d: dict) -> list[dict] | None:
    """`benchmarks/common.report` files: `results` rows with ways/shots/accuracy/ci95 in percent
    (ProtoNets, metric learners, black-box learners, within-alphabet)."""
    rows = d.get("results")
    if not isinstance(rows, list) or not rows or "accuracy" not in rows[0]:
        return None
    out = []
    for r in rows:
        if "accuracy_by_instance" in r:  # MANN-style sequences
            acc = r["accuracy_by_instance"]
            ci = r.get("accuracy_by_instance_ci95", {})
            ours = ", ".join(f"{k}: {acc[k]:.1f}" + (f" ± {ci[k]:.1f}" if k in ci else "")
                             for k in ("1", "2", "5", "10") if k in acc)
            paper = r.get("paper")
            paper = ", ".join(f"{k}: {paper[k]}" for k in ("1", "2", "5", "10")
                              if paper and k in paper) or None
            setting = (f"Omniglot sequences, {r['config'].get('ways', 5)} classes, accuracy % "
                       f"by instance ({r['episodes']} episodes, {r['steps']} steps)")
        elif "error" in r and "paper_error" in r:  # within-alphabet 20-way
            ours = _pm(r["accuracy"], r.get("ci95"))
            paper = (None if r.get("paper_error") is None
                     else f"{100 - r['paper_error']:.1f} (error {r['paper_error']})")
            setting = f"Omniglot 20-way 1-shot within alphabet, {r['episodes']} episodes"
        else:
            ours = _pm(r["accuracy"], r.get("ci95"))
            paper = r.get("paper")
            setting = (f"Omniglot {r['ways']}-way {r['shots']}-shot, {r['episodes']} episodes, "
                       f"{r.get('train_steps', '?')} steps")
        wall = r.get("run_wall_time_s") or r.get("train_time_s")
        method = r.get("learner", r.get("algo", path.stem.removesuffix("_omniglot")))
        # a row kept from an earlier run of the script carries its own command and machine
        out.append(_row(method, setting, ours, paper, r.get("command", d.get("command", "?")),
                        _machine(r.get("machine", d.get("machine"))), _secs(wall)))
    return out


def _method_rows(path: Path, d: dict) -> list[dict] | None:
    """`maml_omniglot`: `rows` with algo and accuracy / ci95 as fractions."""
    rows = d.get("rows")
    if not isinstance(rows, list) or not rows or "algo" not in rows[0] \
            or "accuracy" not in rows[0] or "ways" in rows[0]:
        return None
    out = []
    for r in rows:
        c = r.get("config", {})
        setting = (f"Omniglot {c.get('ways', 5)}-way {c.get('shots', 1)}-shot, {r['episodes']} "
                   f"episodes, {c.get('steps', '?')} steps x meta-batch {c.get('meta_batch', '?')}")
        out.append(_row(r["algo"], setting, _pm(100 * r["accuracy"], 100 * r["ci95"]),
                        r.get("paper"), r.get("command", d.get("command", "?")),
                        _machine(r.get("machine", d.get("machine"))), _secs(r.get("wall_time_s"))))
    return out


def _ablation_rows(path: Path, d: dict) -> list[dict] | None:
    """`deml_omniglot_*`: `rows` with a `row` name, lambda, ways and accuracy in percent."""
    rows = d.get("rows")
    if not isinstance(rows, list) or not rows or "row" not in rows[0]:
        return None
    out = []
    for r in rows:
        lam = "" if r.get("lambda") is None else f", lambda {r['lambda']:g}"
        setting = (f"Omniglot {r['ways']}-way {r['shots']}-shot, {r['episodes']} episodes, "
                   f"{r['steps']} steps x meta-batch {r['meta_batch']}")
        out.append(_row(f"deml ablation: {r['row']}{lam}", setting, _pm(r["accuracy"], r["ci95"]),
                        r.get("paper"), r.get("command", d.get("command", "?")),
                        _machine(r.get("machine", d.get("machine"))), _secs(r.get("wall_time_s"))))
    return out


def _sinusoid_rows(path: Path, d: dict) -> list[dict] | None:
    rows = d.get("rows")
    if not isinstance(rows, list) or not rows or "mse" not in rows[0]:
        return None
    out = []
    for r in rows:
        ours = ", ".join(f"{k} step{'s' if k != '1' else ''}: "
                         + ("diverged" if v is None else _pm(v, r['ci95'].get(k), 3))
                         for k, v in r["mse"].items())
        paper = r.get("paper")
        if isinstance(paper, list):
            paper = " / ".join(str(p) for p in paper)
        setting = f"sinusoid {r['shots']}-shot, MSE after 1 / 5 / 10 steps, 600 tasks"
        out.append(_row(r["algo"], setting, ours, paper, d.get("command", "?"),
                        _machine(d.get("machine")), _secs(d.get("wall_time_s"))))
    return out


def _l2o_rows(path: Path, d: dict) -> list[dict] | None:
    if "meta_training" not in d or not isinstance(d.get("results"), dict):
        return None
    out = []
    for problem, res in d["results"].items():
        learned = res["learned"]
        best = min(res["baselines"], key=lambda b: b["final_loss"])
        ci = learned.get("final_loss_ci95")
        ours = f"{learned['final_loss']:.3g}" + ("" if ci is None else f" ± {ci:.2g}")
        verdict = "below" if learned["final_loss"] < best["final_loss"] else "NOT below"
        name = problem if problem == "quadratic" else f"Omniglot MLP, {problem} variant"
        out.append(_row("LSTM learned optimiser", f"{name}: loss at the last optimisee step "
                        f"(best tuned baseline: {best['name']} {best['final_loss']:.3g}; "
                        f"LSTM {verdict} every baseline)", ours,
                        "below the hand-designed optimisers", d.get("command", "?"),
                        _machine(d.get("machine")), _secs(d.get("wall_time_s"))))
    return out


# Papers' Omniglot numbers for runs kept as a bare summary.json (REFERENCE_RESULTS.md).
SUMMARY_PAPER = {("relation", 5, 1): 99.6, ("relation", 20, 1): 97.6}


def _md_of(results: Path, stem: str) -> Path | None:
    for candidate in (stem, stem.removesuffix("_summary")):
        if (results / f"{candidate}.md").exists():
            return results / f"{candidate}.md"
    return None


def _command_from_md(md: Path | None) -> str:
    """The `Command: `...`` line the benchmark scripts put at the top of their markdown."""
    if md is not None:
        for line in md.read_text().splitlines():
            if line.startswith("Command: `"):
                return line.split("`")[1]
    return "?"


def _summary_rows(path: Path, d: dict) -> list[dict] | None:
    """A run's own summary.json kept in results/ (accuracy and ci95 as fractions); the command is
    taken from the markdown written beside it."""
    if "algo" not in d or "accuracy" not in d or "config" not in d:
        return None
    setting = f"Omniglot {d['ways']}-way {d['shots']}-shot, {d['episodes']} episodes, " \
              f"{d.get('steps', '?')} steps"
    command = _command_from_md(_md_of(path.parent, path.stem))
    return [_row(d["algo"], setting, _pm(100 * d["accuracy"], 100 * d["ci95"]),
                 SUMMARY_PAPER.get((d["algo"], d["ways"], d["shots"])), command,
                 _machine(d.get("machine")), _secs(d.get("wall_time_s")))]


READERS: tuple[Callable[[Path, dict], list[dict] | None], ...] = (
    _l2o_rows, _episode_rows, _ablation_rows, _sinusoid_rows, _method_rows, _summary_rows)
# Not accuracy tables: shown in their own sections or linked.
OTHER = ("maml_speed", "maml_compile_memory", "sampling_share", "relation_speed", "regression_speed")


def _is_other(stem: str) -> bool:
    """Speed and memory files, and `*_timing` sizing runs (a few steps each: not accuracies)."""
    return stem.startswith(OTHER) or stem.endswith("_timing")


def _speed_lines(results: Path) -> list[str]:
    """The metajax speed-up over each peer, as ratios measured in one run (maml_speed_*.json)."""
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


def collect(results: Path) -> tuple[list[dict], list[str]]:
    """All rows from the files in `results`, and the names of files no reader understood."""
    rows, unknown = [], []
    for path in sorted(results.glob("*.json")):
        if _is_other(path.stem):
            continue
        d = json.loads(path.read_text())
        for reader in READERS:
            got = reader(path, d)
            if got is not None:
                for r in got:
                    r["file"] = path.stem
                rows.extend(got)
                break
        else:
            unknown.append(path.name)
    return rows, unknown


def render(results: Path) -> str:
    rows, unknown = collect(results)
    out = ["# Results", "",
           "Generated by `python benchmarks/make_results.py` from `benchmarks/results/*.json`; "
           "do not edit by hand. Each row's command re-runs it; accuracies are percent with a 95% "
           "confidence interval over the test episodes. Times are from the machine named in the "
           "row (2-core CPUs unless said otherwise), and include other work on it (see the load).",
           "", "| " + " | ".join(COLUMNS) + " | file |", "|" + "---|" * (len(COLUMNS) + 1)]
    for r in rows:
        cells = [r[c] if c != "command" else f"`{r[c]}`" for c in COLUMNS]
        md = _md_of(results, r["file"])
        link = f"results/{md.name}" if md else f"results/{r['file']}.json"
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in cells)
                   + f" | [{r['file']}]({link}) |")
    out.append("")
    out += _speed_lines(results)
    others = [p.stem for p in sorted(results.glob("*.json")) if _is_other(p.stem)]
    if others:
        out += ["## Other measurements", ""]
        out += [f"- [{s}](results/{s}.md)" for s in others]
        out.append("")
    if unknown:
        out += ["## Files without a reader (add one to benchmarks/make_results.py)", ""]
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
