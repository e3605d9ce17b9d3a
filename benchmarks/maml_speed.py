"""MAML meta-step speed: metajax against learn2learn, higher, torch.func and plain PyTorch, timed
side by side in one run. Every figure to quote is a ratio from one run on one machine.

Each implementation runs in a fresh process per order (same seed, weights and episode, generated
once with numpy and passed as .npz files; the same allocator settings), is first checked in float64
against a float64 PyTorch reference (relative error of the whole meta-gradient) and is then timed
after warm-up over `--repeats` meta-steps (meta-gradient + one Adam step).

    bash benchmarks/peers/install.sh        # once: the PyTorch peers in .venv-peers
    python benchmarks/maml_speed.py --workload A --order both --inner-steps 1 --repeats 5
    python benchmarks/maml_speed.py --workload B --inner-steps 5
    python benchmarks/maml_speed.py --workload C                     # 10 inner steps, remat or not
    python benchmarks/maml_speed.py --meta-batch 2 --repeats 2 --impls metajax,torch   # a smoke run
    python benchmarks/maml_speed.py --dump-grad /tmp/maml_dump --impls none   # float64 export only
    python benchmarks/maml_speed.py --impls metajax --order both --train-check 20   # vs `metajax train`
    python benchmarks/maml_speed.py --impls none --scaling     # meta-batch, inner steps, devices

Workloads: A, conv4 MAML on 28x28x1 5-way 1-shot episodes (15 queries per class, meta-batch 32,
inner SGD lr 0.4); B, sinusoid MAML with the MLP 1-40-40-1 (10 support and 10 query points,
meta-batch 25, inner lr 0.01, order 2); C, A at 10 inner steps and order 2, metajax with and
without remat. `--scaling` adds metajax rows over meta-batch, inner steps and forced CPU devices.

metajax goes through the library's public path only (`make_config`, `metajax.registry.build_learner`,
`make_train_step` or `meta_gradient` + optax), so speed-ups inside the library are measured as-is.

This file is the driver (options, processes, checks, timing, scaling, the results file); the shared
problem and the metajax worker are in `maml_speed_workloads.py`, the ratios, table and plot in
`maml_speed_report.py`, the machine, FLOP count, timing and results schema in `metajax.bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from maml_speed_report import (
    markdown,
    plot,
    ratio_rows,
    results_name,
    scaling_lines,
    variant_label,
)
from maml_speed_workloads import WORKLOADS, make_problem, run_metajax_job, save_npz

ROOT = Path(__file__).resolve().parents[1]

PEERS = ("learn2learn", "higher", "torchfunc", "torch", "torchfunc-bn")
IMPLS = ("metajax",) + PEERS
DEFAULT_IMPLS = "metajax,learn2learn,higher,torchfunc,torch"
# The allocator, set identically in every timed process (`--allocator`): freed memory kept in the
# process so that a step does not spend its time in page faults. "auto" (jemalloc with decay off if
# installed, else glibc tunables) is what `metajax train` uses (metajax.allocator); "malloc-env" is
# glibc's MALLOC_MMAP_MAX_/MALLOC_TRIM_THRESHOLD_ variables; "system" sets nothing.
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(64 * 2**30)}
ALLOCATOR_ENV: dict = {}
# what the user set; the driver itself runs with preallocation off so that on a GPU the workers,
# one after another, get the memory (JAX takes 75 % of it by default)
DRIVER_PREALLOCATE = os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")


def set_allocator(choice: str) -> dict:
    """Fills ALLOCATOR_ENV for `choice` and returns it."""
    from metajax.allocator import allocator_env

    ALLOCATOR_ENV.clear()
    ALLOCATOR_ENV.update(MALLOC_ENV if choice == "malloc-env" else allocator_env(choice))
    ALLOCATOR_ENV["METAJAX_ALLOCATOR_SET"] = "1"
    return ALLOCATOR_ENV


CHECK_RTOL = 1e-9  # float64 implementations that are right agree to ~1e-12

SCALING_META_BATCH = (1, 4, 16, 32, 64)
SCALING_INNER_STEPS = (1, 2, 5, 10)
SCALING_DEVICES = (1, 2)


# --- the driver ---------------------------------------------------------------------------------

def run_job(job: dict, python: str, script: Path, env_extra: dict, timeout: float) -> dict:
    """Runs one job in a fresh process; returns its result, or `error` with the output's tail."""
    env = {**os.environ, **ALLOCATOR_ENV, **env_extra}
    # the driver's own JAX does not preallocate GPU memory (see main); each worker does as usual
    env.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)
    if DRIVER_PREALLOCATE is not None:
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = DRIVER_PREALLOCATE
    job_path = Path(job["out"]).with_suffix(".job.json")
    job_path.write_text(json.dumps(job))
    try:
        proc = subprocess.run([python, str(script), "--job", str(job_path)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    except OSError as error:
        return {"error": f"could not start {python}: {error}"}
    if proc.returncode != 0 or not Path(job["out"]).exists():
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        return {"error": f"exit status {proc.returncode}: {lines[-1]}",
                "output_tail": lines[-12:]}
    return json.loads(Path(job["out"]).read_text())


def relative_error(grads: dict, reference: dict) -> float:
    keys = sorted(k for k in reference if k != "meta_loss")
    if sorted(k for k in grads if k != "meta_loss") != keys:
        return float("inf")
    a = np.concatenate([np.ravel(grads[k]) for k in keys])
    b = np.concatenate([np.ravel(reference[k]) for k in keys])
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def peer_versions(python: str) -> dict:
    try:
        proc = subprocess.run([python, str(ROOT / "benchmarks/peers/torch_maml.py"), "--versions"],
                              capture_output=True, text=True, timeout=300)
        return json.loads(proc.stdout)
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError) as error:
        return {"error": f"{python}: {type(error).__name__}: {error}"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="A")
    p.add_argument("--order", choices=["1", "2", "both"], default=None,
                   help="MAML order (A: both, B and C: 2)")
    p.add_argument("--inner-steps", type=int, default=None, help="A, B: 1; C: 10")
    p.add_argument("--meta-batch", type=int, default=None, help="tasks per step (A, C: 32; B: 25)")
    p.add_argument("--ways", type=int, default=None)
    p.add_argument("--shots", type=int, default=None, help="B: support points")
    p.add_argument("--queries", type=int, default=None, help="per class (B: query points)")
    p.add_argument("--inner-lr", type=float, default=None, help="A, C: 0.4; B: 0.01")
    p.add_argument("--outer-lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--width", type=int, default=64, help="conv4 filters")
    p.add_argument("--repeats", type=int, default=5, help="timed meta-steps per implementation")
    p.add_argument("--min-seconds", type=float, default=2.0,
                   help="time more than --repeats steps until they add up to this (fast steps)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the first call")
    p.add_argument("--impls", default=DEFAULT_IMPLS,
                   help=f"comma-separated, from {', '.join(IMPLS)}; 'none' for no timing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check-meta-batch", type=int, default=2,
                   help="tasks of the float64 correctness check")
    p.add_argument("--no-check", action="store_true", help="skip the float64 check")
    p.add_argument("--check-only", action="store_true", help="the float64 check, no timing")
    p.add_argument("--metajax-step", choices=["train", "grad"], default="train",
                   help="train: metajax's make_train_step; grad: jit(meta_gradient + adam)")
    p.add_argument("--scaling", action="store_true",
                   help="metajax rows for meta-batch 1,4,16,32,64, inner steps 1,2,5,10 and "
                        "1 and 2 forced CPU devices")
    p.add_argument("--scaling-meta-batches", default=",".join(map(str, SCALING_META_BATCH)))
    p.add_argument("--scaling-inner-steps", default=",".join(map(str, SCALING_INNER_STEPS)))
    p.add_argument("--scaling-devices", default=",".join(map(str, SCALING_DEVICES)))
    p.add_argument("--train-check", type=int, default=0, metavar="STEPS",
                   help="also run `metajax train` STEPS steps on Omniglot (needs the data) with "
                        "the timed configuration and compare its steps/s with the benchmark's")
    p.add_argument("--task-map", default=None,
                   help="metajax's task_map (vmap, map, map:N); default: the library's. "
                        "Comma-separated: one metajax row per task map, in the same run")
    p.add_argument("--compile-repeats", type=int, help="ahead-of-time compiles of each metajax "
                   "step, from scratch; the median is reported (default 3 with --scaling, else 1)")
    p.add_argument("--compile-cache", choices=["cold", "warm"], default="cold",
                   help="warm: each metajax process reads its compiled step from JAX's "
                        "persistent compilation cache, written by a process before it (as a "
                        "resumed `metajax train` does), so its memory excludes the compiler's")
    p.add_argument("--allocator", default="auto",
                   choices=["auto", "jemalloc", "glibc", "malloc-env", "system"],
                   help="memory allocator of every timed process (default: as metajax train)")
    p.add_argument("--peer-python", default=str(ROOT / ".venv-peers/bin/python"))
    p.add_argument("--torch-device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the PyTorch peers run (auto: the GPU if torch sees one)")
    p.add_argument("--peak-gflops", type=float, default=None,
                   help="the machine's peak fp32 GFLOP/s, instead of the computed one")
    p.add_argument("--json", default=None, help="also write the JSON here")
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks/results"))
    p.add_argument("--dump-grad", default=None, metavar="DIR",
                   help="write params/episode/grads .npz of workload A (float64) to DIR")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per process")
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)  # worker mode
    args = p.parse_args(argv)
    if args.compile_repeats is not None and args.compile_repeats < 1:
        p.error("--compile-repeats must be at least 1")
    for key, value in WORKLOADS[args.workload].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _tag(impl: str, variant: dict, order: int, what: str) -> str:
    task_map = (variant.get("task_map") or "").replace(":", "")
    return (f"{what}_{impl}{'_' + task_map if task_map else ''}"
            f"{'_remat' if variant.get('remat') else ''}_o{order}")


