"""rlhf_app/sampling.py: nucleus filtering, left padding, and the token loop's handling of finished rows."""

import pytest
import torch

from rlhf_app.sampling import SamplingParams, chat_input_ids, left_pad, sample, top_p_filter

PROBS = [0.125, 0.5, 0.25, 0.125]  # exact in binary: no rounding at the boundaries


@pytest.mark.parametrize(
    "top_p, n_kept",
    [
        (0.1, 1),  # the most likely token is always kept, however small top_p is
        (0.5, 1),  # 0.5 reaches 0.5: nothing else needed
        (0.6, 2),
        (0.75, 2),
        (0.8, 3),  # 0.5 + 0.25 < 0.8: one of the two 0.125s joins (which one is a tie)
        (1.0, 4),
    ],
)
def test_top_p_filter_keeps_the_smallest_nucleus(top_p, n_kept):
    lp = torch.tensor([PROBS]).log()
    out = top_p_filter(lp, top_p)
    kept = torch.isfinite(out[0]).nonzero().flatten().tolist()
    assert len(kept) == n_kept
    assert sorted((PROBS[i] for i in kept), reverse=True) == sorted(PROBS, reverse=True)[:n_kept]  # the likeliest
    assert torch.equal(out[0, kept], lp[0, kept])  # kept tokens keep their log-probability


def test_top_p_filter_rows_are_independent():
    lp = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]]).log()
    out = top_p_filter(lp, 0.5)
    assert torch.isfinite(out).tolist() == [[True, False, False], [False, False, True]]
    assert top_p_filter(lp, 1.0) is lp


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8], [9, 10]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 9, 10]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert ids.dtype == mask.dtype == torch.long


def run(tiny, prompts, **params):
    tok = tiny.tokenizer
    steps = list(sample(tiny.model, prompts, SamplingParams(**params), tok.eos_token_id, tok.pad_token_id))
    return torch.stack(steps, dim=1).tolist() if steps else [[] for _ in prompts]  # (B, T)


def test_finished_sequence_gets_pad_afterwards(tiny):
    tok = tiny.tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id
    assert pad != eos
    ids = chat_input_ids(tok, "tell me a joke")
    rows = run(tiny, [ids] * 4, temperature=1.0, top_p=1.0, max_new_tokens=40, seed=1)
    ends = [row.index(eos) if eos in row else None for row in rows]
    finished_early = [i for i, e in enumerate(ends) if e is not None and e < len(rows[i]) - 1]
    assert finished_early, f"seed 1 should end some row before the others: {ends}"
    for i in finished_early:
        assert set(rows[i][ends[i] + 1 :]) == {pad}
    # The loop ends as soon as every row has finished, or at the length cap.
    assert len(rows[0]) == 40 or all(e is not None for e in ends)
    if all(e is not None for e in ends):
        assert max(ends) == len(rows[0]) - 1


def test_a_padded_row_samples_as_if_alone(tiny):
    """Left padding, the attention mask and the positions must not change what a prompt produces."""
    tok = tiny.tokenizer
    short = chat_input_ids(tok, "hi")
    long = chat_input_ids(tok, "tell me a very long story about a happy dog and a sad cat")
    assert len(short) < len(long)
    alone = run(tiny, [short], temperature=0, max_new_tokens=12)[0]
    batched = run(tiny, [long, short], temperature=0, max_new_tokens=12)[1]
    eos = tok.eos_token_id
    cut = lambda r: r[: r.index(eos) + 1] if eos in r else r  # noqa: E731 - the batch pads after EOS
    assert len(cut(alone)) >= 3 and cut(batched) == cut(alone)


def test_same_seed_same_tokens(tiny):
    ids = chat_input_ids(tiny.tokenizer, "hello")
    a = run(tiny, [ids, ids], temperature=0.9, top_p=0.9, max_new_tokens=10, seed=5)
    b = run(tiny, [ids, ids], temperature=0.9, top_p=0.9, max_new_tokens=10, seed=5)
    c = run(tiny, [ids, ids], temperature=0.9, top_p=0.9, max_new_tokens=10, seed=6)
    assert a == b != c


def test_between_tokens_false_stops_before_the_next_forward_pass(tiny):
    tok = tiny.tokenizer
    ids = chat_input_ids(tok, "tell me a joke")
    calls = []

    def between():
        calls.append(len(calls))
        return len(calls) <= 3  # three forward passes, then stop

    steps = list(sample(tiny.model, [ids], SamplingParams(max_new_tokens=30, seed=2), tok.eos_token_id,
                        tok.pad_token_id, between_tokens=between))
    assert len(steps) == 3 and len(calls) == 4
