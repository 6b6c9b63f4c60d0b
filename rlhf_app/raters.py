"""Simulated raters: hidden preferences that rate answers through the app's three modes.

A live demo needs ratings before there are people, and a test of the trainer needs a rater whose
taste is known exactly, so it can check that training moved the model *towards* it. Each `Rater`
is an `oracle(text, prompt) -> [0, 1]` (the hidden preference) plus the three ways the page asks
for a rating: a thumb (1 / -1), a 1-5 score, or an A-vs-B comparison ('a', 'b', 'tie',
'both_bad'). A `noise` rate makes some ratings ignore the answer, like a distracted person.

The oracles are graded, not 0/1, so a policy gets a signal from small improvements, and tuned so
SmolLM2-135M-Instruct's own answers sit inside the range, not already at the top (each oracle's
docstring gives the level measured on that model's answers, and where it cannot move).

>>> import random
>>> rng = random.Random(0)
>>> rater = get_rater("prefers_shorter")
>>> short, long = "Paris is the capital.", " ".join(["word"] * 90)
>>> rater.oracle(short), round(rater.oracle(long), 2)
(1.0, 0.16)
>>> rater.thumb(short, rng=rng), rater.thumb(long, rng=rng)
(1, -1)
>>> rater.score(short, rng=rng), rater.score(long, rng=rng)
(5, 1)
>>> rater.compare(short, long, rng=rng)
'a'

Your own preference is a function of the answer (and optionally the prompt):

>>> polite = Rater.from_function("polite", lambda text: min(1.0, text.lower().count("please") / 2))
>>> polite.compare("Sit down.", "Please sit down, please.", rng=rng)
'b'

`get_rater` also takes a "module:function" import string, for raters that live in your own code:

>>> get_rater("rlhf_app.raters:positivity", noise=0.2).name
'rlhf_app.raters:positivity'
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import math
import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .errors import UserError
from .store import OUTCOMES, SCORE, THUMB

Oracle = Callable[[str, str], float]
"""A hidden preference: (answer text, prompt) -> how much the rater likes it, in [0, 1]."""


class RaterError(UserError):
    """A rater that cannot be made (unknown name, bad import string, bad setting)."""


# -- Text features ----------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_EMOTICON = re.compile(r"(?<!\S)(?::|;|=)-?[)(DPp](?!\w)|<3")
# Pictographs, emoticons, transport, dingbats, misc symbols, stars: the code points a chat model
# actually emits as emoji. Skin-tone modifiers, variation selectors and ZWJ are excluded so that
# one visible emoji counts once.
_EMOJI_RANGES = ((0x1F000, 0x1FAFF), (0x2600, 0x27BF), (0x2B00, 0x2BFF), (0x2300, 0x23FF))
_EMOJI_MODIFIERS = range(0x1F3FB, 0x1F400)


def words(text: str) -> list[str]:
    """Lower-cased words of `text` (letters and digits, inner apostrophes kept: "don't").

    >>> words("Don’t panic, it's 42!")
    ["don't", 'panic', "it's", '42']
    """
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def count_emoji(text: str) -> int:
    """Emoji and text emoticons (":)", "<3") in `text`.

    >>> count_emoji("Great job 👍🏽 :) ✨")
    3
    """
    pictographs = sum(
        1
        for ch in text
        if any(lo <= ord(ch) <= hi for lo, hi in _EMOJI_RANGES) and ord(ch) not in _EMOJI_MODIFIERS
    )
    return pictographs + len(_EMOTICON.findall(text))


def _saturate(amount: float, scale: float) -> float:
    """1 - exp(-amount / scale): 0 at none, rising fastest at first, -> 1 as amount grows.

    Saturating keeps the oracle in [0, 1] without a hard cap, so each extra unit is still worth
    a little (a dense signal) and a policy gains less and less from piling more on.
    """
    return 1.0 - math.exp(-max(0.0, amount) / scale)


# -- Oracles ----------------------------------------------------------------------------------
# Plain module functions, so that "rlhf_app.raters:<name>" import strings reach them too.


def shortness(text: str, prompt: str = "", *, short_words: int = 20, long_words: int = 120) -> float:
    """1 up to `short_words` words, falling linearly in log(length) to 0 at `long_words`.

    Log scale because length is felt relatively: 20 -> 40 words costs as much as 60 -> 120.
    SmolLM2-135M at the page's 128-token cap writes about 75 words (mean 0.31, spread 0.26) and
    at the trainer's 48-token cap about 34 (mean 0.70), so both have room to improve. An empty answer scores 0: it
    is not an answer, and otherwise it would be the best one a policy could find.

    >>> [round(shortness(" ".join(["w"] * n)), 2) for n in (0, 5, 20, 40, 60, 120, 500)]
    [0.0, 1.0, 1.0, 0.61, 0.39, 0.0, 0.0]
    """
    n = len(words(text))
    if n == 0:
        return 0.0
    position = math.log(max(n, short_words) / short_words) / math.log(long_words / short_words)
    return 1.0 - min(1.0, position)


def emoji_free(text: str, prompt: str = "", *, max_density: float = 0.25) -> float:
    """1 - (emoji per word) / `max_density`, clipped: one emoji per 4 words or more scores 0.

    Per word, so a long answer is not punished more for the same sprinkle; 0.25 rather than a
    stricter cap so the usual sprinkle (1-6 emoji in 30 words) lands in between, not all at 0.
    SmolLM2 uses no emoji unasked: on neutral prompts this oracle starts at 1 and cannot move.
    On prompts that invite emoji ("Write a fun birthday message with emoji") half its answers
    are full of them (mean about 0.5), and that is where this rater has something to teach.

    >>> emoji_free("Nice."), emoji_free("Nice 🎉 party 🎉 ok"), emoji_free("🎉")
    (1.0, 0.0, 0.0)
    >>> round(emoji_free("one two three four five six seven eight nine ten eleven twelve 🙂"), 2)
    0.67
    """
    emoji = count_emoji(text)
    if emoji == 0:
        return 1.0
    density = emoji / max(1, len(words(text)))
    return 1.0 - min(1.0, density / max_density)


ENTHUSIASTIC_WORDS = frozenset(
    "amazing awesome fantastic wonderful incredible excellent brilliant great love exciting "
    "excited thrilled delighted wow yay hooray absolutely definitely super fun best perfect "
    "superb marvelous outstanding spectacular terrific".split()
)
"""Words that read as enthusiasm (each counts like one "!")."""


def enthusiasm(text: str, prompt: str = "", *, scale: float = 2.0) -> float:
    """Saturating count of "!" and enthusiastic words: 1 - exp(-count / `scale`).

    A count, not a share, because one "!" more is what a policy can learn first; the saturation
    keeps "!!!!!!!!" from paying off forever. Two to earn a thumbs up (0.63). SmolLM2's answers
    have none in about 60% of cases and 1-3 in the rest (mean about 0.15 at 48 tokens, 0.27 at
    128): room to rise, and the scripted "!" reward in the field notes moved it within minutes.

    >>> [round(enthusiasm(t), 2) for t in ("Paris.", "Paris!", "Paris is amazing!!", "Wow! Great! Love it!!!")]
    [0.0, 0.39, 0.78, 0.98]
    """
    count = text.count("!") + sum(1 for w in words(text) if w in ENTHUSIASTIC_WORDS)
    return _saturate(count, scale)


CAT_KEYWORDS = frozenset("cat kitten kitty feline".split())
"""Default topic of `wants_topic`: plural 's' is matched too."""
CAT_RELATED = frozenset("pet animal creature purr meow whisker paw fur furry fluffy tail mouse dog puppy".split())
"""Words near the default topic, each worth `related_weight` of a mention."""


def _stem_in(word: str, vocabulary: frozenset[str]) -> bool:
    return word in vocabulary or (word.endswith("s") and word[:-1] in vocabulary)


def topic_mentions(
    text: str,
    prompt: str = "",
    *,
    keywords: Iterable[str] = CAT_KEYWORDS,
    related: Iterable[str] = CAT_RELATED,
    related_weight: float = 0.25,
    scale: float = 1.0,
) -> float:
    """Saturating count of topic mentions: 1 - exp(-(mentions + related_weight * related) / scale).

    One mention scores 0.63, two 0.86. Related words earn partial credit so that an answer that
    drifts towards the topic (pets, fur) already scores a little: a policy that never says "cat"
    on unrelated prompts would otherwise see only zeros and have nothing to climb. Even so, on
    prompts far from the topic SmolLM2 scores 0 (no samples of 28 on "capital of France"-like
    prompts mentioned any of these words): use it with prompts where the topic can come up
    (stories, pets, "what should I do today"); on "Tell me about cats" it starts at about 0.8.

    >>> [round(topic_mentions(t), 2) for t in ("Paris is nice.", "My pet has fur.", "A cat.", "Cats and kittens!")]
    [0.0, 0.39, 0.63, 0.86]
    """
    keywords, related = frozenset(w.lower() for w in keywords), frozenset(w.lower() for w in related)
    amount = 0.0
    for w in words(text):
        if _stem_in(w, keywords):
            amount += 1.0
        elif _stem_in(w, related):
            amount += related_weight
    return _saturate(amount, scale)


POSITIVE_WORDS = frozenset(
    "good great excellent wonderful amazing awesome fantastic love loved lovely like enjoy enjoyed "
    "happy glad joy delightful beautiful nice kind best better brilliant perfect pleasant fun "
    "friendly helpful hope hopeful positive success successful win benefit grateful thank thanks "
    "thankful calm peaceful bright warm fresh healthy safe easy exciting excited cheerful smile "
    "laugh welcome superb incredible fortunate comfortable gentle proud inspiring pleasure "
    "delight care caring sweet cozy fine glad favorite wonderfully beautifully".split()
)
"""Small built-in lexicon (no downloads): words that make an answer read as positive."""
NEGATIVE_WORDS = frozenset(
    "bad terrible awful horrible hate hated sad angry upset worst worse poor ugly boring fail "
    "failed failure wrong pain painful hurt sick danger dangerous fear afraid scary difficult "
    "problem risk unfortunately sorry annoying disappointing disappointed lonely miserable "
    "stress stressful tired worry worried die death dead kill cry harm damage broken nasty gross "
    "useless lose loss sorrow waste mistake".split()
)
"""Small built-in lexicon: words that make an answer read as negative."""
NEGATORS = frozenset(
    "not no never nothing hardly without isn't aren't wasn't weren't don't doesn't didn't won't "
    "can't cannot couldn't shouldn't".split()
)


def positivity(text: str, prompt: str = "", *, scale: float = 3.0) -> float:
    """0.5 + 0.5 * tanh(net / `scale`), net = positive - negative lexicon words.

    A word right after a negator ("not good") counts for the other side. Neutral text is 0.5;
    SmolLM2's answers are mildly positive (mean about 0.65, half above the thumb threshold), so
    three or four more warm words move the oracle by 0.2. tanh keeps it graded at both ends instead of clipping.

    >>> [round(positivity(t), 2) for t in ("", "It is Paris.", "Not good, sadly.", "A good, happy, lovely day!")]
    [0.5, 0.5, 0.34, 0.88]
    """
    net = 0
    previous = ""
    for w in words(text):
        sign = 1 if _stem_in(w, POSITIVE_WORDS) else -1 if _stem_in(w, NEGATIVE_WORDS) else 0
        net += -sign if previous in NEGATORS else sign
        previous = w
    return 0.5 + 0.5 * math.tanh(net / scale)


def word_share(text: str, prompt: str = "", *, word: str = "yes") -> float:
    """Share of the answer's whitespace-separated tokens equal to `word` (ignoring case and
    surrounding punctuation, so "Yes!" counts; "!" itself can be the word).

    Made for tests with the tiny 48-word model (tests/tiny.py), whose tokens are whitespace-split
    words: a random tiny model scores about 1/50, and every extra "yes" raises it a little.

    >>> word_share("yes no yes !"), word_share("Yes, yes!"), word_share(""), word_share("! a !", word="!")
    (0.5, 1.0, 0.0, 0.6666666666666666)
    """
    tokens = text.split()
    if not tokens:
        return 0.0
    target = word.lower()
    hits = sum(1 for t in tokens if t.lower() == target or t.lower().strip(".,!?;:'\"()") == target)
    return hits / len(tokens)


# -- Rater ------------------------------------------------------------------------------------


def _takes_prompt(fn: Callable[..., Any]) -> bool:
    """Whether `fn` accepts (text, prompt) positionally, or only (text)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature: call with the text only
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2


