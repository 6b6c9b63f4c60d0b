"""PPO for a chat policy, written out: sample, score, advantages, epochs of minibatches.

TRL 1.16 has no PPOTrainer, so this is the RLHF recipe of Ziegler et al. 2019 / Stiennon et al.
2020 / Ouyang et al. 2022 in one file, CleanRL style. One `PPOTrainer.step` is:

1. sample `samples_per_prompt` answers per prompt with `rlhf_app.sampling.sample`, the same
   sampler people's answers come from (so the trainer yields to serving between tokens);
2. score each (prompt, answer) with `reward_fn`: one number per answer;
3. without gradients, record the log-probabilities of the sampled tokens under the policy
   (`old_logp`) and the reference policy (`ref_logp`), and the value head's estimates;
4. per-token rewards = -beta * (old_logp - ref_logp) on every answer token, plus the score on the
   last one; GAE turns them into advantages and returns;
5. `ppo_epochs` passes of shuffled minibatches: clipped surrogate + clipped value loss (+ with
   `imitation_coef` set, the weighted log-likelihood loss of liked answers: `imitation_loss`), one
   AdamW step each;
6. with `adaptive_kl` on, the KL controller moves beta towards `kl_target` (off by default: a fixed
   price held the live runs under `max_kl` where the slow controller did not).

The math lives in pure functions that tests call with hand-made tensors. Shapes: B answers,
T answer tokens (the longest answer in the batch, EOS included), V vocabulary, H hidden size.
An answer's tokens run up to and including its first EOS; what follows is padding (mask 0).

>>> r = torch.tensor([[0.0, 0.0, 1.0]])  # the score arrives on the last token
>>> adv, ret = compute_gae(r, torch.zeros(1, 3), torch.ones(1, 3), gamma=1.0, lam=1.0)
>>> adv
tensor([[1., 1., 1.]])
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from .config import PPOConfig
from .demonstrations import Demonstration
from .policy import ServingGate
from .sampling import SamplingParams, chat_input_ids, left_pad, sample

SAMPLES_KEY = "samples"
"""Key of the step's raw samples in the metrics dict; pop it before logging the numbers."""

RewardFn = Callable[[list[str], list[str]], Sequence[float]]
"""`reward_fn(prompts, completions) -> scores`, one prompt per completion, one float per completion."""


