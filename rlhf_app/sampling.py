"""Token-by-token sampling with a KV cache, shared by serving, best-of-N and the PPO rollouts.

Written out instead of `model.generate` for three reasons: each request gets its own
`torch.Generator`, so a stored seed reproduces its answer even while other requests run; the
caller sees every token as it is made (streaming, stop button, yielding to other work); and the
trainer's rollouts run through exactly the code people's answers do.

>>> import torch
>>> from rlhf_app.sampling import top_p_filter
>>> top_p_filter(torch.tensor([[0.5, 0.3, 0.2]]).log(), 0.7).exp()
tensor([[0.5000, 0.3000, 0.0000]])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 128
    seed: int = 0


def chat_input_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of a one-turn chat, ending where the assistant's answer begins."""
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
    )
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def top_p_filter(logprobs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Set to -inf every token outside the smallest set whose probability reaches top_p. (B, V)"""
    if top_p >= 1.0:
        return logprobs
    sorted_lp, order = logprobs.sort(dim=-1, descending=True)
    cum = sorted_lp.exp().cumsum(-1)
    drop_sorted = cum - sorted_lp.exp() >= top_p  # keep tokens until the mass before them reaches top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logprobs.masked_fill(drop, float("-inf"))


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T), left-padded so every answer starts at column T."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids, mask


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    prompts: list[list[int]],
    params: SamplingParams,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator | None = None,
    between_tokens: Callable[[], bool] | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every sequence, (B,), until all have hit EOS or the length cap.

    Finished sequences get `pad_id`. `between_tokens()` runs before each forward pass; returning
    False stops early (the stop button). It is also where the trainer waits for serving.
    """
    device = next(model.parameters()).device
    if generator is None:
        generator = torch.Generator(device="cpu").manual_seed(params.seed)
    input_ids, mask = left_pad(prompts, pad_id)
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    cache = None
    step_ids = input_ids
    for _ in range(params.max_new_tokens):
        if between_tokens is not None and between_tokens() is False:
            return
        out = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=positions[:, -step_ids.shape[1] :],
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out.cache
        logits = out.logits[:, -1, :].float()  # (B, V)
        if params.temperature <= 0:
            token = logits.argmax(-1)
        else:
            logprobs = top_p_filter(torch.log_softmax(logits / params.temperature, -1), params.top_p)
            token = torch.multinomial(logprobs.exp().cpu(), 1, generator=generator).squeeze(-1).to(device)
        token = torch.where(finished, torch.full_like(token, pad_id), token)
        yield token
        finished |= token == eos_id
        if bool(finished.all()):
            return
        step_ids = token[:, None]
        mask = torch.cat([mask, (~finished).long()[:, None] | (token == eos_id).long()[:, None]], dim=1)
        positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)


def sample_texts(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                 params: SamplingParams, between_tokens: Callable[[], bool] | None = None) -> list[str]:
    """One decoded answer per prompt, all in one batch, from `params.seed` (for measuring: nothing
    is streamed or stored). The same seed gives two policies the same random numbers."""
    rows: list[list[int]] = [[] for _ in prompts]
    ids = [chat_input_ids(tokenizer, p) for p in prompts]
    for step in sample(model, ids, params, tokenizer.eos_token_id, tokenizer.pad_token_id,
                       between_tokens=between_tokens):
        for row, t in zip(rows, step.tolist()):
            if not row or row[-1] != tokenizer.eos_token_id:
                row.append(t)
    return [tokenizer.decode(r, skip_special_tokens=True) for r in rows]