@dataclass(frozen=True)
class Rater:
    """A simulated person: a hidden `oracle` and how it turns into thumbs, scores and comparisons.

    Noise-free, every rating is a monotone function of the oracle, so ratings never contradict it:

    - thumb: 1 when the oracle is above `thumb_threshold`, else -1 (a middling answer is a thumbs
      down, as from a picky person);
    - score: the oracle cut into five equal bins, [0, 0.2) -> 1 ... [0.8, 1] -> 5;
    - compare: 'both_bad' when both oracles are below `both_bad_below` (checked first: two bad
      answers are bad even when equally bad), else 'tie' when they are within `tie_epsilon`,
      else the better one.

    With probability `noise` a rating ignores the answer and is drawn uniformly from that mode's
    values (thumb: 1, -1; score: 1-5; compare: the four outcomes), so a noisy thumb is wrong with
    probability noise / 2. The draw uses the `rng` passed in: the same seed gives the same ratings.
    """

    name: str
    fn: Oracle = dataclasses.field(repr=False, compare=False)
    """The hidden preference; called as fn(text, prompt)."""
    noise: float = 0.0
    """Probability that a rating ignores the answer (uniformly random over the mode's values)."""
    thumb_threshold: float = 0.5
    """A thumb is up when the oracle is strictly above this."""
    tie_epsilon: float = 0.02
    """Compared answers whose oracles differ by at most this are a tie."""
    both_bad_below: float = 0.1
    """Compared answers whose oracles are both below this are 'both_bad'. Low, so that only
    answers the rater finds (nearly) worthless are; two mediocre answers still yield a preference."""
    description: str = ""
    """One line on what this rater likes, for the page and the logs."""

    def __post_init__(self) -> None:
        if not self.name:
            raise RaterError("A rater needs a name.")
        for field in ("noise", "thumb_threshold", "tie_epsilon", "both_bad_below"):
            value = getattr(self, field)
            if not 0.0 <= value <= 1.0:
                raise RaterError(f"Rater {self.name!r}: {field} must be in [0, 1], got {value!r}.")

    @classmethod
    def from_function(cls, name: str, fn: Callable[..., float], noise: float = 0.0, **options: Any) -> Rater:
        """A rater whose oracle is your function of the answer: fn(text) or fn(text, prompt).

        It must return a number in [0, 1]; graded values (not only 0 and 1) make a better
        training signal. `options` set the other fields (thumb_threshold, tie_epsilon, ...).

        >>> r = Rater.from_function("likes_questions", lambda text, prompt: min(1.0, text.count("?") / 3))
        >>> r.oracle("Why? How?"), r.score("Why? How?")
        (0.6666666666666666, 4)
        """
        if not callable(fn):
            raise RaterError(f"Rater {name!r}: expected a function of the answer text, got {fn!r}.")
        oracle = fn if _takes_prompt(fn) else (lambda text, prompt, _fn=fn: _fn(text))
        doc = (inspect.getdoc(getattr(fn, "func", fn)) or "").split("\n")[0]  # func: a partial's
        return cls(name=name, fn=oracle, noise=noise, **{"description": doc, **options})

    def with_noise(self, noise: float) -> Rater:
        """The same preference at another noise rate (raters are immutable, so share them freely)."""
        return dataclasses.replace(self, noise=noise)

    def oracle(self, text: str, prompt: str = "") -> float:
        """How much this rater likes `text` as an answer to `prompt`, in [0, 1]; never noisy."""
        value = self.fn(text, prompt)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise RaterError(f"Rater {self.name!r} returned {value!r}; an oracle must return a number.") from None
        if not 0.0 <= value <= 1.0:  # also catches NaN
            raise RaterError(
                f"Rater {self.name!r} returned {value!r} for {text[:40]!r}; an oracle must return a "
                "number in [0, 1] (clip it, e.g. min(1.0, x))."
            )
        return value

    def _noisy(self, rng: random.Random) -> bool:
        # One draw per rating whatever the noise, so runs at different noise rates stay aligned.
        return rng.random() < self.noise

    def thumb(self, text: str, prompt: str = "", rng: random.Random | None = None) -> int:
        """Thumbs up (1) or down (-1), as the page's thumb buttons record it."""
        rng = rng or random.Random()
        if self._noisy(rng):
            return rng.choice((1, -1))
        return 1 if self.oracle(text, prompt) > self.thumb_threshold else -1

    def score(self, text: str, prompt: str = "", rng: random.Random | None = None) -> int:
        """A 1-5 score: five equal bins of the oracle, [0, 0.2) -> 1 ... [0.8, 1] -> 5."""
        rng = rng or random.Random()
        if self._noisy(rng):
            return rng.randint(1, 5)
        return 1 + min(4, int(self.oracle(text, prompt) * 5))

    def compare(self, text_a: str, text_b: str, prompt: str = "", rng: random.Random | None = None) -> str:
        """'a', 'b', 'tie' or 'both_bad' for two answers to the same prompt (see the class doc)."""
        rng = rng or random.Random()
        if self._noisy(rng):
            return rng.choice(OUTCOMES)
        a, b = self.oracle(text_a, prompt), self.oracle(text_b, prompt)
        if a < self.both_bad_below and b < self.both_bad_below:
            return "both_bad"
        if abs(a - b) <= self.tie_epsilon:
            return "tie"
        return "a" if a > b else "b"

    def rate(self, kind: str, text: str, prompt: str = "", rng: random.Random | None = None) -> int:
        """The rating of `kind` ('thumb' or 'score'), ready for `Store.rate(..., kind, value)`."""
        if kind == THUMB:
            return self.thumb(text, prompt, rng)
        if kind == SCORE:
            return self.score(text, prompt, rng)
        raise RaterError(f"Unknown rating kind {kind!r}; expected {THUMB!r} or {SCORE!r}.")


