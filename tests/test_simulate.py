"""The simulator end to end on a tiny model: a rater whose preference the tiny policy can learn,
through the app's own paths, and the oracle score of the served policy goes up on fixed seeds.
Then the dashboard's data functions on the store the simulator filled."""

import math
import statistics

import pytest

from rlhf_app import dashboard
from rlhf_app.config import load_settings
from rlhf_app.raters import enthusiasm
from rlhf_app.reward import base_samples_from_store
from rlhf_app.runtime import Runtime
from rlhf_app.simulate import main as simulate_main
from rlhf_app.simulate import oracle_score, oracle_scores, simulate


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(model_dir, data_dir, seed, *extra):
    return Runtime.build(load_settings(
        ["--model", str(model_dir), "--data-dir", str(data_dir), "--device", "cpu", "--temperature", "1.0",
         "--seed", str(seed), "--ppo.steps-per-round", "8", "--ppo.batch-prompts", "4", "--ppo.max-new-tokens", "8",
         "--ppo.learning-rate", "1e-2", "--train-every-ratings", "10", "--reward.epochs", "3",
         "--reward.learning-rate", "1e-3", *extra],
        env={},
    ))


def test_oracle_score_of_served_policy_goes_up(sharp_model_dir, tmp_path):
    """Gain = mean oracle of the last three checkpoints minus version 0's, 30 answers each.

    Measured with the 'features' reward model (seeds 0, 1, 2): +0.177, +0.198, +0.226 with the
    rater's ratings, and -0.032, +0.036, +0.001 (mean 0.00) with noise=1.0, i.e. random ratings.
    So the bar, a mean gain over 0.1 with every seed over 0.05, is out of reach of luck.
    """
    gains = []
    for seed in (0, 1, 2):
        rt = build(sharp_model_dir, tmp_path / f"data{seed}", seed, "--reward.epochs", "6")
        result = simulate(rt, "likes_enthusiasm", mode="score", ratings=80, noise=0.0, seed=seed, eval_samples=6,
                          best_of_n=1, max_new_tokens=8)
        cps = result.checkpoints
        assert cps[0].policy_version == 0 and cps[-1].policy_version >= 6
        assert [c.ratings for c in cps] == sorted(c.ratings for c in cps)
        gains.append(statistics.fmean(c.oracle for c in cps[-3:]) - cps[0].oracle)
        # every rating went through the store, and every version was recorded
        stats = rt.store.stats()
        assert stats["ratings"] == 80 and stats["policy_versions"] == cps[-1].policy_version + 1
    assert statistics.fmean(gains) > 0.1 and min(gains) > 0.05, gains


def test_compare_mode_and_dashboard_data(sharp_model_dir, tmp_path):
    rt = build(sharp_model_dir, tmp_path / "data", 0, "--train-every-ratings", "8", "--ppo.steps-per-round", "2")
    result = simulate(rt, "likes_enthusiasm", mode="compare", ratings=24, noise=0.1, seed=0, eval_samples=1,
                      best_of_n=2, max_new_tokens=8)
    store = rt.store
    assert store.stats()["comparisons"] == 24
    assert result.checkpoints[-1].policy_version >= 1
    # each checkpoint's KL is the served version's own, whatever the last round did
    for cp in result.checkpoints:
        expected = 0.0 if cp.policy_version == 0 else store.policy_version(cp.policy_version)["metrics"]["kl/ref"]
        assert cp.kl_ref == expected

    votes = dashboard.ratings_over_time(store)
    assert [v["votes"] for v in votes] == list(range(1, 25)) and {v["kind"] for v in votes} == {"compare"}

    human = dashboard.human_rating_by_version(store)
    assert sum(h["n"] for h in human) == 48  # each comparison rates two answers
    for h in human:
        assert -1 <= h["low"] <= h["mean"] <= h["high"] <= 1

    rms = dashboard.reward_model_history(store)
    assert rms and all("heldout_accuracy" in r for r in rms)

    rounds = dashboard.round_history(store)
    published = [r for r in rounds if r["status"] == "published"]
    assert published and all(r["kl/ref"] is not None and r["entropy"] is not None for r in published)
    assert all(0 < r["kl/budget"] <= rt.settings.max_kl for r in published)

    versions = dashboard.versions_table(store)
    assert [v["live"] for v in versions].count(True) == 1
    assert versions[-1]["live"] and versions[0]["algorithm"] == "base"

    from rlhf_app.ui_dashboard import dashboard_frames

    votes_f, human_f, rms_f, per_round_f, rounds_f, versions_f = dashboard_frames(rt)
    assert len(votes_f) == 24 and len(versions_f) == len(versions) and len(rounds_f) == len(rounds)
    assert set(per_round_f["metric"]) >= {"reward/mean", "kl/ref", "kl/budget", "entropy"}
    assert list(versions_f["live"]).count("LIVE") == 1

    ba = dashboard.before_after(rt, "hello you", seed=3, max_new_tokens=8)
    assert ba["before"]["version"] == 0 and ba["after"]["version"] == rt.holder.version
    assert isinstance(ba["before"]["reward"], float) and isinstance(ba["after"]["reward"], float)
    assert store.generation(ba["before"]["generation_id"])["source"] == "before_after"


