"""Best-of-N distillation: sample N answers, keep the reward model's favourite, fine-tune on it.

The third policy optimizer, behind the same `step(prompts, reward_fn)` as PPO (`ppo.py`) and GRPO
(`grpo.py`). Also called rejection-sampling fine-tuning or RAFT (Dong et al. 2023), and the loop
of the theory this app comes from: best-of-N selection by the reward model, repeated. One step:

1. sample `samples_per_prompt` answers per prompt from the current policy (the sampler people's
   answers come from, so the trainer yields to serving between tokens);
2. score each with `reward_fn` and keep, per prompt, the answer it scores highest;
3. without gradients, measure KL to the reference policy on all sampled answers (what `max_kl`
   and the KL budget read, as in PPO);
4. `epochs` AdamW steps on the kept answers' mean token log-likelihood (supervised fine-tuning
   on the policy's own best answers), minus `kl_coef` times the KL to the reference of the
   whole next-token distributions at those answers' positions.

Fine-tuning on its own samples sharpens a policy: on a perfect reward (bench/optimizer_speed.py)
12 steps at lr 5e-4 gained +0.78 but went 39 nats from the initial policy (2.3 after 4 steps, 13.8
after 8), far past `max_kl`. At the default lr 2e-4 they gained +0.40 at 7 nats. The KL term
(`kl_coef`, off by default) is the other brake: at 1 it held the policy at 2 nats, and its gain too.

Why try it: the served policy's best-of-4 gained more than PPO's policy in most live runs
(`bench/results/live_improvement.md`, best-of-N gain), so the policy's own best-of-N is a target the
reward model already reaches; a policy equal to its best-of-N is at most log N - (N-1)/N nats away
per step (0.64 for N = 4); and nothing needs a value head or a learned baseline. What it did live
(`bon-lr2e-4`, seed 0 unless said): dislikes_emoji +0.76 (PPO +0.37), steadily; prefers_shorter
+0.07 (PPO +0.37), because the best of 4 answers is only a little shorter than the rest;
wants_topic on the pets prompts +0.28 / -0.10 / -0.03 on seeds 0 / 1 / 2 (PPO +0.19 / +0.15 /
+0.28), where the reward model's errors are what it distilled. PPO stays the default.

>>> chosen_indices(torch.tensor([0.1, 0.9, 0.3, 0.5, 0.5, 0.2]), samples_per_prompt=3)
tensor([1, 3])
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from .config import BestOfNSettings
from .policy import ServingGate
from .ppo import (
    SAMPLES_KEY,
    RewardFn,
    Rollout,
    answer_forward,
    answer_metrics,
    entropy_from_logits,
    is_peft,
    kl_from_logits,
    masked_mean,
    reference,
    sample_rollout,
    score_answers,
    step_generator,
)


def chosen_indices(scores: torch.Tensor, samples_per_prompt: int) -> torch.Tensor:
    """Index of the best-scored answer in each prompt's group of `samples_per_prompt` (ties: the first)."""
    groups = scores.view(-1, samples_per_prompt)
    return groups.argmax(-1) + torch.arange(groups.shape[0]) * samples_per_prompt