# -- Built-in raters --------------------------------------------------------------------------


# Each factory takes `noise`, its oracle's settings, and `options` for the other Rater fields
# (thumb_threshold, tie_epsilon, both_bad_below), so `get_rater(name, **options)` reaches them all.


def prefers_shorter(noise: float = 0.0, short_words: int = 20, long_words: int = 120, **options: Any) -> Rater:
    """Likes answers of at most `short_words` words; see `shortness`."""
    if not 0 < short_words < long_words:
        raise RaterError("prefers_shorter needs 0 < short_words < long_words.")
    fn = functools.partial(shortness, short_words=short_words, long_words=long_words)
    return Rater("prefers_shorter", fn, noise, description=f"answers of at most {short_words} words", **options)


def dislikes_emoji(noise: float = 0.0, max_density: float = 0.25, **options: Any) -> Rater:
    """Dislikes emoji and emoticons; see `emoji_free`."""
    fn = functools.partial(emoji_free, max_density=max_density)
    return Rater("dislikes_emoji", fn, noise, description="plain text without emoji", **options)


def likes_enthusiasm(noise: float = 0.0, scale: float = 2.0, **options: Any) -> Rater:
    """Likes exclamation marks and enthusiastic words; see `enthusiasm`."""
    fn = functools.partial(enthusiasm, scale=scale)
    return Rater("likes_enthusiasm", fn, noise, description="exclamation marks and enthusiastic words", **options)


