"""Does the reward model rank the policy's *next* answers as the rater would? Replayed on a live run.

    ./run.sh python bench/reward_on_policy.py DATA_DIR --rater wants_topic

PPO needs one thing from the reward model: to order answers to the same prompt by what the rater
likes, on answers the policy is about to write, which are not the ones it was fitted on. The live
benchmark's held-out accuracy scores a hash-chosen fifth of the ratings so far, drawn from every
version; this replays a finished live run (its `rlhf.db`) instead. For each cutoff n, reward
models are fitted on the first n ratings, and scored on the answers rated after them (served by
later policy versions): the share of same-prompt pairs (oracle at least 0.05 apart) they order as
the rater's noise-free oracle does. The variants change the 'features' model in one to three
ways: which blocks of the feature row it reads, how its L2 is picked (folds of pairs, folds of
rated answers, or fixed), whether a fifth of the ratings is held out.

Results go to bench/results/reward_on_policy.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlhf_app.config import FEATURE_BLOCKS  # noqa: E402
from rlhf_app.preferences import build_preference_data  # noqa: E402
from rlhf_app.raters import get_rater  # noqa: E402
from rlhf_app.reward_features import (  # noqa: E402
    L2_GRID,
    featurizer_for,
    fit_head,
    generation_splits,
    pair_splits,
    pick_l2,
)
from rlhf_app.runtime import quiet_offline_env  # noqa: E402
from rlhf_app.store import Store  # noqa: E402

RESULTS = ROOT / "bench" / "results"

VARIANTS: dict[str, dict] = {
    # L2 picked on random folds of pairs, a fifth of the generations held out: the app's default
    "pair folds, hold out 0.2": {"blocks": FEATURE_BLOCKS, "heldout": 0.2},
    "pair folds, hold out none": {"blocks": FEATURE_BLOCKS, "heldout": 0.0},
    "pair folds, embedding sum + length only": {"blocks": ("bag", "len"), "heldout": 0.2},
    "l2 fixed 10": {"blocks": FEATURE_BLOCKS, "heldout": 0.2, "l2": 10.0},
    "l2 fixed 100": {"blocks": FEATURE_BLOCKS, "heldout": 0.2, "l2": 100.0},
    "generation folds, hold out 0.2": {"blocks": FEATURE_BLOCKS, "heldout": 0.2, "l2": "generation"},
    "generation folds, hold out none": {"blocks": FEATURE_BLOCKS, "heldout": 0.0, "l2": "generation"},
    "generation folds, embedding sum + length only": {"blocks": ("bag", "len"), "heldout": 0.2, "l2": "generation"},
    "generation folds, hold out none, embedding sum + length only": {"blocks": ("bag", "len"), "heldout": 0.0,
                                                                      "l2": "generation"},
}


def label(data_dir: str) -> str:
    p = Path(data_dir)
    return p.parent.name if p.name == "data" else p.name


def truncated_store(db: Path, n: int, tmp: Path) -> Store:
    """A copy of the run's store holding only its first n pointwise ratings."""
    path = tmp / f"first{n}.db"
    src, dst = sqlite3.connect(db), sqlite3.connect(path)
    src.backup(dst)
    dst.execute("DELETE FROM ratings WHERE id NOT IN (SELECT id FROM ratings ORDER BY id LIMIT ?)", (n,))
    dst.commit()
    dst.close()
    src.close()
    return Store(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dirs", nargs="+", help="data directories of finished live runs (with rlhf.db)")
    ap.add_argument("--rater", help="the rater's name; by default read from the run's ratings (sim:<rater>:<seed>)")
    ap.add_argument("--cutoffs", type=int, nargs="+", default=[16, 32, 48, 64, 80])
    ap.add_argument("--model", default="data/models/SmolLM2-135M-Instruct")
    ap.add_argument("--num-layers", type=int, default=8)
    ap.add_argument("--out", default=str(RESULTS / "reward_on_policy.json"))
    args = ap.parse_args()
    quiet_offline_env()
    torch.manual_seed(0)
    fz = featurizer_for(args.model, args.num_layers, 256, "cpu")
    rows = []
    for data_dir in args.data_dirs:
        db = Path(data_dir) / "rlhf.db"
        rated = Store(db).pointwise_ratings()
        rater = get_rater(args.rater or rated[0]["rater"].split(":")[1])
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.cutoffs:
                later = rated[n:]
                test = [
                    (a, b) for a, b in itertools.combinations(later, 2)
                    if a["prompt"] == b["prompt"]
                    and abs(rater.oracle(a["text"], a["prompt"]) - rater.oracle(b["text"], b["prompt"])) >= 0.05
                ]
                if not test:
                    continue
                xa = fz.features([a["prompt"] for a, _ in test], [a["text"] for a, _ in test])
                xb = fz.features([b["prompt"] for _, b in test], [b["text"] for _, b in test])
                truth = torch.tensor([rater.oracle(a["text"], a["prompt"]) > rater.oracle(b["text"], b["prompt"])
                                      for a, b in test])
                store = truncated_store(db, n, Path(tmp))
                for name, v in VARIANTS.items():
                    data = build_preference_data(store, v["heldout"], 4, seed=0)
                    keep = fz.columns(v["blocks"])
                    ch = fz.features([p.prompt for p in data.train], [p.chosen for p in data.train])[:, keep]
                    rj = fz.features([p.rejected_prompt for p in data.train], [p.rejected for p in data.train])[:, keep]
                    std = torch.cat([ch, rj]).std(0).nan_to_num(1.0).clamp_min(1e-4)
                    diff = (ch - rj) / std
                    margin = torch.tensor([p.margin for p in data.train])
                    if v.get("l2") == "generation":
                        l2 = pick_l2(diff, margin, list(L2_GRID), generation_splits(data.train))
                    else:
                        l2 = v.get("l2") or pick_l2(diff, margin, list(L2_GRID), pair_splits(len(data.train), seed=0))
                    w = fit_head(diff, margin, l2)
                    pred = ((xa[:, keep] - xb[:, keep]) / std) @ w > 0
                    acc = float((pred == truth).float().mean())
                    rows.append({"run": label(data_dir), "rater": rater.name, "n": n, "variant": name,
                                 "train_pairs": len(data.train),
                                 "test_pairs": len(test), "l2": l2, "accuracy": acc})
                    print(f"{label(data_dir)} n={n:3d} {name:62s} train {len(data.train):4d} "
                          f"test {len(test):4d} l2 {l2:g} acc {acc:.3f}", flush=True)
    print("\nmean accuracy over cutoffs, per run:")
    runs = list(dict.fromkeys(r["run"] for r in rows))
    print(f"  {'variant':62s} " + " ".join(f"{label(r)[-22:]:>22s}" for r in runs))
    for name in VARIANTS:
        accs = [statistics.fmean(x["accuracy"] for x in rows if x["variant"] == name and x["run"] == r) for r in runs]
        print(f"  {name:62s} " + " ".join(f"{a:22.3f}" for a in accs))
    Path(args.out).write_text(json.dumps({"cutoffs": args.cutoffs, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
