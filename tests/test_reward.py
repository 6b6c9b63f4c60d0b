"""The reward model (rlhf_app/preferences.py, rlhf_app/reward.py): ratings -> pairs (every rating
kind, ties, both_bad, across prompts), the held-out split, and fitting on the tiny model (learns a
clear preference, round-trips, records)."""

from __future__ import annotations

import json
import random

import pytest

from rlhf_app.config import RewardModelConfig
from rlhf_app.reward import (
    COMPARE,
    CROSS_PROMPT,
    SAME_PROMPT,
    RewardModel,
    build_preference_data,
    encode,
    fit_and_record,
    insufficient_data_reason,
    is_heldout,
    utility,
)
from rlhf_app.store import Store


def gen(store: Store, prompt: str, text: str, version: int = 0) -> int:
    return store.add_generation(prompt=prompt, text=text, model_id="tiny", policy_version=version)


def pairs_of(store: Store, k: int = 4, seed: int = 0, heldout: float = 0.0):
    return build_preference_data(store, heldout, k, seed)


# -- ratings -> pairs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,value,expected",
    [("score", 1, -1.0), ("score", 2, -0.5), ("score", 3, 0.0), ("score", 4, 0.5), ("score", 5, 1.0),
     ("thumb", 1, 1.0), ("thumb", -1, -1.0)],
)
def test_utility_maps_every_rating_to_minus_one_to_one(kind, value, expected):
    assert utility(kind, value) == expected


def test_ab_votes_make_pairs_and_ties_are_skipped(store):
    a, b = gen(store, "tell me a joke", "a cat joke"), gen(store, "tell me a joke", "a dog joke")
    store.compare(a, b, rater="r1", outcome="a")
    store.compare(a, b, rater="r2", outcome="b")
    store.compare(a, b, rater="r3", outcome="tie")
    data = pairs_of(store)
    assert sorted((p.chosen_id, p.rejected_id) for p in data.train) == [(a, b), (b, a)]
    assert {p.source for p in data.train} == {COMPARE}
    assert all(p.margin == 0.0 and p.prompt == p.rejected_prompt == "tell me a joke" for p in data.train)
    assert data.n_ties_skipped == 1
    assert data.items == []  # A/B votes are not pointwise ratings


def test_both_bad_counts_as_a_minus_one_rating_of_each_answer(store):
    a, b, c = (gen(store, "say hello", t) for t in ("bad one", "bad two", "hello world"))
    store.compare(a, b, rater="r1", outcome="both_bad")
    store.rate(c, rater="r1", kind="thumb", value=1)
    data = pairs_of(store)
    assert {it.generation_id: it.utility for it in data.items} == {a: -1.0, b: -1.0, c: 1.0}
    # no pair between the two bad answers (equal utility), each loses to the good one by 2
    assert sorted((p.chosen_id, p.rejected_id, p.margin, p.source) for p in data.train) == [
        (c, a, 2.0, SAME_PROMPT), (c, b, 2.0, SAME_PROMPT)
    ]


def test_same_prompt_pointwise_ratings_are_averaged_then_paired(store):
    a, b, c = (gen(store, "tell me a story", t) for t in ("long story", "short story", "one story"))
    store.rate(a, rater="r1", kind="score", value=5)
    store.rate(a, rater="r2", kind="score", value=3)  # mean utility (1 + 0) / 2
    store.rate(b, rater="r1", kind="thumb", value=-1)
    store.rate(c, rater="r1", kind="score", value=4)  # 0.5: ties a, so no pair a-c
    data = pairs_of(store)
    got = sorted((p.chosen_id, p.rejected_id, p.margin) for p in data.train)
    assert got == [(a, b, 1.5), (c, b, 1.5)]
    assert {p.source for p in data.train} == {SAME_PROMPT}
    assert next(it for it in data.items if it.generation_id == a).n_ratings == 2


