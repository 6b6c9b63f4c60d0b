"""Is the reward model short of ratings, or of a representation? Linear heads on several of them.

    ./run.sh python bench/reward_representation.py                 # 4 raters, 48/96/160 ratings, 4 seeds
    ./run.sh python bench/reward_representation.py --raters likes_enthusiasm --sizes 96

The app's reward model (`reward_features.py`) is a Bradley-Terry linear head on frozen features of
SmolLM2. On likes_enthusiasm and positive_sentiment it orders only about 65% of never-rated answer
pairs as the rater would, and more ratings barely help (bench/results/reward_sample_efficiency.md).
This benchmark holds the ratings fixed and changes only what the head reads:

- `app`: the app's own features (first 8 layers: mean and EOS hidden state, summed input embeddings,
  log length);
- `mean@L`, `sum@L`: layer L's hidden states over the answer's tokens, averaged or summed (a sum
  counts, a mean shares), with log length;
- `token-counts`: how often each vocabulary token occurs in the answer, with log length;
- `oracle`: the rater's hidden score itself, one number. Not a reward model anyone could build: it
  shows how much the ratings (1-5, noise 0.1, turned into pairs as the app does) can teach a head
  that reads the right thing.

Answers, rating protocol and agreement measure are those of reward_sample_efficiency.py (its cached
corpus of 240 answers to the starter prompts, 80 held out for testing); the head is fitted by the
app's `fit_head` with L2 picked by its `pick_l2`. Results: bench/results/reward_representation.{json,md}.
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

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from reward_sample_efficiency import N_TEST, corpus, oracle_agreement  # noqa: E402

from rlhf_app.preferences import build_preference_data  # noqa: E402
from rlhf_app.raters import get_rater  # noqa: E402
from rlhf_app.reward import encode_with_start  # noqa: E402
from rlhf_app.reward_features import L2_GRID, featurizer_for, fit_head, pair_splits, pick_l2  # noqa: E402
from rlhf_app.runtime import quiet_offline_env  # noqa: E402
from rlhf_app.store import Store  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LAYERS = (8, 16, 30)


def representations(answers: list[tuple[str, str]], base_path: str) -> dict[str, torch.Tensor]:
    """name -> (n_answers, dim) matrix, every row computed once."""
    from transformers import AutoModel

    fz = featurizer_for(base_path, 8, 256, "cpu")
    reps = {"app": fz.features([p for p, _ in answers], [t for _, t in answers])}
    log_len = reps["app"][:, -1:]
    tok = fz.tokenizer
    full = AutoModel.from_pretrained(base_path, dtype=torch.float32).eval()
    pooled: dict[str, list[torch.Tensor]] = {}
    counts = torch.zeros(len(answers), len(tok))
    with torch.inference_mode():
        for i, (prompt, text) in enumerate(answers):
            ids, start = encode_with_start(tok, prompt, text, 256)
            answer = slice(start, len(ids) - 1) if len(ids) - 1 > start else slice(len(ids) - 1, len(ids))
            for t in ids[answer]:
                counts[i, t] += 1
            hidden = full(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
            for layer in LAYERS:
                h = hidden[min(layer, len(hidden) - 1)][0, answer]
                pooled.setdefault(f"mean@{layer}", []).append(h.mean(0))
                pooled.setdefault(f"sum@{layer}", []).append(h.sum(0))
    for name, rows in pooled.items():
        reps[name] = torch.cat([torch.stack(rows), log_len], 1)
    seen = counts.sum(0) > 0  # tokens no answer uses carry no signal
    reps["token-counts"] = torch.cat([counts[:, seen], log_len], 1)
    return reps


def agreement(x: torch.Tensor, answers: list[tuple[str, str]], rater_name: str, seed: int, n: int) -> dict:
    """Rate n answers through the store, fit a head on `x`'s rows, score the 80 test answers."""
    rater = get_rater(rater_name, noise=0.1)
    rng = random.Random(seed)
    order = list(range(len(answers)))
    rng.shuffle(order)  # the same split and ratings as reward_sample_efficiency.py
    test, pool = order[:N_TEST], order[N_TEST:]
    index = {a: i for i, a in enumerate(answers)}
    with tempfile.TemporaryDirectory(prefix="rm-rep-") as tmp:
        store = Store(Path(tmp) / "rlhf.db")
        for i in pool[:n]:
            prompt, text = answers[i]
            store.rate(store.add_generation(prompt, text, "bench", 0), "bench", "score", rater.score(text, prompt, rng))
        data = build_preference_data(store, 0.2, 4, seed)
    chosen = x[[index[(p.prompt, p.chosen)] for p in data.train]]
    rejected = x[[index[(p.rejected_prompt, p.rejected)] for p in data.train]]
    std = torch.cat([chosen, rejected]).std(0).nan_to_num(1.0).clamp_min(1e-4)
    diff = (chosen - rejected) / std
    margin = torch.tensor([float(p.margin) for p in data.train])
    l2 = pick_l2(diff, margin, list(L2_GRID), pair_splits(len(data.train), seed))
    w = fit_head(diff, margin, l2)

    class Head:
        def score_raw(self, prompts: list[str], texts: list[str]) -> list[float]:
            return ((x[[index[k] for k in zip(prompts, texts)]] / std) @ w).tolist()

    tests = [answers[i] for i in test]
    return {**oracle_agreement(Head(), rater, tests), "same_prompt_accuracy": same_prompt_agreement(Head(), rater, tests),
            "l2": l2, "train_pairs": len(data.train)}