def compile_repeats(args) -> int:
    """Ahead-of-time compiles per metajax row (the median is `aot_compile_s`): as asked, else 3
    for --scaling, whose compile-time goal is a ratio of two such times, and one compile of a
    step varied by up to 15% from the next in one run, else 1."""
    return args.compile_repeats or (3 if args.scaling else 1)


def job_base(args, workdir: Path, tag: str) -> dict:
    return {"workload": "B" if args.workload == "B" else "A", "ways": args.ways,
            "shots": args.shots, "queries": args.queries, "inner_steps": args.inner_steps,
            "inner_lr": args.inner_lr, "outer_lr": args.outer_lr, "width": args.width,
            "seed": args.seed, "warmup": args.warmup, "repeats": args.repeats,
            "min_seconds": args.min_seconds, "compile_repeats": compile_repeats(args),
            "metajax_step": args.metajax_step, "task_map": getattr(args, "task_map", None),
            "torch_device": getattr(args, "torch_device", "auto"),
            "out": str(workdir / f"{tag}.json")}


class Driver:
    def __init__(self, args, workdir: Path):
        self.args, self.workdir = args, workdir
        self.log: list[str] = []

    def say(self, line: str) -> None:
        print(line, flush=True)

    def launch(self, impl: str, job: dict, env_extra: dict | None = None) -> dict:
        if impl == "metajax":
            python, script = sys.executable, Path(__file__).resolve()
        else:
            python, script = self.args.peer_python, ROOT / "benchmarks/peers/torch_maml.py"
            python = shutil.which(python) or python  # a path, or a name on PATH
            if not Path(python).exists():
                return {"error": f"peer python {python} not found: run "
                                 "`bash benchmarks/peers/install.sh` (or pass --peer-python)"}
        return run_job({**job, "impl": impl}, python, script, env_extra or {}, self.args.timeout)

    def problem_files(self, tasks: int, dtype, tag: str) -> tuple[Path, Path]:
        a = self.args
        params, episode = make_problem(a.workload, a.seed, tasks, a.ways, a.shots, a.queries,
                                       a.width)
        return (save_npz(self.workdir / f"{tag}_params.npz", params, dtype),
                save_npz(self.workdir / f"{tag}_episode.npz", episode, dtype))

    def check(self, impls: list[str], orders: list[int], variants: dict) -> dict:
        """Float64 meta-loss and meta-gradient of each implementation against the reference."""
        a = self.args
        params, episode = self.problem_files(a.check_meta_batch, np.float64, "check")
        out: dict = {}
        for order in orders:
            base = {**job_base(a, self.workdir, f"check_ref_o{order}"), "mode": "check",
                    "order": order, "params": str(params), "episode": str(episode),
                    "meta_batch": a.check_meta_batch}
            ref_path = self.workdir / f"check_ref_o{order}.npz"
            ref = self.launch("reference", {**base, "grads_out": str(ref_path)})
            reference = None
            if "error" in ref:
                self.say(f"check order {order}: no float64 reference ({ref['error']})")
            else:
                with np.load(ref_path) as f:
                    reference = {k: f[k] for k in f.files}
            for impl in impls:
                for variant in variants.get(impl, [{}]):
                    tag = _tag(impl, variant, order, "check")
                    path = self.workdir / f"{tag}.npz"
                    job = {**base, **variant, "out": str(self.workdir / f"{tag}.json"),
                           "grads_out": str(path)}
                    env = {"JAX_ENABLE_X64": "1"} if impl == "metajax" else {}
                    res = self.launch(impl, job, env)
                    key = (impl, variant_label(variant), order)
                    if "error" in res:
                        out[key] = {"check": "error", "reason": res["error"]}
                    elif reference is None:
                        out[key] = {"check": "n/a", "reason": "no float64 reference (torch)"}
                    else:
                        with np.load(path) as f:
                            grads = {k: f[k] for k in f.files}
                        err = relative_error(grads, reference)
                        loss_err = abs(float(grads["meta_loss"]) - float(reference["meta_loss"])) \
                            / abs(float(reference["meta_loss"]))
                        ok = err <= CHECK_RTOL and loss_err <= CHECK_RTOL
                        out[key] = {"check": "pass" if ok else "fail", "grad_rel_err": err,
                                    "loss_rel_err": loss_err, "notes": res.get("notes", [])}
                    c = out[key]
                    self.say(f"check order {order} {impl}{key[1]}: "
                             f"{c['check']}" + (f" (grad rel err {c['grad_rel_err']:.2e}, "
                                                f"loss rel err {c['loss_rel_err']:.2e})"
                                                if "grad_rel_err" in c else
                                                f" ({c.get('reason', '')})"))
        return out

    def time_all(self, impls, orders, variants, checks) -> list[dict]:
        a = self.args
        params, episode = self.problem_files(a.meta_batch, np.float32, "time")
        rows = []
        for order in orders:
            for impl in impls:
                for variant in variants.get(impl, [{}]):
                    remat = bool(variant.get("remat"))
                    tag = _tag(impl, variant, order, "time")
                    job = {**job_base(a, self.workdir, tag), **variant, "mode": "time",
                           "order": order, "params": str(params), "episode": str(episode),
                           "meta_batch": a.meta_batch}
                    self.say(f"timing {impl}{variant_label(variant)} order {order} ...")
                    env, cold_compile = {}, None
                    if impl == "metajax" and a.compile_cache == "warm":
                        env = {"JAX_COMPILATION_CACHE_DIR": str(self.workdir / "xla-cache"),
                               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
                        first = self.launch(impl, {**job, "mode": "compile"}, env)
                        cold_compile = first.get("compile_s")
                    res = self.launch(impl, job, env)
                    if cold_compile is not None and "error" not in res:
                        res = {**res, "cold_compile_s": cold_compile, "compile_cache": "warm"}
                    row = self.row(impl, order, a.inner_steps, a.meta_batch, remat, res,
                                   checks.get((impl, variant_label(variant), order)))
                    if variant.get("task_map"):
                        row["variant_task_map"] = variant["task_map"]
                    rows.append(row)
        return rows

    def row(self, impl, order, inner_steps, meta_batch, remat, res, check, devices=1) -> dict:
        peak = self.machine["peak"]["peak_gflops"]
        row = {"impl": impl, "workload": self.args.workload, "order": order,
               "inner_steps": inner_steps, "meta_batch": meta_batch, "remat": remat,
               "devices": devices,
               "check": (check or {}).get("check", "n/a"),
               "check_grad_rel_err": (check or {}).get("grad_rel_err")}
        if (check or {}).get("reason"):
            row["check_reason"] = check["reason"]
        if "error" in res:
            row.update({"status": "unavailable", "reason": res["error"]})
            self.say(f"  {impl} order {order}: unavailable: {res['error']}")
            return row
        row.update({k: res.get(k) for k in (
            "median_s", "min_s", "max_s", "compile_s", "maxrss_mb", "sys_s", "user_s",
            "user_total_s", "sys_total_s", "times_s", "repeats", "warmup", "threads", "notes",
            "xla_gflop", "xla_cost_analysis_gflop", "xla_temp_mb", "aot_compile_s",
            "aot_compile_all_s", "task_map",
            "setup_peak_rss_mb", "steps_start_rss_mb", "steps_peak_rss_mb",
            "cold_compile_s", "compile_cache", "step_from_compile_cache", "first_step_loss",
            "xla_gflop_source", "device",
            "metajax_step", "config")
            if k in res})
        row["status"] = "ok"
        row["tasks_per_s"] = meta_batch / res["median_s"]
        if res.get("xla_gflop") and peak:
            row["peak_fraction"] = res["xla_gflop"] / res["median_s"] / peak
        self.say(f"  {impl} order {order}: {res['median_s']:.4f} s/step, "
                 f"{row['tasks_per_s']:.1f} tasks/s, compile {res['compile_s']:.1f} s, "
                 f"RSS {res['maxrss_mb']:.0f} MB, user {res['user_s']:.2f} s, "
                 f"sys {res['sys_s']:.2f} s per step")
        return row

    def scaling(self) -> list[dict]:
        """metajax over meta-batch (1 inner step), inner steps (the run's meta-batch) and 1 or 2
        forced CPU devices, order 2 (workload A shapes)."""
        a = self.args
        rows = []
        ints = lambda text: [int(v) for v in text.split(",") if v]  # noqa: E731
        settings = [(t, 1, 1) for t in ints(a.scaling_meta_batches)]
        settings += [(a.meta_batch, k, 1) for k in ints(a.scaling_inner_steps)]
        settings += [(a.meta_batch, a.inner_steps, d) for d in ints(a.scaling_devices)]
        for tasks, steps, devices in dict.fromkeys(settings):
            params, episode = self.problem_files(tasks, np.float32, f"scale_{tasks}")
            job = {**job_base(a, self.workdir, f"scale_{tasks}_{steps}_{devices}"),
                   "mode": "time", "order": 2, "params": str(params), "episode": str(episode),
                   "meta_batch": tasks, "inner_steps": steps}
            env = {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") +
                                 f" --xla_force_host_platform_device_count={devices}").strip()}
            self.say(f"scaling: metajax meta-batch {tasks}, inner steps {steps}, "
                     f"{devices} device(s) ...")
            res = self.launch("metajax", job, env)
            row = self.row("metajax", 2, steps, tasks, False, res, None, devices)
            row["scaling"] = True
            rows.append(row)
        # the same seed draws the same tasks: the first step's loss must not depend on devices
        by_devices = [r for r in rows if r.get("first_step_loss") is not None
                      and (r["meta_batch"], r["inner_steps"]) == (a.meta_batch, a.inner_steps)]
        if len(by_devices) > 1:
            base = by_devices[0]["first_step_loss"]
            for r in by_devices:
                r["same_loss_as_1_device"] = abs(r["first_step_loss"] - base) <= 1e-5 * abs(base)
        return rows


    def train_check(self, rows: list[dict], orders: list[int]) -> list[dict]:
        """`--train-check N`: `metajax train maml|fomaml` for N steps on Omniglot with the timed
        configuration (first metajax variant), in a fresh process with the same allocator; its
        summary's steps/s (first step excluded, as here) against the benchmark's median step."""
        a, out = self.args, []
        for order in orders:
            ref = next((r for r in rows if r["impl"] == "metajax" and r["order"] == order
                        and r.get("status") == "ok" and not r["remat"] and not r.get("scaling")),
                       None)
            if ref is None:
                continue
            run_dir = self.workdir / f"train_check_o{order}"
            config = ref.get("config") or {}
            cmd = [sys.executable, "-m", "metajax.cli", "train", "maml" if order == 2 else "fomaml",
                   "--out", str(run_dir), "--steps", str(a.train_check), "--ways", str(a.ways),
                   "--shots", str(a.shots), "--queries", str(a.queries),
                   "--meta-batch", str(a.meta_batch), "--inner-steps", str(a.inner_steps),
                   "--inner-lr", str(a.inner_lr), "--lr", str(a.outer_lr),
                   "--width", str(a.width), "--downsample", "maxpool", "--val-every", "0",
                   "--eval-episodes", "10", "--checkpoint-every", str(10 * a.train_check),
                   "--no-progress"]
            if config.get("task_map"):
                cmd += ["--task-map", config["task_map"]]
            self.say(f"train check: metajax train, order {order}, {a.train_check} steps ...")
            env = {**os.environ, **ALLOCATOR_ENV, "METAJAX_ALLOCATOR": "system"}
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                  timeout=a.timeout)
            summary = run_dir / "summary.json"
            if proc.returncode != 0 or not summary.exists():
                tail = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
                out.append({"order": order, "error": f"exit status {proc.returncode}: {tail[-1]}"})
                continue
            steps_per_s = json.loads(summary.read_text())["steps_per_s"]
            out.append({"order": order, "steps": a.train_check, "task_map": config.get("task_map"),
                        "train_step_s": 1 / steps_per_s, "benchmark_step_s": ref["median_s"],
                        "ratio": 1 / (steps_per_s * ref["median_s"]),
                        "command": " ".join(shlex.quote(c) for c in cmd[1:])})
        return out



