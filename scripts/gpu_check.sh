#!/usr/bin/env bash
# The GPU check in one call, for a bare CUDA machine whose Python and torch differ from ours (Python
# 3.12, torch 2.11+cu130) and which has no network and no PyAV: wheels carried in .whl/ beside the
# repo (see /work/.library/device/README.md) are installed into a private folder first, and the repo
# is used in place (PYTHONPATH), never pip-installed. Everything it writes goes to $OUT (else
# ./gpu-results): gpu_check.log (all output), gpu_doctor.json and gpu_doctor.log, gpu_bench.json,
# gpu_bench.log and gpu_plan.json. Through the device tool: `scripts/gpu_check.sh --fetch-wheels`
# here, then run `bash scripts/gpu_check.sh` there with carry [".whl"].
#
# Steps (each under a time limit, so the whole stays well under 8 minutes):
#   doctor  scripts/gpu_doctor.py: the doctor's GPU checks run for real (issue 10, item 7)
#   bench   scripts/gpu_bench.py: `foleyscope bench` for xxl (random weights, 50 steps) on a 10 s
#           1280x720 25 fps clip in fp32 (TF32), bf16, bf16+cache, fp8, bf16+cudagraphs, bf16+compile,
#           then `plan`'s estimate against each mode's measured peak (issue 11, item 5); it gets what
#           is left of the 8 minutes (its JSON keeps every mode finished before the limit)
#
# usage: scripts/gpu_check.sh [--dry-run]    --dry-run: run on the CPU, skip the CUDA parts (exit 0 when
#                                             what ran met its expectations)
#        scripts/gpu_check.sh --fetch-wheels  on a machine with PyPI: put the wheels the GPU machine lacks
#                                             (cp312, manylinux x86-64) into .whl/, at our venv's versions
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-$PWD/gpu-results}"
TOTAL_S=460  # the whole check stays under 8 minutes
WHEELS=(av soundfile cffi pycparser torchao)  # what the GPU image lacks of our dependencies (KINDS.md's list)
DRY=()
FETCH=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=(--dry-run) ;;
    --fetch-wheels) FETCH=1 ;;
    *) echo "usage: scripts/gpu_check.sh [--dry-run | --fetch-wheels]" >&2; exit 2 ;;
  esac
done
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

fetch_wheels() {  # one wheel per package, the version our venv runs, for the GPU machine's Python 3.12
  local name version
  for name in "${WHEELS[@]}"; do
    version=$("$PYTHON" -c "import importlib.metadata as m; print(m.version('$name'))") || return 1
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "$name==$version" || return 1
  done
  ls -l .whl
}
if [ "$FETCH" = 1 ]; then fetch_wheels; exit $?; fi
mkdir -p "$OUT" || exit 2

step() {  # step NAME LIMIT_S COMMAND...: run it, say how it ended; a failure fails the check, later steps still run
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "=== $name: $*"
  timeout "$limit" "$@"
  rc=$?
  echo "=== $name: exit $rc in $((SECONDS - start)) s$([ "$rc" = 124 ] && echo " (killed at its ${limit} s limit)")"
  [ "$rc" = 0 ] || status=1
}

main() {
  status=0
  echo "gpu_check: $(date -u +%FT%TZ) in $PWD, output in $OUT, python $PYTHON ${DRY[*]:-}"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  if compgen -G ".whl/*.whl" >/dev/null && ! "$PYTHON" -c 'import av, soundfile' 2>/dev/null; then
    local site="${TMPDIR:-/tmp}/foleyscope-site"
    echo "installing $(ls .whl/*.whl | wc -l) carried wheels into $site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
      .whl/*.whl || return 1
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
  "$PYTHON" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
    "cuda", torch.cuda.is_available())' || return 1

  step doctor 300 "$PYTHON" scripts/gpu_doctor.py --out "$OUT" "${DRY[@]}"
  local left=$((TOTAL_S - SECONDS))  # the bench takes what the steps before it left of the total
  [ "$left" -lt 90 ] && left=90
  step bench "$left" "$PYTHON" scripts/gpu_bench.py --out "$OUT" --budget-s $((left - 30)) "${DRY[@]}"

  echo "gpu_check: $([ "$status" = 0 ] && echo "all steps passed" || echo "SOME STEPS FAILED")"
  return "$status"
}

main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
