"""Simulated raters: oracles stay in [0, 1] and rank answers sensibly, noise-free ratings follow
the oracle, noisy ones are reproducible and as random as promised, and custom raters plug in."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from rlhf_app.raters import RATERS, Rater, RaterError, count_emoji, get_rater
from rlhf_app.store import OUTCOMES, RATING_KINDS
from tiny import WORDS

LONG = " ".join(["The answer goes on and on about many things"] * 30)
TEXTS = [
    "",
    "   \n\t ",
    "!",
    "🎉🎉🎉",
    "Paris.",
    "Yes! Cats are amazing, wonderful, lovely pets 😺!!!",
    "Not good. Terrible, awful, sad and painful.",
    "yes yes yes yes",
    "Ñandú, café, naïve — ünïcödé ok?",
    "!" * 500,
    LONG,
    "yes no the a is it good bad great awful happy sad cat dog sun rain hello world",
]
NAMES = sorted(RATERS)

# (rater, clearly better answer, clearly worse answer) for each built-in rater.
ORDERED = [
    ("prefers_shorter", "Paris is the capital of France.", LONG),
    ("prefers_shorter", " ".join(["word"] * 40), " ".join(["word"] * 90)),
    ("prefers_shorter", "Paris.", ""),
    ("dislikes_emoji", "Have a great day at the party.", "Have 🎉 a great 🎂 day at 🎈 the party 🥳"),
    ("dislikes_emoji", "Party time 🎉 with all of my friends tonight", "Party 🎉🎉 time 🎉🎉"),
    ("likes_enthusiasm", "Paris is amazing! You will love it!", "Paris is the capital."),
    ("likes_enthusiasm", "Wow! Paris!", "Paris!"),
    ("wants_topic", "My cat naps all day; cats love the sun.", "The capital of France is Paris."),
    ("wants_topic", "A cat.", "A pet with fur."),
    ("wants_topic", "A pet with fur.", "A table."),
    ("positive_sentiment", "What a lovely, happy, wonderful day.", "It is a day."),
    ("positive_sentiment", "It is a day.", "A terrible, sad, awful day."),
    ("positive_sentiment", "It is not bad.", "It is not good."),
    ("likes_word", "yes yes no", "yes no no"),
    ("likes_word", "Yes, yes!", "no"),
]
ORDERED_IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(ORDERED)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_oracle_in_unit_interval(name: str, text: str) -> None:
    value = get_rater(name).oracle(text, prompt="Tell me something.")
    assert isinstance(value, float)
    assert 0.0 <= value <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_registry_names_and_descriptions(name: str) -> None:
    rater = get_rater(name)
    assert rater.name == name
    assert rater.description
    assert rater.noise == 0.0


@pytest.mark.parametrize(("name", "better", "worse"), ORDERED, ids=ORDERED_IDS)
def test_oracle_orders_better_above_worse(name: str, better: str, worse: str) -> None:
    rater = get_rater(name)
    assert rater.oracle(better) > rater.oracle(worse)


@pytest.mark.parametrize(("name", "better", "worse"), ORDERED, ids=ORDERED_IDS)
def test_noise_free_ratings_follow_the_oracle(name: str, better: str, worse: str) -> None:
    rater, rng = get_rater(name, noise=0.0), random.Random(0)
    assert rater.thumb(better, rng=rng) >= rater.thumb(worse, rng=rng)
    assert rater.score(better, rng=rng) >= rater.score(worse, rng=rng)
    assert rater.compare(better, worse, rng=rng) == "a"
    assert rater.compare(worse, better, rng=rng) == "b"


def test_oracles_are_graded_not_binary() -> None:
    """A dense signal: each built-in oracle takes several distinct values on ordinary answers
    (listed worst to best), so a slightly better answer is seen as better."""
    graded = {
        "prefers_shorter": [" ".join(["w"] * n) for n in (110, 80, 50, 30, 10)],
        "dislikes_emoji": ["a b 🙂 🙂", "a b c d e 🙂", "a b c d e f g h 🙂", "a b c d e f g h i j k 🙂", "ok"],
        "likes_enthusiasm": ["Ok.", "Ok!", "Ok!!", "Great!!", "Wow! Great!!"],
        "wants_topic": ["Ok.", "A pet.", "A pet with fur.", "A cat.", "Cats and kittens."],
        "positive_sentiment": ["Awful and sad.", "Sad.", "Ok.", "Nice.", "Nice and lovely."],
        "likes_word": ["no", "yes no no no", "yes no no", "yes no", "yes"],
    }
    assert set(graded) == set(RATERS)
    for name, texts in graded.items():
        values = [get_rater(name).oracle(t) for t in texts]
        assert len(set(values)) == len(texts), (name, values)
        assert values == sorted(values), (name, values)


def constant(value: float, **options: object) -> Rater:
    return Rater.from_function(f"constant-{value}", lambda text: value, **options)


def from_text(**options: object) -> Rater:
    """A rater whose oracle is the number the answer text spells: handy for exact thresholds."""
    return Rater.from_function("from_text", lambda text: float(text), **options)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, 1), (0.19, 1), (0.2, 2), (0.39, 2), (0.4, 3), (0.5, 3), (0.6, 4), (0.79, 4), (0.8, 5), (1.0, 5)],
)
def test_score_bins_cover_one_to_five(value: float, expected: int) -> None:
    assert constant(value).score("any") == expected


@pytest.mark.parametrize(("value", "expected"), [(0.0, -1), (0.5, -1), (0.51, 1), (1.0, 1)])
def test_thumb_is_up_strictly_above_threshold(value: float, expected: int) -> None:
    assert constant(value).thumb("any") == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("0.9", "0.2", "a"),
        ("0.2", "0.9", "b"),
        ("0.5", "0.51", "tie"),  # within tie_epsilon = 0.02
        ("0.5", "0.5", "tie"),
        ("0.5", "0.53", "b"),
        ("0.05", "0.09", "both_bad"),  # both below both_bad_below = 0.1, even though b is better
        ("0.05", "0.05", "both_bad"),  # both_bad wins over tie
        ("0.05", "0.1", "b"),
    ],
)
def test_compare_outcomes(a: str, b: str, expected: str) -> None:
    assert from_text().compare(a, b) == expected


def test_compare_thresholds_are_settings() -> None:
    rater = from_text(tie_epsilon=0.0, both_bad_below=0.0, thumb_threshold=0.05)
    assert rater.compare("0.05", "0.09") == "b"
    assert rater.compare("0.5", "0.51") == "b"
    assert rater.thumb("0.06") == 1


@pytest.mark.parametrize("name", NAMES)
def test_noise_free_compare_is_symmetric(name: str) -> None:
    rater, mirror = get_rater(name), {"a": "b", "b": "a", "tie": "tie", "both_bad": "both_bad"}
    for x in TEXTS:
        for y in TEXTS:
            assert rater.compare(x, y) == mirror[rater.compare(y, x)]


def test_noise_one_is_uniformly_random() -> None:
    """At noise=1 a rating ignores the answer: each mode's values come up equally often."""
    rater, rng, n = constant(1.0, noise=1.0), random.Random(1234), 6000
    thumbs = Counter(rater.thumb("any", rng=rng) for _ in range(n))
    scores = Counter(rater.score("any", rng=rng) for _ in range(n))
    outcomes = Counter(rater.compare("any", "other", rng=rng) for _ in range(n))
    assert set(thumbs) == {1, -1} and set(scores) == {1, 2, 3, 4, 5} and set(outcomes) == set(OUTCOMES)
    # 4-5 standard errors: never flaky with this seed, and still catches a biased draw.
    assert all(abs(c / n - 1 / 2) < 0.03 for c in thumbs.values()), thumbs
    assert all(abs(c / n - 1 / 5) < 0.025 for c in scores.values()), scores
    assert all(abs(c / n - 1 / 4) < 0.025 for c in outcomes.values()), outcomes