def wants_topic(
    noise: float = 0.0,
    keywords: Iterable[str] = CAT_KEYWORDS,
    related: Iterable[str] | None = None,
    related_weight: float = 0.25,
    **options: Any,
) -> Rater:
    """Wants the topic `keywords` mentioned (default: cats); see `topic_mentions`.

    `related` defaults to the cat-related words for the default topic and to none for your own
    keywords. The name records a topic of your own: "wants_topic[dog]".

    >>> dogs = wants_topic(keywords=["dog"])
    >>> dogs.name, round(dogs.oracle("A dog and a dog."), 2)
    ('wants_topic[dog]', 0.86)
    """
    keywords = frozenset(w.lower() for w in ([keywords] if isinstance(keywords, str) else keywords))
    if not keywords:
        raise RaterError("wants_topic needs at least one keyword.")
    if related is None:
        related = CAT_RELATED if keywords == CAT_KEYWORDS else frozenset()
    fn = functools.partial(topic_mentions, keywords=keywords, related=frozenset(related), related_weight=related_weight)
    topic = ",".join(sorted(keywords))
    name = "wants_topic" if keywords == CAT_KEYWORDS else f"wants_topic[{topic}]"
    return Rater(name, fn, noise, description=f"answers that mention {topic}", **options)


def positive_sentiment(noise: float = 0.0, scale: float = 3.0, **options: Any) -> Rater:
    """Likes a positive tone; see `positivity`."""
    fn = functools.partial(positivity, scale=scale)
    return Rater("positive_sentiment", fn, noise, description="a warm, positive tone", **options)