def describe(args) -> str:
    if args.workload == "B":
        return (f"sinusoid MLP 1-40-40-1, {args.shots} support / {args.queries} query points, "
                f"meta-batch {args.meta_batch}, inner lr {args.inner_lr}")
    return (f"conv4 (width {args.width}, max-pool), {args.ways}-way {args.shots}-shot, "
            f"{args.queries} queries per class, meta-batch {args.meta_batch}, inner lr "
            f"{args.inner_lr}, {args.inner_steps} inner step(s), Adam {args.outer_lr}; metajax "
            f"over tasks: {args.task_map or 'the library default'}"
            + ("; metajax's compiled step read from a persistent compilation cache that an "
               "earlier process wrote (--compile-cache warm: compile s is loading it, and RSS "
               "excludes the compiler's memory)" if args.compile_cache == "warm" else ""))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.job:  # worker mode: one metajax job in this fresh process
        job = json.loads(Path(args.job).read_text())
        Path(job["out"]).write_text(json.dumps(run_metajax_job(job)))
        return
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # the driver's JAX (workers: run_job)
    set_allocator(args.allocator)
    start = time.time()
    impls = [] if args.impls in ("", "none") else [i.strip() for i in args.impls.split(",")]
    unknown = [i for i in impls if i not in IMPLS]
    if unknown:
        raise SystemExit(f"unknown --impls {unknown}; choose from {', '.join(IMPLS)}")
    orders = [1, 2] if args.order == "both" else [int(args.order)]
    task_maps = args.task_map.split(",") if args.task_map else [None]
    multiple = len(task_maps) > 1
    variants = {"metajax": [{"remat": remat, **({"task_map": m} if multiple else {})}
                            for m in task_maps
                            for remat in ((False, True) if args.workload == "C" else (False,))]}
    with tempfile.TemporaryDirectory(prefix="maml_speed_") as tmp:
        workdir = Path(tmp)
        driver = Driver(args, workdir)
        if args.dump_grad:
            if args.workload == "B":
                raise SystemExit("--dump-grad exports workload A (conv4); drop --workload B")
            params, episode = driver.problem_files(args.meta_batch, np.float64, "dump")
            job = {**job_base(args, workdir, "dump"), "mode": "dump", "params": str(params),
                   "episode": str(episode), "meta_batch": args.meta_batch,
                   "dump_dir": str(Path(args.dump_grad).resolve())}
            res = driver.launch("metajax", job, {"JAX_ENABLE_X64": "1"})
            if "error" in res:
                raise SystemExit(f"--dump-grad failed: {res['error']}")
            print(f"float64 gradients of workload A written to {res['dump_dir']} "
                  f"(meta-loss order 1 {res['meta_loss']['1']:.12g}, order 2 "
                  f"{res['meta_loss']['2']:.12g})")
        if not impls and not args.scaling:
            return
        from metajax.bench.machine import speed_machine  # imports JAX: after the settings above

        driver.machine = speed_machine(args.peak_gflops)
        peers = [i for i in impls if i != "metajax"]
        versions = {"metajax_python": sys.version.split()[0]}
        import flax
        import jax
        import optax

        versions.update({"jax": jax.__version__, "jaxlib": getattr(jax.lib, "__version__", None),
                         "flax": flax.__version__, "optax": optax.__version__,
                         "numpy": np.__version__})
        if peers:
            versions.update(peer_versions(args.peer_python))
        checks = {} if args.no_check else driver.check(impls, orders, variants)
        if args.check_only:
            print(json.dumps({f"{i}{v} order {o}": c for (i, v, o), c in checks.items()},
                             indent=1))
            return
        rows = driver.time_all(impls, orders, variants, checks)
        if args.scaling:
            rows += driver.scaling()
        train_checks = driver.train_check(rows, orders) if args.train_check else []
    notes = {r["impl"]: r["notes"] for r in rows if r.get("notes")}
    if "torchvision" in versions:
        notes.setdefault("learn2learn", []).append(versions["torchvision"])
    notes = {k: list(dict.fromkeys(v)) for k, v in notes.items()}
    payload = {
        "machine": driver.machine, "versions": versions,
        "command": "python " + " ".join(shlex.quote(x) for x in sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "settings": {**{k: getattr(args, k) for k in (
            "workload", "order", "inner_steps", "meta_batch", "ways", "shots", "queries",
            "inner_lr", "outer_lr", "width", "repeats", "min_seconds", "warmup", "seed",
            "check_meta_batch",
            "metajax_step", "task_map", "compile_cache")}, "description": describe(args),
            "check_rtol": CHECK_RTOL},
        "allocator": args.allocator, "allocator_env": ALLOCATOR_ENV, "notes": notes,
        # XLA's flags change what is measured (on a GPU, --xla_gpu_autotune_level=0 trades a
        # slower step for a much shorter compile)
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "flop_count": "xla_gflop: 2 x multiply-adds of the convolutions and dots of the compiled "
                      "step's optimised HLO, window taps on padding excluded, while-loop bodies "
                      "(lax.map over tasks, the inner lax.scan) times their known trip counts "
                      "(metajax/bench/flops.py); xla_cost_analysis_gflop: XLA's cost_analysis() "
                      "flops, which count each loop body once. peak_fraction = xla_gflop / "
                      "median_s / machine.peak.peak_gflops",
        "results": rows, "ratios": ratio_rows(rows), "scaling": scaling_lines(rows),
        "train_check": train_checks,
        "wall_time_s": round(time.time() - start, 1),
    }
    table = markdown(payload)
    print(table)
    from metajax.bench.results import from_json, write  # imports metajax: after the settings

    out = Path(args.results_dir)
    # non-default sizes, GPUs, scaling: their own files
    name = results_name(args, driver.machine["accelerator"]["platform"])
    result = from_json(name, payload, table)
    result.machine_in_header = False  # the table names it
    write(result, out, plot=plot, indent=1)
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=1))
    print(f"results written to {out / name}.{{json,md,png}}")


if __name__ == "__main__":
    main()
