"""Starter prompts: clickable examples for a first visitor, and training prompts before anyone types.

They are short, open-ended requests where answers differ in length, tone, warmth and focus, so
ratings have something to tell apart and a small model has room to move.
"""

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


def seed_prompts(store) -> None:
    """Put the starter prompts in the store (once; duplicates are ignored)."""
    for p in STARTER_PROMPTS:
        store.add_prompt(p, source="starter")