# --------------------------------------------------------------------------------------------
# Pure functions: everything here takes and returns tensors, no model, no state.
# --------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over the positions where `mask` is true.

    `torch.where` rather than `x * mask`, so a NaN or inf at a padded position (which nothing
    reads) cannot leak into the mean; a NaN at a real position still does, as it should.

    >>> masked_mean(torch.tensor([1.0, 3.0, float("nan")]), torch.tensor([1, 1, 0]))
    tensor(2.)
    """
    m = mask.bool()
    total = torch.where(m, x, torch.zeros_like(x)).sum(dim=dim)
    count = m.sum(dim=dim).clamp(min=1)
    return total / count


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population variance of `x` over the masked positions (no Bessel correction)."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked positions; padding becomes 0.

    Whitening the advantages makes the step size independent of the reward's scale, which moves
    as the reward model is refitted between rounds.

    >>> masked_whiten(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0])).tolist()
    [-1.0, 1.0, 0.0]
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


def normalize_advantages(advantages: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """`PPOConfig.advantage_norm`: 'whiten' (zero mean, unit variance), 'center' (zero mean) or 'none'.

    Whitening is the usual choice, but it sets every step's size alike: once every answer in a
    batch does what the rater likes, the reward model's small differences between them (mostly
    noise) are scaled up to unit size. Centred advantages keep the reward model's scale; with AdamW
    and clipped gradients that barely changed the step size in a live run (`PPOConfig.advantage_norm`).

    >>> a, m = torch.tensor([0.1, 0.3, 9.0]), torch.tensor([1, 1, 0])
    >>> [[round(x, 2) for x in normalize_advantages(a, m, how).tolist()] for how in ("whiten", "center", "none")]
    [[-1.0, 1.0, 0.0], [-0.1, 0.1, 0.0], [0.1, 0.3, 9.0]]
    """
    if how == "whiten":
        return masked_whiten(advantages, mask)
    if how == "center":
        return torch.where(mask.bool(), advantages - masked_mean(advantages, mask), torch.zeros_like(advantages))
    if how == "none":
        return advantages
    raise ValueError(f"advantage normalization must be 'whiten', 'center' or 'none', not {how!r}")


def prompt_baseline(scores: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """Each score minus the mean score of the other answers to the same prompt (RLOO, Ahmadian et
    al. 2024); an answer with no sibling keeps its score.

    Why: a batch mixes prompts whose answers all score high ("good names for a new pet?") with
    prompts whose answers all score low; whitened across the batch, that difference becomes the
    advantage, and a step raises every answer to the easy prompt, spending KL on nothing the
    rater asked for. Against its siblings, an answer is pushed only by how it differs from
    another answer to the same question. Off by default (`PPOConfig.score_baseline`): live, that
    same-prompt difference is where a reward model of a few dozen ratings is weakest.

    >>> [round(x, 2) for x in prompt_baseline(torch.tensor([0.9, 0.7, 0.2, 0.1, 0.5]), list("aabbc")).tolist()]
    [0.2, -0.2, 0.1, -0.1, 0.5]
    """
    out = scores.clone()
    for p in set(prompts):
        idx = torch.tensor([i for i, q in enumerate(prompts) if q == p], device=scores.device)
        k = idx.numel()
        if k > 1:
            group = scores[idx]
            out[idx] = group - (group.sum() - group) / (k - 1)
    return out


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log pi(token) for each position: logits (..., V), tokens (...) -> (...)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the distribution at each position: logits (..., V) -> (...)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def kl_from_logits(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(pi || pi_ref) in nats of the whole next-token distributions: (..., V), (..., V) -> (...).

    Summed over an answer's positions it estimates the answer-level KL without bias, as the
    sampled log pi(token) - log pi_ref(token) does, but it averages over every token the policy
    could have drawn instead of the one it did. On a fixed policy, 8 steps of 8 answers read 3.8-7.3
    nats from the drawn tokens and 4.8-7.2 this way (bench/kl_estimate.py); the KL budget and the
    `max_kl` check read this one.

    >>> p, q = torch.tensor([0.0, math.log(3.0)]), torch.zeros(2)   # (0.25, 0.75) against (0.5, 0.5)
    >>> round(float(kl_from_logits(p, q)), 4), round(0.25 * math.log(0.5) + 0.75 * math.log(1.5), 4)
    (0.1308, 0.1308)
    """
    logp, ref = torch.log_softmax(logits.float(), -1), torch.log_softmax(ref_logits.float(), -1)
    return (logp.exp() * (logp - ref)).sum(-1)


