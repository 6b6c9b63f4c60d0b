"""How noisy is a step's KL to the initial policy, measured the two ways PPO can?

    ./run.sh python bench/kl_estimate.py --adapter DATA_DIR/policies/v4 --batches 12

The trainer stops a round at the KL budget and discards one over `max_kl`, on the KL that one
PPO step measured on its own 8 answers (4 prompts x 2, 48 tokens, temperature 1). This takes a
policy version from a live run (a LoRA adapter directory), holds it fixed (learning rate 0), and
runs `--batches` PPO steps of the app's settings: each reports `kl/ref` (full next-token
distributions, `ppo.kl_from_logits`) and `kl/ref_sampled` (log-ratios of the drawn tokens). Both
estimate the same number; their spread across batches is the noise the budget check sees.
Results go to bench/results/kl_estimate.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from peft import PeftModel  # noqa: E402

from rlhf_app.config import load_settings  # noqa: E402
from rlhf_app.models import load_model  # noqa: E402
from rlhf_app.policy import clone_model  # noqa: E402
from rlhf_app.ppo import SAMPLES_KEY, PPOTrainer  # noqa: E402
from rlhf_app.prompts import STARTER_PROMPTS  # noqa: E402
from rlhf_app.runtime import quiet_offline_env  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", required=True, help="A policy version's directory (data/policies/vN).")
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=str(ROOT / "data"))
    args = ap.parse_args()
    quiet_offline_env()
    settings = load_settings(["--data-dir", args.data_dir])
    base = load_model(settings.model, Path(args.data_dir), device="cpu")
    policy = PeftModel.from_pretrained(clone_model(base.model), args.adapter, is_trainable=True)
    config = dataclasses.replace(settings.ppo, learning_rate=0.0, ppo_epochs=1)
    trainer = PPOTrainer(policy, base.tokenizer, config, seed=args.seed)
    rng = random.Random(args.seed)
    zero = lambda prompts, completions: [0.0] * len(completions)  # noqa: E731 - the reward plays no part
    rows = []
    for b in range(args.batches):
        t0 = time.time()
        m = trainer.step([rng.choice(STARTER_PROMPTS) for _ in range(config.batch_prompts)], zero)
        m.pop(SAMPLES_KEY)
        rows.append({"full": m["kl/ref"], "sampled": m["kl/ref_sampled"], "length": m["answer/length"],
                     "s": time.time() - t0})
        print(json.dumps(rows[-1]), flush=True)
    summary = {
        kind: {"mean": statistics.fmean(r[kind] for r in rows), "sd": statistics.stdev(r[kind] for r in rows),
               "min": min(r[kind] for r in rows), "max": max(r[kind] for r in rows)}
        for kind in ("full", "sampled")
    }
    out = {"what": "bench/kl_estimate.py: KL to the initial policy per PPO step of 8 answers, two estimators",
           "adapter": Path(args.adapter).name, "batches": args.batches, "seed": args.seed,
           "answers_per_batch": config.batch_prompts * config.samples_per_prompt,
           "max_new_tokens": config.max_new_tokens, "torch_threads": torch.get_num_threads(),
           "summary": summary, "rows": rows}
    path = ROOT / "bench" / "results" / "kl_estimate.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
