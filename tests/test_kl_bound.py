"""Pulling a policy back onto the KL bound (rlhf_app/kl_bound.py), on the tiny model with its
weights moved at random: the interpolation reaches both ends exactly, and `pull_back` lands the
measured KL within the bound, with LoRA and with full fine-tuning."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from rlhf_app.kl_bound import Interpolation, answers_kl, pull_back
from rlhf_app.models import load_model
from rlhf_app.ppo import sample_rollout, step_generator

PROMPTS = ["tell me a story", "hello", "I like the cat", "is it good ?"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def moved(tiny_model_dir, tmp_path, kind: str):
    """(policy, ref_model or None, tokenizer): the sharp tiny model with its trainable weights moved
    away from the initial ones, so that it is a few nats from it per answer."""
    torch.manual_seed(0)
    loaded = load_model(str(tiny_model_dir), tmp_path / kind, device="cpu")
    model = loaded.model
    if kind == "lora":
        policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
        ref = None
        with torch.no_grad():
            for n, p in policy.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.3)
    else:
        ref = copy.deepcopy(model).eval().requires_grad_(False)
        policy = model
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    return policy, ref, loaded.tokenizer


def rollout(policy, tokenizer, seed=0):
    return sample_rollout(policy.eval(), tokenizer, PROMPTS, 2, 1.0, 8, step_generator(seed, 0), lambda: True)


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_interpolation_reaches_the_reference_and_restores_the_policy(sharp_model_dir, tmp_path, kind):
    policy, ref, tok = moved(sharp_model_dir, tmp_path, kind)
    batch = rollout(policy, tok)
    kl = answers_kl(policy, ref, batch, temperature=1.0, chunk=3)
    assert kl > 0.5
    interp = Interpolation(policy, ref)
    interp.set(0.0)
    assert answers_kl(policy, ref, batch, 1.0, 3) == pytest.approx(0.0, abs=1e-5)
    interp.set(0.5)
    half = answers_kl(policy, ref, batch, 1.0, 3)
    assert 0 < half < kl
    interp.set(1.0)
    assert answers_kl(policy, ref, batch, 1.0, 3) == pytest.approx(kl, rel=1e-6)


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_pull_back_lands_within_the_bound(sharp_model_dir, tmp_path, kind):
    policy, ref, tok = moved(sharp_model_dir, tmp_path, kind)
    batch = rollout(policy, tok, seed=1)

    def measure():
        return answers_kl(policy, ref, batch, 1.0, 4)

    kl = measure()
    bound = kl / 3
    got = pull_back(policy, ref, measure, kl, target=0.9 * bound, bound=bound)
    assert got is not None
    alpha, after = got
    assert 0 < alpha < 1 and 0.5 * bound < after <= bound
    assert measure() == pytest.approx(after, rel=1e-6)  # the policy stays where it was pulled to


def test_pull_back_that_cannot_reach_the_bound_restores_the_policy(sharp_model_dir, tmp_path):
    policy, ref, tok = moved(sharp_model_dir, tmp_path, "lora")
    batch = rollout(policy, tok, seed=2)
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_B" in n}

    def measure():
        return answers_kl(policy, ref, batch, 1.0, 4)

    kl = measure()
    # One shrink, aimed at half the KL while the bound is a tenth: it lands near half, above the bound.
    assert pull_back(policy, ref, measure, kl, target=0.5 * kl, bound=0.1 * kl, tries=1) is None
    assert all(torch.equal(p, before[n]) for n, p in policy.named_parameters() if "lora_B" in n)