def answer_mask(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, T) bool: true up to and including each row's first EOS.

    Decided by position, not by comparing with the pad id: a sampled token may happen to equal
    the pad id, and it is still an action the policy took.

    >>> answer_mask(torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8]]), eos_id=2)
    tensor([[ True,  True, False, False],
            [ True,  True,  True,  True]])
    """
    is_eos = (tokens == eos_id).long()
    eos_before = is_eos.cumsum(-1) - is_eos  # EOS strictly before each position
    return eos_before == 0


def per_token_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards (B, T), kl (B, T)): the KL penalty on every answer token, the score on the last.

    The penalty -beta * (log pi - log pi_ref) keeps the policy near the model people started
    from, so the reward model is not exploited where it never saw data (Ziegler et al. 2019).
    Summed over an answer, `kl` is the sampled estimate of KL(pi || pi_ref) in nats.

    scores (B,), logprobs (B, T), ref_logprobs (B, T), mask (B, T).
    """
    m = mask.bool()
    kl = torch.where(m, logprobs - ref_logprobs, torch.zeros_like(logprobs))  # (B, T)
    rewards = -kl_coef * kl  # (B, T)
    lengths = m.sum(-1)  # (B,)
    last = (lengths - 1).clamp(min=0)  # (B,) index of the last real token
    score = torch.where(lengths > 0, scores.to(rewards.dtype), torch.zeros_like(rewards[:, 0]))
    rewards = rewards.scatter_add(1, last[:, None], score[:, None])
    return rewards, kl


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016): (advantages, returns), (B, T).

    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}, with V and A
    zero past an answer's last token (the episode ends there). returns = A + V is the value
    head's regression target. Padding gets 0 in both.

    rewards (B, T), values (B, T), mask (B, T), mask a prefix of each row.
    """
    m = mask.to(rewards.dtype)
    rewards, values = rewards * m, torch.where(mask.bool(), values, torch.zeros_like(values))
    T = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])  # (B,)
    next_adv = torch.zeros_like(rewards[:, 0])  # (B,)
    for t in reversed(range(T)):
        # m[:, t+1] == 0 means t is the last token: nothing to bootstrap from.
        cont = m[:, t + 1] if t + 1 < T else torch.zeros_like(m[:, 0])
        delta = rewards[:, t] + gamma * next_value * cont - values[:, t]
        next_adv = delta + gamma * lam * next_adv * cont
        advantages[:, t] = next_adv
        next_value = values[:, t]
    advantages = advantages * m
    returns = (advantages + values) * m
    return advantages, returns


def imitation_loss(logp: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean over answers of each answer's mean negative log-likelihood per token.

    Per answer, then weighted: a long liked answer counts as much as a short one of the same weight.
    logp (B, T) of the answers' tokens, mask (B, T), weights (B,) > 0.

    >>> lp = torch.log(torch.tensor([[0.5, 0.5], [0.25, 1.0]]))
    >>> round(float(imitation_loss(lp, torch.tensor([[1, 1], [1, 0]]), torch.tensor([1.0, 3.0]))), 4)
    1.213
    """
    nll = -masked_mean(logp, mask, dim=-1)  # (B,)
    return (weights * nll).sum() / weights.sum()


def imitation_weight(coef: float, answers: int, full_at: int) -> float:
    """The imitation term's weight with `answers` liked answers to draw from (`PPOConfig.imitation_full_at`).

    Up to `full_at` it grows with them, so that the pull on each answer (drawn once in `answers`
    draws) stays the same; from there on it is `coef`.

    >>> [imitation_weight(1.0, n, 8) for n in (0, 2, 8, 20)], imitation_weight(1.0, 2, 0)
    ([0.0, 0.25, 1.0, 1.0], 1.0)
    """
    return coef * min(1.0, answers / full_at) if full_at > 0 else coef


def ppo_policy_loss(
    new_logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_coef: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate loss (Schulman et al. 2017): (loss, clipfrac, approx_kl), all scalars.

    max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)) per token: once the ratio has moved eps
    in the advantage's direction, the gradient stops, so several epochs on one batch cannot push
    the policy far from the one that sampled it. `clipfrac` (share of tokens with
    |ratio - 1| > eps) and `approx_kl` (the k3 estimator, (ratio - 1) - log ratio, always >= 0)
    say whether the updates are too large: healthy runs show clipfrac ~0.1 and approx_kl ~0.01.

    All inputs (B, T); token-level mean over the mask.
    """
    log_ratio = new_logp - old_logp  # (B, T)
    ratio = torch.exp(log_ratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef)
    loss = masked_mean(torch.max(pg_loss1, pg_loss2), mask)
    with torch.no_grad():
        clipfrac = masked_mean(((ratio - 1.0).abs() > clip_coef).float(), mask)
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
    return loss, clipfrac, approx_kl


def value_loss(
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> torch.Tensor:
    """Clipped value loss: 0.5 * max((V - R)^2, (V_clipped - R)^2), token mean over the mask.

    V_clipped = V_old + clip(V - V_old, -c, c): like the policy's clip, it keeps the value head
    (which shares the backbone with the policy) from jumping on one batch.

    All inputs (B, T).
    """
    clipped = old_values + torch.clamp(new_values - old_values, -cliprange_value, cliprange_value)
    loss = torch.max((new_values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * masked_mean(loss, mask)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(R - V) / Var(R) over the mask: 1 perfect, 0 no better than a constant, < 0 worse.

    Constant returns (e.g. every answer scored 0 on the first step, when the KL term is 0 too)
    give 0, not NaN: a NaN metric means a broken round to the caller, and this one is not.
    """
    var_r = masked_var(returns, mask)
    if var_r == 0:
        return torch.zeros_like(var_r)
    return 1.0 - masked_var(returns - values, mask) / var_r