def same_prompt_agreement(head, rater, test: list[tuple[str, str]]) -> float | None:
    """`oracle_agreement` over pairs of answers to the same prompt only: the choice PPO and best-of-N
    face, where a head that has learnt which prompts draw liked answers is no help."""
    scores = head.score_raw([p for p, _ in test], [t for _, t in test])
    truth = [rater.oracle(t, p) for p, t in test]
    hits = [(scores[a] > scores[b]) == (truth[a] > truth[b])
            for a in range(len(test)) for b in range(a + 1, len(test))
            if test[a][0] == test[b][0] and abs(truth[a] - truth[b]) >= 0.05]
    return sum(hits) / len(hits) if hits else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raters", nargs="*", default=["likes_enthusiasm", "positive_sentiment", "prefers_shorter",
                                                     "wants_topic"])
    ap.add_argument("--sizes", nargs="*", type=int, default=[48, 96, 160])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3])
    ap.add_argument("--data-dir", default=str(ROOT / "data"))
    args = ap.parse_args()
    quiet_offline_env()
    torch.manual_seed(0)
    data_dir = Path(args.data_dir)
    answers = corpus(data_dir, 48)
    if max(args.sizes) > len(answers) - N_TEST:
        ap.error(f"at most {len(answers) - N_TEST} ratings: the corpus has {len(answers)} answers, {N_TEST} for testing")
    t0 = time.time()
    reps = representations(answers, str((data_dir / "models" / "SmolLM2-135M-Instruct").resolve()))
    print(f"representations computed in {time.time() - t0:.0f} s", flush=True)
    rows = []
    for rater_name in args.raters:
        oracle = get_rater(rater_name).oracle
        reps["oracle"] = torch.tensor([[oracle(t, p)] for p, t in answers])
        for n in args.sizes:
            for name, x in reps.items():
                for seed in args.seeds:
                    r = agreement(x, answers, rater_name, seed, n)
                    rows.append({"rater": rater_name, "ratings": n, "representation": name, "dim": x.shape[1],
                                 "seed": seed, **r})
                mine = rows[-len(args.seeds):]
                same = [r["same_prompt_accuracy"] for r in mine if r["same_prompt_accuracy"] is not None]
                print(f"{rater_name} {n} {name}: all pairs {statistics.fmean(r['accuracy'] for r in mine):.3f}, "
                      f"same prompt {statistics.fmean(same) if same else float('nan'):.3f}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reward_representation.json").write_text(json.dumps(
        {"corpus_answers": len(answers), "test_answers": N_TEST, "seeds": args.seeds, "rows": rows}, indent=1))
    names = list(reps)
    lines = []
    for field, what in (("accuracy", "all pairs"), ("same_prompt_accuracy", "pairs of answers to the same prompt")):
        lines += [f"Oracle agreement on {what} of 80 never-rated answers (mean over seeds, min..max), by what "
                  "the head reads.", "", f"| rater | ratings | {' | '.join(names)} |", "|---|---|" + "---|" * len(names)]
        for rater_name in args.raters:
            for n in args.sizes:
                cells = []
                for name in names:
                    acc = [r[field] for r in rows if (r["rater"], r["ratings"], r["representation"]) ==
                           (rater_name, n, name) and r[field] is not None]
                    cells.append(f"{statistics.fmean(acc):.2f} ({min(acc):.2f}..{max(acc):.2f})" if acc else "-")
                lines.append(f"| {rater_name} | {n} | {' | '.join(cells)} |")
        lines.append("")
    dims = ", ".join(f"{k} {v.shape[1]}" for k, v in reps.items() if k != "oracle")
    table = "\n".join(lines) + f"\nDimensions: {dims}, oracle 1.\n"
    (RESULTS / "reward_representation.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