@pytest.mark.parametrize("noise", [0.1, 0.3, 0.6])
def test_noise_rate_is_the_share_of_random_ratings(noise: float) -> None:
    """A noisy thumb is random, so it disagrees with the oracle in about noise / 2 of cases."""
    rater, rng, n = constant(1.0, noise=noise), random.Random(7), 6000
    wrong = sum(rater.thumb("any", rng=rng) == -1 for _ in range(n)) / n
    assert abs(wrong - noise / 2) < 0.025


def test_noise_zero_is_deterministic_without_rng() -> None:
    rater = get_rater("likes_enthusiasm")
    assert {rater.thumb("Wow! Great!") for _ in range(50)} == {1}
    assert {rater.compare("Wow!", "Ok.") for _ in range(50)} == {"a"}


def ratings(rater: Rater, seed: int) -> list[object]:
    rng = random.Random(seed)
    out: list[object] = []
    for text in TEXTS:
        out += [rater.thumb(text, rng=rng), rater.score(text, rng=rng), rater.compare(text, "Paris.", rng=rng)]
    return out


@pytest.mark.parametrize("name", NAMES)
def test_seeded_rng_gives_the_same_ratings(name: str) -> None:
    rater = get_rater(name, noise=0.5)
    assert ratings(rater, seed=3) == ratings(rater, seed=3)
    assert ratings(rater, seed=3) != ratings(rater, seed=4)


