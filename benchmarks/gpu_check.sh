#!/usr/bin/env bash
# The first GPU figures, in one command (issue 23): the paper-scale step, the training loop
# under torchrun with NCCL, and detection speed, each part writing its figures as JSON.
#
# Made for the device machine: x86-64, one NVIDIA H200 (about 139 GiB), 16 cores, 128 GiB,
# its python3 3.12 with torch 2.11 / torchvision 0.26, numpy, PyYAML, tqdm, matplotlib, but
# no PyAV and no internet. So the PyAV wheel travels with the tree (benchmarks/gpu_wheels.sh
# downloads it into .whl/) and the tallformer package runs from src/ without being installed.
# From the repository root on that machine (benchmarks/gpu_check.md has the exact command):
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=src:/tmp/site
#   PYTHON=python3 OUT=$OUT bash benchmarks/gpu_check.sh
#
# Here, on the CPU, every part at toy size (tiny backbone, small videos, gloo, no bf16):
#
#   bash benchmarks/gpu_check.sh --cpu            # under 3 minutes; tests/test_gpu_check.py runs it
#
# Settings (environment):
#   OUT=DIR       the figures: partN_*.json, summary.json, logs/ (default gpu_check_out/)
#   PYTHON=EXE    the Python that runs everything (default .venv/bin/python)
#   WORK=DIR      scratch: videos, banks, runs, checkpoints (default a new temporary folder,
#                 removed at the end unless KEEP_WORK=1); on the GPU about 10 GB
#   BUDGET=S      seconds for the whole run (GPU default 480: 8 minutes; --cpu 600): part 1
#                 may take 100 of them, part 2 what is left but 110, part 3 the rest; a
#                 part past its limit is stopped and keeps the figures it had written
#
# Parts (one process each, one summary line each at the end):
#   1 paper_scale  benchmarks/gpu_paper_scale.py: Swin-B, 480 frames at 224x224, batch 4,
#                  bf16, checkpointing: peak memory and step time at keep_ratio 0.15 and 1.0,
#                  and 0.15 without checkpointing                  -> part1_paper_scale.json
#   2 train_loop   benchmarks/gpu_check/train_part.py: bank build, torchrun --nproc_per_node 1
#                  (NCCL, SyncBN, DDP) of thumos14_swin_b on synthetic 256x256 videos, 30
#                  steps with 4 data workers: loop_vs_bare, data-wait fraction; SIGKILL after
#                  step 10 + --resume against a straight run, bit for bit (and again with
#                  deterministic algorithms when they differ)   -> part2_train_loop.json
#   3 detect       benchmarks/gpu_check/detect_part.py: tallformer detect on a 10-minute
#                  256x256 video with part 2's checkpoint: detect_vs_backbone, GPU
#                  utilisation, peak memory                       -> part3_detect.json
#   4 evaluator and bank I/O: need no GPU, skipped                 -> part4_skipped.json
# Exit status 0 when every part completed; a failed part does not stop the others.

set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)

MODE=gpu
for arg in "$@"; do
    case "$arg" in
        --cpu) MODE=cpu ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: bash benchmarks/gpu_check.sh [--cpu]" >&2; exit 2 ;;
    esac
done

PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT/logs" && OUT=$(cd "$OUT" && pwd)
if [[ -n "${WORK:-}" ]]; then
    mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd)
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
    [[ "${KEEP_WORK:-0}" == 1 ]] || trap 'rm -rf "$WORK"' EXIT
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
START=$SECONDS

