#!/usr/bin/env bash
# Screen training settings on a GPU: several live loops of the real default model side by side.
#
#   bench/gpu_live_screen.sh OUT_DIR BUDGET_S LOOP...      # on a CUDA machine with the project's packages
#   LOOP = name:rater:prompts:seed[:flag:value...]          # e.g. steps3_s0:wants_topic:pets:0:--ppo.steps-per-round:3
#
# Each loop is `python -m rlhf_app.simulate` with the app's defaults plus its flags, score mode, 100
# ratings, 4 eval answers per prompt at every checkpoint and 32 per prompt at the endpoints (version 0
# and the last version inside the budget, as bench/live_improvement.py measures them on CPU). Rating
# stops after BUDGET_S seconds of loop time; a loop still running BUDGET_S + 150 s later is killed
# and leaves its checkpoints in its log only. The loops share the GPU and the CPU cores (2 torch
# threads each), so they get through fewer ratings than one alone: compare them at equal ratings.
# A GPU run is a screen for the CPU runs, not a replacement: bf16 sampling takes other paths than
# float32 on CPU, so the same seed gives another trajectory.
set -u
out=$(realpath -m "${1:?usage: bench/gpu_live_screen.sh OUT_DIR BUDGET_S LOOP...}")
budget=${2:?budget seconds}
shift 2
mkdir -p "$out"
source "$(dirname "$0")/gpu_env.sh"
loop() {  # name rater prompts seed [flag value...]
  local name=$1 rater=$2 prompts=$3 seed=$4; shift 4
  mkdir -p "$cache/$name/data" && ln -sfn "$cache/models" "$cache/$name/data/models"
  OMP_NUM_THREADS=2 timeout $((budget + 150)) "$py" -m rlhf_app.simulate --device cuda --data-dir "$cache/$name/data" \
    --seed "$seed" --rater "$rater" --prompts "$prompts" --mode score --ratings 100 --eval-samples 4 \
    --endpoint-samples 32 --wall-budget "$budget" --out "$out/$name.json" "$@" > "$out/$name.log" 2>&1
  echo "loop $name exit $?"
}
t "${#@} loops side by side, rating for ${budget} s of loop time each"
for spec in "$@"; do
  IFS=: read -r -a f <<< "$spec"
  loop "${f[@]}" &
done
wait
t "done"
for f in "$out"/*.log; do
  echo "== $(basename "$f")"
  grep -o "policy_version=[0-9]*, ratings=[0-9]*, cpu_s=[0-9.]*, wall_s=[0-9.]*, oracle=[0-9.]*" "$f"
  grep -o "endpoints: .*" "$f"
done
rm -rf "$cache"
