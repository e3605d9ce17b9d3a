#!/usr/bin/env bash
# Issue 35, the GPU part: benchmarks/maml_speed.py on a lent GPU (one H100 or H200, no internet) in
# one prepared run of at most ~8 minutes, with XLA's autotuning on (XLA's default: any
# --xla_gpu_autotune_level in XLA_FLAGS is removed):
#   - workload A (conv4, T=32) at order 1 and 2 with 1 and 5 inner steps, workload B (sinusoid MLP,
#     order 2, 1 inner step): metajax against learn2learn and plain PyTorch autograd;
#   - the float64 meta-gradient check of every implementation on the GPU (maml_speed --check-only).
#
#   bash benchmarks/device_check.sh               # on the GPU machine (python3 there has jax+torch)
#   bash benchmarks/device_check.sh --dry-run     # on a CPU: every command validated by
#                                                 # maml_speed's parser, workload B run tiny end to end
#   bash benchmarks/device_check.sh --dry-run-full  # on a CPU: every step at tiny sizes (minutes)
#   bash benchmarks/device_check.sh --build-wheels  # here, once: the peers' wheels into .whl/
#   device tool: run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=540);
#   the files come back from $OUT: the log, each workload's json and md, and an archive
#   device_check_files.tar (plots, the first phase's logs); copy them into benchmarks/results/.
#   options: --results-dir DIR (default: benchmarks/results on the GPU, a temporary folder in a dry
#            run), --budget SECONDS (default 480: the whole script), --cold (no shared compilation
#            cache: each timed process compiles its step itself)
#   environment: PYTHON (default python3), PEER_PYTHON (default $PYTHON), OUT (if set, the log and
#            the results are also written there: at most 8 files, for the device tool)
#
# Two phases, so that compiling (tens of seconds per step with autotuning) does not run one step
# after another and no timing shares the machine:
#   1. untimed, in parallel: `maml_speed.py --check-only` per workload and order (float64 checks),
#      and a short metajax-only run per workload and order that compiles the timed step, all with
#      one persistent compilation cache (JAX's, with XLA's per-fusion autotuning cache in it).
#   2. timed, one process at a time: `maml_speed.py --no-check` per workload (A with 1 inner step,
#      B, A with 5), each reading its compiled step back from the cache; device_check.py merges the
#      phase-1 checks into its results (check column, ratios against correct peers), appends the
#      conditions to its markdown and draws its plot again. Workloads that the time left does not
#      allow are run with metajax only, or skipped, and the log says so.
# Peers: torch from the machine; learn2learn 0.2.0, higher 0.2.1, gym 0.26.2 and gym_notices as
# wheels in .whl/ (carried; `--build-wheels` makes them here: learn2learn is built from its sdist
# with Cython 3 for CPython 3.12, the device's Python). Without torch, metajax rows only.
set -u -o pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

MODE=real RESULTS_DIR="" BUDGET="${DEVICE_CHECK_BUDGET_S:-480}" COLD=0
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) MODE=dry ;;
    --dry-run-full) MODE=dryfull ;;
    --results-dir) RESULTS_DIR="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    --cold) COLD=1 ;;
    --build-wheels) MODE=wheels ;;
    -h|--help) usage; exit 0 ;;
    *) echo "device_check.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

PY="${PYTHON:-python3}"
PEER_PY="${PEER_PYTHON:-$PY}"

