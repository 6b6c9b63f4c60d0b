"""How many ratings does a reward model need? Accuracy against each rater's hidden oracle.

    ./run.sh python bench/reward_sample_efficiency.py                       # both methods, 4 raters
    ./run.sh python bench/reward_sample_efficiency.py --methods features --sizes 16 32 64 128
    ./run.sh python bench/reward_sample_efficiency.py --methods features:l2=0.01 features:l2=100  # fixed L2
    ./run.sh python bench/reward_sample_efficiency.py --methods features:heldout_fraction=0  # any config field
    ./run.sh python bench/reward_sample_efficiency.py --methods features:feature_blocks=bag+len  # '+' for ','
    ./run.sh python bench/reward_sample_efficiency.py --raters wants_topic --prompts pets  # a built-in prompt set

1. The default model answers the prompts (the 20 starter prompts 12 times each, or another built-in
   set as often as makes 240 answers; 48 tokens, the page's sampling settings), once; the answers
   are cached under data/bench/.
2. Per rater and seed, the first n answers of a seeded shuffle are rated 1-5 by the rater (noise
   0.1) through `Store.rate`, and each reward-model method is fitted by `fit_and_record`: the path
   the trainer takes.
3. Each fit is scored on 80 answers never rated: the share of pairs (oracle scores at least 0.05
   apart) it orders as the oracle does, the same among pairs of answers to one prompt (the choice
   a policy optimizer faces: which of its answers to this prompt is better), and the Spearman
   correlation with the oracle.

Each finished fit is appended to bench/results/reward_sample_efficiency.jsonl (and skipped when
the benchmark is started again, unless `--rerun`: then the new row replaces the old one in the
table); the table of every row so far goes to the .md beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlhf_app.config import RewardModelConfig  # noqa: E402
from rlhf_app.models import load_model  # noqa: E402
from rlhf_app.prompts import load_prompts  # noqa: E402
from rlhf_app.raters import get_rater  # noqa: E402
from rlhf_app.reward import fit_and_record, spearman  # noqa: E402
from rlhf_app.runtime import quiet_offline_env  # noqa: E402
from rlhf_app.sampling import SamplingParams, chat_input_ids, sample  # noqa: E402
from rlhf_app.store import Store  # noqa: E402

RESULTS = ROOT / "bench" / "results"
JSONL = RESULTS / "reward_sample_efficiency.jsonl"
PER_PROMPT = 12
CORPUS = 240
"""Answers in a corpus: 12 to each of the 20 starter prompts; more to each prompt of a smaller set."""
N_TEST = 80


def corpus(data_dir: Path, answer_tokens: int, prompts: str = "starter") -> list[tuple[str, str]]:
    stem = "reward_corpus" if prompts == "starter" else f"reward_corpus_{prompts}"  # starter: the older name
    path = data_dir / "bench" / f"{stem}_{answer_tokens}.json"
    if path.exists():
        return [tuple(x) for x in json.loads(path.read_text())]
    lm = load_model("smollm2", data_dir, device="cpu")
    out = []
    chosen_prompts = load_prompts(prompts)
    per_prompt = max(PER_PROMPT, -(-CORPUS // len(chosen_prompts)))
    for i, prompt in enumerate(chosen_prompts):
        ids = chat_input_ids(lm.tokenizer, prompt)
        params = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=answer_tokens, seed=i)
        tokens = torch.stack(list(sample(lm.model, [ids] * per_prompt, params, lm.tokenizer.eos_token_id,
                                         lm.tokenizer.pad_token_id)), dim=1)
        for row in tokens.tolist():
            row = [t for t in row if t not in (lm.tokenizer.pad_token_id, lm.tokenizer.eos_token_id)]
            out.append((prompt, lm.tokenizer.decode(row, skip_special_tokens=True).strip()))
        print(f"corpus: {len(out)} answers", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def reward_config(method: str) -> RewardModelConfig:
    """'features', 'lora', or 'features:k=v,k=v' with `RewardModelConfig` fields ('l2' = head_l2);
    a '+' in a text value stands for the comma that would end it.

    >>> reward_config("features:l2=0.01,heldout_fraction=0").heldout_fraction
    0.0
    >>> reward_config("features:feature_blocks=bag+len,l2_folds=generations").feature_blocks
    'bag,len'
    """
    name, _, overrides = method.partition(":")
    fields = {f.name: f.type for f in dataclasses.fields(RewardModelConfig)}
    kw = {}
    for item in filter(None, overrides.split(",")):
        key, _, value = item.partition("=")
        key = "head_l2" if key == "l2" else key
        kind = fields[key]
        kw[key] = (int(value) if kind in (int, "int") else value.replace("+", ",") if kind in (str, "str")
                   else float(value))
    return RewardModelConfig(method=name, **kw)


def run(method: str, rater_name: str, seed: int, n: int, answers: list[tuple[str, str]], base_path: str) -> dict:
    rater = get_rater(rater_name, noise=0.1)
    rng = random.Random(seed)
    order = list(range(len(answers)))
    rng.shuffle(order)
    test, pool = order[:N_TEST], order[N_TEST:]
    with tempfile.TemporaryDirectory(prefix="rm-bench-") as tmp:
        store = Store(Path(tmp) / "rlhf.db")
        for i in pool[:n]:
            prompt, text = answers[i]
            gid = store.add_generation(prompt, text, "bench", 0)
            store.rate(gid, "bench", "score", rater.score(text, prompt, rng))
        config = reward_config(method)
        t0 = time.time()
        rm = fit_and_record(store, base_path, config, seed, tmp)
        fit_s = time.time() - t0
        if rm is None:
            return {"error": "too little data"}
        result = oracle_agreement(rm, rater, [answers[i] for i in test])
    return {**result, "heldout_accuracy": rm.metrics.get("heldout_accuracy"), "fit_s": fit_s}


def oracle_agreement(rm, rater, test: list[tuple[str, str]]) -> dict:
    """Share of test pairs (oracle scores >= 0.05 apart) the reward model orders as the oracle does."""
    scores = rm.score_raw([p for p, _ in test], [t for _, t in test])
    truth = [rater.oracle(t, p) for p, t in test]
    right = total = same_right = same_total = 0
    for a in range(len(test)):
        for b in range(a + 1, len(test)):
            if abs(truth[a] - truth[b]) >= 0.05:
                hit = (scores[a] > scores[b]) == (truth[a] > truth[b])
                total, right = total + 1, right + hit
                if test[a][0] == test[b][0]:
                    same_total, same_right = same_total + 1, same_right + hit
    return {"accuracy": right / total if total else None, "spearman": spearman(scores, truth), "test_pairs": total,
            "same_prompt_accuracy": same_right / same_total if same_total else None,
            "same_prompt_pairs": same_total}


def row_key(r: dict) -> tuple:
    return r["method"], r["rater"], r["ratings"], r["seed"], r["answer_tokens"], r.get("prompts", "starter")


def report(rows: list[dict]) -> str:
    rows = list({row_key(r): r for r in rows}.values())  # a rerun's row replaces the older one
    lines = ["| rater | prompts | ratings | method | seeds | oracle pair accuracy (mean, min..max) | "
             "same-prompt pairs | Spearman | fit s |",
             "|---|---|---|---|---|---|---|---|---|"]
    f = lambda xs: f"{statistics.fmean(xs):.3f}" if xs else "-"  # noqa: E731
    group = lambda r: (r["rater"], r.get("prompts", "starter"), r["ratings"], r["method"])  # noqa: E731
    for key in sorted({group(r) for r in rows if "error" not in r}):
        rater, prompts, n, method = key
        rs = [r for r in rows if group(r) == key and "error" not in r]
        acc = [r["accuracy"] for r in rs if r["accuracy"] is not None]
        same = [r["same_prompt_accuracy"] for r in rs if r.get("same_prompt_accuracy") is not None]
        lines.append(f"| {rater} | {prompts} | {n} | {method} | {len(rs)} | {f(acc)} ({min(acc):.2f}..{max(acc):.2f}) | "
                     f"{f(same)} | {f([r['spearman'] for r in rs if r['spearman'] is not None])} | "
                     f"{f([r['fit_s'] for r in rs])} |")
    table = "\n".join(lines)
    (RESULTS / "reward_sample_efficiency.md").write_text(table + "\n")
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="*", default=["features", "lora"],
                    help="'features', 'lora', or 'features:k=v,...' setting RewardModelConfig fields "
                         "('features:l2=0.01' fixes the head's L2).")
    ap.add_argument("--raters", nargs="*", default=["prefers_shorter", "likes_enthusiasm", "positive_sentiment",
                                                     "wants_topic"])
    ap.add_argument("--sizes", nargs="*", type=int, default=[24, 48, 96])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    ap.add_argument("--answer-tokens", type=int, default=48)
    ap.add_argument("--prompts", default="starter", help="Built-in prompt set the corpus answers.")
    ap.add_argument("--data-dir", default=str(ROOT / "data"))
    ap.add_argument("--rerun", action="store_true", help="Fit again what has run (after a code change).")
    args = ap.parse_args()
    quiet_offline_env()
    torch.manual_seed(0)
    data_dir = Path(args.data_dir)
    answers = corpus(data_dir, args.answer_tokens, args.prompts)
    base_path = str(data_dir / "models" / "SmolLM2-135M-Instruct")
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in JSONL.read_text().splitlines()] if JSONL.exists() else []
    done = set() if args.rerun else {row_key(r) for r in rows}
    for rater in args.raters:
        for n in args.sizes:
            for method in args.methods:
                for seed in args.seeds:
                    if (method, rater, n, seed, args.answer_tokens, args.prompts) in done:
                        continue
                    r = run(method, rater, seed, n, answers, base_path)
                    row = {"method": method, "rater": rater, "ratings": n, "seed": seed,
                           "answer_tokens": args.answer_tokens, "prompts": args.prompts,
                           "torch_threads": torch.get_num_threads(), **r}
                    rows.append(row)
                    with JSONL.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