class BestOfNTrainer:
    """Best-of-N distillation on a chat policy, one `step` at a time.

    `policy` is a peft `PeftModel` (the reference is the same model with the adapter off) or a
    plain causal LM (`ref_model` is its frozen copy). The AdamW optimizer and the step counter are
    kept across steps; sampling uses a generator seeded from `seed` and the step counter.
    """

    def __init__(
        self,
        policy: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        config: BestOfNSettings,
        ref_model: nn.Module | None = None,
        gate: ServingGate | None = None,
        seed: int = 0,
    ):
        if config.temperature <= 0:
            raise ValueError("bon.temperature must be > 0: N greedy answers would all be the same")
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
            raise ValueError("the tokenizer needs a pad token distinct from EOS (see models.fix_pad_token)")
        self.policy, self.tokenizer, self.config, self.gate, self.seed = policy, tokenizer, config, gate, seed
        self.step_count = 0
        self.last_rollout: Rollout | None = None
        """The last step's answers: the trainer measures the updated policy's KL on them (kl_bound.py)."""
        if not is_peft(policy) and ref_model is None:
            raise ValueError("full fine-tuning needs ref_model, the frozen initial policy")
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
        self.ref_model = ref_model
        self.device = next(policy.parameters()).device
        self.trainable = [p for p in policy.parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError("the policy has no trainable parameters (a PeftModel loaded with is_trainable=False?)")
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.learning_rate, weight_decay=0.0)

    def _yield_to_serving(self) -> bool:
        if self.gate is not None:
            self.gate.wait_until_idle()
        return True

    def step(
        self,
        prompts: list[str],
        reward_fn: RewardFn,
        on_progress: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Sample, score, keep the best per prompt, fine-tune on them; returns metrics and samples.

        Metrics: `reward/mean`, `reward/std` (all answers), `reward/chosen` (mean of the kept
        ones), `bon/loss` (mean token negative log-likelihood of the kept answers, averaged over the
        epochs), `bon/kl_penalty` (the KL term, nats per token), `bon/grad_norm`,
        `bon/skipped_updates`, `bon/entropy` (nats per answer token),
        `kl/ref` (as `PPOTrainer.step`: full-distribution KL summed over an answer, averaged over
        all sampled answers, before the update), `answer/length`, `answer/eos_rate`, `time/*`,
        and the raw samples under `SAMPLES_KEY`.
        """
        if not prompts:
            raise ValueError("step() needs at least one prompt")
        t0 = time.monotonic()
        waited0 = self.gate.waited_s if self.gate is not None else 0.0
        cfg, tok = self.config, self.tokenizer
        progress = on_progress or (lambda phase: None)
        generator = step_generator(self.seed, self.step_count)
        self.step_count += 1

        progress("sampling")
        self.policy.eval()
        batch = sample_rollout(self.policy, tok, prompts, cfg.samples_per_prompt, cfg.temperature,
                               cfg.max_new_tokens, generator, self._yield_to_serving)
        self.last_rollout = batch
        answers, mask, input_ids, attention_mask = batch.answers, batch.mask, batch.input_ids, batch.attention_mask
        B, T = answers.shape
        t_sampled = time.monotonic()

        progress("scoring")
        scores = score_answers(reward_fn, batch)
        chosen = chosen_indices(scores, cfg.samples_per_prompt).to(self.device)
        t_scored = time.monotonic()

        kl, entropy, chosen_ref = [], [], []
        with torch.no_grad():
            for i in range(0, B, cfg.minibatch_size):  # chunks: (B, T, V) logits of a real vocab are big
                self._yield_to_serving()
                ids, am = input_ids[i : i + cfg.minibatch_size], attention_mask[i : i + cfg.minibatch_size]
                _, logits, _ = answer_forward(self.policy, ids, am, T, cfg.temperature)
                model, scope = reference(self.policy, self.ref_model)
                with scope:
                    _, ref_logits, _ = answer_forward(model, ids, am, T, cfg.temperature)
                kl.append(kl_from_logits(logits, ref_logits))
                entropy.append(entropy_from_logits(logits))
                if cfg.kl_coef > 0:  # the kept answers' reference distributions, for the KL term
                    here = chosen[(chosen >= i) & (chosen < i + cfg.minibatch_size)]
                    chosen_ref.append(ref_logits[here - i])
        kl, entropy = torch.cat(kl), torch.cat(entropy)  # (B, T)
        ref_logits = torch.cat(chosen_ref) if chosen_ref else None  # rows in `chosen` order (ascending)

        t_update = time.monotonic()
        progress("update")
        ids, am, m = input_ids[chosen], attention_mask[chosen], mask[chosen]
        self.policy.train()
        losses, penalties, norms, skipped = [], [], [], 0
        try:
            for _epoch in range(cfg.epochs):
                self._yield_to_serving()
                logp, logits, _ = answer_forward(self.policy, ids, am, T, cfg.temperature)
                loss = -masked_mean(logp, m)
                if ref_logits is not None:
                    penalty = masked_mean(kl_from_logits(logits, ref_logits), m)
                    loss = loss + cfg.kl_coef * penalty
                    penalties.append(penalty.item())
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(self.trainable, cfg.max_grad_norm)
                if torch.isfinite(norm):
                    self.optimizer.step()
                else:  # a NaN/inf step would poison the weights for every later round
                    skipped += 1
                losses.append(loss.item())
                norms.append(norm.item())
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            self.policy.eval()

        return {
            **answer_metrics(batch, scores, tok.eos_token_id),
            "reward/chosen": scores[chosen.cpu()].mean().item(),
            "bon/loss": sum(losses) / len(losses),
            "bon/kl_penalty": sum(penalties) / len(penalties) if penalties else 0.0,
            "bon/grad_norm": sum(norms) / len(norms),
            "bon/skipped_updates": skipped,
            "bon/entropy": masked_mean(entropy, mask).item(),
            "kl/ref": (kl * mask).sum(-1).mean().item(),
            "time/step_s": time.monotonic() - t0,
            "time/sample_s": t_sampled - t0,
            "time/score_s": t_scored - t_sampled,
            "time/logprobs_s": t_update - t_scored,
            "time/update_s": time.monotonic() - t_update,
            "time/waited_s": (self.gate.waited_s - waited0) if self.gate is not None else 0.0,
            SAMPLES_KEY: {"prompts": batch.prompts, "completions": batch.completions, "scores": scores.tolist()},
        }