def likes_word(noise: float = 0.0, word: str = "yes", **options: Any) -> Rater:
    """Likes answers made of `word` (default 'yes'); see `word_share`. For the tiny test model.

    A random tiny model starts at a share of about 1/50, so the defaults differ from the other
    raters': a thumb is up above a share of 0.1, and a comparison is never 'both_bad' and a tie
    only when the shares are equal; otherwise its early answers would all be thumbs down and
    'both_bad', and a test would see no preference to learn.
    """
    if not word or word.split() != [word]:
        raise RaterError(f"likes_word needs a single word, got {word!r}.")
    fn = functools.partial(word_share, word=word)
    settings = {"thumb_threshold": 0.1, "tie_epsilon": 0.0, "both_bad_below": 0.0, **options}
    name = "likes_word" if word == "yes" else f"likes_word[{word}]"
    return Rater(name, fn, noise, description=f"answers full of {word!r}", **settings)


RATERS: dict[str, Callable[..., Rater]] = {
    "prefers_shorter": prefers_shorter,
    "dislikes_emoji": dislikes_emoji,
    "likes_enthusiasm": likes_enthusiasm,
    "wants_topic": wants_topic,
    "positive_sentiment": positive_sentiment,
    "likes_word": likes_word,
}
"""Built-in raters by name: factories taking `noise` and their own options as keywords."""


