"""A reward model that fits in about a second: a linear Bradley-Terry head on frozen base-model features.

Why it exists beside the LoRA reward model of `reward.py`: a live demo has 10-100 ratings, and on
2 CPU cores the LoRA model costs 20-45 s a fit, starts each fit from a fresh random head, and
reached a held-out accuracy of only 0.55-0.6 at those sizes (bench/reward_sample_efficiency.py).
Here the backbone never trains, so the features of an answer are computed once and cached; the
fit is an L2-regularized logistic regression on the same pairs and the same loss as TRL's
RewardTrainer (`-log sigmoid(r_chosen - r_rejected - margin)`), solved by L-BFGS. It is
deterministic given the ratings, so consecutive versions differ only by what the new ratings say,
and the policy optimizer is not chasing a head that moves with its random init.

The features of (prompt, answer), read by the first `num_layers` layers of the base model on the
reward model's own tokenization (`reward.encode`):

- the mean hidden state over the answer's tokens (what it talks about, its tone);
- the hidden state at the final EOS (the sequence as the model sums it up);
- the sum of the input embeddings of the answer's tokens: a bag of words, so counts ("three
  exclamation marks", "two warm words") are linear in it, where a mean only sees shares;
- log(1 + answer tokens) (length, which a mean hides).

The embedding sum raised the oracle agreement of every rater at 24-96 ratings by 0.01-0.06
(bench/results/reward_sample_efficiency.md, 'features' against the earlier rows without it).

Two options, off by default (README, 'Words under L1, scores by regression'): a fifth block,
'tokens', counts each word (token) several rated answers use, its weights under L1 so most are
exactly 0 (`fit_sparse_head`); and `reward.pointwise = regression` fits thumbs and scores as
utilities by squared error instead of as pairs.

`reward.feature_blocks` picks which blocks the head reads: the four above by default, since the embedding
sum and length alone agreed less with 3 of 4 raters' oracles on the base model's answers and gained
less live (README, 'Does it improve live?'). They are
standardized on the training answers. The L2 strength is `reward.head_l2`, or, at its
default 0, picked per fit from `L2_GRID` by cross-validated pair log-loss (`reward.l2_folds`), since
the right amount differs between 20 ratings and 2000.

    rm = fit_and_record(store, base_path, RewardModelConfig(method="features"), seed=0, data_dir="data")
    rm.score(["Tell me a joke"], ["Why did the cat sit on the computer? ..."])   # normalized
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from .config import FEATURE_BLOCKS, RewardModelConfig
from .models import fix_pad_token, pick_device
from .preferences import (
    COMPARE,
    MIN_TRAIN_PAIRS,
    SOURCES,
    Pair,
    PreferenceData,
    fold_of,
    insufficient_data_reason,
    is_heldout,
)
from .reward import (
    META_FILE,
    FittedReward,
    RewardModel,
    encode_with_start,
    finish_fit,
    quiet_truncated_load,
    right_pad,
    spearman,
    staging_dir,
)

HEAD_FILE = "head.safetensors"
BLOCK_MEANING = {"mean": "mean hidden state over answer tokens", "eos": "hidden state at EOS",
                 "bag": "sum of answer token embeddings", "len": "log1p(answer tokens)",
                 "tokens": "log1p(count) of each token in the head's vocabulary"}
DENSE_BLOCKS = tuple(b for b in FEATURE_BLOCKS if b != "tokens")
"""The blocks the backbone computes (a cached row of `Featurizer.dim`); 'tokens' is counted apart."""
TOKEN_MIN_ANSWERS = 3
"""A token joins the 'tokens' vocabulary once this many distinct rated answers use it: rarer ones
would get a weight from one or two ratings."""
TOKEN_VOCAB_MAX = 2048
L2_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
L1_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03)
"""L1 strengths tried on the 'tokens' weights (per pair of mean log-loss, per unit of log1p count)."""
CACHE_SIZE = 20_000
"""Cached feature rows per featurizer: about 7 KB each for SmolLM2, so at most ~140 MB."""


class Featurizer:
    """Frozen backbone -> one feature row per (prompt, answer), cached by text."""

    def __init__(self, base_path: str, num_layers: int, max_length: int, device: str = "auto"):
        self.base_path, self.num_layers, self.max_length = base_path, num_layers, max_length
        self.tokenizer = AutoTokenizer.from_pretrained(base_path)
        fix_pad_token(self.tokenizer)
        full = AutoConfig.from_pretrained(base_path).num_hidden_layers
        extra = {"num_hidden_layers": num_layers} if 0 < num_layers < full else {}
        dev, _ = pick_device(device)
        # float32 even on CUDA: the head is fitted on these numbers, bf16 would blur small differences
        with quiet_truncated_load():  # the dropped layers and lm_head are reported as "unexpected": by design
            backbone = AutoModel.from_pretrained(base_path, dtype=torch.float32, **extra)
        if len(self.tokenizer) > backbone.get_input_embeddings().num_embeddings:
            backbone.resize_token_embeddings(len(self.tokenizer))
        self.backbone = backbone.to(dev).eval().requires_grad_(False)
        self.dim = 3 * backbone.config.hidden_size + 1
        self._cache: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()  # serving (best-of-N) and the trainer share one featurizer

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def columns(self, blocks: Sequence[str]) -> torch.Tensor:
        """Indices of the named `blocks` (of `FEATURE_BLOCKS`) in a feature row, in the row's order."""
        h = self.backbone.config.hidden_size
        spans = {"mean": range(0, h), "eos": range(h, 2 * h), "bag": range(2 * h, 3 * h),
                 "len": range(3 * h, 3 * h + 1)}
        return torch.tensor([i for b in DENSE_BLOCKS if b in blocks for i in spans[b]], dtype=torch.long)

    def answer_tokens(self, completions: list[str]) -> list[list[int]]:
        """Token ids of each answer on its own (no prompt, no special tokens)."""
        return self.tokenizer(list(completions), add_special_tokens=False)["input_ids"] if completions else []

    def token_vocabulary(self, completions: list[str]) -> torch.Tensor:
        """Ids used by at least `TOKEN_MIN_ANSWERS` of the distinct `completions`, most used first
        (ties by id), at most `TOKEN_VOCAB_MAX`: the columns of a 'tokens' block."""
        uses: dict[int, int] = {}
        for ids in self.answer_tokens(sorted(set(completions))):
            for t in set(ids):
                uses[t] = uses.get(t, 0) + 1
        common = sorted((t for t, n in uses.items() if n >= TOKEN_MIN_ANSWERS), key=lambda t: (-uses[t], t))
        return torch.tensor(common[:TOKEN_VOCAB_MAX], dtype=torch.long)

    def token_counts(self, completions: list[str], vocabulary: torch.Tensor) -> torch.Tensor:
        """(n, len(vocabulary)) log1p of how often each answer uses each vocabulary token.

        log1p, so the third "!" is worth less than the first: a policy cannot climb a reward model
        forever by repeating one liked token.
        """
        column = {t: j for j, t in enumerate(vocabulary.tolist())}
        counts = torch.zeros((len(completions), len(column)))
        for i, ids in enumerate(self.answer_tokens(completions)):
            for t in ids:
                if t in column:
                    counts[i, column[t]] += 1
        return counts.log1p()

    def head_features(self, prompts: list[str], completions: list[str], columns: torch.Tensor | None = None,
                      vocabulary: torch.Tensor | None = None, batch_size: int = 8) -> torch.Tensor:
        """What a head reads: the backbone row's `columns` (all if None), then the token counts over
        `vocabulary` (none if None)."""
        if columns is not None and len(columns) == 0:  # words only: the backbone need not run at all
            dense = torch.zeros((len(completions), 0))
        else:
            dense = self.features(prompts, completions, batch_size, columns)
        if vocabulary is None or len(vocabulary) == 0:
            return dense
        return torch.cat([dense, self.token_counts(completions, vocabulary)], dim=1)

    @torch.inference_mode()
    def features(self, prompts: list[str], completions: list[str], batch_size: int = 8,
                 columns: torch.Tensor | None = None) -> torch.Tensor:
        """(n, dim) float32 features on the CPU, in the order given; only `columns` (`self.columns`) if given."""
        keys = list(zip(prompts, completions))
        with self._lock:
            missing = sorted({k for k in keys if k not in self._cache})
        if missing:
            rows = self._compute(missing, batch_size)
            with self._lock:
                for k, row in zip(missing, rows):
                    self._cache[k] = row
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        with self._lock:
            out = []
            for k in keys:
                row = self._cache.get(k)
                if row is None:  # evicted between the two locks by a huge concurrent batch
                    row = self._compute([k], batch_size)[0]
                else:
                    self._cache.move_to_end(k)
                out.append(row)
        x = torch.stack(out) if out else torch.zeros((0, self.dim))
        return x if columns is None else x[:, columns]

    def _compute(self, keys: list[tuple[str, str]], batch_size: int) -> list[torch.Tensor]:
        encoded = [encode_with_start(self.tokenizer, p, c, self.max_length) for p, c in keys]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
        rows: list[torch.Tensor] = [torch.empty(0)] * len(encoded)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = right_pad([encoded[i][0] for i in idx], self.tokenizer.pad_token_id)
            ids, mask = ids.to(self.device), mask.to(self.device)
            h = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state.float().cpu()
            emb = self.backbone.get_input_embeddings()(ids).float().cpu()
            for b, i in enumerate(idx):
                seq, answer_start = encoded[i]
                eos = len(seq) - 1
                span = slice(answer_start, eos) if eos > answer_start else slice(eos, eos + 1)
                n_answer = torch.tensor([math.log1p(max(0, eos - answer_start))])
                bag = emb[b, answer_start:eos].sum(0)  # all zeros for an empty answer
                rows[i] = torch.cat([h[b, span].mean(0), h[b, eos], bag, n_answer]).contiguous()
        return rows


