#!/usr/bin/env bash
# The Fig. 4 runs of docs/fig4.md on one GPU, within a time budget (default 420 s): the
# paper-widths-cpu preset (float32; float64 for alpha <= -0.75), the ablations (widths 256-1024: one epoch, teacher
# stream vs teacher reuse, the cpu preset's widths), then as many of the paper's 14 widths
# (2048 ... 19484) as the budget allows. Every sweep is resumable: rerun to finish. The run records
# go to RES (default results/) and, after each stage, into OUT/results.tar.gz.
#   BUDGET_S=420 bash benchmarks/gpu_fig4.sh OUT_DIR
set -u
out=${1:-${OUT:-out}}
res=${RES:-results}
budget=${BUDGET_S:-420}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
mkdir -p "$out" "$res"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }

stage() {  # NAME CAP_S SWEEP-ARGS...
  local name=$1 cap=$2 left
  shift 2
  left=$(( budget - $(elapsed) ))
  if [ "$left" -le 15 ]; then echo "== $name: skipped, budget spent"; return; fi
  [ "$cap" -gt "$left" ] && cap=$left
  echo "== $name (at most ${cap} s) after $(elapsed) s"
  timeout -s INT -k 30 "$cap" "$py" -m weakcorr sweep "$@" --device "$device" ${EXTRA_SET:-}
  echo "== $name: exit $? after $(elapsed) s"
  tar -czf "$out/results.tar.gz" -C "$(dirname "$res")" "$(basename "$res")"
}

a64='training.alphas=[-0.75,-1]'
stage paper-widths-float32 150 paper-widths-cpu --out "$res/paper-widths-cpu"
stage paper-widths-float64 120 paper-widths-cpu --out "$res/paper-widths-cpu-float64" \
  --set training.dtype=float64 --set "$a64"
stage one-epoch 40 ablation-one-epoch --out "$res/ablation-one-epoch"
stage teacher-stream 90 ablation-teacher-stream --out "$res/ablation-teacher-stream"
stage teacher-reuse 60 ablation-teacher-reuse --out "$res/ablation-teacher-reuse"
stage cpu-widths 90 cpu --out "$res/cpu-widths" --set seeds=4
# All 14 of the paper's widths: the 5 above are copied in (same run ids), the rest run alpha by
# alpha, steepest first (the float32-rounding question is about alpha <= -0.75).
all="$res/paper-widths-all"
mkdir -p "$all/runs"
cp -n "$res/paper-widths-cpu/runs/"*.json "$all/runs/" 2>/dev/null
for a in -1 -0.75 -0.5 0 -0.25; do
  stage "all-widths-float32-alpha$a" 600 paper-widths-cpu --out "$all" \
    --set model.widths.stop=19484 --set "training.alphas=[$a]"
done
echo "== done after $(elapsed) s"
