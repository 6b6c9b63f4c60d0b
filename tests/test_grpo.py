"""GRPO (TRL's GRPOTrainer behind `GRPORunner.step`) on the tiny chat model.

The favoured behaviour is saying "yes", as in test_ppo_learning.py: the scripted reward is the
fraction of an answer's words that are "yes". The learning test asks that on fresh samples (other
prompts, a fixed sampling seed) the rate at least doubles and rises by more than 0.1, for three
seeds. The other tests pin down what `step` must leave behind on a policy object that lives on
between steps and rounds: only trainable weights changed, no `ref` adapter, no patched forward,
no hook, eval mode, the process's random state untouched; and the KL it reports is the mean
per-answer KL to the base model.

Why the final norm's gain is raised to 10 (`sharpen`): the random tiny model's logits are h . E
with h = RMSNorm(...) (norm ~ sqrt(32) at gain 1) and embeddings of std 0.02, so no hidden state
can push a logit beyond about +-0.6 and "yes" can never get much more than 4% of the mass. With
gain 10 the model has a real LM's room to move; see test_ppo_learning.py.
"""

from __future__ import annotations

import math
import random
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from rlhf_app.config import GRPOSettings
from rlhf_app.grpo import MEASURE_ONLY_BETA, SAMPLES_KEY, GRPORunner, completion_text, prompt_text
from rlhf_app.policy import ServingGate
from rlhf_app.sampling import SamplingParams, chat_input_ids, sample

TRAIN_PROMPTS = ["tell me a story", "hello world", "I like the cat", "is it good ?"]
FRESH_PROMPTS = ["tell me a joke", "I love the sun", "what is blue", "hello you"]
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MAX_NEW_TOKENS = 8
METRIC_KEYS = {
    "reward/mean",
    "reward/std",
    "kl/ref",
    "kl/per_token",
    "kl/coef",
    "grpo/loss",
    "grpo/entropy",
    "grpo/grad_norm",
    "grpo/clip_ratio",
    "grpo/frac_reward_zero_std",
    "answer/length",
    "answer/eos_rate",
    "time/step_s",
    "time/waited_s",
}


@pytest.fixture(autouse=True)
def quiet_renames(one_torch_thread):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' renames, seen from Trainer
        yield


def yes_fraction(text: str) -> float:
    words = text.split()
    return sum(w == "yes" for w in words) / len(words) if words else 0.0


def yes_reward(prompts: list[str], completions: list[str]) -> list[float]:
    assert len(prompts) == len(completions)
    assert all(isinstance(p, str) and p in TRAIN_PROMPTS for p in prompts)  # the user's text, not a chat
    return [yes_fraction(c) for c in completions]


def settings(**kw) -> GRPOSettings:
    base = dict(batch_prompts=len(TRAIN_PROMPTS), num_generations=16, max_new_tokens=MAX_NEW_TOKENS,
                learning_rate=1e-2, beta=0.02)
    return GRPOSettings(**{**base, **kw})


def sharpen(model: torch.nn.Module) -> None:
    with torch.no_grad():
        model.model.norm.weight.fill_(10.0)


def lora_policy(loaded, seed: int = 0) -> torch.nn.Module:
    sharpen(loaded.model)
    torch.manual_seed(seed)  # LoRA's A matrices are drawn from the global generator
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    return get_peft_model(loaded.model, lora)


def yes_rate(model: torch.nn.Module, tokenizer, seed: int = 1234, per_prompt: int = 12) -> float:
    """Share of "yes" among the answer tokens of fresh samples (other prompts, fixed seed)."""
    queries = [chat_input_ids(tokenizer, p) for p in FRESH_PROMPTS for _ in range(per_prompt)]
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=MAX_NEW_TOKENS)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.stack(list(sample(model, queries, params, eos, pad, generator=gen)), dim=1)  # (B, T)
    words = (tokens != eos) & (tokens != pad)
    yes = tokens == tokenizer.convert_tokens_to_ids("yes")
    return (yes & words).sum().item() / max(words.sum().item(), 1)


def check_metrics(m: dict) -> None:
    assert METRIC_KEYS <= m.keys(), METRIC_KEYS - m.keys()
    numbers = {k: v for k, v in m.items() if k != SAMPLES_KEY}
    assert all(isinstance(v, float) and math.isfinite(v) for v in numbers.values()), numbers
    samples = m[SAMPLES_KEY]
    n = len(samples["completions"])
    assert n and len(samples["prompts"]) == n == len(samples["scores"])