_FEATURIZERS: dict[tuple[str, int, int, str], Featurizer] = {}
_FEATURIZERS_LOCK = threading.Lock()


def featurizer_for(base_path: str, num_layers: int, max_length: int, device: str = "auto") -> Featurizer:
    """One featurizer per backbone in the process, so its cache survives from fit to fit."""
    key = (str(base_path), num_layers, max_length, str(pick_device(device)[0]))
    with _FEATURIZERS_LOCK:
        if key not in _FEATURIZERS:
            _FEATURIZERS[key] = Featurizer(str(base_path), num_layers, max_length, device)
        return _FEATURIZERS[key]


class FeatureRewardModel(RewardModel):
    """`RewardModel` whose raw reward is `w . z`, z = (features - mean) / std; everything else is shared.

    With `bootstrap` heads (columns w_1..w_K, each fitted on a resample of the ratings) and
    `pessimism` > 0, the reward is `w . z - pessimism * std_k(w_k . z)`: an answer whose score the
    ratings pin down keeps it, one the heads disagree on (features the ratings barely cover, where
    a policy pushing on the head finds its errors) loses some.
    """

    def __init__(self, featurizer: Featurizer, mean: torch.Tensor, std: torch.Tensor, weight: torch.Tensor,
                 blocks: Sequence[str] = FEATURE_BLOCKS, vocabulary: torch.Tensor | None = None,
                 bootstrap: torch.Tensor | None = None, pessimism: float = 0.0, **kw: Any):
        super().__init__(featurizer.backbone, featurizer.tokenizer, max_length=featurizer.max_length, **kw)
        self.featurizer, self.blocks = featurizer, tuple(b for b in FEATURE_BLOCKS if b in blocks)  # row order
        self.columns = featurizer.columns(self.blocks)
        self.vocabulary = vocabulary if vocabulary is not None else torch.zeros(0, dtype=torch.long)
        self.mean, self.std, self.weight = mean.float(), std.float(), weight.float()
        self.bootstrap = bootstrap.float() if bootstrap is not None and bootstrap.numel() else None
        self.pessimism = pessimism

    def score_raw(self, prompts: list[str], completions: list[str], batch_size: int = 8) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        if not prompts:
            return []
        z = (self.featurizer.head_features(prompts, completions, self.columns, self.vocabulary, batch_size)
             - self.mean) / self.std
        reward = z @ self.weight
        if self.bootstrap is not None and self.pessimism > 0:
            reward = reward - self.pessimism * (z @ self.bootstrap).std(dim=1)
        return reward.tolist()

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "FeatureRewardModel":
        from safetensors.torch import load_file

        path = Path(path)
        meta = json.loads((path / META_FILE).read_text())
        head = load_file(path / HEAD_FILE)
        fz = featurizer_for(meta["base_path"], meta["num_layers"], meta["max_length"], device)
        # heads saved before `reward.feature_blocks` existed read every block
        blocks = meta.get("feature_blocks", FEATURE_BLOCKS)
        return cls(fz, head["mean"], head["std"], head["weight"], blocks, head.get("vocabulary"),
                   head.get("bootstrap"), meta.get("pessimism", 0.0), norm_mean=meta["norm_mean"],
                   norm_std=meta["norm_std"], version=meta["version"], last_event_id=meta["last_event_id"],
                   metrics=meta["metrics"], path=path)