def test_command_line_writes_json(sharp_model_dir, tmp_path, capsys):
    out = tmp_path / "result.json"
    code = simulate_main(["--model", str(sharp_model_dir), "--data-dir", str(tmp_path / "d"), "--device", "cpu",
                          "--rater", "likes_word", "--mode", "thumb", "--ratings", "4", "--eval-samples", "1",
                          "--best-of", "1", "--out", str(out)])
    assert code == 0
    assert '"rater": "likes_word"' in out.read_text()


def test_oracle_reward_scores_the_optimizer_with_the_hidden_oracle(sharp_model_dir, tmp_path):
    rt = build(sharp_model_dir, tmp_path / "data", 0, "--ppo.steps-per-round", "1")
    simulate(rt, "likes_enthusiasm", ratings=20, noise=0.0, seed=0, eval_samples=1, best_of_n=1, max_new_tokens=8,
             oracle_reward=True)
    # on the reward model's scale: the oracle centred and scaled on the base policy's answers
    base = base_samples_from_store(rt.store)
    raw = [enthusiasm(c) for _, c in base]
    mean, std = statistics.fmean(raw), statistics.pstdev(raw)
    assert std > 0
    assert rt.trainer.reward_override(["hi", "hi"], ["Wow! Great!", "ok"]) == [
        pytest.approx((0.8647 - mean) / std, abs=1e-3), pytest.approx(-mean / std, abs=1e-6)]
    assert statistics.fmean(rt.trainer.reward_override([p for p, _ in base], [c for _, c in base])) == pytest.approx(0, abs=1e-6)
    row = rt.store.last_round()
    assert row["status"] == "published" and math.isfinite(row["metrics"]["reward/mean"])
    assert rt.trainer.reward_model is not None  # still fitted: best-of-N and the dashboard use it


def test_the_simulated_person_asks_and_is_measured_on_the_prompt_set(sharp_model_dir, tmp_path):
    """`--prompts` replaces the starter prompts: the store, the ratings and the trainer see only these."""
    mine = ["hello you", "tell me yes", "say something"]
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(mine) + "\n\n")
    rt = build(sharp_model_dir, tmp_path / "data", 0, "--prompts", str(path), "--train-every-ratings", "8",
               "--ppo.steps-per-round", "1")
    result = simulate(rt, "likes_enthusiasm", mode="score", ratings=16, noise=0.0, seed=0, eval_samples=1,
                      best_of_n=1, max_new_tokens=8)
    assert rt.store.prompts() == mine
    asked = [row["text"] for row in rt.store.db.query(
        "SELECT prompts.text FROM generations JOIN prompts ON prompts.id = generations.prompt_id")]
    assert len(asked) >= 16 and set(asked) <= set(mine)
    assert result.checkpoints[-1].policy_version >= 1


def test_a_rater_with_nothing_to_teach_is_pointed_at_other_prompts(sharp_model_dir, tmp_path, caplog):
    rt = build(sharp_model_dir, tmp_path / "data", 0)
    with caplog.at_level("WARNING", logger="rlhf_app.simulate"):
        result = simulate(rt, "dislikes_emoji", ratings=0, eval_samples=1, best_of_n=1, max_new_tokens=8)
    assert result.checkpoints[0].oracle == 1.0  # the tiny model has no emoji to drop
    assert "little is left to learn" in caplog.text and "--prompts" in caplog.text


def test_endpoints_measure_version_0_and_the_last_version_on_more_answers(sharp_model_dir, tmp_path):
    rt = build(sharp_model_dir, tmp_path / "data", 0, "--train-every-ratings", "8", "--ppo.steps-per-round", "1")
    result = simulate(rt, "likes_enthusiasm", ratings=16, noise=0.0, seed=0, eval_samples=1, best_of_n=1,
                      max_new_tokens=8, endpoint_samples=5)
    ends = result.endpoints
    assert ends.samples_per_prompt == 5 and ends.version == result.checkpoints[-1].policy_version >= 1
    # the same answers again: the base model for version 0, the served one for the last, on the endpoint seed
    assert ends.v0 == oracle_score(rt, rt.base.model, enthusiasm, ends.seed, 5, 8)
    assert ends.oracle == oracle_score(rt, rt.holder.current().model, enthusiasm, ends.seed, 5, 8)
    assert result.gain == ends.oracle - ends.v0 == result.to_dict()["gain"]
    assert result.to_dict()["endpoints"]["version"] == ends.version
    v0_each = oracle_scores(rt, rt.base.model, enthusiasm, ends.seed, 5, 8)
    last_each = oracle_scores(rt, rt.holder.current().model, enthusiasm, ends.seed, 5, 8)
    diffs = [b - a for a, b in zip(v0_each, last_each)]
    assert ends.gain_se == pytest.approx(statistics.stdev(diffs) / len(diffs) ** 0.5)

    # no time to rate: version 0 is the last version, measured twice on the same random numbers
    rt = build(sharp_model_dir, tmp_path / "data2", 0)
    result = simulate(rt, "likes_enthusiasm", ratings=16, seed=0, eval_samples=1, best_of_n=1, max_new_tokens=8,
                      wall_budget_s=0.0, endpoint_samples=3)
    assert rt.store.stats()["ratings"] == 0
    assert result.endpoints.version == 0 and result.gain == 0.0
    assert result.endpoints.gain_se == 0.0  # the same answers twice: no sampling error in their difference
