"""The PPO math on hand-made tensors, against values worked out by hand in the comments."""

import math

import pytest
import torch

from rlhf_app.config import PPOConfig
from rlhf_app.ppo import (
    AdaptiveKLController,
    FixedKLController,
    answer_mask,
    compute_gae,
    entropy_from_logits,
    explained_variance,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    normalize_advantages,
    per_token_rewards,
    prompt_baseline,
    ppo_policy_loss,
    value_loss,
)


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), atol=tol)


# -- GAE -------------------------------------------------------------------------------------


def test_gae_by_hand_with_padding():
    # Row 0: 3 real tokens, then padding holding garbage that must not leak in.
    # Row 1: 4 real tokens, the score on the last.
    rewards = torch.tensor([[1.0, 2.0, 3.0, 100.0], [0.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 1.0, 1.5, 9.0], [0.1, 0.2, 0.3, 0.4]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    adv, ret = compute_gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # gamma * lam = 0.45
    # row 0: t2 (last): delta = 3 - 1.5 = 1.5                      A2 = 1.5
    #        t1: delta = 2 + 0.9 * 1.5 - 1.0 = 2.35                 A1 = 2.35 + 0.45 * 1.5 = 3.025
    #        t0: delta = 1 + 0.9 * 1.0 - 0.5 = 1.4                  A0 = 1.4 + 0.45 * 3.025 = 2.76125
    # row 1: t3: delta = 1 - 0.4 = 0.6                              A3 = 0.6
    #        t2: delta = 0.9 * 0.4 - 0.3 = 0.06                     A2 = 0.06 + 0.45 * 0.6 = 0.33
    #        t1: delta = 0.9 * 0.3 - 0.2 = 0.07                     A1 = 0.07 + 0.45 * 0.33 = 0.2185
    #        t0: delta = 0.9 * 0.2 - 0.1 = 0.08                     A0 = 0.08 + 0.45 * 0.2185 = 0.178325
    assert close(adv, [[2.76125, 3.025, 1.5, 0.0], [0.178325, 0.2185, 0.33, 0.6]])
    # returns = A + V on real tokens, 0 on padding
    assert close(ret, [[3.26125, 4.025, 3.0, 0.0], [0.278325, 0.4185, 0.63, 1.0]])


def test_gae_lambda_one_is_monte_carlo_and_lambda_zero_is_td():
    rewards = torch.tensor([[0.5, 0.0, 2.0]])
    values = torch.tensor([[1.0, 2.0, 4.0]])
    mask = torch.ones(1, 3)
    # lam = gamma = 1: A_t = (sum of rewards from t on) - V_t
    adv, ret = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert close(adv, [[2.5 - 1.0, 2.0 - 2.0, 2.0 - 4.0]])
    assert close(ret, [[2.5, 2.0, 2.0]])
    # lam = 0: one-step TD error, r_t + gamma * V_{t+1} - V_t (V after the last token is 0)
    adv, _ = compute_gae(rewards, values, mask, gamma=0.5, lam=0.0)
    assert close(adv, [[0.5 + 0.5 * 2.0 - 1.0, 0.0 + 0.5 * 4.0 - 2.0, 2.0 - 4.0]])


# -- rewards -----------------------------------------------------------------------------------


def test_per_token_rewards_kl_on_every_token_score_on_the_last():
    scores = torch.tensor([2.0, -1.0])
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -7.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -0.25, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards, kl = per_token_rewards(scores, logprobs, ref, mask, kl_coef=0.1)
    # kl = logp - ref_logp on real tokens: row 0 [0.5, 0, -1], row 1 [0.5, -0.25, (pad) 0]
    assert close(kl, [[0.5, 0.0, -1.0], [0.5, -0.25, 0.0]])
    # rewards = -0.1 * kl, plus the score on the last real token (index 2 and index 1)
    assert close(rewards, [[-0.05, 0.0, 0.1 + 2.0], [-0.05, 0.025 - 1.0, 0.0]])


# -- policy loss -------------------------------------------------------------------------------


def test_ppo_policy_loss_clips_and_counts():
    old = torch.zeros(1, 4)
    ratio = torch.tensor([[1.5, 0.5, 1.1, 3.0]])
    new = ratio.log().requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0, -1.0, 2.0]])
    mask = torch.tensor([[1, 1, 1, 0]])  # the 4th token is padding: ignored everywhere
    loss, clipfrac, approx_kl = ppo_policy_loss(new, old, adv, mask, clip_coef=0.2)
    # token 0: ratio 1.5, A = 1:  max(-1.5, -1.2) = -1.2   (clipped: no gradient)
    # token 1: ratio 0.5, A = 1:  max(-0.5, -0.8) = -0.5   (pessimistic side: unclipped term wins)
    # token 2: ratio 1.1, A = -1: max(1.1, 1.1)  = 1.1     (inside the trust region)
    assert close(loss, (-1.2 - 0.5 + 1.1) / 3)
    # |ratio - 1| > 0.2 for tokens 0 and 1
    assert close(clipfrac, 2 / 3)
    k3 = [(r - 1) - math.log(r) for r in (1.5, 0.5, 1.1)]
    assert close(approx_kl, sum(k3) / 3)
    loss.backward()
    # d loss / d logp = -A * ratio / n where unclipped, 0 where clipped or padded
    assert close(new.grad, [[0.0, -0.5 / 3, 1.1 / 3, 0.0]])