def test_lonely_ratings_pair_across_prompts_with_different_utilities(store):
    utilities = {"hello": 1, "the sun": 1, "the rain": -1, "a dog": 4, "a cat": -1, "red": 3}
    ids = {}
    for prompt, u in utilities.items():
        g = gen(store, f"tell me about {prompt}", f"{prompt} answer")
        kind, value = ("thumb", u) if u in (1, -1) else ("score", u)
        store.rate(g, rater="r1", kind=kind, value=value)
        ids[g] = utility(kind, value)
    k = 2
    data = pairs_of(store, k=k, seed=3)
    cross = data.train
    assert cross and {p.source for p in cross} == {CROSS_PROMPT}
    for p in cross:
        assert p.prompt != p.rejected_prompt
        assert ids[p.chosen_id] > ids[p.rejected_id]
        assert p.margin == pytest.approx(ids[p.chosen_id] - ids[p.rejected_id])
    assert len({frozenset((p.chosen_id, p.rejected_id)) for p in cross}) == len(cross)  # no duplicates
    for g, u in ids.items():  # every item got its k partners (all have >= k candidates here)
        assert sum(g in (p.chosen_id, p.rejected_id) for p in cross) >= k
    assert len(cross) <= k * len(ids)
    again = pairs_of(store, k=k, seed=3)
    assert [(p.chosen_id, p.rejected_id) for p in again.train] == [(p.chosen_id, p.rejected_id) for p in cross]
    assert pairs_of(store, k=0).train == []


def test_items_with_a_same_prompt_partner_do_not_look_across_prompts(store):
    a, b = gen(store, "tell me a joke", "good joke"), gen(store, "tell me a joke", "bad joke")
    c = gen(store, "say hello", "hello")
    store.rate(a, rater="r1", kind="thumb", value=1)
    store.rate(b, rater="r1", kind="thumb", value=-1)
    store.rate(c, rater="r1", kind="score", value=3)
    data = pairs_of(store, k=4)
    by_source = sorted((p.source, p.chosen_id, p.rejected_id) for p in data.train)
    # a-b from their prompt; c (alone on its prompt) is paired with both, a and b add no cross pairs
    assert by_source == [(CROSS_PROMPT, a, c), (CROSS_PROMPT, c, b), (SAME_PROMPT, a, b)]


def test_heldout_split_is_stable_as_data_grows(store):
    rng = random.Random(0)

    def add_rated(n):
        for i in range(n):
            g = gen(store, f"tell me about story {rng.random()}", "story")
            store.rate(g, rater="r", kind="score", value=rng.randint(1, 5))

    add_rated(30)
    first = pairs_of(store, heldout=0.3)
    add_rated(30)
    second = pairs_of(store, heldout=0.3)
    held1 = {it.generation_id for it in first.heldout_items}
    held2 = {it.generation_id for it in second.heldout_items}
    train1 = {it.generation_id for it in first.items} - held1
    assert held1 and held1 <= held2 and not (train1 & held2)
    for p in second.train:
        assert p.chosen_id not in held2 and p.rejected_id not in held2
    for p in second.heldout:  # cross partners come from the same split
        assert p.chosen_id in held2 and p.rejected_id in held2
    assert 0.1 < len(held2) / len(second.items) < 0.5
    assert all(is_heldout(g, 0.3) for g in held2)


def test_too_little_data_records_nothing(store, tiny_model_dir, tmp_path):
    a, b = gen(store, "tell me a joke", "one joke"), gen(store, "tell me a joke", "two joke")
    store.compare(a, b, rater="r1", outcome="tie")
    store.rate(a, rater="r1", kind="thumb", value=1)
    reason = insufficient_data_reason(pairs_of(store))
    assert reason and "0 training pair" in reason and "1 tie" in reason
    assert fit_and_record(store, str(tiny_model_dir), RewardModelConfig(), 0, tmp_path) is None
    assert store.reward_models() == []
    assert not (tmp_path / "reward_models").exists()


# -- tokenization --------------------------------------------------------------------------------


