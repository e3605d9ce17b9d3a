"""Helpers of `benchmarks/device_check.sh` (`maml_speed.py` on a lent GPU in one short,
prepared run). Standard library and numpy only at import (no JAX); `maml_speed` and its report are
imported from this folder (a script's own folder is on its path).

    python benchmarks/device_check.py validate < PLAN      # LABEL<TAB>maml_speed.py ARGS a line
    python benchmarks/device_check.py merge RESULTS.json --checks LOG... --warm JSON... \
        --conditions FILE                      # checks into the timed results, md and plot again

`validate` parses each planned `maml_speed.py` command line with maml_speed's own parser (so a bad
flag fails on the CPU, not on the GPU) and prints the results name it will write on a GPU.

`merge` takes the float64 checks that `maml_speed.py --check-only` printed (run on the same GPU,
same seed and check meta-batch, in the script's first phase) into the check column of the results
that a `--no-check` timing run wrote, recomputes the ratios (which count only peers whose check
passed), writes the JSON, the markdown (maml_speed's own table, with the script's conditions
appended) and the plot again, and records the cold compile times of the first phase.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import maml_speed
from maml_speed_report import markdown, plot, ratio_rows, results_name, row_label


def validate(label: str, argv: list[str], platform: str) -> str:
    args = maml_speed.parse_args(argv)
    if args.job or args.dump_grad or args.scaling or args.train_check:
        raise SystemExit(f"{label}: device_check runs plain timing / check commands only")
    impls = [i for i in args.impls.split(",") if i and i != "none"]
    unknown = [i for i in impls if i not in maml_speed.IMPLS]
    if unknown:
        raise SystemExit(f"{label}: unknown --impls {unknown}")
    return results_name(args, platform)


def read_checks(path: Path) -> dict:
    """The JSON that `maml_speed.py --check-only` prints last ({"<impl> order <o>": check}),
    between a line "{" and a line "}" (the script's log adds lines after it)."""
    lines = path.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line == "{"]
    ends = [i for i, line in enumerate(lines) if line == "}"]
    for start in reversed(starts):
        for end in (e for e in ends if e > start):
            try:
                return json.loads("\n".join(lines[start:end + 1]))
            except json.JSONDecodeError:
                continue
    return {}


def cold_compiles(paths: list[Path]) -> list[dict]:
    """metajax's compile times in the first phase's runs (each compiled its step cold)."""
    out = []
    for path in paths:
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for r in payload.get("results", []):
            if r.get("impl") == "metajax" and r.get("status") == "ok":
                out.append({"order": r["order"], "inner_steps": r["inner_steps"],
                            "aot_compile_s": r.get("aot_compile_s"),
                            "first_call_s": r.get("compile_s"),
                            "from_cache": r.get("step_from_compile_cache")})
    return out


def merge(results: Path, check_logs: list[Path], warm: list[Path], conditions: str) -> dict:
    from metajax.bench.results import from_json, write  # imports metajax, and so JAX

    payload = json.loads(results.read_text())
    checks: dict = {}
    for log in check_logs:
        if log.exists():
            checks.update(read_checks(log))
    merged = []
    for row in payload["results"]:
        key = f"{row_label(row)} order {row['order']}"
        check = checks.get(key)
        if check is None:
            continue
        row["check"] = check.get("check", "n/a")
        row["check_grad_rel_err"] = check.get("grad_rel_err")
        if check.get("reason"):
            row["check_reason"] = check["reason"]
        merged.append(key)
    payload["ratios"] = ratio_rows(payload["results"])
    compiles = cold_compiles(warm)
    payload["device_check"] = {
        "float64_checks": checks, "merged_into_rows": merged,
        "cold_compile": compiles, "conditions": conditions,
    }
    lines = [conditions.rstrip()]
    for c in compiles:
        lines.append(f"- metajax order {c['order']}, {c['inner_steps']} inner step(s): compiled "
                     f"cold in the first phase in {c['aot_compile_s']:.1f} s ahead of time "
                     f"(first call {c['first_call_s']:.1f} s)")
    unchecked = [f"{row_label(r)} order {r['order']}" for r in payload["results"]
                 if f"{row_label(r)} order {r['order']}" not in merged]
    if unchecked:
        lines.append(f"- no float64 check result for: {', '.join(unchecked)}")
    table = markdown(payload) + ("\n\n## Conditions (written by benchmarks/device_check.sh)\n\n"
                                 + "\n".join(lines))
    result = from_json(results.stem, payload, table)
    result.machine_in_header = False  # the table names it
    write(result, results.parent, plot=plot, indent=1)
    return payload


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "validate":
        # validate < PLAN: one planned command a line, "LABEL<TAB>maml_speed.py ARGS..."
        for line in sys.stdin.read().splitlines():
            if not line.strip():
                continue
            label, _, command = line.partition("\t")
            words = command.split()
            if not words or not words[0].endswith("maml_speed.py"):
                raise SystemExit(f"{label}: not a maml_speed.py command: {command}")
            print(f"{label}: ok, writes {validate(label, words[1:], 'gpu')}.{{json,md,png}} on a GPU")
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge")
    m.add_argument("results", type=Path)
    m.add_argument("--checks", type=Path, nargs="*", default=[])
    m.add_argument("--warm", type=Path, nargs="*", default=[])
    m.add_argument("--conditions", type=Path, default=None)
    a = p.parse_args(argv)
    conditions = a.conditions.read_text() if a.conditions and a.conditions.exists() else ""
    payload = merge(a.results, a.checks, a.warm, conditions)
    for row in payload["results"]:
        print(f"  {row_label(row)} order {row['order']} K={row['inner_steps']}: "
              f"check {row['check']}" + (f" ({row['check_grad_rel_err']:.1e})"
                                         if row.get("check_grad_rel_err") is not None else "")
              + (f", {row['median_s']:.4f} s/step" if row.get("status") == "ok" else
                 f", {row.get('reason', 'unavailable')}"))
    for q in payload["ratios"]:
        vs = ", ".join(f"{k} {v:.2f}x" for k, v in q["vs"].items())
        print(f"  ratios order {q['order']} K={q['inner_steps']}: {vs or 'no peer timed'}")


if __name__ == "__main__":
    main()
