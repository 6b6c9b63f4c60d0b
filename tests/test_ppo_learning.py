"""PPO on the tiny chat model: it learns what the reward favours, and touches only what it should.

The favoured behaviour is positive words: the scripted reward is the fraction of an answer's
words that are in POSITIVE ("yes", "good", ...). The random model uses them in about 8% of its
words; the learning test asks that, on fresh samples with fixed seeds, the rate at least doubles
and rises by more than 0.1, for three seeds, with LoRA and with full fine-tuning. (In trial runs
over 5 seeds, 10 steps took it to 0.45-0.93 with LoRA and 0.48-0.99 with full fine-tuning.)
A set of six words rather than "yes" alone: the sharpened random model almost never says "yes"
in some contexts, and a seed that never samples it in the first steps never gets a signal; that
tests exploration luck, not PPO.

Why the final norm's gain is raised to 10 (`sharpen`): the random tiny model's logits are
h . E with h = RMSNorm(...) (norm ~ sqrt(32) with gain 1) and embeddings of std 0.02, so no
hidden state can push a logit beyond about +-0.6: "yes" can never get much more than 4% of
the mass, whatever LoRA on the projections learns. A real LM's logits span tens of nats. With
gain 10 the same random model has a real LM's room to move (and an entropy of ~1.4 nats per
token instead of a uniform 3.8), and the test measures PPO rather than that cap.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from peft import LoraConfig, get_peft_model

from rlhf_app.config import PPOConfig
from rlhf_app.models import load_model
from rlhf_app.policy import ServingGate
from rlhf_app.demonstrations import Demonstration
from rlhf_app.ppo import (SAMPLES_KEY, PPOTrainer, answer_forward, answer_mask, demonstration_batch,
                          imitation_loss)
from rlhf_app.sampling import SamplingParams, chat_input_ids, sample

POSITIVE = {"yes", "good", "great", "happy", "love", "like"}
PROMPTS = ["tell me a story", "hello", "I like the cat", "is it good ?"]
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LEARNING_RATE = {"lora": 1e-2, "full": 1e-3}
MAX_NEW_TOKENS = 8
METRIC_KEYS = {
    "reward/mean",
    "reward/std",
    "ppo/policy_loss",
    "ppo/value_loss",
    "ppo/approx_kl",
    "ppo/clipfrac",
    "ppo/explained_variance",
    "ppo/entropy",
    "kl/ref",
    "kl/coef",
    "answer/length",
    "time/step_s",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def positive_fraction(text: str) -> float:
    words = text.split()
    return sum(w in POSITIVE for w in words) / len(words) if words else 0.0


def positive_reward(prompts: list[str], completions: list[str]) -> list[float]:
    assert len(prompts) == len(completions)
    return [positive_fraction(c) for c in completions]


def config(kind: str, **kw) -> PPOConfig:
    base = dict(
        batch_prompts=len(PROMPTS),
        samples_per_prompt=4,
        max_new_tokens=MAX_NEW_TOKENS,
        learning_rate=LEARNING_RATE[kind],
        ppo_epochs=4,
        minibatch_size=8,
    )
    return PPOConfig(**{**base, **kw})


def make_policy(loaded, kind: str, seed: int) -> torch.nn.Module:
    """The tiny model, sharpened (see the module docstring), as LoRA or for full fine-tuning."""
    with torch.no_grad():
        loaded.model.model.norm.weight.fill_(10.0)
    if kind == "full":
        return loaded.model
    torch.manual_seed(seed)  # LoRA's A matrices are drawn from the global generator
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS)
    return get_peft_model(loaded.model, lora)


def positive_rate(model: torch.nn.Module, tokenizer, seed: int = 1234, per_prompt: int = 8) -> float:
    """Mean fraction of positive words in fresh answers sampled with a fixed seed."""
    queries = [chat_input_ids(tokenizer, p) for p in PROMPTS for _ in range(per_prompt)]
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=MAX_NEW_TOKENS)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.stack(list(sample(model, queries, params, eos, pad, generator=gen)), dim=1)
    mask = answer_mask(tokens, eos)
    texts = [tokenizer.decode(t[m].tolist(), skip_special_tokens=True) for t, m in zip(tokens, mask)]
    return sum(map(positive_fraction, texts)) / len(texts)


@pytest.mark.parametrize("kind", ["lora", "full"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ppo_learns_to_use_positive_words(tiny, kind, seed):
    policy = make_policy(tiny, kind, seed)
    trainer = PPOTrainer(policy, tiny.tokenizer, config(kind), seed=seed)
    before = positive_rate(policy, tiny.tokenizer)
    rewards = []
    for _ in range(10):
        m = trainer.step(PROMPTS, positive_reward)
        m.pop(SAMPLES_KEY)
        assert all(math.isfinite(v) for v in m.values()), m
        rewards.append(m["reward/mean"])
    after = positive_rate(policy, tiny.tokenizer)
    assert after >= 2 * before and after - before > 0.1, (before, after, rewards)


def prompt_offset_reward(prompts: list[str], completions: list[str]) -> list[float]:
    """positive_reward plus a per-prompt offset ten times larger than what an answer can change."""
    return [10.0 * PROMPTS.index(p) + r for p, r in zip(prompts, positive_reward(prompts, completions))]


@pytest.mark.parametrize("seed", [0, 2, 3])
def test_prompt_baseline_learns_the_answer_preference_under_large_prompt_offsets(tiny_model_dir, tmp_path, seed):
    """Whitened across the batch, the prompts' offsets are most of every advantage and 10 steps teach
    nothing; against each answer's siblings (`score_baseline='prompt'`) they cancel. Trial runs,
    seeds 0-4, positive-word rate 0.08 before: 'prompt' 0.45, 0.02, 0.86, 0.90, 0.88 after; 'none'
    0.10, 0.08, 0.08, 0.12, 0.15 (on the reward without offsets: 0.77, 0.05, 0.19, 0.79, 0.90 and
    0.91, 0.65, 0.89, 0.17, 0.03; the tiny model's runs vary a lot by seed)."""
    gains = {}
    for baseline in ("prompt", "none"):
        loaded = load_model(str(tiny_model_dir), tmp_path / baseline, device="cpu")
        policy = make_policy(loaded, "lora", seed)
        trainer = PPOTrainer(policy, loaded.tokenizer, config("lora", score_baseline=baseline), seed=seed)
        before = positive_rate(policy, loaded.tokenizer)
        for _ in range(10):
            m = trainer.step(PROMPTS, prompt_offset_reward)
            m.pop(SAMPLES_KEY)
            assert all(math.isfinite(v) for v in m.values()), m
        gains[baseline] = positive_rate(policy, loaded.tokenizer) - before
    assert gains["prompt"] > 0.1 and gains["prompt"] > gains["none"] + 0.1, gains


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_step_changes_trainable_weights_only_and_kl_grows_from_zero(tiny, kind):
    policy = make_policy(tiny, kind, seed=0)
    trainer = PPOTrainer(policy, tiny.tokenizer, config(kind), seed=0)
    trainable = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    head = [p.detach().clone() for p in trainer.value_head.parameters()]
    if kind == "lora":
        assert trainable and frozen and all("lora_" in n for n in trainable)
    else:
        assert not frozen and trainer.ref_model is not None
        ref = {n: p.detach().clone() for n, p in trainer.ref_model.named_parameters()}

    first = trainer.step(PROMPTS, positive_reward)
    assert abs(first["kl/ref"]) < 1e-5  # nothing updated yet: the policy is the reference
    assert first["kl/coef"] == pytest.approx(trainer.config.init_kl_coef)

    changed = [n for n, p in policy.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert len(changed) >= len(trainable) // 2, changed
    assert all(torch.equal(p, frozen[n]) for n, p in policy.named_parameters() if not p.requires_grad)
    assert any(not torch.equal(p, h) for p, h in zip(trainer.value_head.parameters(), head))
    if kind == "full":  # the reference copy stays where it started
        assert all(torch.equal(p, ref[n]) for n, p in trainer.ref_model.named_parameters())

    second = trainer.step(PROMPTS, positive_reward)
    assert second["kl/ref"] > 0.01  # sampled from the updated policy, measured against the reference
    assert not policy.training  # the caller serves copies of it


def zero_reward(prompts: list[str], completions: list[str]) -> list[float]:
    return [0.0] * len(completions)


def demonstration_nll(trainer: PPOTrainer, demos: list[Demonstration]) -> float:
    batch, weights = demonstration_batch(trainer.tokenizer, demos, MAX_NEW_TOKENS, trainer.device)
    with torch.no_grad():
        logp, _, _ = answer_forward(trainer.policy, batch.input_ids, batch.attention_mask, batch.answers.shape[1], 1.0)
    return imitation_loss(logp, batch.mask, weights).item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_imitation_alone_teaches_what_the_liked_answers_do(tiny_model_dir, tmp_path, seed):
    """With a reward that says nothing, the imitation term (PPO-ptx on liked answers) is all that moves
    the policy: it learns the liked answers and, with them, their positive words. Trial runs, seeds
    0-4: in 6 steps with the term the liked answers went from 6.69 to 0.14-0.19 nats per token and the
    positive-word rate from 0.08 to 0.82-0.89; without it nothing moved (a zero reward and zero KL leave
    PPO no advantage to follow)."""
    liked = [Demonstration(p, "yes good great happy", 1.0) for p in PROMPTS]
    out = {}
    for coef in (1.0, 0.0):
        loaded = load_model(str(tiny_model_dir), tmp_path / str(coef), device="cpu")
        policy = make_policy(loaded, "lora", seed)
        trainer = PPOTrainer(policy, loaded.tokenizer, config("lora", imitation_coef=coef), seed=seed)
        nll0, rate0 = demonstration_nll(trainer, liked), positive_rate(policy, loaded.tokenizer)
        for _ in range(6):
            m = trainer.step(PROMPTS, zero_reward, demonstrations=liked)
            m.pop(SAMPLES_KEY)
            assert all(math.isfinite(v) for v in m.values()), m
        assert ("ppo/imitation_loss" in m) == (coef > 0)
        if coef:
            assert m["ppo/imitation_answers"] == len(liked)
        out[coef] = (nll0, demonstration_nll(trainer, liked), rate0, positive_rate(policy, loaded.tokenizer))
    (nll0, nll_on, rate0, rate_on), (_, nll_off, _, rate_off) = out[1.0], out[0.0]
    assert nll_on < 0.5 * nll0 and nll_on < 0.5 * nll_off, out
    assert rate_on > rate0 + 0.1 and rate_on > rate_off + 0.1, out


def test_imitation_weight_grows_with_the_liked_answers(tiny_model_dir, tmp_path):
    """`imitation_full_at` above the number of liked answers scales the term down: the liked answers are
    learnt less than at full weight, more than without the term."""
    liked = [Demonstration(p, "yes good great happy", 1.0) for p in PROMPTS]
    nll = {}
    for coef, full_at in ((1.0, 0), (1.0, 4 * len(liked)), (0.0, 0)):
        loaded = load_model(str(tiny_model_dir), tmp_path / f"{coef}-{full_at}", device="cpu")
        cfg = config("lora", imitation_coef=coef, imitation_full_at=full_at)
        trainer = PPOTrainer(make_policy(loaded, "lora", 0), loaded.tokenizer, cfg, seed=0)
        for _ in range(3):
            m = trainer.step(PROMPTS, zero_reward, demonstrations=liked)
        if coef:
            assert m["ppo/imitation_coef"] == (0.25 if full_at else 1.0)
        nll[full_at if coef else None] = demonstration_nll(trainer, liked)
    assert nll[0] < nll[4 * len(liked)] < nll[None], nll


def test_imitation_off_replays_the_run_without_demonstrations(tiny, tiny_model_dir, tmp_path):
    other = load_model(str(tiny_model_dir), tmp_path / "other", device="cpu")
    liked = [Demonstration(PROMPTS[0], "yes yes", 1.0)]
    runs = []
    for loaded, demos in ((tiny, liked), (other, [])):
        trainer = PPOTrainer(make_policy(loaded, "lora", 0), loaded.tokenizer, config("lora"), seed=3)
        runs.append([trainer.step(PROMPTS, positive_reward, demonstrations=demos) for _ in range(2)])
    for a, b in zip(*runs):
        assert a[SAMPLES_KEY] == b[SAMPLES_KEY] and a["ppo/policy_loss"] == b["ppo/policy_loss"]
        assert "ppo/imitation_loss" not in a


class CountingGate(ServingGate):
    """A serving gate that counts how often the trainer checked it."""

    calls = 0

    def wait_until_idle(self, timeout=None):
        self.calls += 1
        return super().wait_until_idle(timeout)


def test_metrics_progress_and_yielding_to_serving(tiny):
    gate = CountingGate()
    cfg = config("lora", ppo_epochs=2, minibatch_size=4)
    trainer = PPOTrainer(make_policy(tiny, "lora", 0), tiny.tokenizer, cfg, gate=gate, seed=0)
    phases = []
    m = trainer.step(PROMPTS, positive_reward, on_progress=phases.append)
    assert phases == ["sampling", "scoring", "update"]
    assert METRIC_KEYS <= set(m)
    samples = m.pop(SAMPLES_KEY)
    n = len(PROMPTS) * cfg.samples_per_prompt
    assert samples["prompts"] == [p for p in PROMPTS for _ in range(cfg.samples_per_prompt)]
    assert len(samples["completions"]) == len(samples["scores"]) == n
    assert samples["scores"] == positive_reward(samples["prompts"], samples["completions"])
    assert 1 <= m["answer/length"] <= MAX_NEW_TOKENS
    # once per sampled token, per no-grad chunk and per minibatch
    minibatches = cfg.ppo_epochs * n // cfg.minibatch_size
    assert gate.calls >= minibatches + n // cfg.minibatch_size + 1


def test_same_seed_same_run_other_seed_other_samples(tiny, tiny_model_dir, tmp_path):
    other = load_model(str(tiny_model_dir), tmp_path / "other", device="cpu")
    runs = []
    for loaded, seed in [(tiny, 7), (other, 7)]:
        trainer = PPOTrainer(make_policy(loaded, "lora", 0), loaded.tokenizer, config("lora"), seed=seed)
        runs.append([trainer.step(PROMPTS, positive_reward) for _ in range(2)])
    for a, b in zip(*runs):
        assert a[SAMPLES_KEY] == b[SAMPLES_KEY]
        assert a["ppo/policy_loss"] == b["ppo/policy_loss"]
    # a different seed (or the next step) samples different answers
    third = load_model(str(tiny_model_dir), tmp_path / "third", device="cpu")
    trainer = PPOTrainer(make_policy(third, "lora", 0), third.tokenizer, config("lora"), seed=8)
    assert trainer.step(PROMPTS, positive_reward)[SAMPLES_KEY] != runs[0][0][SAMPLES_KEY]
    assert runs[0][0][SAMPLES_KEY]["completions"] != runs[0][1][SAMPLES_KEY]["completions"]


def test_nan_reward_shows_in_metrics_and_leaves_weights_usable(tiny):
    policy = make_policy(tiny, "lora", 0)
    trainer = PPOTrainer(policy, tiny.tokenizer, config("lora"), seed=0)
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}

    m = trainer.step(PROMPTS, lambda ps, cs: [float("nan")] + [0.5] * (len(cs) - 1))
    assert math.isnan(m["reward/mean"]) and math.isnan(m["ppo/policy_loss"])
    assert m["ppo/skipped_updates"] > 0
    # no update was applied from NaN gradients, and beta did not become NaN
    assert all(torch.equal(p, before[n]) for n, p in policy.named_parameters() if p.requires_grad)
    assert math.isfinite(trainer.kl_ctl.value)

    m = trainer.step(PROMPTS, positive_reward)  # the next round goes on normally
    m.pop(SAMPLES_KEY)
    assert all(math.isfinite(v) for v in m.values()), {k: v for k, v in m.items() if not math.isfinite(v)}


def test_rejects_a_tokenizer_whose_pad_is_eos(tiny):
    tiny.tokenizer.pad_token = tiny.tokenizer.eos_token
    with pytest.raises(ValueError, match="pad"):
        PPOTrainer(tiny.model, tiny.tokenizer, config("full"))


def test_kl_of_full_distributions_agrees_with_the_sampled_estimate_and_is_steadier(tiny):
    policy = make_policy(tiny, "lora", seed=0)
    trainer = PPOTrainer(policy, tiny.tokenizer, config("lora"), seed=0)
    for _ in range(3):
        trainer.step(PROMPTS, positive_reward)  # away from the reference
    for group in trainer.optimizer.param_groups:
        group["lr"] = 0.0  # from here on the policy stays put, so every step measures the same KL
    full, sampled = [], []
    for _ in range(12):
        m = trainer.step(PROMPTS, positive_reward)
        full.append(m["kl/ref"])
        sampled.append(m["kl/ref_sampled"])
    assert min(full) > 0, full
    assert statistics.fmean(full) == pytest.approx(statistics.fmean(sampled), rel=0.25), (full, sampled)
    assert statistics.stdev(full) < statistics.stdev(sampled), (full, sampled)
