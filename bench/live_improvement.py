"""Does the served policy get better while people rate it? Measured with simulated raters.

    ./run.sh python bench/live_improvement.py --quick              # screen settings: 1 seed, 40 ratings
    ./run.sh python bench/live_improvement.py                      # the full grid: 3 seeds, 100 ratings
    ./run.sh python bench/live_improvement.py --only ppo-default   # one configuration of the grid
    ./run.sh python bench/live_improvement.py --report             # table + plot from what has run
    ./run.sh python bench/live_improvement.py --only grpo-default --rerun   # measure again after a code change
    ./run.sh python bench/live_improvement.py --only ppo-default --raters dislikes_emoji --prompts emoji

Each run is `python -m rlhf_app.simulate` in a subprocess with its own data directory, so a run
goes through the app's own code paths and a crash costs one run. Finished runs are appended to
`bench/results/live_improvement.jsonl` and skipped when the benchmark is started again: the grid
can run in the background across sessions; `--rerun` measures finished runs again, and the report
uses each run's newest row (older rows stay in the file as history). `--report` writes
`live_improvement.md` (the table) and `live_improvement.png` (oracle score of the served policy
against ratings).

`--prompts` picks what the simulated person asks, which is also what the trainer trains on and
what the oracle is measured on (the app's `--prompts` setting). The default starter set suits
length, tone and enthusiasm; dislikes_emoji has nothing to teach there (SmolLM2 writes no emoji
about rainbows: its oracle starts at 1), so its runs use the `emoji` set, and the `cheer` set
measures likes_enthusiasm where its answers range from flat to excited.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
JSONL = RESULTS / "live_improvement.jsonl"

RATERS = ["prefers_shorter", "likes_enthusiasm", "positive_sentiment", "wants_topic", "dislikes_emoji"]
SEEDS = [0, 1, 2]

# name -> settings flags. The first is the app's default; the others each change one thing.
OLD_PPO = ["--ppo.learning-rate", "2e-4", "--ppo.gae-lambda", "0.95"]
"""The PPO defaults before bench/optimizer_speed.py showed lambda 1 and lr 5e-4 move the policy faster."""
OLD_KL = ["--ppo.adaptive-kl", "true", "--ppo.init-kl-coef", "0.05"]
"""The KL price before it was fixed at 0.2. The configurations measured under it carry it, so a rerun
measures what their rows measured; their names say what they changed from the defaults of that time."""
CONFIGS: dict[str, list[str]] = {
    # beta fixed at 0.2 per nat: the policy settles where reward gains stop paying for KL instead of
    # running into max_kl (8), where whole rounds are discarded.
    "ppo-default": [],
    "grpo-default": ["--algorithm", "grpo"],
    # Best-of-N distillation (rlhf_app/best_of_n.py): fine-tune on the reward model's pick of 4 answers
    # per prompt. The served policy's best-of-4 had gained more than PPO's policy in most runs. On the
    # oracle (bench/optimizer_speed.py) its KL ran away at lr 5e-4 (39 nats in 12 steps) and at lr 2e-4
    # reached 7 nats by step 12 (+0.40); a live run takes about 24 steps, so half that learning rate.
    "bon-lr1e-4": ["--algorithm", "bon", "--bon.learning-rate", "1e-4"],
    # Live, at 1e-4 the KL grew far slower than on the oracle (2.8 nats after 24 steps): twice that.
    "bon-lr2e-4": ["--algorithm", "bon", "--bon.learning-rate", "2e-4"],
    # The previous default: beta 0.05, which its adaptive controller (horizon 200) barely moves, so
    # only max_kl held the policy; every run had reached it by 24-48 ratings.
    "ppo-kl-coef0.05-adaptive": OLD_KL,
    "ppo-lr2e-4-lambda0.95": [*OLD_PPO, *OLD_KL],
    "ppo-lr5e-4-lambda0.95": ["--ppo.learning-rate", "5e-4", "--ppo.gae-lambda", "0.95", *OLD_KL],
    "ppo-max-kl16": ["--max-kl", "16", *OLD_KL],
    # The KL budget grows with the ratings (max_kl at 96); with half the learning rate and twice the
    # steps, rounds stop nearer their budget (one lr 5e-4 step moved the policy 1.5-5 nats).
    "ppo-kl-ramp96": ["--kl-ramp-ratings", "96", *OLD_KL],
    "ppo-kl-ramp96-lr2.5e-4-steps4": ["--kl-ramp-ratings", "96", "--ppo.learning-rate", "2.5e-4",
                                      "--ppo.steps-per-round", "4", *OLD_KL],
    # Room past the default max_kl (8): on the pets prompts 2 of 3 wants_topic runs had spent it by 80-88
    # ratings and stopped publishing while their reward models still improved. (Seed 1 replayed unchanged:
    # it never reached 8 nats inside the budget.)
    "ppo-max-kl12": ["--max-kl", "12"],
    # Advantages centred but left on the reward model's scale instead of whitened per step: in a batch of
    # 8 answers that all do what the rater likes, whitening blows the reward model's small differences up
    # to unit size, and dislikes_emoji's policy wandered back to emoji at a reward-model accuracy of 0.93-0.96.
    "ppo-center-advantages": ["--ppo.advantage-norm", "center"],
    # Each answer's score against its sibling's (RLOO): the pets prompts differ in how easily their
    # answers mention cats, and whitened across the batch that difference was most of the advantage.
    "ppo-prompt-baseline": ["--ppo.score-baseline", "prompt"],
    # 16 answers a PPO step instead of 8 (4 per prompt). A screen on the oracle (optimizer_speed.py, pets,
    # seed 0; its rows were lost, its log read) gave 0.60 after 8 steps against 0.53, at 1.6x the time a step.
    "ppo-samples4": ["--ppo.samples-per-prompt", "4"],
    # Three PPO steps a round instead of two, with room for the KL they spend: the pets runs used 470-510 s
    # of the 900 s for 100 ratings, so steps are affordable; at two steps seeds 1 and 2 hit max_kl 8 by 80
    # ratings, and a third step per round would reach it sooner.
    "ppo-steps3-max-kl12": ["--ppo.steps-per-round", "3", "--max-kl", "12"],
    # The KL budget grows with the ratings, at the fixed KL price: on the pets prompts the first reward models
    # (8-24 ratings) were right on 0.4-0.6 of held-out ratings, yet their rounds spent 3-4 of the 8 nats.
    "ppo-kl-ramp64": ["--kl-ramp-ratings", "64"],
    # A round is published only if the reward model prefers its answers to the live version's
    # (rlhf_app/acceptance.py): dislikes_emoji's served policy fell from 0.94 to 0.58 over three
    # published rounds at a reward-model accuracy of 0.93-0.96.
    "ppo-publish-gate": ["--publish-gate", "true"],
    # A round that ends past max_kl is discarded, as before kl_pull_back: on the pets prompts every
    # round after 56-88 ratings was, and the served policy stopped changing.
    "ppo-discard-past-kl": ["--kl-pull-back", "0"],
    # Three PPO steps a round at the default max_kl: with rounds past the bound pulled back onto it
    # rather than discarded, a faster policy no longer stops at the bound. wants_topic seed 0 (pets)
    # replays its two-step run exactly (it never passes the bound) and was still climbing; with three
    # steps it gained +0.13 against +0.15, in 686 s of loop time against 509 s.
    "ppo-steps3": ["--ppo.steps-per-round", "3"],
    # Half the KL price, now that max_kl no longer discards a round but pulls it back onto the bound:
    # beta 0.2 was chosen when reaching the bound froze the policy. At 0.2 wants_topic seed 0 (pets)
    # sat at 3-4 nats for its first 56 ratings and never reached the bound.
    "ppo-kl-coef0.1": ["--ppo.init-kl-coef", "0.1"],
    # The other way: at 0.1 seed 0 reached the bound by 48 ratings and gained +0.07 against +0.15, its
    # reward models right on 0.57-0.83 of held-out ratings, spending the budget on their errors.
    "ppo-kl-coef0.3": ["--ppo.init-kl-coef", "0.3"],
    # Every rating trains the reward model: at the default 0.2, a generation in five is held out to
    # measure accuracy, and every pair touching one is dropped, about a third of the pairs.
    "ppo-heldout0": ["--reward.heldout-fraction", "0"],
    # Both: every rating trains, and L2 is cross-validated over folds of rated answers instead of pairs
    # (pairs share answers, so the pair split picked L2 0.001 where these folds pick 0.1-10, and the
    # head ranked a live run's next answers better: bench/reward_on_policy.py). Its wants_topic rows
    # ran as the default at commit 9654f26, whose L2 grid also held 100.
    "ppo-rm-generation-folds-heldout0": ["--reward.heldout-fraction", "0", "--reward.l2-folds", "generations"],
    # The L2 folds alone, a fifth still held out: which of the two cost wants_topic seeds 1 and 2.
    "ppo-rm-generation-folds": ["--reward.l2-folds", "generations"],
    # ... and the head reading only the embedding sum and the length: a third of the features, each
    # a count of words; it ranked the replayed run's next answers best (0.76 against 0.67).
    "ppo-rm-bag-len": ["--reward.heldout-fraction", "0", "--reward.l2-folds", "generations",
                       "--reward.feature-blocks", "bag,len"],
    # A head on word counts alone, L1-penalized, regressing the scores, every rating training it:
    # on 96 scored answers it ranked two answers to one prompt as likes_enthusiasm's oracle does
    # 0.75 of the time, where the default head managed 0.57 (bench/reward_sample_efficiency.py).
    "ppo-rm-words": ["--reward.pointwise", "regression", "--reward.feature-blocks", "tokens",
                     "--reward.heldout-fraction", "0"],
    # For wants_topic: the default features plus the word counts, scores regressed as utilities. On 96
    # scored answers to the pets prompts it ranked two answers to one prompt as the oracle does 0.78
    # of the time (default head 0.75) and all answers with Spearman 0.66 (0.58). Live it gained
    # +0.18 / +0.11 / +0.09 (seeds 0-2) against the default's +0.15 / +0.23 / +0.195.
    "ppo-rm-regression-tokens": ["--reward.pointwise", "regression",
                                 "--reward.feature-blocks", "mean,eos,bag,len,tokens"],
    "ppo-lora-rm": ["--reward.method", "lora"],
    "ppo-every16": ["--train-every-ratings", "16"],
    # The served policy a moving average of the rounds' weights (rlhf_app/averaging.py): wants_topic's
    # served versions on the pets prompts swung by 0.1 from one round to the next (seed 0: 0.59, 0.55,
    # 0.41 at 40-56 ratings), and the run's gain is whichever point it stops on.
    "ppo-average0.5": ["--policy-average", "0.5"],
    # The reward less one standard deviation of 8 heads fitted on resamples of the ratings: past 6 nats,
    # ppo-rm-regression-tokens' policy fell from 0.62 to 0.49 while its heads stayed 0.77-0.87 accurate
    # on held-out ratings; it had moved where the ratings say little.
    "ppo-rm-pessimism1": ["--reward.pessimism", "1"],
    # PPO-ptx with the liked answers as its supervised text (rlhf_app/demonstrations.py), and room to
    # spend KL on them: PPO on the hidden oracle itself sat at the max_kl bound from 32-48 ratings on
    # (wants_topic, pets), so a better reward alone cannot go far at 8 nats. Offline, 8 imitation steps on
    # the 7 liked answers among 36 scored ones took the oracle from 0.40 to 0.71 at 12.9 nats. Its rows
    # from commit 1a16975, before an answer's EOS was imitated, are named ppo-imitation1-max-kl16-no-eos.
    "ppo-imitation1-max-kl16": ["--ppo.imitation-coef", "1", "--max-kl", "16"],
    # The same, with the imitation term growing to full weight over the first 16 liked answers: at full
    # weight from the first, wants_topic seed 1's early rounds learnt one or two answers by heart.
    "ppo-imitation1-full16-max-kl16": ["--ppo.imitation-coef", "1", "--ppo.imitation-full-at", "16", "--max-kl", "16"],
    # ... at the default max_kl of 8: with 16 nats, dislikes_emoji's checkpoints swung between 0.41 and
    # 0.78 once its answers were emoji-free, and prefers_shorter gained nothing.
    "ppo-imitation1-full16": ["--ppo.imitation-coef", "1", "--ppo.imitation-full-at", "16"],
    # One pass over each step's samples instead of two: wants_topic's served versions swing by ~0.1
    # from round to round once at the max_kl bound (seed 0: 0.63, 0.69, 0.56 at 80-96 ratings). Does
    # a smaller update per round damp the walk along the bound, and what does it cost early on?
    "ppo-epochs1": ["--ppo.ppo-epochs", "1"],
    # Three passes: at one the policy stayed 1-3 nats from the initial one, and with two wants_topic
    # seed 0's stays at 3-6 nats through 88 ratings while its reward model's best-of-4 reads 0.79-0.91
    # at 72-88 ratings, against the policy's 0.55-0.69. Is the policy moving too little per answer?
    # It was not: three passes spent the bound by 32 ratings and gained +0.08 against +0.15 (README).
    "ppo-epochs3": ["--ppo.ppo-epochs", "3"],
    # Not the app: PPO trained on the rater's hidden oracle, on the reward model's scale
    # (simulate.normalized_oracle), an upper bound of what the optimizer can do in the same time
    # with a perfect reward model. Rows named *raw-oracle-reward ran with the unscaled 0-1 oracle,
    # before that function, and cannot be rerun.
    "ppo-oracle-reward": ["--oracle-reward"],
    # ... with a third PPO step per round, spending the ~350 s the default leaves of the 15 minutes:
    # does more optimizer compute raise that bound?
    "ppo-oracle-reward-steps3": ["--oracle-reward", "--ppo.steps-per-round", "3"],
}


def commit() -> str:
    """The code a run measured: HEAD, marked when the tree had uncommitted changes (results files aside:
    the previous run's row is one)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
                           cwd=ROOT, capture_output=True, text=True).stdout
    return head.strip() + ("+dirty" if dirty.strip() else "")


