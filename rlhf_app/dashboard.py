"""The numbers behind the dashboard: is the model getting better while people rate it?

Plain functions over the store, each returning rows ready for a table or a plot, so they are
tested without a browser and reused by the benchmark.

>>> from rlhf_app.store import Store
>>> s = Store(":memory:")
>>> g = s.add_generation(prompt="Hi", text="Hello!", model_id="tiny", policy_version=0)
>>> _ = s.rate(g, "r1", "score", 5)
>>> human_rating_by_version(s)[0]["mean"]
1.0
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from .preferences import utility
from .store import Store

UTILITY_HELP = "score s -> (s-3)/2, thumb up -> +1, down -> -1; A/B: winner +1, loser -1, both bad -1 each"


def ratings_over_time(store: Store) -> list[dict[str, Any]]:
    """Cumulative number of votes (all kinds, changes of mind included) after each vote."""
    rows = store.query("SELECT id, kind, created_at FROM rating_events ORDER BY id")
    return [{"time": r["created_at"], "votes": i + 1, "kind": r["kind"]} for i, r in enumerate(rows)]


def _interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and a 95% normal-approximation interval (wide for small n, as it should be)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, -1.0, 1.0
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values))
    return m, max(-1.0, m - half), min(1.0, m + half)


def human_rating_by_version(store: Store) -> list[dict[str, Any]]:
    """Mean human utility of each policy version's answers, with count and 95% interval."""
    per: dict[int, list[float]] = {}
    for r in store.pointwise_ratings():
        per.setdefault(r["policy_version"], []).append(utility(r["kind"], r["value"]))
    for c in store.comparisons():
        a, b = {"a": (1.0, -1.0), "b": (-1.0, 1.0), "tie": (0.0, 0.0), "both_bad": (-1.0, -1.0)}[c["outcome"]]
        per.setdefault(c["version_a"], []).append(a)
        per.setdefault(c["version_b"], []).append(b)
    out = []
    for v in sorted(per):
        m, lo, hi = _interval(per[v])
        out.append({"version": v, "n": len(per[v]), "mean": m, "low": lo, "high": hi})
    return out


def reward_model_history(store: Store) -> list[dict[str, Any]]:
    """Held-out accuracy (and the rest of the metrics) of each fitted reward model."""
    return [{"version": r["version"], "created_at": r["created_at"], **r["metrics"]} for r in store.reward_models()]


ROUND_KEYS = ("reward/mean", "kl/ref", "kl/budget", "kl/pull_back", "ppo/entropy", "grpo/entropy", "bon/entropy",
              "ppo/approx_kl", "ppo/clipfrac", "kl/coef", "answer/length", "time/step_s")


def round_history(store: Store) -> list[dict[str, Any]]:
    """Per training round: status, algorithm, the version it made, reward, KL (and the budget the
    ratings allowed it) and entropy."""
    out = []
    for r in store.rounds():
        m = r["metrics"] or {}
        row = {k: r[k] for k in ("id", "algorithm", "status", "reason", "policy_version", "reward_model_version",
                                 "n_ratings", "started_at", "finished_at")}
        row.update({k: m.get(k) for k in ROUND_KEYS if k in m})
        row["entropy"] = m.get("ppo/entropy", m.get("grpo/entropy", m.get("bon/entropy")))
        out.append(row)
    return out


def versions_table(store: Store) -> list[dict[str, Any]]:
    """Every policy version with its key metrics and whether it is live."""
    live = store.live()["version"]
    human = {h["version"]: h for h in human_rating_by_version(store)}
    out = []
    for v in store.policy_versions():
        m = v["metrics"] or {}
        out.append({
            "version": v["version"],
            "live": v["version"] == live,
            "parent": v["parent"],
            "algorithm": v["algorithm"] or "base",
            "reward_model": v["reward_model_version"],
            "reward/mean": m.get("reward/mean"),
            "kl/ref": m.get("kl/ref"),
            "human_mean": human.get(v["version"], {}).get("mean"),
            "human_n": human.get(v["version"], {}).get("n", 0),
            "created_at": v["created_at"],
        })
    return out


def before_after(runtime, prompt: str, seed: int = 0, max_new_tokens: int = 96) -> dict[str, Any]:
    """The same prompt answered by version 0 and by the live version, with reward-model scores.

    Same seed for both, so the difference comes from the weights, not the dice. The answers are
    stored (source 'before_after') and can be rated like any other.
    """
    from .policy import ServedPolicy

    base = runtime.base
    v0 = ServedPolicy(base.model, base.tokenizer, 0, base.model_id, 0.0)
    out: dict[str, Any] = {"prompt": prompt, "seed": seed}
    for name, policy in (("before", v0), ("after", None)):
        ans = runtime.answerer.answer(prompt, seed=seed, max_new_tokens=max_new_tokens, source="before_after",
                                      policy=policy)
        out[name] = {"version": ans.policy_version, "text": ans.texts[0], "generation_id": ans.generation_ids[0]}
    rm = runtime.trainer.reward_model
    if rm is not None:
        scores = rm.score([prompt, prompt], [out["before"]["text"], out["after"]["text"]])
        out["before"]["reward"], out["after"]["reward"] = float(scores[0]), float(scores[1])
        out["reward_model_version"] = rm.version
    return out