def test_ratings_fit_the_store() -> None:
    """Values go straight into Store.rate / Store.compare, so they must be in the store's ranges."""
    rng = random.Random(0)
    for noise in (0.0, 0.5, 1.0):
        for name in NAMES:
            rater = get_rater(name, noise=noise)
            for text in TEXTS:
                for kind, (low, high) in RATING_KINDS.items():
                    value = rater.rate(kind, text, "Hi", rng)
                    assert isinstance(value, int) and low <= value <= high
                assert rater.compare(text, "Paris.", "Hi", rng) in OUTCOMES
                assert rater.thumb(text, rng=rng) in (1, -1)


def test_rate_refuses_unknown_kind() -> None:
    with pytest.raises(RaterError, match="thumb"):
        get_rater("prefers_shorter").rate("stars", "Paris.")


def test_with_noise_keeps_the_preference() -> None:
    rater = get_rater("positive_sentiment")
    noisy = rater.with_noise(0.4)
    assert (noisy.noise, rater.noise) == (0.4, 0.0)
    assert noisy.oracle("A lovely day.") == rater.oracle("A lovely day.")


@pytest.mark.parametrize("noise", [-0.1, 1.5, math.nan])
def test_bad_noise_is_refused(noise: float) -> None:
    with pytest.raises(RaterError, match="noise"):
        get_rater("prefers_shorter", noise=noise)


# -- Custom raters ----------------------------------------------------------------------------


def likes_questions(text: str) -> float:
    """Answers that ask questions back."""
    return min(1.0, text.count("?") / 3)


def echoes_prompt(text: str, prompt: str) -> float:
    """Answers that repeat the prompt's words."""
    asked = set(prompt.lower().split())
    said = text.lower().split()
    return sum(w in asked for w in said) / len(said) if said else 0.0


QUESTION_RATER = Rater.from_function("questions", likes_questions, noise=0.25)


def test_custom_function_of_text() -> None:
    rater = Rater.from_function("likes_questions", likes_questions, noise=0.1)
    assert rater.name == "likes_questions" and rater.noise == 0.1
    assert rater.description == "Answers that ask questions back."
    assert rater.oracle("Why? How?") == pytest.approx(2 / 3)
    assert rater.compare("Why? How?", "Because.", rng=random.Random(2)) in OUTCOMES


def test_custom_function_sees_the_prompt() -> None:
    rater = Rater.from_function("echo", echoes_prompt)
    assert rater.oracle("cats are nice", prompt="tell me about cats") == pytest.approx(1 / 3)
    assert rater.compare("about cats", "dogs bark", prompt="tell me about cats") == "a"


@pytest.mark.parametrize("bad", [1.5, -0.1, math.nan, "high", None])
def test_custom_oracle_out_of_range_is_a_clear_error(bad: object) -> None:
    rater = Rater.from_function("broken", lambda text: bad)
    with pytest.raises(RaterError, match="broken"):
        rater.oracle("anything")


