"""Every stored rating turned into Bradley-Terry preference pairs for the reward model.

People rate in three ways, and all of them become pairs (chosen, rejected, margin), so one loss,
`-log sigmoid(r_chosen - r_rejected - margin)` (TRL's RewardTrainer), learns from all of them:

1. **A/B votes** ('a' or 'b') give one pair each, margin 0 (a vote says which, not by how much).
   'tie' is skipped: TRL's loss has no tie term, and either orientation would teach a preference
   nobody expressed. 'both_bad' is not a pair either: it counts as a pointwise rating of -1 on
   each of the two answers (rule 2).
2. **Pointwise ratings** become a utility per generation: a score s in 1..5 -> (s - 3) / 2, a thumb
   up +1, down -1; several ratings of one generation (raters, kinds, both_bad votes) are averaged.
   Two generations of the same prompt with different utilities give a pair, margin = the utility
   difference.
3. **Pairs across prompts.** A rated generation with no same-prompt pair (its prompt was answered
   once, or every answer got the same utility) is paired with up to `max_cross_pairs_per_item`
   generations of *other* prompts whose utility differs, sampled with the seed; margin = the
   utility difference. The seed theory fits scores by regression; pairs across prompts are the
   choice here because they keep one loss and one trainer for every kind of rating, and the
   margin carries the score gap. The cost: such a pair also compares the prompts' difficulty.
   Measured on the tiny model (one rated answer per prompt, 50 train / 20 held-out items, 3 seeds,
   same LoRA and compute): held-out Spearman 0.48/0.60/0.77 for these pairs vs 0.75/0.49/0.45 for
   MSE regression on the utilities: no clear winner at this size.

Held-out split: a generation is held out when a hash of its id falls below `heldout_fraction`,
so it never moves between splits as data grows; a pair is held out if either answer is.
Cross-prompt partners are drawn within the item's own split, so no training item is wasted on a
held-out pair. Held-out pointwise items are also kept to measure the Spearman correlation between
reward and utility. At `heldout_fraction` 0 every pair trains, and the 'features' reward model
measures its accuracy by cross-fitting over `fold_of` the same hash (reward_features.py).

>>> utility("score", 5), utility("score", 2), utility("thumb", -1)
(1.0, -0.5, -1.0)
>>> is_heldout(7, 0.0), is_heldout(7, 0.999999)
(False, True)
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import defaultdict
from dataclasses import dataclass

from .store import Store

COMPARE, SAME_PROMPT, CROSS_PROMPT = "compare", "same_prompt", "cross_prompt"
SOURCES = (COMPARE, SAME_PROMPT, CROSS_PROMPT)
MIN_TRAIN_PAIRS = 2
"""Fewer training pairs than this and no reward model is fitted: it would learn nothing real."""


def utility(kind: str, value: int) -> float:
    """A pointwise rating on one scale: score s -> (s - 3) / 2, thumb up +1, down -1."""
    if kind == "score":
        return (int(value) - 3) / 2
    if kind == "thumb":
        return float(value)
    raise ValueError(f"unknown rating kind {kind!r}")


def _unit_hash(generation_id: int) -> float:
    """A number in [0, 1) that depends on the generation's id only, so its split never moves."""
    h = hashlib.sha256(f"rlhf-heldout:{int(generation_id)}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def is_heldout(generation_id: int, fraction: float) -> bool:
    """Whether a generation is kept out of fitting."""
    return _unit_hash(generation_id) < fraction


def fold_of(generation_id: int, folds: int) -> int:
    """The cross-fitting fold of a generation, in 0..folds-1: fold 0 of 5 is `is_heldout(g, 0.2)`.

    >>> all((fold_of(g, 5) == 0) == is_heldout(g, 0.2) for g in range(200))
    True
    """
    return min(int(_unit_hash(generation_id) * folds), folds - 1)


@dataclass(frozen=True)
class Pair:
    """One Bradley-Terry example: `chosen` (an answer to `prompt`) beats `rejected` by `margin`."""

    prompt: str
    chosen: str
    rejected: str
    margin: float
    source: str
    """'compare' (an A/B vote), 'same_prompt' or 'cross_prompt' (from pointwise ratings)."""
    chosen_id: int
    rejected_id: int
    rejected_prompt: str
    """The rejected answer's prompt: differs from `prompt` for cross-prompt pairs only."""


@dataclass(frozen=True)
class RatedItem:
    """A generation with pointwise ratings, and their mean utility in [-1, 1]."""

    generation_id: int
    prompt: str
    text: str
    utility: float
    n_ratings: int


@dataclass
class PreferenceData:
    train: list[Pair]
    heldout: list[Pair]
    items: list[RatedItem]
    """Every pointwise-rated generation, train and held-out."""
    heldout_items: list[RatedItem]
    """The held-out ones, for the Spearman correlation of reward and utility."""
    n_ties_skipped: int = 0
    heldout_fraction: float = 0.0
    seed: int = 0

    def counts(self) -> dict[str, int]:
        """Pair counts overall and per source, e.g. {'n_train_pairs': 12, 'n_train_compare': 3, ...}."""
        out = {
            "n_train_pairs": len(self.train),
            "n_heldout_pairs": len(self.heldout),
            "n_rated_items": len(self.items),
            "n_heldout_items": len(self.heldout_items),
            "n_ties_skipped": self.n_ties_skipped,
        }
        for split, pairs in (("train", self.train), ("heldout", self.heldout)):
            for s in SOURCES:
                out[f"n_{split}_{s}"] = sum(p.source == s for p in pairs)
        return out


def rated_items(store: Store) -> tuple[list[RatedItem], list[Pair], int]:
    """(every pointwise-rated generation with its mean utility, a pair per A/B vote, the number of ties skipped).

    Rules 1 and 2 of the module docstring: both_bad votes count as -1 on each answer. The reward
    model's data and the liked answers PPO imitates (demonstrations.py) both start here.
    """
    votes: dict[int, list[float]] = defaultdict(list)
    info: dict[int, tuple[str, str]] = {}  # generation id -> (prompt, text)
    for r in store.pointwise_ratings():
        votes[r["generation_id"]].append(utility(r["kind"], r["value"]))
        info[r["generation_id"]] = (r["prompt"], r["text"])

    compare_pairs: list[Pair] = []
    ties = 0
    for c in store.comparisons():
        a, b = c["generation_a"], c["generation_b"]
        if c["outcome"] == "tie":
            ties += 1
        elif c["outcome"] == "both_bad":
            for gid, text in ((a, c["text_a"]), (b, c["text_b"])):
                votes[gid].append(-1.0)
                info[gid] = (c["prompt"], text)
        else:
            (w, wt), (l, lt) = ((a, c["text_a"]), (b, c["text_b"]))[:: 1 if c["outcome"] == "a" else -1]
            compare_pairs.append(Pair(c["prompt"], wt, lt, 0.0, COMPARE, w, l, c["prompt"]))

    items = [
        RatedItem(gid, info[gid][0], info[gid][1], sum(v) / len(v), len(v)) for gid, v in sorted(votes.items())
    ]
    return items, compare_pairs, ties


def build_preference_data(
    store: Store, heldout_fraction: float, max_cross_pairs_per_item: int, seed: int
) -> PreferenceData:
    """Every stored rating as preference pairs, split into train and held-out (module docstring)."""
    items, compare_pairs, ties = rated_items(store)

    def ordered(x: RatedItem, y: RatedItem, source: str) -> Pair:
        hi, lo = (x, y) if x.utility > y.utility else (y, x)
        return Pair(hi.prompt, hi.text, lo.text, hi.utility - lo.utility, source, hi.generation_id,
                    lo.generation_id, lo.prompt)

    # Same prompt, different utility: every such pair.
    by_prompt: dict[str, list[RatedItem]] = defaultdict(list)
    for it in items:
        by_prompt[it.prompt].append(it)
    pointwise_pairs: list[Pair] = []
    partnered: set[int] = set()
    for group in by_prompt.values():
        for i, x in enumerate(group):
            for y in group[i + 1 :]:
                if not math.isclose(x.utility, y.utility):
                    pointwise_pairs.append(ordered(x, y, SAME_PROMPT))
                    partnered.update((x.generation_id, y.generation_id))

    # The rest: partners from other prompts, in the item's own split, with a different utility.
    held = {it.generation_id: is_heldout(it.generation_id, heldout_fraction) for it in items}
    seen: set[frozenset[int]] = set()
    for it in items:
        if it.generation_id in partnered or max_cross_pairs_per_item <= 0:
            continue
        pool = [
            o for o in items
            if o.prompt != it.prompt and held[o.generation_id] == held[it.generation_id]
            and not math.isclose(o.utility, it.utility)
        ]
        rng = random.Random(f"{seed}:{it.generation_id}")  # per item: stable when others are added
        for o in rng.sample(pool, min(max_cross_pairs_per_item, len(pool))):
            key = frozenset((it.generation_id, o.generation_id))
            if key not in seen:
                seen.add(key)
                pointwise_pairs.append(ordered(it, o, CROSS_PROMPT))

    train, heldout = [], []
    for p in compare_pairs + pointwise_pairs:
        out = is_heldout(p.chosen_id, heldout_fraction) or is_heldout(p.rejected_id, heldout_fraction)
        (heldout if out else train).append(p)
    return PreferenceData(
        train=train,
        heldout=heldout,
        items=items,
        heldout_items=[it for it in items if held[it.generation_id]],
        n_ties_skipped=ties,
        heldout_fraction=heldout_fraction,
        seed=seed,
    )


def insufficient_data_reason(data: PreferenceData) -> str | None:
    """Why no reward model can be fitted on `data` yet (for the status line), or None if it can."""
    if len(data.train) >= MIN_TRAIN_PAIRS:
        return None
    return (
        f"Not enough ratings to fit a reward model: {len(data.train)} training pair(s), need {MIN_TRAIN_PAIRS}. "
        f"Pairs come from A/B votes ('a' or 'b'; {data.n_ties_skipped} tie(s) skipped) and from answers "
        "rated differently (thumbs or 1-5 scores)"
        + (f"; {len(data.heldout)} pair(s) are held out to measure accuracy." if data.heldout_fraction else ".")
    )
