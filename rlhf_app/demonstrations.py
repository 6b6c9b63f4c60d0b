"""The answers people liked, as demonstrations for the policy to imitate beside PPO.

InstructGPT (Ouyang et al. 2022) mixed a supervised term into PPO ("PPO-ptx"): the log-likelihood
of pretraining text, so the policy keeps what it could already do. Here the supervised text is the
answers the ratings liked (`PPOConfig.imitation_coef`): a rating then reaches the policy twice,
through the reward model, which must generalize from a few dozen of them, and directly, as an
answer to imitate. The reward model is what lets the policy improve on answers nobody rated; the
demonstrations are the ratings' own, unblurred.

A liked answer is one whose mean pointwise utility (`preferences.utility`: a 4 or 5 score, a thumb
up) is above 0, weighted by that utility, or the winner of an A/B vote, weighted
`COMPARE_WINNER_WEIGHT` (a vote says which is better, not that it is good). Disliked answers are
left out: pushing their likelihood down has no floor, and a reward model already learns from them.
An answer that ended on its own (finish reason 'eos') is imitated with its end: a liked short
answer teaches stopping there, which is what prefers_shorter's ratings are about.

>>> from rlhf_app.store import Store
>>> s = Store(":memory:")
>>> good, bad = (s.add_generation("Name a pet.", t, "m", 0) for t in ("A cat.", "A rock."))
>>> _ = s.rate(good, "ana", "score", 5), s.rate(bad, "ana", "score", 1)
>>> liked_answers(s)
[Demonstration(prompt='Name a pet.', text='A cat.', weight=1.0, ended=False)]
"""

from __future__ import annotations

from dataclasses import dataclass

from .preferences import rated_items
from .store import Store

COMPARE_WINNER_WEIGHT = 0.5
"""Weight of an A/B vote's winner: half a 5-score's, as a vote ranks two answers without grading them."""


@dataclass(frozen=True)
class Demonstration:
    """An answer to imitate, and how much (weight > 0)."""

    prompt: str
    text: str
    weight: float
    ended: bool = False
    """It ended with EOS (not at the length cap, nor stopped): its EOS is imitated too."""


def liked_answers(store: Store) -> list[Demonstration]:
    """Every liked answer in the store (module docstring), oldest first; one entry per answer."""
    items, compare_pairs, _ = rated_items(store)
    weights = {it.generation_id: it.utility for it in items}
    texts = {it.generation_id: (it.prompt, it.text) for it in items}
    for pair in compare_pairs:
        weights[pair.chosen_id] = max(weights.get(pair.chosen_id, 0.0), COMPARE_WINNER_WEIGHT)
        texts[pair.chosen_id] = (pair.prompt, pair.chosen)
    liked = sorted(gid for gid, w in weights.items() if w > 0 and texts[gid][1].strip())
    ended = store.finish_reasons(liked)
    return [Demonstration(*texts[gid], weights[gid], ended[gid] == "eos") for gid in liked]
