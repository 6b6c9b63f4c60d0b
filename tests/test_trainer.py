"""The live trainer on a tiny model: ratings in, reward model fitted, a round published and served,
restart resumes on it, rollback works, bad rounds are discarded, the background thread runs rounds."""

import json
import math
import random
import time

import pytest
import torch

from rlhf_app.config import load_settings
from rlhf_app.demonstrations import liked_answers
from rlhf_app.errors import UserError
from rlhf_app.raters import get_rater
from rlhf_app.runtime import Runtime
from rlhf_app.versions import version_dir

PROMPTS = ["tell me about the cat", "hello you", "I like the sun", "a story about rain"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def settings(model_dir, data_dir, *extra):
    return load_settings(
        ["--model", str(model_dir), "--data-dir", str(data_dir), "--device", "cpu", "--temperature", "1.0",
         "--ppo.steps-per-round", "2", "--ppo.batch-prompts", "2", "--ppo.max-new-tokens", "8",
         "--grpo.steps-per-round", "2", "--grpo.max-new-tokens", "8",
         "--train-every-ratings", "6", "--reward.epochs", "2", "--reward.learning-rate", "1e-3", *extra],
        env={},
    )


def rate_some(rt: Runtime, n: int, seed: int = 0) -> None:
    """Answers rated by a scripted rater through the same calls the page makes."""
    rater = get_rater("likes_enthusiasm")
    rng = random.Random(seed)
    for i in range(n):
        ans = rt.answerer.answer(rng.choice(PROMPTS), max_new_tokens=8, seed=seed * 100 + i)
        rt.store.rate(ans.generation_ids[0], "tester", "score", rater.score(ans.texts[0], "", rng))


@pytest.fixture
def rt(sharp_model_dir, tmp_path):
    return Runtime.build(settings(sharp_model_dir, tmp_path / "data"))


def test_round_fits_reward_model_publishes_and_serves_new_version(rt):
    rate_some(rt, 20)
    assert rt.trainer.due()
    row = rt.trainer.run_round()
    assert row["status"] == "published", row["reason"]
    assert row["policy_version"] == 1 and rt.holder.version == 1
    assert rt.store.live()["version"] == 1
    v = rt.store.policy_version(1)
    assert v["parent"] == 0 and v["reward_model_version"] == 1 and v["algorithm"] == "ppo"
    assert v["settings"]["ppo"]["steps_per_round"] == 2  # the settings that made it, saved with it
    meta = json.loads((version_dir(rt.settings.data_dir, 1) / "meta.json").read_text())
    assert meta["seed"] == row["seed"] and meta["parent"] == 0
    assert (version_dir(rt.settings.data_dir, 1) / "adapter_config.json").exists()  # LoRA: a small adapter
    for key in ("reward/mean", "kl/ref", "ppo/clipfrac", "ppo/approx_kl", "reward_model/heldout_accuracy"):
        assert key in row["metrics"]
    # the served weights differ from the base: the swap is real
    base_w = rt.base.model.model.layers[0].self_attn.q_proj.weight
    served_w = rt.holder.current().model.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(base_w, served_w)
    ans = rt.answerer.answer("hello you", max_new_tokens=4)
    assert rt.store.generation(ans.generation_ids[0])["policy_version"] == 1
    # no new ratings: nothing due
    assert not rt.trainer.due() and rt.trainer.ratings_until_next_round() == 6


def test_too_few_ratings_skips_without_a_version(rt):
    rate_some(rt, 1)
    row = rt.trainer.run_round()
    assert row["status"] == "skipped" and "not enough ratings" in row["reason"]
    assert rt.holder.version == 0 and rt.store.stats()["policy_versions"] == 1


def test_restart_resumes_on_latest_version_and_reward_model(rt, sharp_model_dir, tmp_path):
    rate_some(rt, 20)
    assert rt.trainer.run_round()["status"] == "published"
    rate_some(rt, 8, seed=1)
    assert rt.trainer.run_round()["status"] == "published"
    served = rt.holder.current().model
    probe = torch.tensor([[1, 4, 5, 6]])
    with torch.no_grad():
        logits = served(probe).logits

    rt2 = Runtime.build(settings(sharp_model_dir, tmp_path / "data"))
    assert rt2.holder.version == 2
    assert rt2.trainer.reward_model is not None and rt2.trainer.reward_model.version == 2
    with torch.no_grad():
        assert torch.allclose(rt2.holder.current().model(probe).logits, logits, atol=1e-5)
    rate_some(rt2, 6, seed=2)
    row = rt2.trainer.run_round()  # training resumes from v2
    assert row["status"] == "published" and rt2.store.policy_version(3)["parent"] == 2


def test_rollback_makes_an_older_version_live_and_is_recorded(rt):
    rate_some(rt, 20)
    rt.trainer.run_round()
    rt.trainer.set_live(0, actor="admin-test")
    assert rt.holder.version == 0 and rt.store.live()["version"] == 0
    event = rt.store.live_events()[-1]
    assert event["version"] == 0 and event["actor"] == "admin-test"
    with pytest.raises(UserError):
        rt.trainer.set_live(42, actor="admin-test")
    assert rt.holder.version == 0
    # the next round trains from the live version (0), not from the rolled-back v1
    rate_some(rt, 6, seed=3)
    row = rt.trainer.run_round()
    assert row["status"] == "published" and rt.store.policy_version(row["policy_version"])["parent"] == 0


def test_nan_round_is_discarded_and_served_policy_stays(rt):
    rate_some(rt, 20)
    assert rt.trainer.run_round()["status"] == "published"
    rm = rt.trainer.reward_model
    rm.norm_mean = math.nan  # a diverged reward model: every normalized score is NaN
    rt.trainer.request_round()
    row = rt.trainer.run_round()
    assert row["status"] == "discarded" and "non-finite" in row["reason"]
    assert rt.holder.version == 1 and rt.store.live()["version"] == 1
    assert rt.store.stats()["policy_versions"] == 2


def test_round_past_the_kl_bound_is_pulled_back_onto_it(sharp_model_dir, tmp_path):
    # The budget check runs before each step on the KL the last step measured, so the round's last
    # update carries the policy past max_kl; measured after it, the policy is shrunk towards the
    # initial one until it is within the bound, and published.
    rt = Runtime.build(settings(sharp_model_dir, tmp_path / "data", "--max-kl", "0.05", "--ppo.learning-rate", "1e-2"))
    rate_some(rt, 20)
    row = rt.trainer.run_round()
    assert row["status"] == "published", row["reason"]
    m = row["metrics"]
    assert m["kl/ref_before_pull_back"] > 0.05 >= m["kl/ref"] > 0
    assert 0 < m["kl/pull_back"] < 1
    assert row["reason"].startswith("pulled back from") and "KL budget 0.05" in row["reason"], row["reason"]
    assert rt.holder.version == 1 and rt.trainer._policy_kl == m["kl/ref"]

    # The KL recorded with the version is the served policy's: measured again on the same answers.
    from rlhf_app.kl_bound import answers_kl

    opt = rt.trainer._optimizer
    served = rt.holder.current().model
    kl = answers_kl(served, rt.base.model, opt.last_rollout, opt.config.temperature, 4)
    assert kl == pytest.approx(m["kl/ref"], rel=1e-3)


def test_round_over_the_kl_bound_is_discarded_without_pull_back(sharp_model_dir, tmp_path):
    rt = Runtime.build(settings(sharp_model_dir, tmp_path / "data", "--max-kl", "1e-6", "--kl-pull-back", "0",
                                "--ppo.learning-rate", "1e-2"))
    rate_some(rt, 20)
    row = rt.trainer.run_round()
    assert row["status"] == "discarded" and "over the bound" in row["reason"], row["reason"]
    assert "raise max_kl" in row["reason"], row["reason"]
    assert row["metrics"]["kl/pull_back"] == 1.0 and "kl/ref_before_pull_back" not in row["metrics"]
    assert rt.holder.version == 0


def test_rounds_stop_at_the_kl_budget_the_ratings_allow(sharp_model_dir, tmp_path):
    # 20 ratings of a 1000-rating ramp allow 8 * 20 / 1000 = 0.16 nats; a fast learner passes that
    # within a few steps; the round stops stepping there and its policy, one update past, is pulled
    # back within the budget and published.
    fast = ["--ppo.learning-rate", "5e-3", "--ppo.steps-per-round", "6"]
    rt = Runtime.build(settings(sharp_model_dir, tmp_path / "data", *fast, "--kl-ramp-ratings", "1000"))
    rate_some(rt, 20)
    row = rt.trainer.run_round()
    assert row["status"] == "published", row["reason"]
    m = row["metrics"]
    assert m["kl/budget"] == pytest.approx(0.16)
    assert 1 < m["round/steps"] < 6 and m["kl/ref_last_step"] >= 0.16
    assert m["kl/ref_before_pull_back"] > 0.16 >= m["kl/ref"]

    # Without the pull-back, a round ending past the ramp's bound is discarded, though under max_kl.
    rt1 = Runtime.build(settings(sharp_model_dir, tmp_path / "nopull", *fast, "--kl-ramp-ratings", "1000",
                                 "--kl-pull-back", "0"))
    rate_some(rt1, 20)
    row = rt1.trainer.run_round()
    assert row["status"] == "discarded" and "over the bound 0.16" in row["reason"], row["reason"]
    assert "grows to max_kl 8 at 1000 ratings" in row["reason"] and rt1.holder.version == 0

    # After a restart the policy's KL comes from its stored metrics: with a budget below it the
    # next round takes no step, says why, and the served version stays.
    rt2 = Runtime.build(settings(sharp_model_dir, tmp_path / "data", *fast, "--kl-ramp-ratings", "100000"))
    rate_some(rt2, 6, seed=1)
    row = rt2.trainer.run_round()
    assert row["status"] == "skipped" and "KL budget spent" in row["reason"], row["reason"]
    assert "100000 ratings" in row["reason"]
    assert rt2.holder.version == 1 and rt2.store.stats()["policy_versions"] == 2
    assert row["metrics"]["round/steps"] == 0 and row["reward_model_version"] == 2

    # Without a ramp the budget is max_kl: lowered below the live policy's KL, rounds wait too.
    rt3 = Runtime.build(settings(sharp_model_dir, tmp_path / "data", *fast, "--max-kl", "0.01"))
    rate_some(rt3, 6, seed=2)
    row = rt3.trainer.run_round()
    assert row["status"] == "skipped" and "max_kl is 0.01; if rounds keep stopping" in row["reason"], row["reason"]


def test_policy_average_serves_the_average_and_trains_on_from_its_own_weights(sharp_model_dir, tmp_path):
    from safetensors.torch import load_file

    from rlhf_app.kl_bound import answers_kl

    rt = Runtime.build(settings(sharp_model_dir, tmp_path / "data", "--policy-average", "0.5",
                                "--ppo.learning-rate", "1e-2"))
    trained, average = [], []
    for r in range(2):
        rate_some(rt, 20 if r == 0 else 6, seed=r)
        row = rt.trainer.run_round()
        assert row["status"] == "published", row["reason"]
        lora = {n: p.detach().clone() for n, p in rt.trainer._trainable.named_parameters() if p.requires_grad}
        trained.append(lora)
        saved = load_file(str(version_dir(rt.settings.data_dir, row["policy_version"]) / "adapter_model.safetensors"))
        average.append({n: saved[n.replace(".default", "")] for n in lora})
    first_b = next(n for n in trained[0] if "lora_B" in n)
    # v1 = half of the fresh adapter (B = 0) and half of round 1's weights; v2 = half v1, half round 2's
    assert torch.allclose(average[0][first_b], 0.5 * trained[0][first_b], atol=1e-6)
    for n in trained[1]:
        assert torch.allclose(average[1][n], 0.5 * average[0][n] + 0.5 * trained[1][n], atol=1e-6)
    assert not torch.allclose(average[1][first_b], trained[1][first_b])  # the optimizer kept its own weights

    # The version's KL is the served average's, measured on the last step's answers; the trained
    # policy's is recorded beside it and bounds the next round.
    m = row["metrics"]
    assert m["average/decay"] == 0.5 and m["kl/ref_trained"] == rt.trainer._policy_kl
    opt = rt.trainer._optimizer
    kl = answers_kl(rt.holder.current().model, rt.base.model, opt.last_rollout, opt.config.temperature, 4)
    assert kl == pytest.approx(m["kl/ref"], rel=1e-3)
    assert m["kl/ref"] != m["kl/ref_trained"]


def test_policy_average_must_be_below_one(sharp_model_dir, tmp_path):
    with pytest.raises(ValueError, match="policy_average"):
        settings(sharp_model_dir, tmp_path / "data", "--policy-average", "1")


def test_ppo_round_imitates_the_liked_answers_the_store_holds(sharp_model_dir, tmp_path):
    rt = Runtime.build(settings(sharp_model_dir, tmp_path / "data", "--ppo.imitation-coef", "1"))
    rate_some(rt, 20)
    for gid in (1, 2, 3):  # whatever likes_enthusiasm thought of them, a second person loves them
        rt.store.rate(gid, "fan", "score", 5)
    liked = liked_answers(rt.store)
    assert len(liked) >= 3
    row = rt.trainer.run_round()
    assert row["status"] == "published", row["reason"]
    assert row["metrics"]["ppo/imitation_answers"] == len(liked)
    assert math.isfinite(row["metrics"]["ppo/imitation_loss"])
    assert rt.store.policy_version(1)["settings"]["ppo"]["imitation_coef"] == 1.0


def test_grpo_round_publishes(sharp_model_dir, tmp_path):
    rt = Runtime.build(settings(sharp_model_dir, tmp_path / "data", "--algorithm", "grpo"))
    rate_some(rt, 20)
    row = rt.trainer.run_round()
    assert row["status"] == "published", row["reason"]
    assert row["algorithm"] == "grpo" and "grpo/loss" in row["metrics"]
    assert rt.holder.version == 1


def test_full_fine_tuning_publishes_full_weights(sharp_model_dir, tmp_path):
    rt = Runtime.build(settings(sharp_model_dir, tmp_path / "data", "--lora-r", "0"))
    rate_some(rt, 20)
    row = rt.trainer.run_round()
    assert row["status"] == "published", row["reason"]
    assert not (version_dir(rt.settings.data_dir, 1) / "adapter_config.json").exists()
    assert rt.holder.version == 1


def test_background_thread_runs_a_round_when_due_and_pause_holds_it(rt):
    rt.trainer.pause()
    rt.trainer.start()
    rate_some(rt, 20)
    time.sleep(2.5)
    assert rt.store.rounds() == []  # paused: due, but no round
    rt.trainer.resume()
    deadline = time.time() + 120
    while time.time() < deadline and rt.holder.version == 0:
        time.sleep(0.5)
    rt.trainer.stop(timeout=60)
    assert rt.holder.version == 1
    assert rt.status()["live_version"] == 1


def test_interrupted_round_is_marked_failed_on_restart(rt, sharp_model_dir, tmp_path):
    rid = rt.store.start_round("ppo", 0, seed=0)  # as if the process died mid-round
    Runtime.build(settings(sharp_model_dir, tmp_path / "data"))
    row = [r for r in rt.store.rounds() if r["id"] == rid][0]
    assert row["status"] == "failed" and "restart" in row["reason"]


def test_stand_alone_trainer_runs_one_round_and_the_app_follows_it(sharp_model_dir, tmp_path, capsys):
    from rlhf_app.train import main as train_main

    data = tmp_path / "data"
    app = Runtime.build(settings(sharp_model_dir, data, "--trainer", "false"))
    rate_some(app, 20)
    code = train_main(["--model", str(sharp_model_dir), "--data-dir", str(data), "--device", "cpu",
                       "--ppo.steps-per-round", "1", "--ppo.batch-prompts", "2", "--ppo.max-new-tokens", "8",
                       "--reward.epochs", "1", "--once"])
    assert code == 0 and "published" in capsys.readouterr().out
    assert app.holder.version == 0
    app.trainer.follow_live()  # what the app's trainer thread does every second
    assert app.holder.version == 1


def test_a_crashing_round_is_recorded_and_the_next_one_works(rt):
    rate_some(rt, 20)
    assert rt.trainer.run_round()["status"] == "published"
    rm = rt.trainer.reward_model

    def broken(*args, **kwargs):
        raise RuntimeError("the reward model broke")

    rm.score_raw = broken  # a crash inside the round, where a real bug would surface
    row = rt.trainer.run_round()
    assert row["status"] == "failed" and "RuntimeError: the reward model broke" in row["reason"]
    assert rt.trainer.status.last_error and rt.holder.version == 1
    del rm.score_raw
    row = rt.trainer.run_round()
    assert row["status"] == "published" and rt.holder.version == 2