def test_encode_is_chat_prompt_then_answer_then_eos_and_truncates_keeping_eos(tiny):
    tok = tiny.tokenizer
    prompt_ids = tok.apply_chat_template(
        [{"role": "user", "content": "tell me a joke"}], add_generation_prompt=True, tokenize=False
    )
    ids = encode(tok, "tell me a joke", "the cat is happy", 64)
    assert tok.decode(ids).replace(" ", "") == (prompt_ids + "the cat is happy<|im_end|>").replace(" ", "")
    assert ids[-1] == tok.eos_token_id != tok.pad_token_id
    short = encode(tok, "tell me a joke " * 10, "the cat is happy " * 10, 16)
    assert len(short) == 16 and short[-1] == tok.eos_token_id
    # half the budget for the answer (its head), the rest for the prompt's tail (the assistant header)
    assert tok.decode(short[-8:-1]).split() == "the cat is happy the cat is".split()
    assert tok.decode(short[:-8]).split()[-2:] == ["<|im_start|>", "assistant"]


# -- fitting -------------------------------------------------------------------------------------

NOUNS = "cat dog sun rain story joke world".split()
ADJS = "good bad great awful happy sad red blue short long".split()
FILLER = "the a is it very I you we like love cat dog sun rain".split()


def answer(rng: random.Random, word: str) -> str:
    words = rng.sample(FILLER, rng.randint(2, 5))
    words.insert(rng.randint(0, len(words)), word)
    return " ".join(words)


def fill_yes_no_store(store: Store, n_prompts: int, seed: int = 0) -> None:
    """Answers containing 'yes' are preferred to answers containing 'no', in every rating kind."""
    rng = random.Random(seed)
    prompts = [f"tell me about the {a} {n}" for a in ADJS for n in NOUNS]
    rng.shuffle(prompts)
    for i, prompt in enumerate(prompts[:n_prompts]):
        y, n = gen(store, prompt, answer(rng, "yes")), gen(store, prompt, answer(rng, "no"))
        kind = i % 4
        if kind == 0:
            store.compare(y, n, rater="r1", outcome="a") if rng.random() < 0.5 else store.compare(n, y, "r1", "b")
        elif kind == 1:
            store.rate(y, rater="r1", kind="thumb", value=1)
            store.rate(n, rater="r1", kind="thumb", value=-1)
        elif kind == 2:
            store.rate(y, rater="r1", kind="score", value=rng.choice([4, 5]))
            store.rate(n, rater="r1", kind="score", value=rng.choice([1, 2]))
        else:  # one answer rated, alone on its prompt: only pairs across prompts can use it
            g = y if rng.random() < 0.5 else n
            store.rate(g, rater="r1", kind="thumb", value=1 if g == y else -1)


FIT_CONFIGS = {
    "lora": RewardModelConfig(method="lora", epochs=8, learning_rate=3e-3, batch_size=8, lora_r=8, max_length=64,
                              heldout_fraction=0.3, max_cross_pairs_per_item=4),
    "features": RewardModelConfig(method="features", num_layers=0, max_length=64, heldout_fraction=0.3,
                                  max_cross_pairs_per_item=4),
    # word counts under L1, thumbs and scores regressed as utilities (bench/live_improvement.py, ppo-rm-words)
    "words": RewardModelConfig(method="features", num_layers=0, max_length=64, heldout_fraction=0.3,
                               max_cross_pairs_per_item=4, feature_blocks="tokens", pointwise="regression"),
}


@pytest.fixture(scope="module", params=sorted(FIT_CONFIGS))
def fitted(request, tiny_model_dir, tmp_path_factory):
    """One fit per reward-model method, shared by the tests below (fitting is the slow part)."""
    data_dir = tmp_path_factory.mktemp("rm")
    store = Store(data_dir / "rlhf.db")
    fill_yes_no_store(store, n_prompts=56)
    progress: list[str] = []
    rm = fit_and_record(store, str(tiny_model_dir), FIT_CONFIGS[request.param], seed=1, data_dir=data_dir,
                        on_progress=progress.append)
    assert rm is not None
    return store, data_dir, rm, progress