def test_from_function_needs_a_function() -> None:
    with pytest.raises(RaterError, match="function"):
        Rater.from_function("nope", 0.5)  # type: ignore[arg-type]


def test_module_function_import_string() -> None:
    rater = get_rater("test_raters:likes_questions", noise=0.2)
    assert (rater.name, rater.noise) == ("test_raters:likes_questions", 0.2)
    assert rater.oracle("Why?") == pytest.approx(1 / 3)
    two_args = get_rater("test_raters:echoes_prompt", tie_epsilon=0.0)
    assert two_args.oracle("about cats", prompt="tell me about cats") == 1.0
    assert two_args.tie_epsilon == 0.0


def test_module_rater_object_import_string() -> None:
    assert get_rater("test_raters:QUESTION_RATER") is QUESTION_RATER
    assert get_rater("test_raters:QUESTION_RATER", noise=0.0).noise == 0.0
    assert get_rater("rlhf_app.raters:positivity").oracle("A lovely day.") > 0.5


def test_unknown_name_lists_the_available_raters() -> None:
    with pytest.raises(RaterError) as info:
        get_rater("likes_cats")
    message = str(info.value)
    assert "likes_cats" in message and "module:function" in message
    assert all(name in message for name in RATERS)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no_such_module_xyz:fn", "cannot import module 'no_such_module_xyz'"),
        ("test_raters:no_such_function", "has no 'no_such_function'"),
        (":fn", "module:function"),
        ("test_raters:", "module:function"),
    ],
)
def test_bad_import_strings_say_what_is_wrong(spec: str, says: str) -> None:
    with pytest.raises(RaterError, match=says):
        get_rater(spec)


@pytest.mark.parametrize("name", ["prefers_shorter", "test_raters:likes_questions", "test_raters:QUESTION_RATER"])
def test_unknown_option_is_a_clear_error(name: str) -> None:
    with pytest.raises(RaterError, match=name):
        get_rater(name, colour="red")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Hi :) <3", 2), ("ok 👍🏽", 1), ("🇫🇷", 2), ("Answer :Paris", 0), ("see http://x.org", 0), ("a;b", 0)],
)
def test_emoji_count(text: str, expected: int) -> None:
    assert count_emoji(text) == expected


# -- Built-in options -------------------------------------------------------------------------


def test_wants_topic_takes_your_keywords() -> None:
    dogs = get_rater("wants_topic", keywords=["dog"], noise=0.1)
    assert dogs.name == "wants_topic[dog]" and dogs.noise == 0.1
    assert dogs.oracle("Dogs are loyal.") > dogs.oracle("Cats are aloof.") == 0.0
    assert get_rater("wants_topic", keywords="dog").oracle("a dog") == dogs.oracle("a dog")


def test_prefers_shorter_takes_lengths() -> None:
    strict = get_rater("prefers_shorter", short_words=5, long_words=30)
    assert strict.oracle(" ".join(["w"] * 20)) < get_rater("prefers_shorter").oracle(" ".join(["w"] * 20))
    with pytest.raises(RaterError):
        get_rater("prefers_shorter", short_words=50, long_words=30)


def test_likes_word_on_the_tiny_model_vocabulary() -> None:
    """The tiny test model writes whitespace-separated WORDS; likes_word must grade its answers."""
    assert "yes" in WORDS and "no" in WORDS
    rater = get_rater("likes_word")
    rng = random.Random(0)
    shares = [rater.oracle(" ".join(rng.choice(WORDS) for _ in range(24))) for _ in range(200)]
    assert 0.0 < sum(shares) / len(shares) < 0.1  # a random tiny model starts low, not at zero
    assert rater.oracle("yes ! yes yes .") == pytest.approx(3 / 5)
    assert rater.oracle(" ".join(["yes"] * 10)) == 1.0
    # One more "yes" among many words is still a preference, not a tie or 'both_bad'.
    few = " ".join(["no"] * 47 + ["yes"])
    more = " ".join(["no"] * 46 + ["yes"] * 2)
    assert rater.compare(more, few) == "a"
    assert get_rater("likes_word", word="no").name == "likes_word[no]"
    with pytest.raises(RaterError, match="single word"):
        get_rater("likes_word", word="yes please")
