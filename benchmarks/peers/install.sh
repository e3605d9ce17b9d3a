#!/usr/bin/env bash
# Installs the PyTorch peers of benchmarks/maml_speed.py into an ignored virtual environment
# (default .venv-peers at the repository root; pass another path as $1):
#   - torch 2.13.0+cpu and learn2learn's import-time dependencies (requirements.txt);
#   - learn2learn 0.2.0 from its sdist, its .pyx files regenerated with Cython 3 (the bundled
#     Cython output fails to compile: longintrepr.h), installed with --no-deps --no-build-isolation;
#   - higher 0.2.1 with --no-deps.
# Each peer is installed separately; one that fails is reported with pip's last lines, and the
# script ends with a status line per peer (exit status 1 if any failed).
#
#   bash benchmarks/peers/install.sh            # then: python benchmarks/maml_speed.py ...
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${1:-$ROOT/.venv-peers}"
PYTHON="${PYTHON:-python3}"
LOG="$(mktemp -d)"
declare -A STATUS

step() {  # step NAME command...: runs the command, logs it, records ok/FAILED
  local name="$1"; shift
  echo "== $name: $*"
  if "$@" > "$LOG/$name.log" 2>&1; then
    STATUS[$name]="ok"
  else
    STATUS[$name]="FAILED (see $LOG/$name.log)"
    tail -n 15 "$LOG/$name.log"
  fi
}

if [ ! -x "$VENV/bin/python" ]; then
  step venv "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
step requirements "${PIP[@]}" install -r "$ROOT/benchmarks/peers/requirements.txt"

build_learn2learn() {
  local work
  work="$(mktemp -d)"
  "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation learn2learn==0.2.0 -d "$work" \
    && tar xzf "$work/learn2learn-0.2.0.tar.gz" -C "$work" \
    && cd "$work/learn2learn-0.2.0" \
    && rm -f learn2learn/data/*.c \
    && "$VENV/bin/python" -m cython -3 learn2learn/data/*.pyx \
    && "${PIP[@]}" install --no-deps --no-build-isolation .
}
step learn2learn build_learn2learn
step higher "${PIP[@]}" install --no-deps higher==0.2.1

echo "== import check"
"$VENV/bin/python" "$ROOT/benchmarks/peers/torch_maml.py" --versions || STATUS[import]="FAILED"
echo "== summary (venv: $VENV)"
failed=0
for name in requirements learn2learn higher import; do
  echo "  $name: ${STATUS[$name]:-ok}"
  case "${STATUS[$name]:-ok}" in FAILED*) failed=1 ;; esac
done
exit $failed
