"""The frozen-feature reward model (rlhf_app/reward_features.py): features are cached and batch-
independent, the fit is deterministic and learns a clear preference, L2 is picked from the grid,
and with nothing held out its accuracy is cross-fitted without changing the served head."""

from __future__ import annotations

import math

import pytest
import torch

import dataclasses

from rlhf_app.config import RewardModelConfig
from rlhf_app.preferences import SAME_PROMPT, Pair, PreferenceData
from rlhf_app.reward import RewardModel, fit_and_record
from rlhf_app.reward_features import (
    L1_GRID,
    L2_GRID,
    FeatureRewardModel,
    Featurizer,
    cross_fitted_metrics,
    fit_head,
    generation_splits,
    pair_splits,
    pick_l2,
)
from rlhf_app.store import Store

from test_reward import fill_yes_no_store

CONFIG = RewardModelConfig(method="features", num_layers=0, max_length=64, heldout_fraction=0.3)


def test_features_are_cached_and_do_not_depend_on_the_batch(tiny_model_dir):
    fz = Featurizer(str(tiny_model_dir), num_layers=0, max_length=64, device="cpu")
    prompts = ["hi", "tell me about the sun", "hello"]
    answers = ["yes", "the sun is a very big star " * 4, ""]
    calls = []
    compute = fz._compute
    fz._compute = lambda keys, bs: calls.append(len(keys)) or compute(keys, bs)
    together = fz.features(prompts, answers, batch_size=3)
    assert together.shape == (3, fz.dim) and calls == [3]
    one_by_one = torch.cat([fz.features([p], [a]) for p, a in zip(prompts, answers)])
    assert calls == [3]  # every row came from the cache
    fresh = Featurizer(str(tiny_model_dir), num_layers=0, max_length=64, device="cpu")
    singles = torch.cat([fresh.features([p], [a], batch_size=1) for p, a in zip(prompts, answers)])
    assert torch.allclose(together, singles, atol=1e-5) and torch.equal(together, one_by_one)
    assert together[2, -1] == 0.0 and together[1, -1] > together[0, -1]  # log1p(answer tokens)


def test_fit_is_deterministic_and_learns_a_clear_preference(tiny_model_dir, tmp_path):
    fits = []
    for run in range(2):
        store = Store(tmp_path / f"run{run}" / "rlhf.db")
        fill_yes_no_store(store, n_prompts=40, seed=3)
        rm = fit_and_record(store, str(tiny_model_dir), CONFIG, seed=0, data_dir=tmp_path / f"run{run}")
        assert isinstance(rm, FeatureRewardModel)
        fits.append(rm)
    a, b = fits
    assert torch.equal(a.weight, b.weight) and a.metrics["head_l2"] == b.metrics["head_l2"] in L2_GRID
    assert a.metrics["heldout_accuracy"] >= 0.75, a.metrics
    assert a.score(["tell me"], ["it is yes"])[0] > a.score(["tell me"], ["it is no"])[0]
    loaded = RewardModel.load(tmp_path / "run0" / "reward_models" / "v1", device="cpu")
    assert isinstance(loaded, FeatureRewardModel) and loaded.featurizer is a.featurizer  # one per process
    assert loaded.score(["hi"], ["yes"]) == pytest.approx(a.score(["hi"], ["yes"]), abs=1e-6)