if [ "$MODE" = wheels ]; then
  # .whl/ for the GPU machine (CPython 3.12, no internet): needs a python3.12 here ($PYTHON312)
  # and PyPI. Ignored by git through .git/info/exclude; carry it: run(carry=[".whl"]).
  PY312=""
  for c in "${PYTHON312:-}" python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3; do
    if [ -n "$c" ] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2> /dev/null; then
      PY312="$c"; break
    fi
  done
  [ -n "$PY312" ] || { echo "no CPython 3.12 here: set PYTHON312" >&2; exit 1; }
  set -e
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  build="$(mktemp -d)"
  "$PY312" -m venv "$build/venv"
  "$build/venv/bin/python" -m pip install -q "Cython>=3" setuptools wheel
  "$build/venv/bin/python" -m pip download -q --no-deps --no-binary :all: learn2learn==0.2.0 \
    gym==0.26.2 -d "$build/src"
  mkdir -p .whl
  "$build/venv/bin/python" -m pip download -q --no-deps --only-binary :all: higher==0.2.1 \
    gym_notices==0.1.0 -d .whl
  tar xzf "$build/src/learn2learn-0.2.0.tar.gz" -C "$build"
  (cd "$build/learn2learn-0.2.0" && rm -f learn2learn/data/*.c \
    && "$build/venv/bin/python" -m cython -3 learn2learn/data/*.pyx \
    && "$build/venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation . -w "$ROOT/.whl")
  "$build/venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation \
    "$build/src/gym-0.26.2.tar.gz" -w .whl
  ls -la .whl
  exit 0
fi

START=$SECONDS
left() { echo $(( BUDGET - (SECONDS - START) )); }
WORK="$(mktemp -d /tmp/device_check.XXXXXX)"
if [ -z "$RESULTS_DIR" ]; then
  if [ "$MODE" = real ]; then RESULTS_DIR="$ROOT/benchmarks/results"; else RESULTS_DIR="$WORK/results"; fi
fi
mkdir -p "$RESULTS_DIR"
RESULTS_DIR="$(cd "$RESULTS_DIR" && pwd)"
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT"; LOG="$OUT/device_check.log"; else LOG="$WORK/device_check.log"; fi
exec > >(tee -a "$LOG") 2>&1
say() { echo "[device_check $(( SECONDS - START ))s] $*"; }

say "mode $MODE, budget ${BUDGET}s, results to $RESULTS_DIR, work $WORK, OUT ${OUT:-unset}"
say "repository $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout')"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# XLA's autotuning stays on: remove any flag that lowers it, whoever set it
if [[ "${XLA_FLAGS:-}" == *xla_gpu_autotune_level* ]]; then
  say "removing --xla_gpu_autotune_level from XLA_FLAGS='$XLA_FLAGS' (autotuning stays at XLA's default)"
  XLA_FLAGS="$(echo "$XLA_FLAGS" | sed -E 's/--xla_gpu_autotune_level(=[^ ]*)?//g; s/ +/ /g; s/^ //; s/ $//')"
fi
if [ -n "${XLA_FLAGS:-}" ]; then export XLA_FLAGS; else unset XLA_FLAGS; fi
say "XLA_FLAGS='${XLA_FLAGS:-}'"

# --- the machine, and the carried peers -----------------------------------------------------------
if [ "$MODE" = real ] && command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
fi
WHEELS=(.whl/*.whl)
if [ -e "${WHEELS[0]}" ]; then
  say "carried wheels: ${WHEELS[*]}"
  if [ "$MODE" = real ]; then
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
         --target "$WORK/site" "${WHEELS[@]}"; then
      export PYTHONPATH="$WORK/site:$PYTHONPATH"
    else
      say "installing the wheels failed: peers that need them will be missing"
    fi
  else
    say "dry run: the wheels are for the GPU machine's Python; not installed here"
  fi
else
  say "no .whl/ folder: learn2learn is used only if it is installed already"
fi
XLA_PYTHON_CLIENT_PREALLOCATE=false "$PY" - "$PEER_PY" > "$WORK/probe.txt" 2>&1 <<'EOF'
import importlib, importlib.metadata, subprocess, sys
print("python", sys.version.split()[0], sys.executable)
import jax
print("jax", jax.__version__, "backend", jax.default_backend(), jax.devices())
code = ("import torch, importlib.metadata as m\n"
        "print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),"
        " torch.cuda.get_device_name() if torch.cuda.is_available() else '')\n"
        "ok = ['torch']\n"
        "for n in ('learn2learn', 'higher'):\n"
        "    try:\n"
        "        __import__(n); print(n, m.version(n)); ok.append(n)\n"
        "    except Exception as e:\n"
        "        print(n, 'not importable:', type(e).__name__, str(e)[:200])\n"
        "print('PEERS_OK=' + ','.join(ok))\n")
proc = subprocess.run([sys.argv[1], "-c", code], capture_output=True, text=True, timeout=300)
print(proc.stdout.strip() or f"peer python: torch not importable: {proc.stderr.strip()[-300:]}")
print("BACKEND=" + jax.default_backend())
EOF
cat "$WORK/probe.txt"
BACKEND="$(sed -n 's/^BACKEND=//p' "$WORK/probe.txt")"
PEERS_OK="$(sed -n 's/^PEERS_OK=//p' "$WORK/probe.txt")"
if [ "$MODE" = real ] && [ "$BACKEND" != gpu ]; then
  say "JAX's backend is '${BACKEND:-none}', not gpu: nothing to measure here (use --dry-run on a CPU)"
  exit 3
fi
# the peers timed: learn2learn (the peer the speed goal names) and plain autograd, where importable
PEERS=""
for p in learn2learn torch; do
  case ",$PEERS_OK," in *",$p,"*) PEERS="$PEERS,$p" ;; esac
done
if [ "$MODE" != real ] && [ -z "$PEERS" ]; then PEERS=",learn2learn,torch"; fi  # validated, unavailable rows
say "implementations: metajax$PEERS"

# --- the planned commands -------------------------------------------------------------------------
declare -A CFG ORDERS
CFG[A1]="--workload A --order both --inner-steps 1"
CFG[A5]="--workload A --order both --inner-steps 5"
CFG[B]="--workload B --inner-steps 1"
ORDERS[A1]="1 2"; ORDERS[A5]="1 2"; ORDERS[B]="2"
COMMON="--repeats 5 --warmup 1 --min-seconds 1 --peer-python $PEER_PY --timeout 300"
TINY=""
if [ "$MODE" != real ]; then
  # tiny sizes on a CPU (maml_speed then names its files with _T2 / _q1 and without _gpu)
  TINY="--meta-batch 2 --check-meta-batch 1 --repeats 1 --warmup 0 --min-seconds 0"
  CFG[A1]+=" --queries 1 --width 4"; CFG[A5]+=" --queries 1 --width 4"
fi
PLAN=(A1 B A5)
RUN=(A1 B A5)
[ "$MODE" = dry ] && RUN=(B)
MS="benchmarks/maml_speed.py"
timed_cmd() { echo "$MS ${CFG[$1]} --no-check --impls metajax$2 $COMMON $TINY --results-dir $WORK/p2/$1"; }
check_cmd() { echo "$MS ${CFG[$1]} --order $2 --check-only --impls metajax$PEERS $COMMON $TINY"; }
warm_cmd() {
  echo "$MS ${CFG[$1]} --order $2 --no-check --impls metajax $COMMON $TINY --repeats 1 --warmup 0" \
       "--min-seconds 0 --results-dir $WORK/p1/warm_$1_o$2"
}
for c in "${PLAN[@]}"; do
  printf '%s\t%s\n' "$c" "$(timed_cmd "$c" "$PEERS")"
  for o in ${ORDERS[$c]}; do
    printf '%s\t%s\n' "$c check, order $o" "$(check_cmd "$c" "$o")"
    printf '%s\t%s\n' "$c compile, order $o" "$(warm_cmd "$c" "$o")"
  done
done > "$WORK/plan.txt"
"$PY" benchmarks/device_check.py validate < "$WORK/plan.txt" || { say "a planned command is wrong"; exit 2; }
say "commands validated (first phase: --check-only and metajax warm-ups per order; then timed):"
for c in "${PLAN[@]}"; do echo "  $PY $(timed_cmd "$c" "$PEERS")"; done
[ "$MODE" = dry ] && say "dry run: running workload B end to end at tiny sizes; A is validated only"

if [ "$COLD" = 0 ]; then
  export JAX_COMPILATION_CACHE_DIR="$WORK/xla-cache" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
  say "shared compilation cache (and XLA's autotuning cache): $JAX_COMPILATION_CACHE_DIR"
fi
mkdir -p "$WORK/p1" "$WORK/p2"

# --- phase 1: checks and compiles, untimed, in parallel ------------------------------------------
PHASE1_MAX=$(( BUDGET * 47 / 100 ))  # 225 s of 480: the rest is for the timed phase
P1_END=$(( SECONDS + PHASE1_MAX ))
PIDS=()
bg() {  # bg NAME COMMAND...: runs in the background, killed at the end of phase 1
  local name="$1"; shift
  ( XLA_PYTHON_CLIENT_PREALLOCATE=false timeout -k 5 $(( P1_END - SECONDS )) "$@" \
      > "$WORK/p1/$name.log" 2>&1; echo "exit $?" >> "$WORK/p1/$name.log" ) &
  PIDS+=($!)
}
for c in "${RUN[@]}"; do
  for o in ${ORDERS[$c]}; do
    read -r -a args <<< "$(check_cmd "$c" "$o")"; bg "check_${c}_o$o" "$PY" "${args[@]}"
  done
done
for c in "${RUN[@]}"; do
  for o in ${ORDERS[$c]}; do
    read -r -a args <<< "$(warm_cmd "$c" "$o")"; bg "warm_${c}_o$o" "$PY" "${args[@]}"
  done
done
say "phase 1: ${#PIDS[@]} processes (at most ${PHASE1_MAX}s)"
for pid in "${PIDS[@]}"; do wait "$pid"; done
say "phase 1 done"
for f in "$WORK"/p1/*.log; do
  echo "--- $(basename "$f"): $(grep -E '^(check order|results written|exit )' "$f" | tr '\n' ';' | cut -c1-600)"
done

# --- phase 2: timed, one at a time ----------------------------------------------------------------
{
  versions="$(sed -n 's/^\(jax\|torch\|learn2learn\|higher\) \([0-9][^ ]*\).*/\1 \2/p' "$WORK/probe.txt" | paste -sd, - | sed 's/,/, /g')"
  echo "- Run by \`bash benchmarks/device_check.sh\` ($(date -u '+%Y-%m-%d %H:%M') UTC; ${versions:-versions unknown})."
  echo "- XLA's autotuning on: XLA_FLAGS='${XLA_FLAGS:-}' (no --xla_gpu_autotune_level)."
  echo "- float64 checks: \`maml_speed.py ... --order O --check-only --impls metajax$PEERS\` on this GPU in the script's first phase (same seed and check meta-batch), merged into the check column and the ratios by benchmarks/device_check.py; the timed command above ran with --no-check."
  if [ "$COLD" = 0 ]; then
    echo "- Compiling: in the first phase every step was compiled (and autotuned) in parallel processes sharing the GPU (with the float64 checks), into one persistent compilation cache that the timed processes read back; \`compile s\` is then loading the step (step_from_compile_cache in the JSON). The timed processes ran one at a time, alone on the machine (the Machine line's 1-minute load average still counts the first phase's processes, which had ended)."
  fi
  if [[ "$PEERS" != *learn2learn* ]]; then echo "- learn2learn was not importable on this machine: no learn2learn rows."; fi
} > "$WORK/conditions.md"

