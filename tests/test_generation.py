"""The Answerer on the tiny model: validation, streaming, what is stored, seeds, pairs, the stop
button, a policy swap in the middle of an answer, and best-of-N.

Everything is real: a real tiny Llama, a real SQLite file, a real thread doing the swap.
"""

import json
import threading
import time

import pytest

from rlhf_app.config import Settings
from rlhf_app.errors import UserError
from rlhf_app.generation import Answerer, least_sure_pair
from rlhf_app.models import load_model
from rlhf_app.policy import PolicyHolder, ServedPolicy, ServingGate
from tiny import build_tiny_model

PROMPT = "tell me a joke"
LONG_SEED = 2  # with the tiny model (seed 0) this prompt and seed run to the length cap: no early EOS


def served(loaded, version: int) -> ServedPolicy:
    return ServedPolicy(loaded.model, loaded.tokenizer, version, loaded.model_id, time.time())


def n_rows(store, table: str) -> int:
    return store.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


@pytest.fixture(scope="session")
def other_tiny_dir(tmp_path_factory):
    """A second tiny model, same vocabulary, other weights: what a published new version looks like."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny2") / "model", seed=1)


@pytest.fixture
def settings():
    return Settings(max_prompt_chars=100, max_new_tokens=20, max_new_tokens_limit=64, best_of_n_limit=4)


@pytest.fixture
def holder(tiny):
    return PolicyHolder(served(tiny, 3))


@pytest.fixture
def gate():
    return ServingGate()


@pytest.fixture
def answerer(settings, holder, store, gate):
    return Answerer(settings, holder, store, gate)


class WordCount:
    """A scorer for best-of-N: how often a word occurs in the answer. Small, real, predictable."""

    def __init__(self, word: str, version: int):
        self.word = word
        self.version = version
        self.calls: list[tuple[list[str], list[str]]] = []

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        self.calls.append((list(prompts), list(completions)))
        return [float(c.split().count(self.word)) for c in completions]


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, kw, message",
    [
        ("", {}, "empty"),
        ("   \n", {}, "empty"),
        (None, {}, "empty"),
        ("x" * 101, {}, "101 characters; the limit is 100"),
        (PROMPT, {"temperature": 0.0}, "Temperature"),
        (PROMPT, {"temperature": 2.5}, "Temperature"),
        (PROMPT, {"temperature": "hot"}, "Temperature"),
        (PROMPT, {"temperature": float("nan")}, "Temperature"),
        (PROMPT, {"top_p": 0.0}, "Top-p"),
        (PROMPT, {"top_p": 1.5}, "Top-p"),
        (PROMPT, {"top_p": "all"}, "Top-p"),
        (PROMPT, {"max_new_tokens": 0}, "Max new tokens must be between 1 and 64"),
        (PROMPT, {"max_new_tokens": 65}, "Max new tokens"),
        (PROMPT, {"max_new_tokens": float("inf")}, "Max new tokens"),
        (PROMPT, {"max_new_tokens": "many"}, "Max new tokens"),
        (PROMPT, {"best_of": 5}, "Best-of-N must be between 1 and 4"),
        (PROMPT, {"best_of": -1}, "Best-of-N"),
        (PROMPT, {"best_of": "two"}, "Best-of-N"),
        (PROMPT, {"best_of": 2}, "needs a reward model"),
        (PROMPT, {"best_of": 2, "pair": True}, "not to side-by-side pairs"),
    ],
)
def test_bad_request_is_refused_and_nothing_stored(answerer, store, gate, prompt, kw, message):
    with pytest.raises(UserError, match=message):
        answerer.answer(prompt, seed=0, **kw)
    assert n_rows(store, "prompts") == n_rows(store, "generations") == 0
    assert not gate.busy


def test_prompt_at_the_limit_is_accepted(answerer, store):
    answerer.answer("x" * 100, seed=0, max_new_tokens=2)
    assert n_rows(store, "generations") == 1


# -- streaming and what is stored ------------------------------------------------------------------


def test_stream_grows_then_stores_the_answer(answerer, store, gate, tiny):
    texts, busy = [], []
    for answer in answerer.stream(f"  {PROMPT} ", seed=LONG_SEED, temperature=0.8, top_p=0.95, max_new_tokens=12,
                                  session="s1"):
        texts.append(answer.texts[0])
        busy.append(gate.busy)
        if not answer.done:
            assert answer.generation_ids == []
    final = answer
    assert final.done and len(final.generation_ids) == 1
    assert not gate.busy and all(busy[:-1])  # the gate counts the answer while it streams
    assert len(texts) == 13  # one yield per token, then the stored answer
    for before, after in zip(texts, texts[1:]):
        assert after.startswith(before)
    assert texts[-1] == texts[-2] != ""
    assert final.n_tokens == [12] and final.finish_reasons == ["length"]

    row = store.generation(final.generation_ids[0])
    assert row["prompt"] == PROMPT  # stripped
    assert row["text"] == final.texts[0]
    assert row["model_id"] == tiny.model_id
    assert row["policy_version"] == 3 == final.policy_version
    assert (row["temperature"], row["top_p"], row["max_new_tokens"], row["seed"]) == (0.8, 0.95, 12, LONG_SEED)
    assert row["n_tokens"] == 12 and row["finish_reason"] == "length"
    assert row["ttft_s"] > 0 and row["ttft_s"] == final.ttft_s
    assert row["tokens_per_s"] > 0 and row["tokens_per_s"] == final.tokens_per_s
    assert (row["best_of_n"], row["candidate_scores"], row["reward_model_version"]) == (1, None, None)
    assert (row["source"], row["session"]) == ("ui", "s1")


def test_defaults_come_from_settings(answerer, store, settings):
    answer = answerer.answer(PROMPT, source="api")
    row = store.generation(answer.generation_ids[0])
    assert (row["temperature"], row["top_p"], row["max_new_tokens"]) == (
        settings.temperature, settings.top_p, settings.max_new_tokens
    )
    assert row["seed"] == answer.seed and row["source"] == "api"


def test_same_seed_same_text(answerer):
    first = answerer.answer(PROMPT, seed=LONG_SEED, max_new_tokens=16)
    again = answerer.answer(PROMPT, seed=LONG_SEED, max_new_tokens=16)
    assert again.texts == first.texts and again.generation_ids != first.generation_ids
    others = {answerer.answer(PROMPT, seed=s, max_new_tokens=16).texts[0] for s in range(4)}
    assert len(others) > 1  # the seed matters


def test_stored_seed_reproduces_the_answer(answerer, store):
    first = answerer.answer(PROMPT)  # random seed
    row = store.generation(first.generation_ids[0])
    again = answerer.answer(row["prompt"], seed=row["seed"], temperature=row["temperature"], top_p=row["top_p"],
                            max_new_tokens=row["max_new_tokens"])
    assert again.texts[0] == row["text"]


def test_pair_is_two_generations_to_the_same_prompt(answerer, store):
    answer = answerer.answer(PROMPT, seed=0, max_new_tokens=16, pair=True)
    assert len(answer.texts) == len(answer.generation_ids) == 2
    a, b = (store.generation(g) for g in answer.generation_ids)
    assert a["prompt_id"] == b["prompt_id"] and a["prompt"] == PROMPT
    assert [a["text"], b["text"]] == answer.texts and a["text"] != b["text"]
    assert a["source"] == b["source"] == "compare" and a["seed"] == b["seed"] == 0
    assert [a["n_tokens"], b["n_tokens"]] == answer.n_tokens
    assert n_rows(store, "prompts") == 1
    # Ready for the A/B vote.
    store.compare(*answer.generation_ids, rater="session:x", outcome="a")
    assert answerer.answer(PROMPT, seed=0, max_new_tokens=16, pair=True).texts == answer.texts


def test_a_length_capped_answer_counts_every_token(answerer, tiny):
    """Sequences are padded with a real vocabulary token (<|endoftext|>): when the model samples it
    mid-answer it is still a token of the answer (seed 5 does this with the tiny model)."""
    answer = answerer.answer(PROMPT, seed=5, max_new_tokens=30)
    assert answer.finish_reasons == ["length"] and answer.n_tokens == [30]
    pair = answerer.answer(PROMPT, seed=0, max_new_tokens=30, pair=True)
    for n, reason in zip(pair.n_tokens, pair.finish_reasons):
        assert reason == "eos" or n == 30


# -- stop button -----------------------------------------------------------------------------------


def test_stop_event_stops_early(answerer, store, gate):
    stop = threading.Event()
    stream = answerer.stream(PROMPT, seed=LONG_SEED, max_new_tokens=40, stop=stop)
    for i, answer in enumerate(stream):
        if i == 2:  # three tokens in, the person presses stop
            stop.set()
    assert answer.done and answer.finish_reasons == ["stopped"] and answer.n_tokens == [3]
    row = store.generation(answer.generation_ids[0])
    assert row["finish_reason"] == "stopped" and row["n_tokens"] == 3 and row["text"] == answer.texts[0]
    assert not gate.busy
    full = answerer.answer(PROMPT, seed=LONG_SEED, max_new_tokens=40)
    assert full.texts[0].startswith(answer.texts[0]) and full.n_tokens[0] > 3


def test_stop_before_the_first_token(answerer, store):
    stop = threading.Event()
    stop.set()
    answer = answerer.answer(PROMPT, seed=0, stop=stop)
    assert answer.finish_reasons == ["stopped"] and answer.texts == [""] and answer.n_tokens == [0]
    assert store.generation(answer.generation_ids[0])["finish_reason"] == "stopped"


# -- policy swap mid-answer ------------------------------------------------------------------------


def test_swap_during_a_stream_does_not_touch_the_running_answer(answerer, holder, store, other_tiny_dir, tmp_path,
                                                                settings, gate, tiny):
    new = load_model(str(other_tiny_dir), tmp_path, device="cpu")
    old_text = answerer.answer(PROMPT, seed=LONG_SEED, max_new_tokens=24).texts[0]
    new_alone = Answerer(settings, PolicyHolder(served(new, 4)), store, gate)
    new_text = new_alone.answer(PROMPT, seed=LONG_SEED, max_new_tokens=24).texts[0]
    assert new_text != old_text  # the two versions write different answers to this seed

    swapped = threading.Event()

    def publish():
        holder.swap(served(new, 4))
        swapped.set()

    for i, answer in enumerate(answerer.stream(PROMPT, seed=LONG_SEED, max_new_tokens=24)):
        if i == 3:  # between two tokens of the running answer, the trainer publishes version 4
            t = threading.Thread(target=publish)
            t.start()
            t.join(timeout=30)
            assert swapped.is_set() and holder.version == 4
    assert answer.n_tokens == [24]  # 20 more tokens came after the swap
    assert answer.policy_version == 3 and answer.texts[0] == old_text
    row = store.generation(answer.generation_ids[0])
    assert row["policy_version"] == 3 and row["model_id"] == tiny.model_id and row["text"] == old_text

    after = answerer.answer(PROMPT, seed=LONG_SEED, max_new_tokens=24)
    assert after.policy_version == 4 and after.texts[0] == new_text
    row = store.generation(after.generation_ids[0])
    assert row["policy_version"] == 4 and row["model_id"] == new.model_id


# -- best-of-N -------------------------------------------------------------------------------------


def test_best_of_n_stores_only_the_chosen_answer(settings, holder, store, gate):
    scorer = WordCount("the", version=7)
    answerer = Answerer(settings, holder, store, gate, scorer=lambda: scorer)
    yields = list(answerer.stream(PROMPT, seed=0, best_of=4, max_new_tokens=30))
    assert len(yields) == 1  # the candidates are not streamed; only the chosen one is shown
    answer = yields[0]
    assert answer.done and len(answer.texts) == 4 and len(answer.generation_ids) == 1
    (prompts, completions), = scorer.calls
    assert prompts == [PROMPT] * 4 and completions == answer.texts
    scores = answer.candidate_scores
    assert scores == [float(t.split().count("the")) for t in answer.texts]
    assert len(set(scores)) > 1  # the choice matters for this seed
    assert answer.chosen == scores.index(max(scores)) and answer.reward_model_version == 7

    assert n_rows(store, "generations") == 1
    row = store.generation(answer.generation_ids[0])
    assert row["text"] == answer.texts[answer.chosen]
    assert row["best_of_n"] == 4 and json.loads(row["candidate_scores"]) == scores
    assert row["reward_model_version"] == 7 and row["reward"] == max(scores)
    assert row["n_tokens"] == answer.n_tokens[answer.chosen]
    assert row["finish_reason"] == answer.finish_reasons[answer.chosen]
    assert row["policy_version"] == 3


def test_best_of_one_does_not_need_a_scorer(answerer, store):
    answer = answerer.answer(PROMPT, seed=0, best_of=1, max_new_tokens=4)
    assert store.generation(answer.generation_ids[0])["best_of_n"] == 1


# -- pairs the reward model is least sure about ------------------------------------------------------


def test_pair_from_candidates_shows_the_two_the_scorer_is_least_sure_between(holder, store, gate):
    settings = Settings(max_new_tokens=20, pair_candidates=4)
    scorer = WordCount("the", version=7)
    answerer = Answerer(settings, holder, store, gate, scorer=lambda: scorer)
    yields = list(answerer.stream(PROMPT, seed=0, pair=True, max_new_tokens=30))
    assert len(yields) == 1  # candidates are not streamed: which two are shown is known at the end
    answer = yields[0]
    (prompts, candidates), = scorer.calls
    assert prompts == [PROMPT] * 4 and len(candidates) == 4
    scores = answer.candidate_scores
    i, j = least_sure_pair(scores, candidates)
    gaps = [abs(scores[a] - scores[b]) for a in range(4) for b in range(a + 1, 4) if candidates[a] != candidates[b]]
    assert abs(scores[i] - scores[j]) == min(gaps)
    assert answer.texts == [candidates[i], candidates[j]] and len(answer.generation_ids) == 2
    rows = [store.generation(g) for g in answer.generation_ids]
    assert [r["text"] for r in rows] == answer.texts and [r["reward"] for r in rows] == [scores[i], scores[j]]
    assert all(r["source"] == "compare" for r in rows)
    store.compare(*answer.generation_ids, rater="r1", outcome="a")  # and they can be voted on


def test_pair_candidates_stream_a_plain_pair_until_a_reward_model_exists(holder, store, gate):
    answerer = Answerer(Settings(max_new_tokens=20, pair_candidates=4), holder, store, gate)
    yields = list(answerer.stream(PROMPT, seed=0, pair=True, max_new_tokens=8))
    assert len(yields) > 1 and len(yields[-1].texts) == 2 and yields[-1].candidate_scores is None