def test_a_head_on_some_blocks_reads_only_them_and_is_saved_with_them(tiny_model_dir, tmp_path):
    store = Store(tmp_path / "rlhf.db")
    fill_yes_no_store(store, n_prompts=40, seed=3)
    config = dataclasses.replace(CONFIG, feature_blocks="len,bag")  # named in any order
    rm = fit_and_record(store, str(tiny_model_dir), config, seed=0, data_dir=tmp_path)
    h = rm.featurizer.backbone.config.hidden_size
    assert rm.blocks == ("bag", "len") and rm.weight.shape == (h + 1,)
    assert torch.equal(rm.columns, torch.arange(2 * h, 3 * h + 1))  # the row's order: bag, then len
    assert rm.metrics["heldout_accuracy"] >= 0.75, rm.metrics  # "yes" and "no" are different words
    loaded = RewardModel.load(tmp_path / "reward_models" / "v1", device="cpu")
    assert loaded.blocks == rm.blocks and torch.equal(loaded.columns, rm.columns)
    assert loaded.score(["hi"], ["yes"]) == pytest.approx(rm.score(["hi"], ["yes"]), abs=1e-6)
    for bad in ("bag,bag", "bag,words", ""):
        with pytest.raises(ValueError, match="feature_blocks"):
            RewardModelConfig(feature_blocks=bad)


def test_pessimism_takes_the_heads_disagreement_off_the_reward(tiny_model_dir, tmp_path):
    store = Store(tmp_path / "rlhf.db")
    fill_yes_no_store(store, n_prompts=40, seed=3)
    plain = fit_and_record(store, str(tiny_model_dir), CONFIG, seed=0, data_dir=tmp_path / "plain")
    config = dataclasses.replace(CONFIG, pessimism=2.0, bootstrap_heads=4)
    rm = fit_and_record(store, str(tiny_model_dir), config, seed=0, data_dir=tmp_path / "pessimist")
    assert torch.equal(rm.weight, plain.weight) and rm.bootstrap.shape == (rm.weight.shape[0], 4)
    prompts, answers = ["tell me", "hi", "tell me"], ["it is yes", "no", "a long answer that no one rated " * 3]
    z = (rm.featurizer.head_features(prompts, answers, rm.columns, rm.vocabulary) - rm.mean) / rm.std
    spread = (z @ rm.bootstrap).std(dim=1)
    assert bool((spread > 0).all())  # the resampled heads differ
    expected = z @ rm.weight - 2.0 * spread
    assert rm.score_raw(prompts, answers) == pytest.approx(expected.tolist(), abs=1e-5)
    assert rm.metrics["heldout_accuracy"] >= 0.75, rm.metrics  # the preference survives the penalty
    loaded = RewardModel.load(rm.path, device="cpu")
    assert loaded.pessimism == 2.0 and loaded.score(prompts, answers) == pytest.approx(rm.score(prompts, answers), abs=1e-6)
    with pytest.raises(ValueError, match="pessimism"):
        RewardModelConfig(pessimism=1.0, bootstrap_heads=1)


def test_the_token_vocabulary_is_the_tokens_several_rated_answers_use(tiny_model_dir):
    fz = Featurizer(str(tiny_model_dir), num_layers=0, max_length=64, device="cpu")
    answers = ["yes yes the", "yes the sun", "yes no", "the no", "the sun", "yes no"]  # the repeat counts once
    vocab = fz.token_vocabulary(answers)
    [yes], [the], [sun], [no] = fz.answer_tokens(["yes", "the", "sun", "no"])
    assert vocab.tolist() == [the, yes]  # in 4 and 3 distinct answers; "no" and "sun" in only 2
    counts = fz.token_counts(["yes yes the", "sun"], vocab)
    col = {t: j for j, t in enumerate(vocab.tolist())}
    assert counts[0, col[yes]] == pytest.approx(math.log(3)) and counts[0, col[the]] == pytest.approx(math.log(2))
    assert counts[1].abs().sum() == 0  # no vocabulary token
    empty = fz.token_vocabulary(["a", "b"])
    assert empty.numel() == 0 and fz.head_features(["p"], ["yes"], vocabulary=empty).shape == (1, fz.dim)
    calls = []
    compute = fz._compute
    fz._compute = lambda keys, bs: calls.append(len(keys)) or compute(keys, bs)
    words_only = fz.head_features(["p"], ["yes yes the"], torch.zeros(0, dtype=torch.long), vocab)
    assert torch.equal(words_only, counts[:1]) and calls == []  # no dense block: the backbone never ran