def run_key(config: str, rater: str, seed: int, mode: str, ratings: int, prompts: str = "starter") -> str:
    key = f"{config}|{rater}|{seed}|{mode}|{ratings}"
    return key if prompts == "starter" else f"{key}|{prompts}"  # keys of runs before --prompts stay valid


def finished_keys() -> set[str]:
    if not JSONL.exists():
        return set()
    return {json.loads(line)["key"] for line in JSONL.read_text().splitlines() if line.strip()}


def run_one(config: str, rater: str, seed: int, mode: str, ratings: int, prompts: str, eval_samples: int,
            model_cache: Path | None, timeout_s: float, wall_budget_s: float, endpoint_samples: int = 0) -> dict:
    with tempfile.TemporaryDirectory(prefix="live-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        if model_cache is not None and model_cache.exists():
            (data / "models").symlink_to(model_cache.resolve(), target_is_directory=True)
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "rlhf_app.simulate", "--data-dir", str(data), "--seed", str(seed),
               "--rater", rater, "--mode", mode, "--ratings", str(ratings), "--prompts", prompts,
               "--eval-samples", str(eval_samples), "--endpoint-samples", str(endpoint_samples),
               "--wall-budget", str(wall_budget_s), "--out", str(out), *CONFIGS[config]]
        t0, c0 = time.time(), os.times()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        finally:  # a timeout, Ctrl-C or SIGTERM must not leave the run training on in the background
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        c1 = os.times()
        if proc.returncode != 0:
            return {"error": stderr[-3000:], "wall_s": time.time() - t0}
        result = json.loads(out.read_text())
        result["wall_s"] = time.time() - t0
        result["cpu_s"] = (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)
        return result