def check_left_clean(policy: torch.nn.Module) -> None:
    """What a step must not leave on a policy that lives on (see grpo.py's module docstring)."""
    assert not policy.training
    assert "ref" not in policy.peft_config
    assert "forward" not in policy.get_base_model().__dict__  # TRL's fused-head patch undone
    assert not policy.get_input_embeddings()._forward_pre_hooks  # the serving hook removed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grpo_learns_to_say_yes(tiny, seed):
    policy = lora_policy(tiny, seed)
    runner = GRPORunner(policy, tiny.tokenizer, settings(), seed=seed)
    before = yes_rate(policy, tiny.tokenizer)
    rewards = []
    for _ in range(8):
        m = runner.step(TRAIN_PROMPTS, yes_reward)
        check_metrics(m)
        rewards.append(round(m["reward/mean"], 2))
    after = yes_rate(policy, tiny.tokenizer)
    assert after >= 2 * before and after - before > 0.1, (before, after, rewards)
    check_left_clean(policy)


def test_step_trains_the_adapter_only_and_reports_kl_to_the_base(tiny, monkeypatch):
    """Only LoRA weights move; `kl/ref` is the mean over answers of the summed per-token KL to
    the base (adapter off) of the policy that sampled them, recomputed here independently."""
    from trl import GRPOTrainer

    policy = lora_policy(tiny)
    runner = GRPORunner(policy, tiny.tokenizer, settings(beta=0.0), seed=0)
    trainable = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)

    expected: list[float] = []
    compute_loss = GRPOTrainer._compute_loss

    def spy(self, model, inputs):  # before the update: the policy that sampled these answers
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)  # (B, P + T)
        mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
        answer, T = inputs["completion_ids"], inputs["completion_ids"].shape[1]

        def logp(m):  # (B, T)
            with torch.no_grad():
                logits = m(input_ids=ids, attention_mask=mask).logits[:, -T - 1 : -1].float()
            return logits.log_softmax(-1).gather(-1, answer[..., None])[..., 0]

        pi = logp(policy)
        with policy.disable_adapter():
            ref = logp(policy)
        k3 = (torch.exp(ref - pi) - (ref - pi) - 1) * inputs["completion_mask"]
        expected.append(k3.sum(-1).mean().item())
        return compute_loss(self, model, inputs)

    monkeypatch.setattr(GRPOTrainer, "_compute_loss", spy)
    metrics = [runner.step(TRAIN_PROMPTS, yes_reward) for _ in range(6)]
    for m in metrics:
        check_metrics(m)
    assert metrics[0]["kl/ref"] == 0.0  # measured before the first update: policy == base
    assert [m["kl/ref"] for m in metrics] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert max(expected) > 0.01  # the policy moved, and the KL was measured with beta = 0
    assert all(m["kl/coef"] == 0.0 for m in metrics) and MEASURE_ONLY_BETA < 1e-9

    changed = [n for n, p in policy.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert len(changed) >= len(trainable) // 2, changed
    assert all(torch.equal(p, frozen[n]) for n, p in policy.named_parameters() if not p.requires_grad)
    assert all(s["step"] == 6 for s in runner.optimizer.state.values())  # Adam's state carried over
    check_left_clean(policy)


def test_consecutive_runners_on_one_policy(tiny):
    """A later round wraps the same PeftModel again, even after other code left a `ref` adapter."""
    policy = lora_policy(tiny)
    first = GRPORunner(policy, tiny.tokenizer, settings(), seed=0)
    check_metrics(first.step(TRAIN_PROMPTS[:2], yes_reward))
    policy.add_adapter("ref", policy.peft_config["default"])  # what TRL itself leaves behind
    second = GRPORunner(policy, tiny.tokenizer, settings(), seed=1)
    for _ in range(2):
        check_metrics(second.step(TRAIN_PROMPTS[:2], yes_reward))
    check_left_clean(policy)


def test_step_leaves_the_process_random_state_alone(tiny):
    """TRL seeds the whole process; serving and the app must not notice."""
    policy = lora_policy(tiny)
    runner = GRPORunner(policy, tiny.tokenizer, settings(), seed=0)
    torch.manual_seed(123), random.seed(5), np.random.seed(7)
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    a = runner.step(TRAIN_PROMPTS[:2], yes_reward)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert random.getstate() == states[1] and np.array_equal(np.random.get_state()[1], states[2])
    b = runner.step(TRAIN_PROMPTS[:2], yes_reward)  # the step counter varies the seed
    assert a[SAMPLES_KEY]["completions"] != b[SAMPLES_KEY]["completions"]


def test_step_waits_for_serving_and_reports_progress(tiny):
    """No forward pass of the policy while an answer is being served; progress phases in order."""
    trainer_waits = threading.Event()

    class SignallingGate(ServingGate):
        def wait_until_idle(self, timeout=None):
            trainer_waits.set()
            return super().wait_until_idle(timeout)

    gate = SignallingGate()
    policy = lora_policy(tiny)
    runner = GRPORunner(policy, tiny.tokenizer, settings(), gate=gate, seed=0)
    busy_forwards = []
    probe = policy.get_input_embeddings().register_forward_hook(lambda *a: busy_forwards.append(gate.busy))
    started = threading.Event()

    def serve(seconds: float) -> None:
        with gate.serving():
            started.set()
            # measured from when the step first yields, however slow its set-up on a busy machine
            trainer_waits.wait(timeout=60)
            time.sleep(seconds)

    server = threading.Thread(target=serve, args=(0.5,))
    server.start()
    started.wait()
    phases: list[str] = []
    try:
        m = runner.step(TRAIN_PROMPTS[:2], yes_reward, on_progress=phases.append)
    finally:
        server.join()
        probe.remove()
    check_metrics(m)
    assert busy_forwards and not any(busy_forwards)
    assert m["time/waited_s"] >= 0.3 and m["time/step_s"] >= m["time/waited_s"]
    assert phases == ["sampling", "scoring", "update"]
    check_left_clean(policy)


def test_a_failing_reward_leaves_the_policy_clean(tiny):
    policy = lora_policy(tiny)
    runner = GRPORunner(policy, tiny.tokenizer, settings(), gate=ServingGate(), seed=0)
    with pytest.raises(ValueError, match="scores for"):
        runner.step(TRAIN_PROMPTS[:2], lambda ps, cs: [0.0])
    check_left_clean(policy)
    check_metrics(runner.step(TRAIN_PROMPTS[:2], yes_reward))  # and the runner still works


def test_full_fine_tuning_against_a_frozen_copy(tiny):
    """lora_r = 0: every weight trains; the reference is a frozen copy, not a reload from disk."""
    sharpen(tiny.model)
    policy = tiny.model
    policy.config._name_or_path = "/nonexistent"  # TRL would reload its reference from here
    runner = GRPORunner(policy, tiny.tokenizer, settings(learning_rate=1e-3), gate=ServingGate(), seed=0)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    ref = {n: p.detach().clone() for n, p in runner.ref_model.named_parameters()}
    metrics = [runner.step(TRAIN_PROMPTS, yes_reward) for _ in range(3)]
    for m in metrics:
        check_metrics(m)
    assert metrics[0]["kl/ref"] == pytest.approx(0.0, abs=1e-6)
    assert metrics[-1]["kl/ref"] > 0
    assert any(not torch.equal(p, before[n]) for n, p in policy.named_parameters())
    assert all(torch.equal(p, ref[n]) for n, p in runner.ref_model.named_parameters())
    for model in (policy, runner.ref_model):
        assert "forward" not in model.__dict__ and not model.get_input_embeddings()._forward_pre_hooks
    assert not policy.training


def test_settings_and_models_it_refuses(tiny):
    with pytest.raises(ValueError, match="num_generations"):
        GRPORunner(lora_policy(tiny), tiny.tokenizer, settings(num_generations=1))
    tiny.tokenizer.pad_token = tiny.tokenizer.eos_token
    with pytest.raises(ValueError, match="pad token"):
        GRPORunner(tiny.model, tiny.tokenizer, settings())


def test_prompt_and_completion_text_from_either_format():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]
    assert prompt_text(chat) == "hello world"
    assert prompt_text("hello world") == "hello world"
    assert prompt_text([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]) == "hi"
    assert completion_text([{"role": "assistant", "content": "yes yes"}]) == "yes yes"
    assert completion_text("yes") == "yes"