# -- fitting the head ---------------------------------------------------------------------------


def fit_head(diff: torch.Tensor, margin: torch.Tensor, l2: float, max_iter: int = 100) -> torch.Tensor:
    """w minimizing mean(softplus(margin - diff @ w)) + l2/2 |w|^2 (Bradley-Terry with margins).

    >>> d = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]])   # feature 0 tells chosen from rejected
    >>> w = fit_head(d, torch.zeros(3), l2=0.1)
    >>> bool(w[0] > 0.5), abs(float(w[1])) < 1e-6
    (True, True)
    """
    w = torch.zeros(diff.shape[1], dtype=torch.float64, requires_grad=True)
    d, m = diff.double(), margin.double()
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.softplus(m - d @ w).mean() + 0.5 * l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().float()


def fit_sparse_head(diff: torch.Tensor, margin: torch.Tensor, l2: float, l1: float, l1_from: int,
                    x: torch.Tensor | None = None, utility: torch.Tensor | None = None,
                    iters: int = 400) -> torch.Tensor:
    """w minimizing [sum over pairs of softplus(margin - diff @ w) + sum over rated answers of
    (x @ w + b - utility)^2 / 2] / (pairs + answers), + l2/2 |w|^2 on the columns before `l1_from`
    + l1 |w|_1 on the rest, by FISTA (proximal gradient with momentum; L-BFGS cannot take the kink
    of |w| at 0). The free offset b is dropped: only differences of rewards are used.

    Why L1 on word counts: a person's taste names a handful of words and marks ("!", "cat"), and
    L1 sets every other word's weight to exactly 0, so 100 ratings are spent on those few. Why the
    squared error: a 1-5 score says how good an answer is, not only that it beats another
    (`reward.pointwise`).

    >>> d = torch.tensor([[1.0, 1.0, 0.2], [1.0, 1.0, -0.2], [1.0, 2.0, 0.2], [1.0, 2.0, -0.2]])
    >>> w = fit_sparse_head(d, torch.zeros(4), l2=1.0, l1=0.05, l1_from=1)
    >>> bool(w[1] > 0), float(w[2])   # word 1 tells chosen from rejected; word 2 says nothing
    (True, 0.0)
    >>> x, u = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]), torch.tensor([1.0, 0.0])
    >>> w = fit_sparse_head(d[:0], torch.zeros(0), l2=1.0, l1=0.01, l1_from=1, x=x, utility=u)
    >>> float(w[1]), bool(w[2] > 0.5)   # a score regression alone: word 2 is in the answer rated higher
    (0.0, True)
    """
    d, m = diff.double(), margin.double()
    dim = d.shape[1]
    x = torch.zeros((0, dim)) if x is None else x
    u = torch.zeros(0) if utility is None else utility
    x = torch.cat([x.double(), torch.ones((len(x), 1), dtype=torch.float64)], dim=1)  # last column: b
    d = torch.cat([d, torch.zeros((len(d), 1), dtype=torch.float64)], dim=1)
    u = u.double()
    n = max(1, len(d) + len(x))
    sparse = torch.arange(dim + 1) >= l1_from
    sparse[-1] = False
    ridge = torch.where(sparse, 0.0, l2).double()
    ridge[-1] = 0.0
    lipschitz = (0.25 * float(torch.linalg.matrix_norm(d, 2)) ** 2 + float(torch.linalg.matrix_norm(x, 2)) ** 2) / n
    step = 1.0 / (lipschitz + l2 + 1e-12)
    w = z = torch.zeros(dim + 1, dtype=torch.float64)
    t = 1.0
    for _ in range(iters):
        grad = (-(d.T @ torch.sigmoid(m - d @ z)) + x.T @ (x @ z - u)) / n + ridge * z
        nxt = z - step * grad
        nxt = torch.where(sparse, nxt.sign() * (nxt.abs() - step * l1).clamp_min(0.0), nxt)
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        z = nxt + ((t - 1.0) / t_next) * (nxt - w)
        w, t = nxt, t_next
    return w[:dim].float()


