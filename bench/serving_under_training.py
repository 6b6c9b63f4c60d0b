"""Serving comes first: answer speed of the default model idle, and while the trainer runs a round.

    ./run.sh python bench/serving_under_training.py [--answers 3] [--max-new-tokens 64]

The trainer steps aside between tokens and minibatches while an answer is being generated
(`ServingGate`); this measures what is left of the idle speed. Writes
bench/results/serving_under_training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import sys

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import torch  # noqa: E402

from rlhf_app.config import load_settings  # noqa: E402
from rlhf_app.runtime import Runtime  # noqa: E402


def answer_speeds(rt: Runtime, n: int, max_new_tokens: int, seed: int) -> list[dict]:
    out = []
    for i in range(n):
        ans = rt.answerer.answer("Tell me something interesting about space.", max_new_tokens=max_new_tokens,
                                 seed=seed + i, temperature=0.7)
        out.append({"ttft_s": ans.ttft_s, "tokens_per_s": ans.tokens_per_s, "n_tokens": ans.n_tokens[0]})
    return out


def summary(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) for k in ("ttft_s", "tokens_per_s")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--answers", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--model-cache", default=str(ROOT / "data" / "models"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        if Path(args.model_cache).exists():
            (data / "models").symlink_to(Path(args.model_cache).resolve(), target_is_directory=True)
        rt = Runtime.build(load_settings(["--data-dir", str(data), "--ppo.steps-per-round", "50"], env={}))
        rng = random.Random(0)
        for i, prompt in enumerate(rt.store.prompts()[:10]):  # enough ratings for a reward model
            ans = rt.answerer.answer(prompt, max_new_tokens=24, seed=i)
            rt.store.rate(ans.generation_ids[0], "bench", "score", rng.randint(1, 5))

        idle = answer_speeds(rt, args.answers, args.max_new_tokens, seed=100)
        round_thread = threading.Thread(target=rt.trainer.run_round, daemon=True)
        round_thread.start()
        while not rt.trainer.status.detail.startswith("PPO step"):  # past the reward model fit
            time.sleep(0.2)
        time.sleep(5)  # into the step
        waited0 = rt.gate.waited_s
        training = answer_speeds(rt, args.answers, args.max_new_tokens, seed=100)
        trainer_waited = rt.gate.waited_s - waited0
        rt.trainer.pause()  # ends the round after its current step
        round_thread.join(timeout=600)

    result = {
        "machine": {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_avg": os.getloadavg()},
        "max_new_tokens": args.max_new_tokens,
        "idle": summary(idle),
        "while_training": summary(training),
        "ratio_tokens_per_s": summary(training)["tokens_per_s"] / summary(idle)["tokens_per_s"],
        "trainer_waited_s": trainer_waited,
        "runs": {"idle": idle, "while_training": training},
    }
    out = ROOT / "bench" / "results" / "serving_under_training.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
