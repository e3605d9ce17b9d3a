"""The results of `benchmarks/maml_speed.py` (and of `benchmarks/device_check.py`, which merges
float64 checks into them): row labels, the metajax / peer ratios, the scaling summary, the
markdown table and the plot, and the results file's name. Reads the results' JSON object only, so
that a results file can be rendered again without running anything.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from maml_speed_workloads import WORKLOADS


def variant_label(variant: dict) -> str:
    """' remat', ' (map)', ... : how a metajax variant is named in tags, logs and tables."""
    task_map = variant.get("task_map")
    return (f" ({task_map})" if task_map else "") + (" remat" if variant.get("remat") else "")


def row_label(row: dict) -> str:
    """The implementation of a results row with its variant (metajax's task map when the run
    compared several, remat)."""
    return row["impl"] + variant_label({"task_map": row.get("variant_task_map"),
                                        "remat": row.get("remat")})


def added_rss(row: dict) -> float | None:
    """Peak RSS (MB) the meta-steps added to what the process held before its first step:
    imports, weights and data, and for metajax the compiled step (compiled ahead of time). The
    step's own memory, apart from each library's fixed cost (None where it was not recorded)."""
    if row.get("setup_peak_rss_mb") is None or row.get("maxrss_mb") is None:
        return None
    return max(row["maxrss_mb"] - row["setup_peak_rss_mb"], 0.0)


def ratio_rows(rows: list[dict]) -> list[dict]:
    """metajax tasks/s over each peer's, at the same order/inner steps/meta-batch (and remat off
    for the peers: they have none); `fastest_correct_peer` per setting."""
    out = []
    timed = [r for r in rows if r.get("status") == "ok" and not r.get("scaling")]
    for m in (r for r in timed if r["impl"] == "metajax"):
        same = [r for r in timed if r["impl"] != "metajax" and r["order"] == m["order"]
                and r["inner_steps"] == m["inner_steps"] and r["meta_batch"] == m["meta_batch"]]
        correct = [r for r in same if r["check"] == "pass"]
        best = max(correct, key=lambda r: r["tasks_per_s"], default=None)
        out.append({
            "order": m["order"], "inner_steps": m["inner_steps"], "meta_batch": m["meta_batch"],
            "remat": m["remat"], "task_map": m.get("variant_task_map"),
            "vs": {r["impl"]: m["tasks_per_s"] / r["tasks_per_s"] for r in same},
            "fastest_correct_peer": best["impl"] if best else None,
            "vs_fastest_correct_peer": m["tasks_per_s"] / best["tasks_per_s"] if best else None,
            "rss_vs_fastest_correct_peer": m["maxrss_mb"] / best["maxrss_mb"] if best else None,
            "added_rss_vs_fastest_correct_peer": (
                added_rss(m) / added_rss(best) if best and added_rss(m) is not None
                and added_rss(best) else None),
        })
    return out


# One machine's identical runs differ by 15-20 %: a per-unit ratio up to this is linear within noise.
LINEAR_NOISE = 1.15


def linearity(per_unit: float) -> str:
    if per_unit <= 1:
        return "at most linear"
    if per_unit <= LINEAR_NOISE:
        return f"linear within {100 * (LINEAR_NOISE - 1):.0f} % run-to-run spread"
    return "MORE than linear"


def scaling_series(rows: list[dict]) -> list[tuple[str, dict[int, dict]]]:
    """The `--scaling` rows on 1 device as ("meta-batch" | "inner steps", {size: row}) series,
    each the longest run of rows that share the other setting, sorted by size; only series of at
    least two sizes."""
    ok = [r for r in rows if r.get("scaling") and r.get("status") == "ok" and r["devices"] == 1]
    out = []
    for what, fixed, size in (("meta-batch", "inner_steps", "meta_batch"),
                              ("inner steps", "meta_batch", "inner_steps")):
        group: dict = {}
        for r in ok:
            group.setdefault(r[fixed], {})[r[size]] = r
        longest = max(group.values(), key=len, default={})
        if len(longest) > 1:
            out.append((what, dict(sorted(longest.items()))))
    return out


def scaling_lines(rows: list[dict]) -> list[dict]:
    """The C goals read off the `--scaling` series: time per step against meta-batch (1 inner
    step) and inner steps, each as (time ratio) / (size ratio): at most 1 is at most linear, up to
    `LINEAR_NOISE` linear within the run-to-run spread of these machines; and compile time at the
    most inner steps against 1 inner step (goal <= 1.5x). Compile time is the ahead-of-time
    `lower(...).compile()` (`aot_compile_s`); the first call (`compile_s`) also runs a step, whose
    own time grows with the inner steps, so its ratio is reported beside it, not judged."""
    out = []
    for what, series in scaling_series(rows):
        (smallest, base), *rest = series.items()
        for n, r in rest:
            time_ratio = r["median_s"] / base["median_s"]
            first_call_ratio = r["compile_s"] / base["compile_s"]
            aot = r.get("aot_compile_s"), base.get("aot_compile_s")
            out.append({"what": what, "from": smallest, "to": n, "time_ratio": time_ratio,
                        "per_unit": time_ratio / (n / smallest),
                        "first_call_ratio": first_call_ratio,
                        # results files from before aot_compile_s: the first call's ratio
                        "compile_ratio": aot[0] / aot[1] if all(aot) else first_call_ratio,
                        "compiles": min(len(x.get("aot_compile_all_s") or [0]) for x in (r, base))})
    return out


def markdown(payload: dict) -> str:
    rows, ratios = payload["results"], payload["ratios"]
    peak = payload["machine"]["peak"]
    acc = payload["machine"].get("accelerator") or {"platform": "cpu"}
    where = (f"{acc['device_kind']} ({acc['platform']}; host {payload['machine'].get('cpu_model')}"
             f", {payload['machine'].get('cores')} cores)" if acc["platform"] != "cpu" else
             f"{payload['machine'].get('cpu_model')}, {payload['machine'].get('cores')} cores")
    peak_text = (f"{peak['peak_gflops']:.0f} GFLOP/s fp32" if peak.get("peak_gflops")
                 else "unknown")
    lines = [f"MAML meta-step, workload {payload['settings']['workload']}: "
             f"{payload['settings']['description']}", "",
             f"Machine: {where}, peak {peak_text} ({peak['assumptions']}); "
             f"load {payload['machine'].get('load_average_1min')}; allocator "
             f"{' '.join(f'{k}={v}' for k, v in payload['allocator_env'].items())}", "",
             "| impl | order | K | T | remat | dev | check (rel err) | median s | min s | max s "
             "| tasks/s | metajax speed-up | compile s | RSS MB | added by steps MB | XLA temp MB "
             "| user s/step | sys s/step | XLA GFLOP | % of peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        check = r["check"] + (f" ({r['check_grad_rel_err']:.1e})"
                              if r.get("check_grad_rel_err") is not None else "")
        name = row_label({**r, "remat": False})  # remat has its own column
        head = (f"| {name} | {r['order']} | {r['inner_steps']} | {r['meta_batch']} | "
                f"{'yes' if r['remat'] else ''} | {r['devices']} | {check} |")
        if r.get("status") != "ok":
            lines.append(head + f" unavailable: {r.get('reason', '')[:120]} |" + " |" * 12)
            continue
        speedup = ""
        if r["impl"] != "metajax":  # against the first metajax variant (remat off) listed
            for q in ratios:
                if (q["order"], q["inner_steps"], q["meta_batch"], q["remat"]) == (
                        r["order"], r["inner_steps"], r["meta_batch"], False) and r["impl"] in q["vs"]:
                    speedup = f"{q['vs'][r['impl']]:.2f}x"
                    break
        cells = [f"{r['median_s']:.4f}", f"{r['min_s']:.4f}", f"{r['max_s']:.4f}",
                 f"{r['tasks_per_s']:.1f}", speedup, f"{r['compile_s']:.1f}",
                 f"{r['maxrss_mb']:.0f}",
                 f"{added_rss(r):.0f}" if added_rss(r) is not None else "",
                 f"{r['xla_temp_mb']:.0f}" if r.get("xla_temp_mb") is not None else "",
                 f"{r['user_s']:.3f}", f"{r['sys_s']:.3f}",
                 f"{r['xla_gflop']:.3g}" if r.get("xla_gflop") is not None else "",
                 f"{100 * r['peak_fraction']:.1f}" if r.get("peak_fraction") is not None else ""]
        lines.append(head + " " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("metajax speed-up = metajax tasks/s / the peer's tasks/s (same order, inner steps, "
                 "meta-batch, remat off; in a peer's row, of the first metajax variant listed). "
                 "Against the fastest peer whose float64 check passed:")
    for q in ratios:
        if q["fastest_correct_peer"]:
            lines.append(f"- order {q['order']}, {q['inner_steps']} inner step(s), meta-batch "
                         f"{q['meta_batch']}{', remat' if q['remat'] else ''}"
                         f"{', metajax over tasks: ' + q['task_map'] if q.get('task_map') else ''}: "
                         f"{q['vs_fastest_correct_peer']:.2f}x {q['fastest_correct_peer']} "
                         f"(peak RSS {q['rss_vs_fastest_correct_peer']:.2f}x"
                         + (f", RSS added by the steps {q['added_rss_vs_fastest_correct_peer']:.2f}x"
                            if q.get("added_rss_vs_fastest_correct_peer") is not None else "")
                         + ")")
        else:
            lines.append(f"- order {q['order']}, {q['inner_steps']} inner step(s): no correct "
                         "peer timed")
    for r in rows:
        if "same_loss_as_1_device" in r and r["devices"] > 1:
            lines.append(f"- {r['devices']} forced CPU devices: first-step loss "
                         f"{'equal to' if r['same_loss_as_1_device'] else 'DIFFERENT from'} "
                         "1 device's (rel 1e-5)")
    for q in payload.get("scaling", []):
        line = (f"- scaling, {q['what']} {q['from']} -> {q['to']}: step time "
                f"{q['time_ratio']:.2f}x for {q['to'] / q['from']:.0f}x ({q['per_unit']:.2f} per "
                f"unit: {linearity(q['per_unit'])})")
        if q["what"] == "inner steps":
            each = f"median of {q['compiles']} compiles each; " if q.get("compiles", 1) > 1 else ""
            line += (f"; compile {q['compile_ratio']:.2f}x ({each}goal <= 1.5x: "
                     f"{'met' if q['compile_ratio'] <= 1.5 else 'NOT met'}; first call, "
                     f"compile and one step, {q['first_call_ratio']:.2f}x)")
        lines.append(line)
    for q in payload.get("train_check", []):
        if "error" in q:
            lines.append(f"- metajax train, order {q['order']}: failed ({q['error']})")
            continue
        lines.append(f"- `metajax train` ({q['steps']} steps on Omniglot, order {q['order']}): "
                     f"{q['train_step_s']:.4f} s/step against the benchmark's "
                     f"{q['benchmark_step_s']:.4f} ({q['ratio']:.2f}x; goal within 15 %: "
                     f"{'met' if q['ratio'] <= 1.15 else 'NOT met'})")
    for impl, notes in payload.get("notes", {}).items():
        lines += [f"- note ({impl}): {n}" for n in notes]
    return "\n".join(lines)


def plot(payload: dict, path: Path) -> None:
    """Tasks/s per implementation (bars), and with `--scaling` the step time against meta-batch
    and inner steps beside the proportional line through the smallest size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in payload["results"] if r.get("status") == "ok" and not r.get("scaling")]
    series = [(what, {n: r["median_s"] for n, r in by_size.items()})
              for what, by_size in scaling_series(payload["results"])]
    if not rows and not series:
        return
    groups = sorted({(r["order"], r["inner_steps"]) for r in rows})
    labels = list(dict.fromkeys(row_label(r) for r in rows))
    bar_width = 1.8 + 1.6 * len(groups) * max(1, len(labels)) / 3 if rows else 0
    fig, axes = plt.subplots(1, (1 if rows else 0) + len(series), squeeze=False,
                             figsize=(bar_width + 3.6 * len(series), 4))
    axes = list(axes[0])
    if rows:
        ax = axes.pop(0)
        width = 0.8 / len(labels)
        for j, label in enumerate(labels):
            xs, ys, colors = [], [], []
            for i, g in enumerate(groups):
                for r in rows:
                    if (r["order"], r["inner_steps"]) == g and row_label(r) == label:
                        xs.append(i + j * width)
                        ys.append(r["tasks_per_s"])
                        colors.append(r["check"])
            bars = ax.bar(xs, ys, width, label=label)
            for bar, check in zip(bars, colors, strict=True):
                if check == "fail":
                    bar.set_hatch("//")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
        ax.set_xticklabels([f"order {o}, K={k}" for o, k in groups])
        ax.set_ylabel("tasks / s (higher is better)")
        ax.set_title(f"workload {payload['settings']['workload']}\n"
                     f"(hatched: float64 check failed)", fontsize=9)
        ax.legend(fontsize=8)
    for ax, (what, times) in zip(axes, series, strict=True):
        sizes = list(times)
        ax.plot(sizes, list(times.values()), "o-", label="metajax, order 2")
        ax.plot(sizes, [times[sizes[0]] * n / sizes[0] for n in sizes], "k--", lw=0.8,
                label="proportional to the smallest")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(what)
        ax.set_ylabel("seconds per meta-step")
        ax.set_title(f"step time against {what}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def results_name(args: argparse.Namespace, platform: str) -> str:
    """The stem of the results files of a run with `args` on `platform` (JAX's, "cpu" or "gpu"):
    `maml_speed_<workload>`, then the platform unless CPU, the sizes that differ from the workload's
    (`_k` inner steps, `_T` meta-batch, `_q` queries), `_scaling` and `_warm`."""
    name = f"maml_speed_{args.workload}"
    if platform != "cpu":
        name += f"_{platform}"
    for key, tag in (("inner_steps", "k"), ("meta_batch", "T"), ("queries", "q")):
        if getattr(args, key) != WORKLOADS[args.workload][key]:
            name += f"_{tag}{getattr(args, key)}"
    if args.scaling:
        name += "_scaling"
    if args.compile_cache == "warm":
        name += "_warm"
    return name
