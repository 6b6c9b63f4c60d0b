"""How far does the policy optimizer move the served policy per step when the reward is perfect?

    ./run.sh python bench/optimizer_speed.py                                  # the grid below
    ./run.sh python bench/optimizer_speed.py --only ppo-default grpo-default --steps 12
    ./run.sh python bench/optimizer_speed.py --report

The live benchmark (`live_improvement.py`) mixes three limits: how well the reward model has
learnt the rater from few ratings, how far each optimizer step moves the policy, and how long a
step takes. This one isolates the last two. The reward is the rater's hidden oracle (no ratings,
no reward model); a fresh LoRA policy on the default model takes `--steps` steps of the app's own
PPO or GRPO code (`trainer.make_optimizer`, the settings of each configuration below), and every
`--eval-every` steps the policy is measured as the page would serve it: one batched pass over the
simulator's eval prompts at the page's temperature and top-p, the same seed every time (common
random numbers), so the curve is the policy's, not the sampler's.

Each finished run is appended to `bench/results/optimizer_speed.jsonl` and skipped when started
again; `--report` writes `optimizer_speed.md`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
from live_improvement import commit  # noqa: E402

from rlhf_app.config import load_settings  # noqa: E402
from rlhf_app.models import load_model  # noqa: E402
from rlhf_app.policy import clone_model  # noqa: E402
from rlhf_app.prompts import load_prompts  # noqa: E402
from rlhf_app.raters import get_rater  # noqa: E402
from rlhf_app.runtime import quiet_offline_env  # noqa: E402
from rlhf_app.sampling import SamplingParams, sample_texts  # noqa: E402
from rlhf_app.simulate import eval_prompts as eval_prompts_of  # noqa: E402
from rlhf_app.trainer import make_optimizer, with_new_lora  # noqa: E402

RESULTS = ROOT / "bench" / "results"
JSONL = RESULTS / "optimizer_speed.jsonl"

# name -> settings flags. "ppo-default" is the app's defaults; the others spell out what they change.
CONFIGS: dict[str, list[str]] = {
    "ppo-default": [],
    "ppo-lr2e-4-lambda0.95": ["--ppo.learning-rate", "2e-4", "--ppo.gae-lambda", "0.95"],
    "ppo-lr5e-4-lambda0.95": ["--ppo.learning-rate", "5e-4", "--ppo.gae-lambda", "0.95"],
    "ppo-lr1e-3": ["--ppo.learning-rate", "1e-3"],
    "grpo-default": ["--algorithm", "grpo"],
    "grpo-lr5e-4": ["--algorithm", "grpo", "--grpo.learning-rate", "5e-4"],
    "bon-lr5e-4": ["--algorithm", "bon", "--bon.learning-rate", "5e-4"],
    "bon-lr2e-4": ["--algorithm", "bon", "--bon.learning-rate", "2e-4"],
    "bon-lr5e-4-kl1": ["--algorithm", "bon", "--bon.learning-rate", "5e-4", "--bon.kl-coef", "1.0"],
    "ppo-prompt-baseline": ["--ppo.score-baseline", "prompt"],
    # 16 answers a step instead of 8: twice the minibatches, or the same number twice as large.
    "ppo-samples4": ["--ppo.samples-per-prompt", "4"],
    "ppo-samples4-mb8": ["--ppo.samples-per-prompt", "4", "--ppo.minibatch-size", "8"],
}


def run_one(config: str, rater_name: str, seed: int, steps: int, eval_every: int, eval_samples: int,
            model_cache: Path, prompt_set: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="optimizer-bench-") as tmp:
        data = Path(tmp)
        if model_cache.exists():
            (data / "models").symlink_to(model_cache.resolve(), target_is_directory=True)
        settings = load_settings(["--data-dir", str(data), "--seed", str(seed), *CONFIGS[config]], env={})
        base = load_model(settings.model, data, settings.device)
        rater = get_rater(rater_name)
        torch.manual_seed(seed)
        policy = with_new_lora(clone_model(base.model), settings)
        optimizer = make_optimizer(settings, policy, base.tokenizer, gate=None, seed=seed)
        rng = random.Random(seed)
        n_prompts = settings.optimizer.batch_prompts
        train_prompts = load_prompts(prompt_set)
        eval_prompts = [p for p in eval_prompts_of(train_prompts) for _ in range(eval_samples)]

        def oracle_of_served() -> float:
            policy.eval()
            with torch.no_grad():
                texts = sample_texts(policy, base.tokenizer, eval_prompts,
                                     SamplingParams(settings.temperature, settings.top_p, 48, seed))
            return statistics.fmean(rater.oracle(t, p) for p, t in zip(eval_prompts, texts))

        def reward_fn(prompts, completions, **_):
            return [rater.oracle(c, p) for p, c in zip(prompts, completions)]

        curve = [{"step": 0, "step_s": 0.0, "oracle": oracle_of_served()}]
        step_s = 0.0
        per_step = []
        for k in range(1, steps + 1):
            t0 = time.monotonic()
            m = optimizer.step([rng.choice(train_prompts) for _ in range(n_prompts)], reward_fn)
            step_s += time.monotonic() - t0
            m.pop("samples", None)
            per_step.append({key: m.get(key) for key in ("reward/mean", "kl/ref", "ppo/entropy", "ppo/clipfrac",
                                                         "bon/entropy", "reward/chosen")})
            if k % eval_every == 0 or k == steps:
                curve.append({"step": k, "step_s": step_s, "oracle": oracle_of_served(),
                              "kl_ref": m.get("kl/ref"), "reward_mean": m.get("reward/mean")})
                print(f"{config} {rater_name} seed {seed} step {k}: oracle {curve[-1]['oracle']:.3f} "
                      f"kl {m.get('kl/ref')} ({step_s:.0f} s of steps)", flush=True)
        per_prompt = settings.grpo.num_generations if settings.algorithm == "grpo" else settings.optimizer.samples_per_prompt
        return {"curve": curve, "per_step": per_step, "samples_per_step": n_prompts * per_prompt}


def report() -> str:
    rows = [json.loads(line) for line in JSONL.read_text().splitlines() if line.strip()] if JSONL.exists() else []
    lines = [
        "Oracle score of the served policy (page temperature and top-p, 48 tokens) after optimizer steps "
        "on the rater's oracle as reward. Seconds are the steps' own time on this machine, alone.",
        "",
        "| config | rater | prompts | seed | steps | samples/step | oracle at 0 | oracle at end | gain | gain per 100 s of steps | "
        "KL at end | curve (step: oracle) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["rater"], r.get("prompts", "starter"), r["config"], r["seed"])):
        c = r["curve"]
        gain = c[-1]["oracle"] - c[0]["oracle"]
        secs = c[-1]["step_s"]
        kl = c[-1].get("kl_ref")
        lines.append(
            f"| {r['config']} | {r['rater']} | {r.get('prompts', 'starter')} | {r['seed']} | {c[-1]['step']} | "
            f"{r['samples_per_step']} | "
            f"{c[0]['oracle']:.3f} | {c[-1]['oracle']:.3f} | {gain:+.3f} | {100 * gain / secs:+.3f} | "
            f"{kl:.2f} | " + ", ".join(f"{p['step']}: {p['oracle']:.2f}" for p in c) + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help="Configurations to run (default: all).")
    ap.add_argument("--raters", nargs="*", default=["likes_enthusiasm"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--eval-every", type=int, default=4)
    ap.add_argument("--eval-samples", type=int, default=8, help="Answers per eval prompt at each measurement.")
    ap.add_argument("--prompts", default="starter", help="Prompt set trained and measured on (rlhf_app/prompts.py).")
    ap.add_argument("--model-cache", default=str(ROOT / "data" / "models"))
    ap.add_argument("--report", action="store_true", help="Only write the table.")
    args = ap.parse_args()
    quiet_offline_env()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.report:
        done = set()
        if JSONL.exists():
            done = {json.loads(line)["key"] for line in JSONL.read_text().splitlines() if line.strip()}
        for config in args.only or list(CONFIGS):
            for rater in args.raters:
                for seed in args.seeds:
                    key = f"{config}|{rater}|{seed}|{args.steps}|{args.eval_samples}"
                    if args.prompts != "starter":  # rows from before --prompts measured the starter set
                        key += f"|{args.prompts}"
                    if key in done:
                        print(f"skip {key}: already in {JSONL.name}")
                        continue
                    t0 = time.time()
                    out = run_one(config, rater, seed, args.steps, args.eval_every, args.eval_samples,
                                  Path(args.model_cache), args.prompts)
                    row = {"key": key, "config": config, "flags": CONFIGS[config], "rater": rater,
                           "prompts": args.prompts, "seed": seed, "commit": commit(), "eval_samples": args.eval_samples,
                           "wall_s": time.time() - t0, **out}
                    with JSONL.open("a") as f:
                        f.write(json.dumps(row) + "\n")
    md = report()
    (RESULTS / "optimizer_speed.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