def test_ppo_policy_loss_is_minus_mean_advantage_at_ratio_one():
    logp = torch.tensor([[-1.0, -2.0]])
    adv = torch.tensor([[0.3, -0.1]])
    loss, clipfrac, approx_kl = ppo_policy_loss(logp, logp, adv, torch.ones(1, 2), 0.2)
    assert close(loss, -0.1) and close(clipfrac, 0.0) and close(approx_kl, 0.0)


# -- value loss --------------------------------------------------------------------------------


def test_value_loss_clipping():
    old = torch.tensor([[1.0, 1.0, 0.0]])
    new = torch.tensor([[2.0, 1.1, 5.0]])
    returns = torch.tensor([[3.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    # token 0: moved +1 > 0.2, so V_clipped = 1.2: max((2 - 3)^2, (1.2 - 3)^2) = 3.24
    # token 1: moved +0.1 (inside): both terms (1.1 - 0)^2 = 1.21
    # token 2: padding
    loss = value_loss(new, old, returns, mask, cliprange_value=0.2)
    assert close(loss, 0.5 * (3.24 + 1.21) / 2)
    # with a wide clip range it is plain 0.5 * MSE
    assert close(value_loss(new, old, returns, mask, cliprange_value=100.0), 0.5 * (1.0 + 1.21) / 2)


# -- whitening, masked mean, log-probs -----------------------------------------------------------


def test_masked_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0], [6.0, 999.0, float("nan")]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # real values 1, 2, 3, 6: mean 3, population variance (4 + 1 + 0 + 9) / 4 = 3.5
    s = math.sqrt(3.5)
    w = masked_whiten(x, mask)
    assert close(w, [[-2 / s, -1 / s, 0.0], [3 / s, 0.0, 0.0]])
    assert close(masked_mean(w, mask), 0.0) and close(masked_mean(w**2, mask), 1.0, tol=1e-4)
    # shift_mean=False keeps the mean, rescales only
    assert close(masked_whiten(x, mask, shift_mean=False), [[3 - 2 / s, 3 - 1 / s, 3.0], [3 + 3 / s, 0.0, 0.0]])


def test_whitened_advantages_ignore_the_reward_scale_centred_ones_keep_it():
    x = torch.tensor([[1.0, 2.0, 3.0], [6.0, 999.0, float("nan")]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    for scale in (1e-2, 1.0, 1e3):  # far above the 1e-8 that keeps a constant batch finite
        assert torch.allclose(normalize_advantages(x * scale, mask, "whiten"), masked_whiten(x, mask), atol=1e-4)
        # mean 3: [1 2 3 6] - 3, times the scale; padding is 0 (even where it held NaN)
        assert close(normalize_advantages(x * scale, mask, "center"), [[-2 * scale, -scale, 0.0], [3 * scale, 0.0, 0.0]])
    assert normalize_advantages(x, mask, "none") is x
    with pytest.raises(ValueError, match="center"):
        normalize_advantages(x, mask, "scale")
    with pytest.raises(ValueError, match="advantage_norm"):
        PPOConfig(advantage_norm="scale")


def test_prompt_baseline_is_each_score_minus_its_siblings_mean():
    scores = torch.tensor([1.0, 4.0, 7.0, 2.0, 5.0, 3.0])
    prompts = ["a", "a", "a", "b", "c", "b"]  # b's answers are not adjacent; c has none to compare with
    # a: 1 - (4+7)/2, 4 - (1+7)/2, 7 - (1+4)/2; b: 2 - 3, 3 - 2; c unchanged
    assert close(prompt_baseline(scores, prompts), [-4.5, 0.0, 4.5, -1.0, 5.0, 1.0])
    # a constant per prompt is gone, whatever it is
    assert close(prompt_baseline(scores + torch.tensor([9.0, 9, 9, -3, 0, -3]), prompts), [-4.5, 0.0, 4.5, -1.0, 5.0, 1.0])
    with pytest.raises(ValueError, match="score_baseline"):
        PPOConfig(score_baseline="batch")


def test_masked_mean_ignores_padding_even_nan_but_shows_real_nan():
    mask = torch.tensor([[1, 1, 0]])
    assert close(masked_mean(torch.tensor([[1.0, 2.0, float("nan")]]), mask), 1.5)
    rows = torch.tensor([[1.0, 2.0, 7.0], [3.0, 5.0, 1.0]])
    assert close(masked_mean(rows, torch.tensor([[1, 0, 0], [1, 1, 0]]), dim=1), [1.0, 4.0])
    assert torch.isnan(masked_mean(torch.tensor([[float("nan"), 2.0, 0.0]]), mask))


def test_logprobs_and_entropy_from_logits():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # probabilities 0.25, 0.75
    assert close(logprobs_from_logits(logits, torch.tensor([[1]])), [[math.log(0.75)]])
    assert close(logprobs_from_logits(logits, torch.tensor([[0]])), [[math.log(0.25)]])
    assert close(entropy_from_logits(logits), [[-(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]])


def test_answer_mask_includes_first_eos_and_not_what_follows():
    eos, pad = 2, 0
    tokens = torch.tensor([[5, 2, pad, pad], [pad, 6, 2, 2], [5, 6, 7, 8]])
    # row 1: a sampled token equal to the pad id is still an action; the mask is by position
    assert answer_mask(tokens, eos).tolist() == [
        [True, True, False, False],
        [True, True, True, False],
        [True, True, True, True],
    ]


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert close(explained_variance(returns.clone(), returns, mask), 1.0)
    assert close(explained_variance(torch.full((1, 4), 2.0), returns, mask), 0.0)
    # constant returns: nothing to explain, 0 rather than a NaN that would void the round
    assert close(explained_variance(returns, torch.ones(1, 4), mask), 0.0)
    assert torch.isnan(explained_variance(returns, torch.tensor([[1.0, float("nan"), 0.0, 0.0]]), mask))


# -- KL controllers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kl, expected",
    [
        (1.1, 0.1 * (1 + 0.1 * 10 / 100)),  # 10% above target: error +0.1, beta rises
        (0.95, 0.1 * (1 - 0.05 * 10 / 100)),  # 5% below: error -0.05, beta falls
        (5.0, 0.1 * (1 + 0.2 * 10 / 100)),  # far above: error clipped to +0.2
        (0.0, 0.1 * (1 - 0.2 * 10 / 100)),  # far below: error clipped to -0.2
        (1.0, 0.1),  # on target: unchanged
    ],
)
def test_adaptive_kl_controller(kl, expected):
    c = AdaptiveKLController(0.1, target=1.0, horizon=100)
    c.update(kl, n_steps=10)
    assert c.value == pytest.approx(expected)


def test_adaptive_kl_controller_compounds_and_fixed_does_not_move():
    c = AdaptiveKLController(0.1, target=2.0, horizon=50)
    for _ in range(3):
        c.update(10.0, n_steps=5)  # each time * (1 + 0.2 * 5 / 50) = * 1.02
    assert c.value == pytest.approx(0.1 * 1.02**3)
    f = FixedKLController(0.3)
    f.update(100.0, n_steps=1000)
    assert f.value == 0.3
