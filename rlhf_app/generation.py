"""Answering prompts: validate, stream tokens from the live policy, store what was made.

One `Answerer` serves every request of the app and of the API. Three shapes of request:

- `stream(prompt)`: one answer, streamed token by token, stored as one generation;
- `stream(prompt, n=2, pair=True)`: two answers to the same prompt side by side (one batched
  pass: twice the text for little more time), stored as two generations for an A/B vote; with
  `pair_candidates` > 2, that many are sampled and the two the reward model is least sure
  between are shown (`least_sure_pair`), so each vote teaches the reward model most;
- `stream(prompt, best_of=N)`: N answers sampled together, the reward model picks the best
  (the seed's step 3.2.4); only the chosen one is stored, with the scores of all N.

Every stored generation carries the policy version that wrote it, the sampling settings, the
seed (which reproduces it) and its timings.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

from .config import Settings
from .errors import UserError
from .policy import PolicyHolder, ServedPolicy, ServingGate
from .sampling import SamplingParams, chat_input_ids, sample
from .store import Store


class Scorer(Protocol):
    """What best-of-N needs of the reward model."""

    version: int

    def score(self, prompts: list[str], completions: list[str]) -> list[float]: ...


@dataclass
class Answer:
    """The state of a request after each token; `generation_ids` is filled once it is stored."""

    texts: list[str]
    done: bool = False
    generation_ids: list[int] = field(default_factory=list)
    policy_version: int = 0
    finish_reasons: list[str] = field(default_factory=list)
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    n_tokens: list[int] = field(default_factory=list)
    candidate_scores: list[float] | None = None
    chosen: int | None = None
    reward_model_version: int | None = None
    seed: int = 0


def least_sure_pair(scores: list[float], texts: list[str]) -> tuple[int, int]:
    """The two candidates whose reward-model scores are closest: where a vote is most informative.

    Under Bradley-Terry the reward model's confidence in a pair is sigmoid(|r_a - r_b|), so the
    closest pair is the one it would most likely get wrong. Identical texts are never paired (a
    vote between them says nothing); if all are identical, the first two are shown.

    >>> least_sure_pair([0.1, 2.0, 0.3, -1.0], ["a", "b", "c", "d"])
    (0, 2)
    >>> least_sure_pair([0.1, 0.1, 0.8], ["same", "same", "other"])
    (0, 2)
    """
    best, gap = (0, 1), float("inf")
    for i in range(len(scores)):
        for j in range(i + 1, len(scores)):
            if texts[i] != texts[j] and abs(scores[i] - scores[j]) < gap:
                best, gap = (i, j), abs(scores[i] - scores[j])
    return best


def validate(settings: Settings, prompt: str, temperature: float, top_p: float, max_new_tokens: int,
             best_of: int = 1) -> str:
    """The cleaned prompt, or UserError with a message the person can act on."""
    prompt = (prompt or "").strip()
    if not prompt:
        raise UserError("The prompt is empty: write something for the model to answer.")
    if len(prompt) > settings.max_prompt_chars:
        raise UserError(
            f"The prompt has {len(prompt)} characters; the limit is {settings.max_prompt_chars}. Shorten it."
        )
    checks = [
        (temperature, float, 0.05, 2.0, "Temperature must be between 0.05 and 2.0."),
        (top_p, float, 0.1, 1.0, "Top-p must be between 0.1 and 1.0."),
        (max_new_tokens, int, 1, settings.max_new_tokens_limit,
         f"Max new tokens must be between 1 and {settings.max_new_tokens_limit}."),
        (best_of, int, 1, settings.best_of_n_limit, f"Best-of-N must be between 1 and {settings.best_of_n_limit}."),
    ]
    for value, cast, lo, hi, message in checks:
        try:  # an API caller can send anything: "hot", None, inf get the same message as 5.0
            ok = lo <= cast(value) <= hi
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise UserError(message)
    return prompt


class Answerer:
    def __init__(
        self,
        settings: Settings,
        holder: PolicyHolder,
        store: Store,
        gate: ServingGate,
        scorer: Callable[[], Scorer | None] = lambda: None,
    ):
        self.settings = settings
        self.holder = holder
        self.store = store
        self.gate = gate
        self.scorer = scorer
        """Returns the current reward model (or None before the first one is fitted)."""

    def stream(
        self,
        prompt: str,
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        max_new_tokens: int | None = None,
        seed: int | None = None,
        pair: bool = False,
        best_of: int = 1,
        session: str | None = None,
        source: str = "ui",
        stop: threading.Event | None = None,
        policy: ServedPolicy | None = None,
    ) -> Iterator[Answer]:
        """Yield the growing answer(s) after each token; the last yield has `done=True` and ids."""
        s = self.settings
        temperature = s.temperature if temperature is None else temperature
        top_p = s.top_p if top_p is None else top_p
        max_new_tokens = s.max_new_tokens if max_new_tokens is None else max_new_tokens
        prompt = validate(s, prompt, temperature, top_p, max_new_tokens, best_of or 1)
        best_of = int(best_of or 1)
        if pair and best_of > 1:
            raise UserError("Best-of-N applies to single answers, not to side-by-side pairs.")
        scorer = self.scorer() if best_of > 1 or (pair and s.pair_candidates > 2) else None
        if best_of > 1 and scorer is None:
            raise UserError("Best-of-N needs a reward model, and none is fitted yet: rate a few answers first.")
        seed = secrets.randbelow(2**31) if seed is None else int(seed)
        params = SamplingParams(float(temperature), float(top_p), int(max_new_tokens), seed)
        n = (s.pair_candidates if scorer is not None else 2) if pair else best_of
        streams = n == (2 if pair else 1)  # a pick among candidates can only be shown once all are done

        # This request's snapshot: a swap mid-answer cannot touch it. `policy` pins another version
        # (the dashboard's before/after answers of version 0).
        policy = policy or self.holder.current()
        tok = policy.tokenizer
        ids = chat_input_ids(tok, prompt)
        tokens: list[list[int]] = [[] for _ in range(n)]
        answer = Answer(texts=[""] * n, policy_version=policy.version, seed=seed)
        stopped = False

        def keep_going() -> bool:
            nonlocal stopped
            stopped = stop is not None and stop.is_set()
            return not stopped

        t0 = time.perf_counter()
        t_first = None
        with self.gate.serving():
            for step in sample(policy.model, [ids] * n, params, tok.eos_token_id, tok.pad_token_id,
                               between_tokens=keep_going):
                if t_first is None:
                    t_first = time.perf_counter()
                for i, t in enumerate(step.tolist()):
                    # After EOS a row only gets padding. Before it every token counts, even one equal
                    # to pad: pad is a real vocabulary token (<|endoftext|>) the model can sample.
                    if not tokens[i] or tokens[i][-1] != tok.eos_token_id:
                        tokens[i].append(t)
                answer.texts = [tok.decode(t, skip_special_tokens=True) for t in tokens]
                if streams:
                    yield answer
        t_end = time.perf_counter()

        answer.finish_reasons = [
            "eos" if t and t[-1] == tok.eos_token_id else ("stopped" if stopped else "length") for t in tokens
        ]
        answer.n_tokens = [len(t) for t in tokens]
        answer.ttft_s = (t_first or t_end) - t0
        decode_s = t_end - (t_first or t_end)
        answer.tokens_per_s = (max(answer.n_tokens) - 1) / decode_s if decode_s > 0 else None

        stored: list[int] = list(range(n))
        if scorer is not None:
            answer.candidate_scores = [float(x) for x in scorer.score([prompt] * n, answer.texts)]
            answer.reward_model_version = scorer.version
            if pair:
                stored = list(least_sure_pair(answer.candidate_scores, answer.texts))
            else:
                answer.chosen = max(range(n), key=lambda i: answer.candidate_scores[i])
                stored = [answer.chosen]
        common = dict(
            temperature=params.temperature,
            top_p=params.top_p,
            max_new_tokens=params.max_new_tokens,
            seed=seed,
            ttft_s=answer.ttft_s,
            tokens_per_s=answer.tokens_per_s,
            session=session,
            source="compare" if pair else source,
        )
        for i in stored:
            answer.generation_ids.append(
                self.store.add_generation(
                    prompt,
                    answer.texts[i],
                    policy.model_id,
                    policy.version,
                    n_tokens=answer.n_tokens[i],
                    finish_reason=answer.finish_reasons[i],
                    best_of_n=best_of,
                    candidate_scores=answer.candidate_scores,
                    reward_model_version=answer.reward_model_version,
                    reward=answer.candidate_scores[i] if answer.candidate_scores else None,
                    **common,
                )
            )
        if pair and n > 2:  # the page and the API see the chosen two only, as A and B
            answer.texts = [answer.texts[i] for i in stored]
            answer.finish_reasons = [answer.finish_reasons[i] for i in stored]
            answer.n_tokens = [answer.n_tokens[i] for i in stored]
        answer.done = True
        yield answer

    def answer(self, prompt: str, **kw) -> Answer:
        """Run `stream` to the end and return the final, stored answer."""
        last = None
        for last in self.stream(prompt, **kw):
            pass
        assert last is not None and last.done
        return last
