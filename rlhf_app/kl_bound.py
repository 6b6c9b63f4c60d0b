"""Keeping a round's policy within the KL bound: measure it after its last update, pull it back.

A round's steps measure KL(pi || pi_ref) on their own samples, before their update, so the
policy a round ends with is one update further than any number the round recorded. Here it is
measured after the update, on the last step's answers, and a policy past the bound is pulled
back towards the initial one instead of thrown away:

    pi_alpha = pi_ref + alpha * (pi - pi_ref)    (in weights: LoRA's B matrices times alpha, or
                                                  the full weights interpolated)

Near the reference, KL grows with the square of the change, so alpha = sqrt(target / KL) lands
close to the target and a second try almost always within the bound. What the round learned
keeps its direction and loses a little of its length: a policy at the bound goes on moving
along it, towards what the ratings favour, where a discarded round leaves it where it was (live
runs on the pets prompts spent the bound by 56-88 ratings and published nothing after).

>>> round(pull_back_factor(kl=10.0, target=7.2), 3)   # KL ~ alpha^2: 10 * 0.849^2 = 7.2
0.849
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .ppo import Rollout, answer_forward, kl_from_logits, reference


def pull_back_factor(kl: float, target: float) -> float:
    """The alpha that would bring a policy `kl` nats from the reference to `target`, if KL ~ alpha^2."""
    return math.sqrt(target / kl) if kl > target else 1.0


@torch.no_grad()
def answers_kl(policy: nn.Module, ref_model: nn.Module | None, batch: Rollout, temperature: float,
               chunk: int, between: Callable[[], object] = lambda: None) -> float:
    """KL(pi || pi_ref) in nats per answer on `batch`'s answers: the next-token KL summed over
    each answer's tokens (`ppo.kl_from_logits`), averaged over answers. `between()` runs before
    each chunk of `chunk` answers (the trainer passes its wait for serving)."""
    n_answer, total = batch.answers.shape[1], 0.0
    was_training = policy.training
    policy.eval()
    try:
        for i in range(0, batch.answers.shape[0], chunk):
            between()
            ids, am = batch.input_ids[i : i + chunk], batch.attention_mask[i : i + chunk]
            _, logits, _ = answer_forward(policy, ids, am, n_answer, temperature)
            model, scope = reference(policy, ref_model)
            with scope:
                _, ref_logits, _ = answer_forward(model, ids, am, n_answer, temperature)
            total += (kl_from_logits(logits, ref_logits) * batch.mask[i : i + chunk]).sum().item()
    finally:
        policy.train(was_training)
    return total / batch.answers.shape[0]


class Interpolation:
    """Sets the policy to pi_ref + alpha * (pi - pi_ref), pi being the weights it had when made.

    LoRA: the change is scaling * B @ A, so scaling B by alpha scales it (the reference is the
    model with the adapter off). Full fine-tuning: each trainable weight is interpolated with
    `ref_model`'s. Only the weights the optimizer trains move; `set(1.0)` restores them exactly.
    """

    def __init__(self, policy: nn.Module, ref_model: nn.Module | None):
        if ref_model is None:
            self.pairs = [(p, p.detach().clone(), None) for n, p in policy.named_parameters()
                          if "lora_B" in n and p.requires_grad]
        else:
            ref = dict(ref_model.named_parameters())
            self.pairs = [(p, p.detach().clone(), ref[n].detach()) for n, p in policy.named_parameters()
                          if p.requires_grad]
        if not self.pairs:
            raise ValueError("the policy has no trainable weights to pull back")

    @torch.no_grad()
    def set(self, alpha: float) -> None:
        for p, trained, ref in self.pairs:
            p.copy_(trained * alpha if ref is None else ref + alpha * (trained - ref))


def pull_back(policy: nn.Module, ref_model: nn.Module | None, measure: Callable[[], float], kl: float,
              target: float, bound: float, tries: int = 3) -> tuple[float, float] | None:
    """Shrink the policy's change until `measure()` (its KL) is within `bound`: (alpha, KL), aiming
    at `target` <= bound; None, with the weights restored, if `tries` shrinks did not get there."""
    interp = Interpolation(policy, ref_model)
    alpha = 1.0
    for _ in range(tries):
        alpha *= pull_back_factor(kl, target)
        interp.set(alpha)
        kl = measure()
        if not math.isfinite(kl):
            break
        if kl <= bound:
            return alpha, kl
    interp.set(1.0)
    return None