class AdaptiveKLController:
    """Moves beta so the KL to the reference tracks a target (Ziegler et al. 2019, eq. 2).

    e = clip(KL / target - 1, -0.2, 0.2);  beta <- beta * (1 + e * n_steps / horizon).
    The clip makes one odd batch move beta by at most 0.2 * n_steps / horizon.

    >>> c = AdaptiveKLController(0.1, target=1.0, horizon=100)
    >>> c.update(3.0, n_steps=10)  # far above the target: the error is clipped to +0.2
    >>> round(c.value, 4)
    0.102
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


class FixedKLController:
    """A constant beta (`adaptive_kl = False`)."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Model passes shared with best_of_n.py: sampling and scoring answers, reading their log-probabilities.
# --------------------------------------------------------------------------------------------


@dataclass
class Rollout:
    """A step's sampled answers, laid out for the forward passes. B answers, T answer tokens."""

    prompts: list[str]
    """The prompt of each answer."""
    completions: list[str]
    answers: torch.Tensor
    """(B, T) sampled tokens, pad after each EOS."""
    mask: torch.Tensor
    """(B, T) bool, true up to and including each answer's first EOS (`answer_mask`)."""
    input_ids: torch.Tensor
    """(B, P + T): left-padded prompt, then the answer."""
    attention_mask: torch.Tensor


@torch.no_grad()
def sample_rollout(policy: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[str], per_prompt: int,
                   temperature: float, max_new_tokens: int, generator: torch.Generator,
                   between_tokens: Callable[[], bool]) -> Rollout:
    """`per_prompt` answers to each of `prompts`, sampled in one batch.

    top_p is 1: the log-probs computed afterwards are those of the full softmax; truncating the
    sampling distribution would make them wrong for every token.
    """
    device = next(policy.parameters()).device
    prompt_of = [p for p in prompts for _ in range(per_prompt)]
    queries = [chat_input_ids(tokenizer, p) for p in prompt_of]
    params = SamplingParams(temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens)
    steps = sample(policy, queries, params, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                   generator=generator, between_tokens=between_tokens)
    answers = torch.stack(list(steps), dim=1).to(device)
    mask = answer_mask(answers, tokenizer.eos_token_id)
    completions = [tokenizer.decode(a[m].tolist(), skip_special_tokens=True) for a, m in zip(answers, mask)]
    prompt_ids, prompt_mask = left_pad(queries, tokenizer.pad_token_id)
    return Rollout(prompt_of, completions, answers, mask,
                   input_ids=torch.cat([prompt_ids.to(device), answers], dim=1),
                   attention_mask=torch.cat([prompt_mask.to(device), mask.long()], dim=1))


def demonstration_batch(tokenizer: PreTrainedTokenizerBase, demos: Sequence[Demonstration], max_new_tokens: int,
                        device: torch.device) -> tuple[Rollout, torch.Tensor]:
    """(liked answers laid out like sampled ones, their weights (B,)); answers cut at `max_new_tokens`
    tokens, as the policy's own are, so imitation costs no more than a PPO minibatch. An answer that
    ended on its own (`Demonstration.ended`) and fits gets its EOS: stopping is part of what was liked."""
    queries = [chat_input_ids(tokenizer, d.prompt) for d in demos]
    eos = [tokenizer.eos_token_id]
    texts = [(tokenizer.encode(d.text, add_special_tokens=False) + (eos if d.ended else []))[:max_new_tokens] or eos
             for d in demos]
    T = max(len(t) for t in texts)
    answers = torch.tensor([t + [tokenizer.pad_token_id] * (T - len(t)) for t in texts], device=device)
    mask = torch.tensor([[i < len(t) for i in range(T)] for t in texts], device=device)
    prompt_ids, prompt_mask = left_pad(queries, tokenizer.pad_token_id)
    batch = Rollout([d.prompt for d in demos], [d.text for d in demos], answers, mask,
                    input_ids=torch.cat([prompt_ids.to(device), answers], dim=1),
                    attention_mask=torch.cat([prompt_mask.to(device), mask.long()], dim=1))
    return batch, torch.tensor([d.weight for d in demos], dtype=torch.float32, device=device)