def _import(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise RaterError(f"Rater import string {spec!r} must look like 'package.module:function'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RaterError(f"Rater {spec!r}: cannot import module {module_name!r} ({e}).") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RaterError(f"Rater {spec!r}: module {module_name!r} has no {attr!r}.") from None
    return obj


def get_rater(name: str, noise: float | None = None, **options: Any) -> Rater:
    """A rater by registry name, or by "module:function" import string.

    `noise` (default: the rater's own, 0 for built-ins) sets the rating noise; `options` go to the
    built-in's factory (e.g. `word="no"` for likes_word, `keywords=["dog"]` for wants_topic) or,
    for an import string naming an oracle function, to `Rater.from_function`. An import string
    may also name a ready `Rater` object.

    >>> get_rater("likes_word", word="no").oracle("no no yes")
    0.6666666666666666
    >>> get_rater("rlhf_app.raters:enthusiasm").score("Wow! Amazing!!")
    5
    >>> get_rater("nice")
    Traceback (most recent call last):
    ...
    rlhf_app.raters.RaterError: Unknown rater 'nice'. Available: dislikes_emoji, likes_enthusiasm, likes_word, positive_sentiment, prefers_shorter, wants_topic; or a 'module:function' import string.
    """
    if name not in RATERS and ":" not in name:
        available = ", ".join(sorted(RATERS))
        raise RaterError(f"Unknown rater {name!r}. Available: {available}; or a 'module:function' import string.")
    try:
        if name in RATERS:
            rater = RATERS[name](**options)
        else:
            obj = _import(name)
            if isinstance(obj, Rater):
                rater = dataclasses.replace(obj, **options) if options else obj
            else:
                rater = Rater.from_function(name, obj, **options)
    except TypeError as e:  # an option the rater does not take
        raise RaterError(f"Rater {name!r}: {e}.") from None
    return rater if noise is None else rater.with_noise(noise)