def test_a_head_on_token_counts_learns_a_word_and_keeps_its_vocabulary(tiny_model_dir, tmp_path):
    store = Store(tmp_path / "rlhf.db")
    fill_yes_no_store(store, n_prompts=40, seed=3)
    rm = fit_and_record(store, str(tiny_model_dir), dataclasses.replace(CONFIG, feature_blocks="tokens"), seed=0,
                        data_dir=tmp_path)
    [yes], [no] = rm.featurizer.answer_tokens(["yes", "no"])
    assert rm.blocks == ("tokens",) and {yes, no} <= set(rm.vocabulary.tolist())
    assert rm.weight.shape == (len(rm.vocabulary),) and rm.metrics["vocabulary"] == len(rm.vocabulary)
    col = {t: j for j, t in enumerate(rm.vocabulary.tolist())}
    assert rm.weight[col[yes]] > 0 > rm.weight[col[no]]
    assert rm.metrics["heldout_accuracy"] >= 0.75, rm.metrics
    loaded = RewardModel.load(tmp_path / "reward_models" / "v1", device="cpu")
    assert torch.equal(loaded.vocabulary, rm.vocabulary)
    assert loaded.score(["hi"], ["it is yes"]) == pytest.approx(rm.score(["hi"], ["it is yes"]), abs=1e-6)


def test_a_score_regression_trains_on_every_rated_answer_and_cross_fits_its_accuracy(tiny_model_dir, tmp_path):
    store = Store(tmp_path / "rlhf.db")
    fill_yes_no_store(store, n_prompts=40, seed=3)
    config = dataclasses.replace(CONFIG, pointwise="regression", feature_blocks="bag,len,tokens", heldout_fraction=0)
    rm = fit_and_record(store, str(tiny_model_dir), config, seed=0, data_dir=tmp_path)
    rated = store.query("SELECT COUNT(DISTINCT generation_id) AS n FROM ratings")[0]["n"]
    assert rm.metrics["pointwise"] == "regression" and rm.metrics["n_regression_items"] == rated > 0
    assert rm.metrics["head_l1"] in L1_GRID and 0 < rm.metrics["words_used"] <= len(rm.vocabulary)
    assert rm.metrics["heldout_accuracy"] >= 0.75, rm.metrics  # cross-fitted: nothing was held out
    assert rm.score(["tell me"], ["it is yes"])[0] > rm.score(["tell me"], ["it is no"])[0]
    with pytest.raises(ValueError, match="pointwise"):
        RewardModelConfig(pointwise="scores")


def test_fit_head_follows_the_margin_and_l2_shrinks_it():
    diff = torch.tensor([[1.0, 0.0], [1.0, 0.5], [1.0, -0.5]])
    weak, strong = fit_head(diff, torch.zeros(3), l2=0.01), fit_head(diff, torch.zeros(3), l2=10.0)
    assert weak[0] > strong[0] > 0
    wide = fit_head(diff, torch.full((3,), 2.0), l2=0.01)  # a margin asks for a larger gap
    assert wide[0] > weak[0]


def pairs_among(n_items: int) -> list[Pair]:
    """Every pair of n rated answers to one prompt, as ratings by score make them."""
    return [Pair("p", "a", "b", 0.0, SAME_PROMPT, i, j, "p") for i in range(n_items) for j in range(i + 1, n_items)]