def within_budget(row: dict) -> dict:
    """The last checkpoint inside the target: at most `ratings` ratings and `wall_budget_s` of loop time."""
    budget = row.get("wall_budget_s", 900.0)
    cps = [c for c in row["result"]["checkpoints"] if c["wall_s"] <= budget and c["ratings"] <= row["ratings"]]
    return cps[-1]


def endpoints(row: dict) -> tuple[float, float, int | None]:
    """(oracle of version 0, oracle at the budget, answers per eval prompt behind them): the run's
    precise endpoints where it measured them (`simulate.Endpoints`), else its checkpoints' (None: the
    earliest rows did not record how many)."""
    ends = row["result"].get("endpoints")
    if ends:
        return ends["v0"], ends["oracle"], ends["samples_per_prompt"]
    return row["result"]["checkpoints"][0]["oracle"], within_budget(row)["oracle"], row.get("eval_samples")


def served_kl(row: dict, checkpoint: dict) -> float | None:
    """KL of the version `checkpoint` served, as measured when it was published.

    Runs before 2026-11-30 stored the last round's KL at each checkpoint, published or not (a run's
    final checkpoint could carry a discarded round's); the first checkpoint of a version always
    followed the round that published it, so its value is the version's own, in old rows and new.
    """
    return next(c["kl_ref"] for c in row["result"]["checkpoints"] if c["policy_version"] == checkpoint["policy_version"])


