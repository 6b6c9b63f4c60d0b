"""Starter prompts: clickable examples for a first visitor, and training prompts before anyone types.

The default set is short, open-ended requests where answers differ in length, tone, warmth and
focus, so ratings have something to tell apart and a small model has room to move. A taste only
shows where answers vary in it: SmolLM2 puts no emoji in an answer about rainbows, so a person who
dislikes emoji has nothing to rate there. The other built-in sets are prompts where one taste
shows (the simulated raters of `raters.py` use them); a deployment can bring its own as a text file.

>>> len(load_prompts("starter")), load_prompts("emoji")[0]
(20, 'Write a fun birthday message with emoji.')
>>> load_prompts("nope")
Traceback (most recent call last):
...
rlhf_app.errors.UserError: Unknown prompt set 'nope': use one of cheer, emoji, pets, starter, or a text file with one prompt per line.
"""

from pathlib import Path

from .errors import UserError

STARTER_PROMPTS: list[str] = [
    "Tell me a fun fact about cats.",
    "Give me one tip for staying focused while studying.",
    "Describe a rainy afternoon in two sentences.",
    "What should I cook for dinner tonight?",
    "Explain what a rainbow is to a child.",
    "Write a short motivational message for a friend starting a new job.",
    "What is your favourite season and why?",
    "Suggest a name for a small coffee shop.",
    "How do I make my plants grow better?",
    "Write a two-line poem about the ocean.",
    "What is a good way to start the morning?",
    "Tell me something interesting about space.",
    "Give me an idea for a weekend hobby.",
    "How can I be a better listener?",
    "Describe your ideal holiday.",
    "What makes a good friend?",
    "Recommend a book genre for a long train ride and say why.",
    "Explain why the sky is blue in one paragraph.",
    "Write a thank-you note to a teacher.",
    "What are three things that make people happy?",
]

PROMPT_SETS: dict[str, list[str]] = {
    "starter": STARTER_PROMPTS,
    # Messages and captions, where SmolLM2-135M-Instruct's answers range from plain text to rows of
    # emoji (emoji_free of its answers at 48 tokens: mean 0.26, 0 to 1 on every prompt but the last).
    "emoji": [
        "Write a fun birthday message with emoji.",
        "Write a text to a friend about the weekend, with emoji.",
        "Write an Instagram caption for a beach photo.",
        "Write a cheerful good-morning text message with emoji.",
        "Write a tweet celebrating our team's win.",
        "Write a congratulations message for a new baby, with emoji.",
    ],
    # Occasions for cheering, where its answers range from flat to excited (enthusiasm at 48 tokens:
    # mean 0.33, half of them 0 and the rest 0.39-0.95, on every prompt).
    "cheer": [
        "Write a message congratulating a friend on a new job.",
        "Reply to a friend who just got a puppy.",
        "Write a birthday message for my sister.",
        "Tell me about your favourite holiday.",
        "Write a message cheering on a friend before a race.",
        "What do you think of summer?",
    ],
    # Animals, where its answers name some animal or pet word but seldom a cat (wants_topic at 48
    # tokens: mean 0.38; 0 to 0.89 within every prompt).
    "pets": [
        "Write a short story about an animal.",
        "What animal makes the best companion?",
        "Describe a lazy afternoon with a pet.",
        "Suggest a gift for a friend who loves animals.",
        "What are good names for a new pet?",
        "Write a poem about a furry friend.",
    ],
}


def load_prompts(spec: str) -> list[str]:
    """A built-in set by name, or the non-blank lines of a text file."""
    if spec in PROMPT_SETS:
        return list(PROMPT_SETS[spec])
    path = Path(spec)
    if not path.is_file():
        names = ", ".join(sorted(PROMPT_SETS))
        raise UserError(f"Unknown prompt set {spec!r}: use one of {names}, or a text file with one prompt per line.")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"Prompt file {spec!r} has no prompts.")
    return prompts


def seed_prompts(store, prompts: list[str]) -> None:
    """Put the configured starter prompts in the store (once; duplicates are ignored)."""
    for p in prompts:
        store.add_prompt(p, source="starter")