def test_fit_learns_a_clear_preference(fitted):
    store, _, rm, _ = fitted
    m = rm.metrics
    assert m["n_heldout_pairs"] >= 8 and m["n_train_pairs"] >= 30
    for s in (COMPARE, SAME_PROMPT, CROSS_PROMPT):
        assert m[f"n_train_{s}"] > 0
    assert m["heldout_accuracy"] >= 0.75, m
    assert m["heldout_spearman"] > 0.5, m
    assert m["train_loss"] == m["train_loss"]  # finite


def test_yes_answers_outscore_no_answers_after_normalization(fitted):
    _, _, rm, _ = fitted
    rng = random.Random(99)
    prompts = [f"tell me about {w}" for w in ("hello world", "two cats", "the red sun", "one dog")] * 3
    yes = rm.score(prompts, [answer(rng, "yes") for _ in prompts])
    no = rm.score(prompts, [answer(rng, "no") for _ in prompts])
    assert sum(yes) / len(yes) > sum(no) / len(no) + 0.5
    assert sum(y > n for y, n in zip(yes, no)) >= 0.75 * len(prompts)


def test_normalization_centres_the_base_policys_answers(fitted):
    store, _, rm, _ = fitted
    rows = store.query("SELECT p.text AS prompt, g.text FROM generations g JOIN prompts p ON p.id = g.prompt_id")
    scores = rm.score([r["prompt"] for r in rows], [r["text"] for r in rows])
    mean = sum(scores) / len(scores)
    std = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
    assert abs(mean) < 1e-3 and abs(std - 1) < 1e-3


def test_fit_is_recorded_and_round_trips(fitted):
    store, data_dir, rm, progress = fitted
    row = store.latest_reward_model()
    assert row["version"] == rm.version == 1
    assert row["path"] == "reward_models/v1" and row["last_event_id"] == store.last_event_id() == rm.last_event_id
    assert (row["norm_mean"], row["norm_std"]) == (rm.norm_mean, rm.norm_std)
    assert row["metrics"]["heldout_accuracy"] == rm.metrics["heldout_accuracy"]
    meta = json.loads((data_dir / row["path"] / "meta.json").read_text())
    method = meta["config"]["method"]
    assert meta["seed"] == 1 and meta["format"] == {"lora": "lora", "features": "features"}[method]
    assert not [p for p in (data_dir / "reward_models").iterdir() if p.name.startswith(".")]  # no temp dirs
    assert any(("step" if method == "lora" else "fitting the reward head") in p for p in progress)

    loaded = RewardModel.load(data_dir / row["path"], device="cpu")
    assert (loaded.version, loaded.norm_mean, loaded.metrics) == (rm.version, rm.norm_mean, rm.metrics)
    prompts = ["tell me about the sun", "tell me a joke", "hello"]
    answers = ["yes the sun is great", "no", "hello world it is a very long answer about a cat " * 3]
    assert loaded.score(prompts, answers) == pytest.approx(rm.score(prompts, answers), abs=1e-5)
    # batched == one at a time (right padding keeps positions as in training)
    one_by_one = [loaded.score([p], [a])[0] for p, a in zip(prompts, answers)]
    assert loaded.score(prompts, answers, batch_size=3) == pytest.approx(one_by_one, abs=1e-5)
    assert RewardModel.from_store(store, data_dir, device="cpu").version == 1


def test_score_head_only_fit_round_trips(store, tiny_model_dir, tmp_path):
    fill_yes_no_store(store, n_prompts=8, seed=5)
    config = RewardModelConfig(method="lora", epochs=1, learning_rate=1e-3, lora_r=0, max_length=32,
                               heldout_fraction=0.0)
    rm = fit_and_record(store, str(tiny_model_dir), config, seed=0, data_dir=tmp_path)
    assert rm is not None and rm.metrics["heldout_accuracy"] is None  # nothing held out
    loaded = RewardModel.load(tmp_path / "reward_models" / "v1", device="cpu")
    assert loaded.score(["hi"], ["yes it is"]) == pytest.approx(rm.score(["hi"], ["yes it is"]), abs=1e-6)