def report() -> str:
    rows = [json.loads(line) for line in JSONL.read_text().splitlines() if line.strip()] if JSONL.exists() else []
    rows = list({r["key"]: r for r in rows}.values())  # a rerun's row replaces the older one
    ok = [r for r in rows if "error" not in r["result"]]
    groups: dict[tuple, list[dict]] = {}
    for r in ok:
        groups.setdefault((r["config"], r["rater"], r.get("prompts", "starter"), r["mode"], r["ratings"]), []).append(r)
    lines = [
        "Gain: the served policy's oracle score at the last version inside the budget (ratings asked, "
        "15 minutes of loop time) minus version 0's, each a mean over 'answers/prompt' answers to every eval "
        "prompt: 32 where the run measured its endpoints apart (`--endpoint-samples`), else the 4 or 8 of its "
        "checkpoints. Checkpoint gain: the same read off the checkpoints' own 4 or 8 answers per prompt. Best-of-N "
        "gain: the checkpoints' best-of-4 at the budget minus their version 0. Gain SE: the standard error one run's "
        "gain has from sampling its 32 answers per prompt (runs since 2026-12-06; the mean over the group's runs).",
        "",
        "| config | rater | prompts | mode | seeds | answers/prompt | oracle v0 | oracle at budget | gain (min..max) | gain SE | "
        "checkpoint gain | best-of-N gain | ratings by then | versions | RM acc | KL | seeds with gain >= 0.2 | run wall s (with eval) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (config, rater, prompts, mode, ratings), rs in sorted(groups.items()):
        first = [r["result"]["checkpoints"][0] for r in rs]
        last = [within_budget(r) for r in rs]
        ends = [endpoints(r) for r in rs]
        gains = [b - a for a, b, _ in ends]
        per_prompt = "/".join(str(n or "?") for n in sorted({n or 0 for _, _, n in ends}, reverse=True))
        at_checkpoints = [b["oracle"] - a["oracle"] for a, b in zip(first, last)]
        bon = [b["oracle_best_of_n"] - a["oracle"] for a, b in zip(first, last) if b["oracle_best_of_n"] is not None]
        acc = [b["reward_model_accuracy"] for b in last if b["reward_model_accuracy"] is not None]
        kl = [k for k in (served_kl(r, b) for r, b in zip(rs, last)) if k is not None]
        se = [e["gain_se"] for e in (r["result"].get("endpoints") or {} for r in rs) if e.get("gain_se") is not None]
        f = lambda xs: f"{statistics.fmean(xs):.3f}" if xs else "-"  # noqa: E731
        lines.append(
            f"| {config} | {rater} | {prompts} | {mode} | {len(rs)} | {per_prompt} | {f([a for a, _, _ in ends])} | "
            f"{f([b for _, b, _ in ends])} | {f(gains)} ({min(gains):+.3f}..{max(gains):+.3f}) | {f(se)} | {f(at_checkpoints)} | "
            f"{f(bon)} | "
            f"{statistics.fmean(b['ratings'] for b in last):.0f} | "
            f"{statistics.fmean(b['policy_version'] for b in last):.0f} | {f(acc)} | {f(kl)} | "
            f"{sum(g >= 0.2 for g in gains)}/{len(gains)} | {statistics.fmean(r['result']['wall_s'] for r in rs):.0f} |"
        )
    errors = [r for r in rows if "error" in r["result"]]
    if errors:
        lines.append(f"\n{len(errors)} run(s) failed; see their `error` field in {JSONL.name}.")
    table = "\n".join(lines)
    (RESULTS / "live_improvement.md").write_text(table + "\n")
    plot(ok)
    return table


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def panel(r: dict) -> str:
        prompts = r.get("prompts", "starter")
        return r["rater"] if prompts == "starter" else f"{r['rater']} ({prompts} prompts)"

    raters = sorted({panel(r) for r in rows})
    if not raters:
        return
    fig, axes = plt.subplots(1, len(raters), figsize=(4 * len(raters), 3.4), squeeze=False, sharey=True)
    colors = {}
    for ax, rater in zip(axes[0], raters):
        for r in (r for r in rows if panel(r) == rater):
            cps = r["result"]["checkpoints"]
            c = colors.setdefault(r["config"], f"C{len(colors)}")
            ax.plot([p["ratings"] for p in cps], [p["oracle"] for p in cps], color=c, alpha=0.8, marker=".",
                    label=r["config"] if r["seed"] == min(x["seed"] for x in rows) else None)
        ax.set_title(rater)
        ax.set_xlabel("ratings")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("oracle score of served policy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    by_label = dict(zip(labels, handles))
    fig.legend(by_label.values(), by_label.keys(), loc="lower center", ncol=len(by_label), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(RESULTS / "live_improvement.png", dpi=80)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Screening: seed 0 only, 40 ratings, 4 eval samples per prompt.")
    ap.add_argument("--only", nargs="*", default=None, help="Configurations to run (default: all).")
    ap.add_argument("--raters", nargs="*", default=RATERS)
    ap.add_argument("--seeds", nargs="*", type=int, default=None)
    ap.add_argument("--mode", default="score", choices=["thumb", "score", "compare"])
    ap.add_argument("--prompts", default="starter", help="Prompt set the simulated person asks (rlhf_app/prompts.py).")
    ap.add_argument("--ratings", type=int, default=None)
    ap.add_argument("--eval-samples", type=int, default=None, help="Answers per eval prompt at each checkpoint.")
    ap.add_argument("--endpoint-samples", type=int, default=None,
                    help="Answers per eval prompt for version 0 and the version at the budget (default 32; quick: 0, "
                         "the checkpoints' own).")
    ap.add_argument("--timeout", type=float, default=3600, help="Seconds before a run is killed.")
    ap.add_argument("--wall-budget", type=float, default=900,
                    help="Seconds of loop time (evaluation excluded) a run may rate for: the target's 15 minutes.")
    ap.add_argument("--model-cache", default=str(ROOT / "data" / "models"),
                    help="Converted default model to reuse (saves the 30 s GGUF conversion per run).")
    ap.add_argument("--report", action="store_true", help="Only write the table and plot.")
    ap.add_argument("--rerun", action="store_true", help="Run again what has run (after a code change).")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so run_one stops its subprocess
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.report:
        print(report())
        return 0
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else SEEDS)
    ratings = args.ratings or (40 if args.quick else 100)
    eval_samples = args.eval_samples or (4 if args.quick else 8)
    endpoint_samples = args.endpoint_samples if args.endpoint_samples is not None else (0 if args.quick else 32)
    done = set() if args.rerun else finished_keys()
    for config in args.only or list(CONFIGS):
        for rater in args.raters:
            for seed in seeds:
                key = run_key(config, rater, seed, args.mode, ratings, args.prompts)
                if key in done:
                    continue
                print(f"running {key}", flush=True)
                code = commit()
                try:
                    result = run_one(config, rater, seed, args.mode, ratings, args.prompts, eval_samples,
                                     Path(args.model_cache), args.timeout, args.wall_budget, endpoint_samples)
                except subprocess.TimeoutExpired:
                    result = {"error": f"timed out after {args.timeout} s"}
                row = {"key": key, "commit": code, "eval_samples": eval_samples, "endpoint_samples": endpoint_samples,
                       "wall_budget_s": args.wall_budget,
                       "config": config, "rater": rater, "seed": seed, "mode": args.mode, "prompts": args.prompts,
                       "ratings": ratings, "flags": CONFIGS[config], "finished_at": time.time(), "result": result}
                with JSONL.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"  -> {'error' if 'error' in result else 'gain %+.3f' % (result['gain'])}", flush=True)
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