def score_answers(reward_fn: RewardFn, batch: Rollout) -> torch.Tensor:
    """(B,) float32 scores, one per answer, on the CPU."""
    scores = torch.tensor([float(s) for s in reward_fn(batch.prompts, batch.completions)], dtype=torch.float32)
    if scores.shape != (len(batch.completions),):
        raise ValueError(f"reward_fn returned {scores.numel()} scores for {len(batch.completions)} completions")
    return scores


def step_generator(seed: int, step: int) -> torch.Generator:
    """The sampling generator of an optimizer's step `step`: the same seed replays the same run."""
    return torch.Generator(device="cpu").manual_seed((seed * 1_000_003 + step) % 2**63)


def answer_metrics(batch: Rollout, scores: torch.Tensor, eos_id: int) -> dict[str, float]:
    """`reward/mean`, `reward/std`, `answer/length` (tokens, EOS included), `answer/eos_rate`."""
    return {
        "reward/mean": scores.mean().item(),
        "reward/std": scores.std().item() if scores.numel() > 1 else 0.0,
        "answer/length": batch.mask.sum(-1).float().mean().item(),
        "answer/eos_rate": (batch.answers == eos_id).any(-1).float().mean().item(),
    }


def answer_forward(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_answer: int,
                   temperature: float, hidden: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(logprobs (B, T), logits (B, T, V), last hidden states (B, T, H) or None) of the answer tokens.

    `input_ids` is [left-padded prompt | answer], so the logits at positions -T-1 .. -2 are the
    distributions the answer's T tokens were drawn from. Logits are divided by the sampling
    temperature: a ratio or a likelihood must be taken under the distribution that sampled.
    """
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        output_hidden_states=hidden,
        use_cache=False,
        logits_to_keep=n_answer + 1,  # only the answer's logits: the vocabulary is the big axis
    )
    logits = out.logits[:, :-1].float() / temperature  # (B, T, V)
    logp = logprobs_from_logits(logits, input_ids[:, -n_answer:])  # (B, T)
    states = out.hidden_states[-1][:, -n_answer - 1 : -1] if hidden else None
    return logp, logits, states


def reference(policy: nn.Module, ref_model: nn.Module | None) -> tuple[nn.Module, Any]:
    """(model, context) that computes the reference policy: `ref_model`, or with LoRA the policy
    with its adapter disabled (the model we started from; no second copy is held)."""
    if ref_model is not None:
        return ref_model, contextlib.nullcontext()
    return policy, policy.disable_adapter()


# --------------------------------------------------------------------------------------------
# The value head and the trainer.
# --------------------------------------------------------------------------------------------


class ValueHead(nn.Module):
    """V(s_t) from the policy's last hidden state: one Linear, (B, T, H) -> (B, T).

    It shares the backbone with the policy (like TRL's old AutoModelForCausalLMWithValueHead):
    no second network to hold in memory or to run, and the value loss also shapes the features.
    Zero-initialised, so the first values are 0 rather than noise of the reward's sign.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden_states.to(self.summary.weight.dtype)).squeeze(-1)


def is_peft(model: nn.Module) -> bool:
    """True for a peft `PeftModel` (LoRA): its reference policy is itself with the adapter off."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency, but keep the plain path working
        return False
    return isinstance(model, PeftModel)


def _mean_keep_nan(xs: list[float]) -> float:
    """Plain mean that keeps NaN visible (a NaN round must show as NaN, not be averaged away)."""
    return sum(xs) / len(xs) if xs else float("nan")


class PPOTrainer:
    """PPO on a chat policy, one `step` at a time; keeps its state between the app's rounds.

    `policy` is a peft `PeftModel` (LoRA: the reference policy is the same model with the adapter
    disabled, so no second copy is held) or a plain causal LM (full fine-tuning: `ref_model` is
    its frozen copy, made here when not given). Kept across steps: the value head, the AdamW
    optimizer over the trainable weights and the value head, the KL controller, the step counter.

    `gate.wait_until_idle()` runs before every sampled token and every minibatch, so a person
    waiting for an answer always comes first. Sampling and shuffling use a generator seeded from
    `seed` and the step counter: the same seed, model and rewards give the same run.
    """

    def __init__(
        self,
        policy: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        config: PPOConfig,
        ref_model: nn.Module | None = None,
        gate: ServingGate | None = None,
        seed: int = 0,
    ):
        if config.temperature <= 0:
            raise ValueError("ppo.temperature must be > 0: PPO needs the sampling distribution's log-probs")
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
            raise ValueError("the tokenizer needs a pad token distinct from EOS (see models.fix_pad_token)")
        self.policy = policy
        self.tokenizer = tokenizer
        self.config = config
        self.gate = gate
        self.seed = seed
        self.step_count = 0
        self.last_rollout: Rollout | None = None
        """The last step's answers: the trainer measures the updated policy's KL on them (kl_bound.py)."""
        self.is_peft = is_peft(policy)
        if not self.is_peft and ref_model is None:
            ref_model = copy.deepcopy(policy)
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
        self.ref_model = ref_model
        self.device = next(policy.parameters()).device
        self.value_head = ValueHead(policy.config.hidden_size).to(self.device)
        policy_params = [p for p in policy.parameters() if p.requires_grad]
        if not policy_params:
            raise ValueError("the policy has no trainable parameters (a PeftModel loaded with is_trainable=False?)")
        self.trainable = policy_params + list(self.value_head.parameters())
        # No weight decay: it would pull LoRA / fine-tuned weights towards 0, not towards the reference.
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.learning_rate, weight_decay=0.0)
        self.kl_ctl: AdaptiveKLController | FixedKLController = (
            AdaptiveKLController(config.init_kl_coef, config.kl_target, config.kl_horizon)
            if config.adaptive_kl
            else FixedKLController(config.init_kl_coef)
        )

    # -- helpers -------------------------------------------------------------------------------

    def _yield_to_serving(self) -> bool:
        if self.gate is not None:
            self.gate.wait_until_idle()
        return True  # never stop sampling early

    def _forward(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_answer: int, values: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(logprobs (B, T), values (B, T) or None, logits (B, T, V)) of the answer tokens."""
        logp, logits, hidden = answer_forward(model, input_ids, attention_mask, n_answer, self.config.temperature,
                                              hidden=values)
        return logp, (self.value_head(hidden) if values else None), logits

    def _ref_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     n_answer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(logprobs (B, T), logits (B, T, V)) of the answer tokens under the reference policy."""
        model, scope = reference(self.policy, self.ref_model)
        with scope:
            logp, logits, _ = answer_forward(model, input_ids, attention_mask, n_answer, self.config.temperature)
        return logp, logits

    # -- one PPO step --------------------------------------------------------------------------

    def step(
        self,
        prompts: list[str],
        reward_fn: RewardFn,
        on_progress: Callable[[str], None] | None = None,
        demonstrations: Sequence[Demonstration] = (),
    ) -> dict[str, Any]:
        """Sample, score and update once; returns the step's metrics and its samples.

        `prompts` are the step's distinct prompts (the caller picks `batch_prompts` of them);
        each gets `samples_per_prompt` answers. `on_progress` is told "sampling", "scoring",
        "update" as the step gets there. With `imitation_coef` > 0, every minibatch also imitates
        `imitation_batch` of `demonstrations` (the liked answers, `demonstrations.liked_answers`),
        drawn with the step's generator.

        Metrics (floats unless said):
        - `reward/mean`, `reward/std`: of the scores `reward_fn` gave;
        - `ppo/policy_loss`, `ppo/value_loss`, `ppo/approx_kl`, `ppo/clipfrac`, `ppo/grad_norm`:
          means over all minibatches of all epochs; `ppo/skipped_updates` (int): minibatches whose
          gradient was not finite and so were not applied;
        - `ppo/imitation_loss`, `ppo/imitation_answers` (int), `ppo/imitation_coef`, only while
          imitating: the mean `imitation_loss`, how many liked answers there were to draw from, and
          the term's weight (`imitation_weight`);
        - `ppo/explained_variance`: of the returns by the values, before the update;
        - `ppo/entropy`: nats per answer token of the policy that sampled;
        - `kl/ref`: KL(pi || pi_ref) of the next-token distributions summed over an answer, averaged
          over answers (nats, `kl_from_logits`); `kl/ref_sampled`: the same from the sampled tokens
          alone (the estimate the penalty uses: noisier, and it can dip below 0); `kl/coef`: the
          beta this step used;
        - `answer/length`: tokens, EOS included; `answer/eos_rate`: share that ended before the cap;
        - `time/step_s`; `time/waited_s`: of it, spent waiting for people's answers; the phases
          `time/sample_s`, `time/score_s`, `time/logprobs_s` (old, reference, values), `time/update_s`;
        - under `SAMPLES_KEY` ("samples"), not a number: {"prompts", "completions", "scores"},
          one entry per answer. Pop it before logging the numbers.

        A NaN score or loss shows as NaN in the metrics (the caller discards that round); update
        steps whose gradient is not finite are skipped, so the weights stay usable either way.
        """
        if not prompts:
            raise ValueError("step() needs at least one prompt")
        t0 = time.monotonic()
        waited0 = self.gate.waited_s if self.gate is not None else 0.0
        cfg, tok = self.config, self.tokenizer
        progress = on_progress or (lambda phase: None)
        generator = step_generator(self.seed, self.step_count)
        self.step_count += 1

        # 1. Rollout: samples_per_prompt answers per prompt, from the current policy.
        progress("sampling")
        self.policy.eval()
        batch = sample_rollout(self.policy, tok, prompts, cfg.samples_per_prompt, cfg.temperature,
                               cfg.max_new_tokens, generator, self._yield_to_serving)
        self.last_rollout = batch
        answers, mask, input_ids, attention_mask = batch.answers, batch.mask, batch.input_ids, batch.attention_mask
        B, T = answers.shape
        t_sampled = time.monotonic()

        # 2. Score: one number per answer.
        progress("scoring")
        scores = score_answers(reward_fn, batch).to(self.device)
        t_scored = time.monotonic()

        # 3. Old log-probs, reference log-probs and values: what the update is measured against.
        old_logp, values, entropy, ref_logp, full_kl = [], [], [], [], []
        with torch.no_grad():
            for i in range(0, B, cfg.minibatch_size):  # chunks: (B, T, V) logits of a real vocab are big
                self._yield_to_serving()
                ids, am = input_ids[i : i + cfg.minibatch_size], attention_mask[i : i + cfg.minibatch_size]
                logp, v, logits = self._forward(self.policy, ids, am, T, values=True)
                old_logp.append(logp)
                values.append(v)
                entropy.append(entropy_from_logits(logits))
                r_logp, r_logits = self._ref_forward(ids, am, T)
                ref_logp.append(r_logp)
                full_kl.append(kl_from_logits(logits, r_logits))
        old_logp, values = torch.cat(old_logp), torch.cat(values)  # (B, T)
        entropy, ref_logp, full_kl = torch.cat(entropy), torch.cat(ref_logp), torch.cat(full_kl)  # (B, T)

        # 4. Per-token rewards (KL penalty + score at the end), then advantages.
        kl_coef = self.kl_ctl.value
        shaped = prompt_baseline(scores, batch.prompts) if cfg.score_baseline == "prompt" else scores
        rewards, kl = per_token_rewards(shaped, old_logp, ref_logp, mask, kl_coef)  # (B, T)
        advantages, returns = compute_gae(rewards, values, mask, cfg.gamma, cfg.gae_lambda)  # (B, T)
        advantages = normalize_advantages(advantages, mask, cfg.advantage_norm)

        # 5. PPO epochs over shuffled minibatches.
        t_update = time.monotonic()
        progress("update")
        self.policy.train()
        self.value_head.train()
        stats: dict[str, list[float]] = {
            k: [] for k in ("policy_loss", "value_loss", "approx_kl", "clipfrac", "grad_norm")
        }
        skipped = 0
        imitate = cfg.imitation_coef > 0 and len(demonstrations) > 0
        im_coef = imitation_weight(cfg.imitation_coef, len(demonstrations), cfg.imitation_full_at)
        if imitate:
            stats["imitation_loss"] = []
        try:
            for _epoch in range(cfg.ppo_epochs):
                order = torch.randperm(B, generator=generator).to(self.device)
                for i in range(0, B, cfg.minibatch_size):
                    self._yield_to_serving()
                    mb = order[i : i + cfg.minibatch_size]
                    new_logp, new_values, _ = self._forward(
                        self.policy, input_ids[mb], attention_mask[mb], T, values=True
                    )
                    pg_loss, clipfrac, approx_kl = ppo_policy_loss(
                        new_logp, old_logp[mb], advantages[mb], mask[mb], cfg.clip_coef
                    )
                    vf_loss = value_loss(new_values, values[mb], returns[mb], mask[mb], cfg.cliprange_value)
                    loss = pg_loss + cfg.vf_coef * vf_loss
                    if imitate:
                        drawn = torch.randint(len(demonstrations), (cfg.imitation_batch,), generator=generator)
                        demo, weights = demonstration_batch(tok, [demonstrations[j] for j in drawn.tolist()],
                                                            cfg.max_new_tokens, self.device)
                        d_logp, _, _ = self._forward(self.policy, demo.input_ids, demo.attention_mask,
                                                     demo.answers.shape[1], values=False)
                        im_loss = imitation_loss(d_logp, demo.mask, weights)
                        loss = loss + im_coef * im_loss
                        stats["imitation_loss"].append(im_loss.item())
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, cfg.max_grad_norm)
                    if torch.isfinite(grad_norm):
                        self.optimizer.step()
                    else:  # a NaN/inf step would poison the weights for every later round
                        skipped += 1
                    stats["policy_loss"].append(pg_loss.item())
                    stats["value_loss"].append(vf_loss.item())
                    stats["approx_kl"].append(approx_kl.item())
                    stats["clipfrac"].append(clipfrac.item())
                    stats["grad_norm"].append(grad_norm.item())
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            self.policy.eval()  # the caller copies and serves it
            self.value_head.eval()

        # 6. Adapt beta to the KL measured on this batch (nats per answer).
        kl_ref = (full_kl * mask).sum(-1).mean().item()
        if math.isfinite(kl_ref):
            self.kl_ctl.update(kl_ref, n_steps=B)

        metrics: dict[str, Any] = {
            **answer_metrics(batch, scores, tok.eos_token_id),
            "ppo/policy_loss": _mean_keep_nan(stats["policy_loss"]),
            "ppo/value_loss": _mean_keep_nan(stats["value_loss"]),
            "ppo/approx_kl": _mean_keep_nan(stats["approx_kl"]),
            "ppo/clipfrac": _mean_keep_nan(stats["clipfrac"]),
            "ppo/explained_variance": explained_variance(values, returns, mask).item(),
            "ppo/entropy": masked_mean(entropy, mask).item(),
            "ppo/grad_norm": _mean_keep_nan(stats["grad_norm"]),
            "ppo/skipped_updates": skipped,
            **({"ppo/imitation_loss": _mean_keep_nan(stats["imitation_loss"]),
                "ppo/imitation_answers": len(demonstrations), "ppo/imitation_coef": im_coef} if imitate else {}),
            "kl/ref": kl_ref,
            "kl/ref_sampled": kl.sum(-1).mean().item(),
            "kl/coef": kl_coef,
            "time/step_s": time.monotonic() - t0,
            "time/sample_s": t_sampled - t0,
            "time/score_s": t_scored - t_sampled,
            "time/logprobs_s": t_update - t_scored,
            "time/update_s": time.monotonic() - t_update,
            "time/waited_s": (self.gate.waited_s - waited0) if self.gate is not None else 0.0,
            SAMPLES_KEY: {"prompts": batch.prompts, "completions": batch.completions, "scores": scores.tolist()},
        }
        return metrics