deliver() {  # copies a workload's files to the results folder and to $OUT
  local c="$1" f base
  for f in "$WORK/p2/$c"/maml_speed_*.json "$WORK/p2/$c"/maml_speed_*.md "$WORK/p2/$c"/maml_speed_*.png; do
    [ -e "$f" ] || continue
    base="$(basename "$f")"
    if [ "$MODE" = real ] && [[ "$base" != *_gpu* ]]; then
      say "not copying $base into $RESULTS_DIR (not a GPU result)"; continue
    fi
    cp "$f" "$RESULTS_DIR/"
    if [ -n "${OUT:-}" ] && [[ "$base" != *.png ]]; then cp "$f" "$OUT/"; fi
  done
  if [ -n "${OUT:-}" ]; then  # everything (plots, phase-1 logs) in one archive: <= 8 files in $OUT
    tar -cf "$OUT/device_check_files.tar" --exclude='*.npz' -C "$WORK" p2 p1 probe.txt \
      conditions.md
  fi
}
declare -A NEED=( [A1]=120 [B]=70 [A5]=150 )
for c in "${RUN[@]}"; do
  impls="$PEERS"
  if [ "$MODE" = real ]; then
    if [ "$(left)" -lt $(( NEED[$c] / 3 )) ]; then
      say "skipping $c: $(left)s left, about ${NEED[$c]}s needed"; continue
    elif [ "$(left)" -lt "${NEED[$c]}" ]; then
      say "$c with metajax only: $(left)s left, about ${NEED[$c]}s needed with the peers"; impls=""
    fi
  fi
  read -r -a args <<< "$(timed_cmd "$c" "$impls")"
  say "timing $c: $PY ${args[*]}"
  timeout -k 5 $(( $(left) > 20 ? $(left) - 10 : 10 )) "$PY" "${args[@]}" 2>&1 | grep -v '^|'
  say "timing $c: exit ${PIPESTATUS[0]}"
  json=("$WORK/p2/$c"/maml_speed_*.json)
  if [ ! -e "${json[0]}" ]; then say "$c: no results file"; continue; fi
  checks=() warms=()
  for o in ${ORDERS[$c]}; do checks+=("$WORK/p1/check_${c}_o$o.log"); done
  for f in "$WORK/p1/warm_${c}"_o*/maml_speed_*.json; do [ -e "$f" ] && warms+=("$f"); done
  "$PY" benchmarks/device_check.py merge "${json[0]}" --checks "${checks[@]}" \
    --warm "${warms[@]}" --conditions "$WORK/conditions.md" || say "$c: merging the checks failed"
  deliver "$c"
  say "$c written: $(cd "$WORK/p2/$c" && ls maml_speed_* | tr '\n' ' ')"
done
say "done in $(( SECONDS - START ))s; results in $RESULTS_DIR${OUT:+ and $OUT}"