Split = tuple[torch.Tensor, torch.Tensor]
"""(train indices, test indices) into the pairs, for one fold of a cross-validation."""


def pair_splits(n: int, seed: int, folds: int = 4) -> list[Split]:
    """Random folds of the `n` pairs (the default, `reward.l2_folds = pairs`); none under 2 per fold.

    Pairs share answers, so a test pair's answers are mostly in training pairs too, which favours
    weak L2 (`generation_splits`).
    """
    if n < 2 * folds:
        return []
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [(torch.cat([perm[j::folds] for j in range(folds) if j != k]), perm[k::folds]) for k in range(folds)]


def generation_masks(pairs: list[Pair], folds: int) -> list[torch.Tensor]:
    """Fold k's test pairs: every pair touching a generation of fold k (`fold_of`)."""
    fc = torch.tensor([fold_of(p.chosen_id, folds) for p in pairs])
    fr = torch.tensor([fold_of(p.rejected_id, folds) for p in pairs])
    return [(fc == k) | (fr == k) for k in range(folds)]


def generation_splits(pairs: list[Pair], folds: int = 5) -> list[Split]:
    """Folds of generations, not pairs (`reward.l2_folds = generations`): no answer of a test pair
    trains its head. Answers rated by score make up to 15 pairs each, so a split of pairs shows
    nearly every test answer in training and rewards memorizing answers: on a live wants_topic run
    it picked L2 0.001 from 48 ratings where these folds picked 1-10 and ranked the policy's next
    answers better (bench/reward_on_policy.py); live, the policy did not gain more with it."""
    out = []
    for test in generation_masks(pairs, folds):
        if test.any() and int((~test).sum()) >= MIN_TRAIN_PAIRS:
            out.append(((~test).nonzero().flatten(), test.nonzero().flatten()))
    return out