def test_pick_l2_prefers_weak_l2_on_clean_data_and_strong_on_noise():
    g = torch.Generator().manual_seed(0)
    pairs = [Pair("p", "a", "b", 0.0, SAME_PROMPT, 2 * i, 2 * i + 1, "p") for i in range(200)]
    folds = generation_splits(pairs)
    x = torch.randn(200, 20, generator=g)
    clean = torch.where(x[:, :1] > 0, x, -x)  # feature 0 always favours the chosen answer
    noise = torch.randn(200, 20, generator=g)  # nothing to learn
    m = torch.zeros(200)
    assert pick_l2(clean, m, list(L2_GRID), folds) < pick_l2(noise, m, list(L2_GRID), folds)
    by_pairs = pair_splits(200, seed=0)
    assert pick_l2(clean, m, list(L2_GRID), by_pairs) < pick_l2(noise, m, list(L2_GRID), by_pairs)
    few = generation_splits(pairs[:1])  # one pair: no fold leaves anything to train on
    assert few == [] and pair_splits(7, seed=0) == []
    assert pick_l2(clean[:1], m[:1], list(L2_GRID), few) == sorted(L2_GRID)[len(L2_GRID) // 2]


def test_folds_of_generations_do_not_reward_memorizing_answers():
    # 20 answers with random features and random utilities: nothing generalizes, but every answer is
    # in 19 pairs, so a random split of pairs shows the test pairs' answers in training.
    g = torch.Generator().manual_seed(0)
    answers, utility = torch.randn(20, 30, generator=g), torch.randn(20, generator=g)
    pairs = [p if utility[p.chosen_id] > utility[p.rejected_id] else
             Pair("p", "a", "b", 0.0, SAME_PROMPT, p.rejected_id, p.chosen_id, "p") for p in pairs_among(20)]
    diff = torch.stack([answers[p.chosen_id] - answers[p.rejected_id] for p in pairs])
    m = torch.zeros(len(pairs))
    assert pick_l2(diff, m, list(L2_GRID), pair_splits(len(pairs), seed=0)) == min(L2_GRID)  # fooled
    assert pick_l2(diff, m, list(L2_GRID), generation_splits(pairs)) >= 1.0


def test_with_nothing_held_out_every_pair_trains_and_accuracy_is_cross_fitted(tiny_model_dir, tmp_path):
    fits = {}
    for name, folds in (("cross_fitted", 5), ("unmeasured", 0)):
        store = Store(tmp_path / name / "rlhf.db")
        fill_yes_no_store(store, n_prompts=40, seed=3)
        config = dataclasses.replace(CONFIG, heldout_fraction=0.0, accuracy_folds=folds, l2_folds="generations")
        fits[name] = fit_and_record(store, str(tiny_model_dir), config, seed=0, data_dir=tmp_path / name)
    held = fit_and_record(store, str(tiny_model_dir), CONFIG, seed=0, data_dir=tmp_path / "unmeasured")
    m = fits["cross_fitted"].metrics
    assert m["n_train_pairs"] > held.metrics["n_train_pairs"]  # the held-out pairs train too
    assert m["accuracy_folds"] == 5 and m["n_heldout_pairs"] >= m["n_train_pairs"]  # each pair scored once or twice
    assert m["heldout_accuracy"] >= 0.75 and m["heldout_spearman"] > 0.5, m
    assert m["heldout_accuracy"] <= m["train_accuracy"]
    assert fits["unmeasured"].metrics["heldout_accuracy"] is None
    assert torch.equal(fits["cross_fitted"].weight, fits["unmeasured"].weight)  # measuring leaves the head alone


def test_cross_fitted_accuracy_is_chance_when_there_is_nothing_to_learn():
    g = torch.Generator().manual_seed(0)
    pairs = [Pair("p", "a", "b", 0.0, SAME_PROMPT, 2 * i, 2 * i + 1, "p") for i in range(300)]
    data = PreferenceData(train=pairs, heldout=[], items=[], heldout_items=[])
    x = torch.randn(300, 20, generator=g)
    m0, ones = torch.zeros(300), torch.ones(20)
    noise = cross_fitted_metrics(None, data, x, m0, torch.zeros(20), ones, l2=1.0, folds=5)
    clean = cross_fitted_metrics(None, data, torch.where(x[:, :1] > 0, x, -x), m0, torch.zeros(20), ones,
                                 l2=1.0, folds=5)
    assert 0.4 < noise["heldout_accuracy"] < 0.6 and clean["heldout_accuracy"] > 0.8
    assert 300 < noise["n_heldout_pairs"] < 600  # a pair across two folds is scored by both
    assert noise["heldout_spearman"] is None  # no rated items given
