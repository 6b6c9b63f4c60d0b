"""Best-of-N distillation on the tiny chat model: it learns what the reward favours, trains on the
best answer of each group, measures KL before its update, and runs as the trainer's algorithm.

The setting is test_ppo_learning.py's (positive words, sharpened tiny model; see its docstring)."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_app.best_of_n import BestOfNTrainer, chosen_indices
from rlhf_app.config import BestOfNSettings
from rlhf_app.ppo import SAMPLES_KEY
from rlhf_app.runtime import Runtime
from tests.test_ppo_learning import PROMPTS, CountingGate, make_policy, positive_rate, positive_reward
from tests.test_trainer import rate_some, settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(kind: str = "lora", **kw) -> BestOfNSettings:
    base = dict(batch_prompts=len(PROMPTS), samples_per_prompt=4, max_new_tokens=8,
                learning_rate=1e-2 if kind == "lora" else 1e-3, epochs=4)
    return BestOfNSettings(**{**base, **kw})


def test_chosen_is_the_best_of_each_group_first_on_ties():
    scores = torch.tensor([0.2, 0.2, 0.1, -1.0, -3.0, -2.0, 5.0, 5.0, 5.0])
    assert chosen_indices(scores, 3).tolist() == [0, 3, 6]


@pytest.mark.parametrize("kind", ["lora", "full"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_of_n_learns_to_use_positive_words(tiny, tiny_model_dir, tmp_path, kind, seed):
    policy = make_policy(tiny, kind, seed)
    ref = None
    if kind == "full":
        from rlhf_app.models import load_model

        ref = make_policy(load_model(str(tiny_model_dir), tmp_path / "ref", device="cpu"), "full", seed)
    trainer = BestOfNTrainer(policy, tiny.tokenizer, config(kind), ref_model=ref, seed=seed)
    before = positive_rate(policy, tiny.tokenizer)
    for _ in range(10):
        m = trainer.step(PROMPTS, positive_reward)
        m.pop(SAMPLES_KEY)
        assert all(math.isfinite(v) for v in m.values()), m
    after = positive_rate(policy, tiny.tokenizer)
    assert after >= 2 * before and after - before > 0.1, (before, after)


def test_step_trains_on_the_best_answers_and_measures_kl_before_its_update(tiny):
    policy = make_policy(tiny, "lora", seed=0)
    trainer = BestOfNTrainer(policy, tiny.tokenizer, config(), seed=0)
    frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    phases = []
    first = trainer.step(PROMPTS, positive_reward, on_progress=phases.append)
    assert phases == ["sampling", "scoring", "update"]
    samples = first.pop(SAMPLES_KEY)
    n = len(PROMPTS) * 4
    assert samples["prompts"] == [p for p in PROMPTS for _ in range(4)] and len(samples["completions"]) == n
    best = [max(samples["scores"][i : i + 4]) for i in range(0, n, 4)]
    assert first["reward/chosen"] == pytest.approx(sum(best) / len(best))
    assert first["reward/chosen"] >= first["reward/mean"]
    assert abs(first["kl/ref"]) < 1e-5  # nothing updated yet: the policy is the reference
    assert all(torch.equal(p, frozen[k]) for k, p in policy.named_parameters() if not p.requires_grad)
    second = trainer.step(PROMPTS, positive_reward)
    assert second["kl/ref"] > 0.01
    assert not policy.training


def test_kl_coef_holds_the_policy_closer_to_the_reference(tiny, tiny_model_dir, tmp_path):
    from rlhf_app.models import load_model

    kls = {}
    for kl_coef, loaded in [(0.0, tiny), (5.0, load_model(str(tiny_model_dir), tmp_path / "b", device="cpu"))]:
        trainer = BestOfNTrainer(make_policy(loaded, "lora", 0), loaded.tokenizer, config(kl_coef=kl_coef), seed=0)
        steps = [trainer.step(PROMPTS, positive_reward) for _ in range(5)]
        assert all(s["bon/kl_penalty"] > 0 for s in steps[1:]) == (kl_coef > 0)
        kls[kl_coef] = steps[-1]["kl/ref"]
    assert kls[5.0] < 0.7 * kls[0.0], kls


def test_yields_to_serving_and_a_nan_reward_leaves_weights_usable(tiny):
    gate = CountingGate()
    policy = make_policy(tiny, "lora", seed=0)
    trainer = BestOfNTrainer(policy, tiny.tokenizer, config(epochs=2), gate=gate, seed=0)
    trainer.step(PROMPTS, positive_reward)
    assert gate.calls >= 1 + 2  # a sampled token, and every epoch
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    # NaN scores: argmax still picks an answer, the likelihood step is finite, and the NaN
    # shows in the metrics so the trainer discards the round.
    m = trainer.step(PROMPTS, lambda ps, cs: [float("nan")] * len(cs))
    assert math.isnan(m["reward/mean"])
    assert all(torch.isfinite(p).all() for n, p in policy.named_parameters() if n in before)


def test_needs_a_choice_and_a_reference():
    with pytest.raises(ValueError, match="at least 2"):
        BestOfNSettings(samples_per_prompt=1)


def test_bon_round_publishes(sharp_model_dir, tmp_path):
    rt = Runtime.build(settings(sharp_model_dir, tmp_path / "data", "--algorithm", "bon",
                                "--bon.steps-per-round", "2", "--bon.batch-prompts", "2", "--bon.max-new-tokens", "8"))
    rate_some(rt, 20)
    row = rt.trainer.run_round()
    assert row["status"] == "published", row["reason"]
    assert row["algorithm"] == "bon" and "bon/loss" in row["metrics"] and row["metrics"]["round/steps"] == 2
    assert rt.holder.version == 1