def pick_strength(grid: Sequence[float], diff: torch.Tensor, tests: list[Any],
                  fit: Callable[[Any, float], torch.Tensor]) -> float:
    """The strength of `grid` whose heads, `fit(fold, strength)` for each fold, have the lowest
    pair log-loss (margins left out) on that fold's test pairs `diff[fold[-1]]`.

    With fewer than 2 folds (too few pairs) the middle of the grid is taken.
    """
    if len(grid) == 1:
        return grid[0]
    if len(tests) < 2:
        return sorted(grid)[len(grid) // 2]
    losses = [sum(float(torch.nn.functional.softplus(-(diff[fold[-1]] @ fit(fold, g))).sum()) for fold in tests)
              for g in grid]
    return grid[losses.index(min(losses))]


def pick_l2(diff: torch.Tensor, margin: torch.Tensor, grid: list[float], splits: list[Split]) -> float:
    """The L2 strength of `grid` with the lowest cross-validated pair log-loss (`pick_strength`)."""
    return pick_strength(grid, diff, splits, lambda split, l2: fit_head(diff[split[0]], margin[split[0]], l2))


def cross_fitted_metrics(
    fz: Featurizer, data: PreferenceData, diff: torch.Tensor, margin: torch.Tensor, mean: torch.Tensor,
    std: torch.Tensor, l2: float, folds: int, columns: torch.Tensor | None = None,
    vocabulary: torch.Tensor | None = None, fit_without: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Held-out accuracy and Spearman when every rating trains the head (`heldout_fraction` 0).

    The rated generations are split in `folds` by `fold_of`; a head fitted on the pairs that touch
    no generation of fold k scores the pairs that touch one (a pair across two folds is scored
    twice, once by each fold's head) and fold k's rated items. So each figure comes from a head
    that never saw the rating, as with a held-out split, and no rating is kept from the served
    reward model. What leaks: the penalty strengths, the feature standardization and the 'tokens'
    vocabulary, chosen on all pairs. `fit_without(k, test_pairs)` fits the head without fold k (by
    default `fit_head` on the other pairs with `l2`).
    """
    fit_without = fit_without or (lambda k, test: fit_head(diff[~test], margin[~test], l2))
    pairs = data.train
    right: list[bool] = []
    sources: list[str] = []
    rhos: list[float] = []
    n_items = 0
    for k, test in enumerate(generation_masks(pairs, folds)):
        if not test.any() or int((~test).sum()) < MIN_TRAIN_PAIRS:
            continue
        w = fit_without(k, test)
        right += ((diff[test] @ w) > 0).tolist()
        sources += [p.source for p, t in zip(pairs, test.tolist()) if t]
        items = [it for it in data.items if fold_of(it.generation_id, folds) == k]
        if items:
            x = fz.head_features([it.prompt for it in items], [it.text for it in items], columns, vocabulary)
            rho = spearman((((x - mean) / std) @ w).tolist(), [it.utility for it in items])
            n_items += len(items)
            if rho is not None:
                rhos.append(rho)
    by_source = {}
    for s in SOURCES:
        hits = [r for r, src in zip(right, sources) if src == s]
        by_source[f"heldout_accuracy_{s}"] = sum(hits) / len(hits) if hits else None
    return {
        "heldout_accuracy": sum(right) / len(right) if right else None,
        **by_source,
        "heldout_spearman": sum(rhos) / len(rhos) if rhos else None,
        "n_heldout_pairs": len(right),
        "n_heldout_items": n_items,
        "accuracy_folds": folds,
    }


def fit_feature_reward_model(
    base_path: str,
    data: PreferenceData,
    config: RewardModelConfig,
    seed: int,
    out_dir: Path,
    base_samples: list[tuple[str, str]],
    *,
    version: int = 0,
    last_event_id: int = 0,
    on_progress: Callable[[str], None] | None = None,
) -> FittedReward:
    """Fit the head on `data.train`, evaluate, save to `out_dir` (complete or not at all)."""
    if len(data.train) < 1:
        raise ValueError(insufficient_data_reason(data) or "no training pairs")
    progress = on_progress or (lambda msg: None)
    t0 = time.time()
    out_dir = Path(out_dir)
    base_path = str(Path(base_path).resolve()) if Path(base_path).exists() else str(base_path)
    fz = featurizer_for(base_path, config.num_layers, config.max_length)
    if fz.tokenizer.pad_token_id == fz.tokenizer.eos_token_id:
        raise ValueError("the reward model needs a pad token distinct from EOS")

    blocks = config.feature_blocks.split(",")
    columns = fz.columns(blocks)
    regression = config.pointwise == "regression"
    items = [it for it in data.items if not is_heldout(it.generation_id, data.heldout_fraction)] if regression else []
    texts = [t for p in data.train for t in (p.chosen, p.rejected)] + [it.text for it in items]
    vocabulary = fz.token_vocabulary(texts) if "tokens" in blocks else torch.zeros(0, dtype=torch.long)
    progress(f"reading features of {len(data.train)} pairs" + (f" and {len(items)} rated answers" if items else ""))
    chosen = fz.head_features([p.prompt for p in data.train], [p.chosen for p in data.train], columns, vocabulary)
    rejected = fz.head_features([p.rejected_prompt for p in data.train], [p.rejected for p in data.train], columns,
                                vocabulary)
    rated = fz.head_features([it.prompt for it in items], [it.text for it in items], columns, vocabulary)
    rows = torch.cat([chosen, rejected, rated])
    mean = rows.mean(0)
    std = rows.std(0).nan_to_num(1.0).clamp_min(1e-4)
    n_dense = len(columns)
    # Counts stay counts: one L1 price per unit of log1p(count) for every word. Standardized, a rare
    # word's column would be blown up and its weight made cheap.
    std[n_dense:] = 1.0
    diff = (chosen - rejected) / std
    x = (rated - mean) / std
    utility = torch.tensor([it.utility for it in items])
    margin = torch.tensor([float(p.margin) for p in data.train])
    # With 'regression' the pointwise ratings train as scores (x, utility), so only A/B votes stay pairs;
    # every pair still scores a cross-validation fold.
    in_loss = torch.tensor([p.source == COMPARE or not regression for p in data.train], dtype=torch.bool)
    item_fold = lambda folds: torch.tensor([fold_of(it.generation_id, folds) for it in items], dtype=torch.long)  # noqa: E731

    def fit(pairs: torch.Tensor, answers: torch.Tensor, l2: float, l1: float) -> torch.Tensor:
        """The head on the pairs and rated answers where the masks are True."""
        if not regression and n_dense == diff.shape[1]:
            return fit_head(diff[pairs], margin[pairs], l2)
        return fit_sparse_head(diff[pairs], margin[pairs], l2, l1, n_dense, x[answers], utility[answers])

    progress("fitting the reward head")
    # Folds: (pairs that train, rated answers that train, pairs that test).
    if regression:
        folds = 5  # of rated answers: a score regression has no pairs to split at random
        splits = [(~test & in_loss, item_fold(folds) != k, test)
                  for k, test in enumerate(generation_masks(data.train, folds))
                  if test.any() and int((~test & in_loss).sum() + (item_fold(folds) != k).sum()) >= MIN_TRAIN_PAIRS]
    else:
        no_answers = torch.zeros(0, dtype=torch.bool)
        splits = [(train, no_answers, test) for train, test in (
            generation_splits(data.train) if config.l2_folds == "generations" else pair_splits(len(data.train), seed))]

    l2 = (config.head_l2 or pick_strength(L2_GRID, diff, splits, lambda f, g: fit(f[0], f[1], g, 0.0))
          if n_dense else 0.0)
    l1 = (config.head_l1 or pick_strength(L1_GRID, diff, splits, lambda f, g: fit(f[0], f[1], l2, g))
          if len(vocabulary) else 0.0)
    weight = fit(in_loss, torch.ones(len(items), dtype=torch.bool), l2, l1)
    bootstrap = torch.zeros(diff.shape[1], 0)
    if config.pessimism > 0:
        progress(f"fitting {config.bootstrap_heads} heads on resampled ratings")
        gen = torch.Generator().manual_seed(seed)
        pair_ids, item_ids = in_loss.nonzero().flatten(), torch.arange(len(items))

        def resample(ids: torch.Tensor) -> torch.Tensor:
            return ids[torch.randint(len(ids), (len(ids),), generator=gen)] if len(ids) else ids

        bootstrap = torch.stack([fit(resample(pair_ids), resample(item_ids), l2, l1)
                                 for _ in range(config.bootstrap_heads)], dim=1)
    train_loss = float(torch.nn.functional.softplus(margin - diff @ weight).mean())
    cross_fitted = {}
    if data.heldout_fraction == 0 and config.accuracy_folds >= 2:
        progress("cross-fitting the held-out accuracy")
        k_items = item_fold(config.accuracy_folds)
        cross_fitted = cross_fitted_metrics(
            fz, data, diff, margin, mean, std, l2, config.accuracy_folds, columns, vocabulary,
            fit_without=lambda k, test: fit(~test & in_loss, k_items != k, l2, l1))

    rm = FeatureRewardModel(fz, mean, std, weight, blocks, vocabulary, bootstrap, config.pessimism, version=version,
                            last_event_id=last_event_id, path=out_dir)
    from safetensors.torch import save_file

    with staging_dir(out_dir) as tmp:
        save_file({"mean": mean.contiguous(), "std": std.contiguous(), "weight": weight.contiguous(),
                   "vocabulary": vocabulary.contiguous(), "bootstrap": bootstrap.contiguous()}, tmp / HEAD_FILE)
        return finish_fit(rm, tmp, "features", data=data, config=config, seed=seed, base_samples=base_samples,
                          base_path=base_path, started=t0, progress=progress,
                          metrics={"train_loss": train_loss, "head_l2": l2, "head_l1": l1,
                                   "pointwise": config.pointwise, "n_regression_items": len(items),
                                   "vocabulary": len(vocabulary), "words_used": int((weight[n_dense:] != 0).sum()),
                                   **cross_fitted},
                          meta={"feature_blocks": list(rm.blocks), "pessimism": config.pessimism,
                                "features": "; ".join(BLOCK_MEANING[b] for b in rm.blocks)})

