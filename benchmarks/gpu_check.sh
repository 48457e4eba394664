#!/usr/bin/env bash
# Every check of rlvr that needs a GPU, in one run sized for a 10-minute command on one H100/H200
# (about 8 minutes at most; STAGES splits it):
#   tests   the GPU tests (tests/gpu: precision, fast decoder and engine vs HF on CUDA, an RL run,
#           the torchrun process group)
#   ch6     benchmarks/ch6_shapes.py at full shapes: Qwen3-0.6B, 8 rollouts x 512 tokens, training
#           stopped after 60 s (the target: 50 steps in 3 minutes or less on one H100)
#   ch6-graph  the same with rollout.cuda_graph=true (decode steps replayed as a CUDA graph)
#   memory  benchmarks/memory.py at Qwen3-0.6B's full depth, chunked vs naive, with and without autocast
#
#   bash benchmarks/gpu_check.sh [OUT]              # all stages; logs and results.jsonl in OUT (runs/gpu-check;
#                                                   # on a lent machine give it "$OUT", the folder that comes back)
#   STAGES="ch6 memory" bash benchmarks/gpu_check.sh
#   WHEELS=.whl bash benchmarks/gpu_check.sh        # an offline machine: first install what `make gpu-wheels` fetched
#   CPU_DRY_RUN=1 CH6_ARGS="--layers 1 --max-new-tokens 4 --steps 2" MEMORY_ARGS="--layers 1 --batch 1 --seq 16" \
#     bash benchmarks/gpu_check.sh /tmp/dry        # try the script itself on a CPU before spending GPU time
#
# Uses $PYTHON (python3) with torch (a CUDA build), transformers, tokenizers, peft, pytest, pyyaml,
# and rlvr's own dependencies; rlvr itself is read from this checkout. Each stage has a time limit
# (seconds: TESTS_S, CH6_S, MEMORY_S) and the script goes on after a failed stage; it exits
# non-zero if any failed. Each benchmark's JSON line is appended to OUT/results.jsonl.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-runs/gpu-check}")
mkdir -p "$out"
python=${PYTHON:-python3}
stages=${STAGES:-tests ch6-graph ch6 memory}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RLVR_TEST_GPU=1
if [ -n "${WHEELS:-}" ]; then
  site=/tmp/rlvr-gpu-site
  if "$python" -m pip --version >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$WHEELS"/*.whl || exit 1
  else  # a Python without pip: pure-Python wheels unpack as they are
    for w in "$WHEELS"/*.whl; do "$python" -m zipfile -e "$w" "$site" || exit 1; done
  fi
  export PYTHONPATH="$PYTHONPATH:$site"  # after the checkout (and, as any PYTHONPATH entry, before site-packages)
fi

failed=()
stage() {  # stage NAME SECONDS COMMAND...: run it with a limit, its output to OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit} s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  tail -n 15 "$out/$name.log"
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  [ "$rc" -eq 0 ] || failed+=("$name")
  grep -h '^{.*}$' "$out/$name.log" | tail -n 2 >>"$out/results.jsonl"
}

"$python" - <<'PY' | tee "$out/env.log" || exit 1
import os, torch, transformers, math_verify  # math_verify: the one dependency a GPU image rarely has
print(f"torch {torch.__version__}, transformers {transformers.__version__}")
if os.environ.get("CPU_DRY_RUN") != "1":
    assert torch.cuda.is_available(), "no CUDA GPU visible: nothing here to check"
    p = torch.cuda.get_device_properties(0)
    print(f"{torch.cuda.device_count()} x {p.name} ({p.total_memory / 2**30:.0f} GiB), "
          f"bf16: {torch.cuda.is_bf16_supported(including_emulation=False)}")
PY

for s in $stages; do
  case $s in
    tests) stage tests "${TESTS_S:-110}" "$python" -m pytest -q -p no:cacheprovider -m gpu tests/gpu -rs ;;
    # training stops after 60 s (then saves; a steady step takes seconds, so that is still several
    # steps past warm-up), so the stage ends with its figures within its limit; the default limits
    # sum to 500 s, inside a 10-minute command even if every stage runs to its limit
    ch6) stage ch6 "${CH6_S:-150}" "$python" benchmarks/ch6_shapes.py ${CH6_ARGS:---time-budget 60} ;;
    ch6-graph)
      [ "${CPU_DRY_RUN:-}" = 1 ] && { echo "== ch6-graph: skipped (CUDA graphs need a GPU)"; continue; }
      stage ch6-graph "${CH6_S:-150}" "$python" benchmarks/ch6_shapes.py ${CH6_ARGS:---time-budget 60} \
      --set rollout.cuda_graph=true ;;
    memory) stage memory "${MEMORY_S:-90}" "$python" benchmarks/memory.py ${MEMORY_ARGS:---layers 28 --batch 8 --seq 1024} --autocast ;;
    *) echo "unknown stage $s (tests, ch6, ch6-graph, memory)"; failed+=("$s") ;;
  esac
done
echo "results: $out/results.jsonl"
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