# what tallformer needs imports, and the versions (one process: each start imports torch)
if ! VERSIONS=$("$PYTHON" -c "import platform, torch, torchvision, av, numpy, yaml, tqdm, matplotlib, tallformer
cuda = torch.cuda.is_available()
print('torch', torch.__version__, 'python', platform.python_version(), 'device',
      torch.cuda.get_device_name(0) if cuda else 'cpu', 'cuda' if cuda else 'no-cuda')" 2>"$OUT/logs/imports.log"); then
    echo "error: $PYTHON cannot import what tallformer needs ($(tail -n 1 "$OUT/logs/imports.log"));" \
         "without PyAV: see benchmarks/gpu_check.md (the av wheel)" >&2
    exit 2
fi
VERSIONS=${VERSIONS##*$'\n'}  # the last line: anything an import printed before it is not ours

if [[ $MODE == gpu ]]; then
    if [[ $VERSIONS != *" cuda" ]]; then
        echo "error: no CUDA device for $PYTHON; run 'bash benchmarks/gpu_check.sh --cpu' for the toy run" >&2
        exit 2
    fi
    BUDGET=${BUDGET:-480} L1=100 RESERVE3=110
    CPUS=$(nproc)
    # 32 training videos of 34-38 s at 256x256 (8 steps of 4 an epoch; 30 steps = 4 epochs)
    TRAIN_DATA=(--num-videos 32 --num-classes 8 --size 256x256 --min-length 34 --max-length 38
                --workers $((CPUS > 3 ? CPUS - 2 : 1)))
    LONG_DATA=(--num-classes 8 --size 256x256 --min-length 600 --max-length 600)
    P1_ARGS=(--warmup 2 --steps 3)
    CPU_FLAG=()
else
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    BUDGET=${BUDGET:-600} L1=120 RESERVE3=120
    TRAIN_DATA=(--num-videos 6 --num-classes 4 --size 36x36 --min-length 10 --max-length 14 --workers 1)
    LONG_DATA=(--num-classes 4 --size 36x36 --min-length 20 --max-length 20)
    P1_ARGS=(--smoke --batch 1 --warmup 1 --steps 1)
    CPU_FLAG=(--cpu)
fi
echo "gpu_check ($MODE): OUT=$OUT WORK=$WORK PYTHON=$PYTHON; ${BUDGET} s in all"
echo "${VERSIONS% *}"

# the data, written in the background while part 1 runs
"$PYTHON" -m tallformer prepare synthetic --out "$WORK/train_data" --seed 0 --val-fraction 0 \
    "${TRAIN_DATA[@]}" > "$OUT/logs/data_train.log" 2>&1 &
TRAIN_PID=$!
"$PYTHON" -m tallformer prepare synthetic --out "$WORK/long" --num-videos 1 --seed 1 --val-fraction 0 \
    "${LONG_DATA[@]}" > "$OUT/logs/data_long.log" 2>&1 &
LONG_PID=$!

declare -A STATUS SECS
SUMMARY=()

# run_part N NAME LIMIT COMMAND...: a part in its own process, its output in logs/partN_NAME.log;
# its last line that starts with "partN" (or, for part 1, its last line) is its summary
run_part() {
    local n=$1 name=$2 limit=$3
    shift 3
    local log="$OUT/logs/part${n}_${name}.log" t0=$SECONDS code line
    echo "== part $n ($name), at most ${limit} s"
    timeout -k 15 "$limit" "$@" > "$log" 2>&1
    code=$?
    SECS[$n]=$((SECONDS - t0))
    line=$(grep "^part${n} " "$log" | tail -n 1)
    [[ -z "$line" && $n == 1 && $code == 0 ]] && line="part1 ${name}: $(tail -n 1 "$log")"
    if [[ $code == 0 ]]; then
        STATUS[$n]=ok
    else
        STATUS[$n]="failed (exit $code$([[ $code == 124 ]] && echo ", past ${limit} s"))"
        echo "part $n failed (exit $code); the end of $log:"
        tail -n 20 "$log" | sed 's/^/    /'
    fi
    [[ -n "$line" ]] || line="part${n} ${name}: no figures"
    SUMMARY+=("$line [${STATUS[$n]}, ${SECS[$n]} s]")
    echo "$line [${STATUS[$n]}, ${SECS[$n]} s]"
}

run_part 1 paper_scale "$L1" "$PYTHON" benchmarks/gpu_paper_scale.py "${P1_ARGS[@]}" \
    --json "$OUT/part1_paper_scale.json"

# what is left of the budget, keeping `reserve` seconds for the parts after (at least 60)
left() { local s=$((BUDGET - (SECONDS - START) - $1)); echo $((s > 60 ? s : 60)); }

wait "$TRAIN_PID" || echo "the training videos could not be written: $OUT/logs/data_train.log"
L2=$(left "$RESERVE3")
run_part 2 train_loop "$L2" "$PYTHON" benchmarks/gpu_check/train_part.py "${CPU_FLAG[@]}" \
    --data "$WORK/train_data" --work "$WORK/train" --logs "$OUT/logs" --python "$PYTHON" \
    --timeout "$L2" --json "$OUT/part2_train_loop.json"

wait "$LONG_PID" || echo "the long video could not be written: $OUT/logs/data_long.log"
L3=$(left 0)
run_part 3 detect "$L3" "$PYTHON" benchmarks/gpu_check/detect_part.py "${CPU_FLAG[@]}" \
    --video "$WORK/long/videos/synth_0000.mp4" --checkpoint "$WORK/train/runs/straight/checkpoints/last.pt" \
    --work "$WORK/detect" --logs "$OUT/logs" --python "$PYTHON" --timeout "$L3" \
    --json "$OUT/part3_detect.json"

REASON="the evaluator and the bank I/O need no GPU (issue 23, part 4): benchmarks/eval_speed.py and benchmarks/bank_io.py measure them on the CPU"
printf '{"part": "evaluator_bank_io", "skipped": true, "reason": "%s"}\n' "$REASON" > "$OUT/part4_skipped.json"
STATUS[4]=skipped
SUMMARY+=("part4 evaluator_bank_io: skipped (no GPU needed)")

TOTAL=$((SECONDS - START))
"$PYTHON" - "$OUT" "$MODE" "$TOTAL" "${STATUS[1]}" "${STATUS[2]}" "${STATUS[3]}" "${SUMMARY[@]}" <<'EOF'
import json, sys
out, mode, total, *rest = sys.argv[1:]
status, lines = rest[:3], rest[3:]
names = ["part1_paper_scale", "part2_train_loop", "part3_detect"]
data = {"mode": mode, "total_s": int(total), "summary": lines,
        "parts": {n: {"status": s, "json": f"{n}.json"} for n, s in zip(names, status)}}
data["parts"]["part4_skipped"] = {"status": "skipped", "json": "part4_skipped.json"}
with open(f"{out}/summary.json", "w") as f:
    json.dump(data, f, indent=2)
EOF
echo "== summary ($MODE, ${TOTAL} s; figures in $OUT)"
printf '%s\n' "${SUMMARY[@]}"
for n in 1 2 3; do [[ ${STATUS[$n]} == ok ]] || exit 1; done
exit 0
