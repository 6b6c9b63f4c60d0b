"""Does showing the pair the reward model is least sure about make each A/B vote count for more?

    ./run.sh python bench/pair_selection.py                 # 4 raters x 3 seeds, 96 votes each
    ./run.sh python bench/pair_selection.py --candidates 4 8

Active learning on the cached answers of bench/reward_sample_efficiency.py (the default model,
12 answers per starter prompt). For each vote: a prompt at random, `candidates` of its answers
drawn as if just sampled, and two of them shown, either the first two ('random', what
`pair_candidates = 2` does) or the two the current reward model is least sure between
(`rlhf_app.generation.least_sure_pair`, what `pair_candidates > 2` does). The rater votes through
`Store.compare` (noise 0.1), and the 'features' reward model is refitted with `fit_and_record`
every 8 votes, as the trainer would. After each fit: agreement with the rater's oracle on 80
answers never shown. Writes bench/results/pair_selection.json and .md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from reward_sample_efficiency import N_TEST, corpus, oracle_agreement  # noqa: E402

from rlhf_app.config import RewardModelConfig  # noqa: E402
from rlhf_app.generation import least_sure_pair  # noqa: E402
from rlhf_app.raters import get_rater  # noqa: E402
from rlhf_app.reward import fit_and_record  # noqa: E402
from rlhf_app.runtime import quiet_offline_env  # noqa: E402
from rlhf_app.store import Store  # noqa: E402

RESULTS = ROOT / "bench" / "results"
FIT_EVERY = 8


def run(strategy: str, rater_name: str, seed: int, votes: int, candidates: int, answers: list[tuple[str, str]],
        base_path: str) -> list[dict]:
    rater = get_rater(rater_name, noise=0.1)
    rng = random.Random(seed)
    order = list(range(len(answers)))
    rng.shuffle(order)
    test = [answers[i] for i in order[:N_TEST]]
    by_prompt: dict[str, list[str]] = {}
    for i in order[N_TEST:]:
        by_prompt.setdefault(answers[i][0], []).append(answers[i][1])
    prompts = sorted(p for p, texts in by_prompt.items() if len(texts) >= candidates)
    curve = []
    rm = None
    with tempfile.TemporaryDirectory(prefix="pair-bench-") as tmp:
        store = Store(Path(tmp) / "rlhf.db")
        for v in range(1, votes + 1):
            prompt = rng.choice(prompts)
            texts = rng.sample(by_prompt[prompt], candidates)
            if strategy == "least_sure" and rm is not None:
                i, j = least_sure_pair(rm.score([prompt] * candidates, texts), texts)
            else:
                i, j = 0, 1
            a = store.add_generation(prompt, texts[i], "bench", 0)
            b = store.add_generation(prompt, texts[j], "bench", 0)
            store.compare(a, b, "bench", rater.compare(texts[i], texts[j], prompt, rng))
            if v % FIT_EVERY == 0:
                fitted = fit_and_record(store, base_path, RewardModelConfig(method="features"), seed, tmp)
                rm = fitted or rm
                if rm is not None:
                    curve.append({"votes": v, **oracle_agreement(rm, rater, test)})
    return curve


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raters", nargs="*", default=["prefers_shorter", "likes_enthusiasm", "positive_sentiment",
                                                     "wants_topic"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--votes", type=int, default=96)
    ap.add_argument("--candidates", nargs="*", type=int, default=[4])
    ap.add_argument("--data-dir", default=str(ROOT / "data"))
    args = ap.parse_args()
    quiet_offline_env()
    data_dir = Path(args.data_dir)
    answers = corpus(data_dir, 48)
    base_path = str(data_dir / "models" / "SmolLM2-135M-Instruct")
    rows = []
    for rater in args.raters:
        for k in args.candidates:
            for strategy in ("random", "least_sure"):
                for seed in args.seeds:
                    curve = run(strategy, rater, seed, args.votes, k, answers, base_path)
                    rows.append({"rater": rater, "candidates": k, "strategy": strategy, "seed": seed, "curve": curve})
                    print(json.dumps({k2: v for k2, v in rows[-1].items() if k2 != "curve"}),
                          [(c["votes"], round(c["accuracy"] or 0, 3)) for c in curve], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pair_selection.json").write_text(json.dumps({"votes": args.votes, "rows": rows}, indent=1))
    marks = [m for m in (16, 32, 48, 64, 96) if m <= args.votes]
    lines = ["| rater | candidates | pair shown | " + " | ".join(f"acc @{m} votes" for m in marks) + " |",
             "|---|---|---|" + "---|" * len(marks)]
    for rater in args.raters:
        for k in args.candidates:
            for strategy in ("random", "least_sure"):
                rs = [r for r in rows if (r["rater"], r["candidates"], r["strategy"]) == (rater, k, strategy)]
                cells = []
                for m in marks:
                    acc = [c["accuracy"] for r in rs for c in r["curve"] if c["votes"] == m and c["accuracy"] is not None]
                    cells.append(f"{statistics.fmean(acc):.3f}" if acc else "-")
                lines.append(f"| {rater} | {k} | {strategy} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (RESULTS / "pair_selection.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
