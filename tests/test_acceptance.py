"""The publish gate: fresh answers of the new and the live policy, on the same random numbers,
scored by the same reward; the trainer publishes the round only when the new one does no worse."""

import random

import pytest

from rlhf_app.acceptance import compare_with_live
from rlhf_app.models import load_model
from rlhf_app.runtime import Runtime
from rlhf_app.sampling import SamplingParams

from test_trainer import rate_some, settings

PROMPTS = ["tell me about the cat", "hello you", "I like the sun", "a story about rain"]
PARAMS = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=8, seed=3)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def words(prompts, texts):
    return [float(len(t.split())) for t in texts]


def fewer_words(prompts, texts):
    return [-w for w in words(prompts, texts)]


def test_same_draws_for_both_policies_and_the_sign_follows_the_reward(tiny_model_dir, sharp_model_dir, tmp_path):
    flat = load_model(str(tiny_model_dir), tmp_path / "a", device="cpu")
    sharp = load_model(str(sharp_model_dir), tmp_path / "b", device="cpu")
    tok = flat.tokenizer

    def gate(candidate, live, reward):
        return compare_with_live(candidate, live, tok, PROMPTS, reward, PARAMS, 8, random.Random(0))

    same = gate(flat.model, flat.model, words)
    assert same["gate/gain"] == 0.0 and same["gate/candidate"] == same["gate/live"] > 0  # same policy, same draws
    g = gate(sharp.model, flat.model, words)
    assert g["gate/gain"] != 0.0, g  # the two policies answer differently
    assert gate(sharp.model, flat.model, fewer_words)["gate/gain"] == pytest.approx(-g["gate/gain"])
    assert gate(flat.model, sharp.model, words)["gate/gain"] == pytest.approx(-g["gate/gain"])
    assert g["gate/candidate"] == pytest.approx(gate(sharp.model, sharp.model, words)["gate/live"])


def test_a_round_the_reward_does_not_rank_lower_is_published_with_the_comparison(sharp_model_dir, tmp_path):
    # learning rate 0: the round's policy is the live one, so the comparison is exactly even
    rt = Runtime.build(settings(sharp_model_dir, tmp_path / "data", "--publish-gate", "true",
                                "--ppo.learning-rate", "0"))
    rate_some(rt, 20)
    row = rt.trainer.run_round()
    assert row["status"] == "published", row["reason"]
    assert row["metrics"]["gate/gain"] == 0.0 and "gate/live" in row["metrics"]
    assert rt.holder.version == 1


def test_a_round_the_reward_ranks_below_the_live_version_is_discarded(sharp_model_dir, tmp_path):
    rt = Runtime.build(settings(sharp_model_dir, tmp_path / "data", "--publish-gate", "true"))
    rate_some(rt, 20)
    calls = []

    def prefers_the_last_batch(prompts, texts):
        # The 2 PPO steps' batches, then the gate's: the new policy's answers, then the live one's.
        calls.append(len(texts))
        return [float(len(calls) == 4)] * len(texts)

    rt.trainer.reward_override = prefers_the_last_batch
    row = rt.trainer.run_round()
    assert len(calls) == 4 and calls[2:] == [8, 8]  # publish_gate_answers each
    assert row["status"] == "discarded" and "below the live version's 1.000" in row["reason"], row["reason"]
    assert row["metrics"]["gate/gain"] == -1.0
    assert rt.holder.version == 0 and rt.store.live()["version"] == 0
