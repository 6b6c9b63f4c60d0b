"""The reward model: fitted with TRL's RewardTrainer on the pairs of `preferences.py`, then served.

Tokenization (the one rule, `encode`, used for training *and* scoring): the policy's own chat
prompt (`chat_input_ids`: the user turn plus the assistant header) + the answer's tokens (no
special tokens) + EOS, i.e. the very sequence the policy produced; when longer than `max_length`
the answer keeps its head (and the EOS), the prompt its tail. The reward is read at that EOS.
RewardTrainer gets these ids pre-tokenized (`chosen_ids`/`rejected_ids`), so it applies no chat
template and no EOS of its own; padding is on the right (as its collator does), so a batched score
equals the score in training. The pad token differs from EOS (`fix_pad_token`): the classifier
finds the last real token by looking for the pad id.

Scores are normalized: the raw reward of answers of the base policy (version 0) to stored prompts
has mean 0 and std 1 under each version's `norm_mean`/`norm_std`, a scale stable across versions.
Each version is saved as the LoRA adapter (with the score head) or, for `lora_r = 0`, the score head
alone, beside the tokenizer and a meta.json (metrics, normalization, seed, config, base path).

Fitting and scoring (seconds on the tiny test model, minutes on SmolLM2 on 2 cores):

    store = Store("data/rlhf.db")
    rm = fit_and_record(store, "data/models/SmolLM2-135M-Instruct", RewardModelConfig(), seed=0,
                        data_dir="data")        # None: too little data (see insufficient_data_reason)
    rm = RewardModel.load("data/reward_models/v1")
    rm.score(["Tell me a joke"], ["Why did the cat sit on the computer? ..."])   # normalized
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
)
from transformers.trainer_callback import PrinterCallback

from .config import RewardModelConfig
from .models import fix_pad_token, pick_device
from .preferences import (  # noqa: F401 - re-exported: the reward model's data API
    COMPARE,
    CROSS_PROMPT,
    MIN_TRAIN_PAIRS,
    SAME_PROMPT,
    SOURCES,
    Pair,
    PreferenceData,
    RatedItem,
    build_preference_data,
    insufficient_data_reason,
    is_heldout,
    utility,
)
from .sampling import chat_input_ids
from .store import Store

log = logging.getLogger(__name__)

MAX_BASE_SAMPLES = 256
"""Base-policy answers scored for the normalization (the oldest ones: the same set every version)."""
META_FILE = "meta.json"


# -- tokenization: the one rule for training and scoring ----------------------------------------


def encode(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str, max_length: int) -> list[int]:
    """Token ids the reward model reads: chat prompt + answer + EOS, at most `max_length` long.

    The policy's own prompt format, so the reward model sees what the policy produced. Too long:
    the answer keeps its head and the final EOS (where the reward is read), the prompt its tail.
    """
    return encode_with_start(tokenizer, prompt, completion, max_length)[0]


def encode_with_start(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str,
                      max_length: int) -> tuple[list[int], int]:
    """`encode`'s ids and the index where the answer starts (the final EOS is at the end)."""
    p = chat_input_ids(tokenizer, prompt)
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if len(p) + len(c) + 1 <= max_length:
        return p + c + [eos], len(p)
    n_c = min(len(c), max(max_length - len(p), max_length // 2) - 1)
    n_p = max_length - n_c - 1
    head = p[-n_p:] if n_p > 0 else []
    return head + c[:n_c] + [eos], len(head)


def right_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), (B, T), padded on the right as TRL's preference collator does.

    Right padding keeps every position id as in training; left padding would shift them.
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


# -- the model ---------------------------------------------------------------------------------


class RewardModel:
    """A fitted reward model: `score(prompts, completions)` -> normalized rewards.

    Merged (LoRA folded into the weights), in eval mode, scored under `inference_mode` in batches
    sorted by length, so best-of-N in the serving path pays one forward pass per few answers.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        norm_mean: float = 0.0,
        norm_std: float = 1.0,
        max_length: int = 256,
        version: int = 0,
        last_event_id: int = 0,
        metrics: dict[str, Any] | None = None,
        path: Path | None = None,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.norm_mean, self.norm_std = float(norm_mean), float(norm_std)
        self.max_length = max_length
        self.version = version
        self.last_event_id = last_event_id
        """Newest rating event it was fitted on: the trainer refits when the store has newer ones."""
        self.metrics = dict(metrics or {})
        self.path = path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def score_raw(self, prompts: list[str], completions: list[str], batch_size: int = 8) -> list[float]:
        """Unnormalized rewards, one per (prompt, completion)."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        seqs = [encode(self.tokenizer, p, c, self.max_length) for p, c in zip(prompts, completions)]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # less padding per batch
        out = [0.0] * len(seqs)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = right_pad([seqs[i] for i in idx], self.tokenizer.pad_token_id)
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            for i, v in zip(idx, logits[:, 0].float().tolist()):
                out[i] = v
        return out

    def score(self, prompts: list[str], completions: list[str], batch_size: int = 8, **_: Any) -> list[float]:
        """Normalized rewards: 0 is the base policy's average answer, 1 one standard deviation above.

        Extra keyword arguments are ignored, so this can be a TRL `reward_funcs` callable.
        """
        return [(r - self.norm_mean) / self.norm_std for r in self.score_raw(prompts, completions, batch_size)]

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "RewardModel":
        """Load a reward model saved by `fit_reward_model` (base weights + adapter or head)."""
        path = Path(path)
        meta = json.loads((path / META_FILE).read_text())
        if meta["format"] == "features":
            from .reward_features import FeatureRewardModel

            return FeatureRewardModel.load(path, device)
        dev, _ = pick_device(device)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = _load_classifier(meta["base_path"], tokenizer, meta.get("num_layers", 0))
        if meta["format"] == "lora":
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, path / "adapter").merge_and_unload()
        else:
            from safetensors.torch import load_file

            model.score.load_state_dict(load_file(path / "score.safetensors"))
        return cls(
            model.to(dev),
            tokenizer,
            norm_mean=meta["norm_mean"],
            norm_std=meta["norm_std"],
            max_length=meta["max_length"],
            version=meta["version"],
            last_event_id=meta["last_event_id"],
            metrics=meta["metrics"],
            path=path,
        )

    @classmethod
    def from_store(cls, store: Store, data_dir: str | Path, device: str = "auto") -> "RewardModel | None":
        """The newest recorded reward model (paths in the store are relative to the data dir)."""
        row = store.latest_reward_model()
        return None if row is None else cls.load(Path(data_dir) / row["path"], device=device)


@contextlib.contextmanager
def quiet_truncated_load() -> Iterator[None]:
    """Silence the load report of a causal-LM checkpoint read into a shorter or headless model.

    The dropped layers, the unused lm_head and the fresh score head are reported as unexpected or
    missing: that is the design here, not an error.
    """
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _load_classifier(base_path: str, tokenizer: PreTrainedTokenizerBase, num_layers: int = 0) -> PreTrainedModel:
    """The base model with a fresh 1-output score head, agreeing with `tokenizer` on the pad id.

    `num_layers > 0` keeps only the first layers of the backbone: the reward model then reads a
    few times faster, which on a CPU is the difference between a fit per minute and a fit per
    round, and surface preferences (length, tone, words) are already visible in lower layers.
    """
    full = AutoConfig.from_pretrained(base_path).num_hidden_layers
    extra = {"num_hidden_layers": num_layers} if 0 < num_layers < full else {}
    with quiet_truncated_load():
        model = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1, dtype=torch.float32,
                                                                   **extra)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))  # a pad row that no real token ever reads
    model.config.pad_token_id = tokenizer.pad_token_id  # the classifier reads the last non-pad token
    return model


# -- fitting -----------------------------------------------------------------------------------


@dataclass
class FittedReward:
    reward_model: RewardModel
    path: Path
    metrics: dict[str, Any]
    norm_mean: float
    norm_std: float
    data_counts: dict[str, int] = field(default_factory=dict)


def pairwise_accuracy(rm: RewardModel, pairs: list[Pair]) -> tuple[float | None, dict[str, float | None]]:
    """Share of pairs whose chosen answer gets the higher reward, overall and per source."""
    if not pairs:
        return None, {}
    texts = {(p.prompt, p.chosen) for p in pairs} | {(p.rejected_prompt, p.rejected) for p in pairs}
    keys = sorted(texts)
    raw = dict(zip(keys, rm.score_raw([k[0] for k in keys], [k[1] for k in keys])))
    right = [raw[(p.prompt, p.chosen)] > raw[(p.rejected_prompt, p.rejected)] for p in pairs]
    per_source: dict[str, float | None] = {}
    for s in SOURCES:
        hits = [r for r, p in zip(right, pairs) if p.source == s]
        per_source[s] = sum(hits) / len(hits) if hits else None
    return sum(right) / len(right), per_source


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None when undefined (n < 2 or a constant).

    >>> spearman([1, 2, 3], [10, 20, 15])
    0.5
    """
    if len(x) < 2:
        return None
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    order = a.argsort(kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a))
    for value in np.unique(a):  # ties share their mean rank
        tie = a == value
        ranks[tie] = ranks[tie].mean()
    return ranks


class _Progress(TrainerCallback):
    def __init__(self, on_progress: Callable[[str], None]):
        self.on_progress = on_progress

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - Trainer's signature
        self.on_progress(f"fitting the reward model: step {state.global_step} of {state.max_steps}")


@contextlib.contextmanager
def _keep_global_rng() -> Iterator[None]:
    """Restore the process-wide RNGs after training: the trainer's `set_seed` would reseed serving too."""
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def fit_reward_model(
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
    """Fit a reward model on `data.train` with TRL's RewardTrainer, evaluate it, save it to `out_dir`.

    `base_samples` are (prompt, answer) pairs of the base policy; their raw rewards set the
    normalization. Empty: the rated answers stand in. The directory appears complete or not at all.
    """
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    if len(data.train) < 1:
        raise ValueError(insufficient_data_reason(data) or "no training pairs")
    progress = on_progress or (lambda msg: None)
    t0 = time.time()
    out_dir = Path(out_dir)
    base_path = str(Path(base_path).resolve()) if Path(base_path).exists() else str(base_path)

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    fix_pad_token(tokenizer)
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError("the reward model needs a pad token distinct from EOS")
    L = config.max_length
    dataset = Dataset.from_dict(
        {
            "chosen_ids": [encode(tokenizer, p.prompt, p.chosen, L) for p in data.train],
            "rejected_ids": [encode(tokenizer, p.rejected_prompt, p.rejected, L) for p in data.train],
            "margin": [float(p.margin) for p in data.train],
        }
    )

    with _keep_global_rng(), tempfile.TemporaryDirectory(prefix="rlhf-rm-") as scratch:
        torch.manual_seed(seed)  # the score head's random init
        model = _load_classifier(base_path, tokenizer, config.num_layers)
        peft_config = None
        if config.lora_r > 0:
            from peft import LoraConfig, TaskType

            peft_config = LoraConfig(
                task_type=TaskType.SEQ_CLS,
                r=config.lora_r,
                lora_alpha=2 * config.lora_r,
                lora_dropout=0.0,
                target_modules="all-linear",
                modules_to_save=["score"],  # the fresh head must train and be saved with the adapter
            )
        else:  # score head only
            for name, p in model.named_parameters():
                p.requires_grad = name.startswith("score.")
        cuda = torch.cuda.is_available()
        args = RewardConfig(
            output_dir=scratch,
            num_train_epochs=config.epochs,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            bf16=False,
            fp16=False,
            activation_checkpointing=False,  # TRL defaults it on; (gradient_checkpointing is its old name)
            use_cpu=not cuda,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            seed=seed,
            data_seed=seed,
            max_length=None,  # `encode` already truncated; TRL would drop long pairs instead
            dataloader_pin_memory=False,
            dataloader_num_workers=0,
        )
        progress(f"fitting the reward model on {len(data.train)} pairs")
        trainer = RewardTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[_Progress(progress)] if on_progress else None,
        )
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict to stdout
        train_out = trainer.train()
        trained = trainer.model
        del trainer

    with staging_dir(out_dir) as tmp:
        if config.lora_r > 0:
            trained.save_pretrained(tmp / "adapter")
            merged = trained.merge_and_unload()  # after saving: merging folds the adapter away
        else:
            from safetensors.torch import save_file

            merged = trained
            state = {k: v.detach().cpu().contiguous() for k, v in merged.score.state_dict().items()}
            save_file(state, tmp / "score.safetensors")
        rm = RewardModel(merged, tokenizer, max_length=L, version=version, last_event_id=last_event_id, path=out_dir)
        rm.model.requires_grad_(False)
        return finish_fit(rm, tmp, "lora" if config.lora_r > 0 else "head", data=data, config=config, seed=seed,
                          base_samples=base_samples, base_path=base_path, started=t0, progress=progress,
                          metrics={"train_loss": float(train_out.training_loss)})


@contextlib.contextmanager
def staging_dir(out_dir: Path) -> Iterator[Path]:
    """A fresh sibling directory to write a fit into; removed if anything fails before it is moved."""
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # already gone after a successful move


def finish_fit(rm: RewardModel, tmp: Path, fmt: str, *, data: PreferenceData, config: RewardModelConfig, seed: int,
               base_samples: list[tuple[str, str]], base_path: str, started: float,
               progress: Callable[[str], None], metrics: dict[str, Any] | None = None,
               meta: dict[str, Any] | None = None) -> FittedReward:
    """Normalize `rm` on the base policy's answers, evaluate it, write meta.json and the tokenizer
    into `tmp` (which holds its weights), and move `tmp` to `rm`'s place with one rename."""
    progress("scoring the base policy's answers")
    samples = list(base_samples) or _rated_texts(data)
    rm.norm_mean, rm.norm_std = normalization(rm.score_raw([p for p, _ in samples], [c for _, c in samples]))
    progress("measuring held-out accuracy")
    rm.metrics = {
        **evaluate(rm, data, seed),
        **(metrics or {}),
        "norm_mean": rm.norm_mean,
        "norm_std": rm.norm_std,
        "n_base_samples": len(samples),
        "fit_seconds": round(time.time() - started, 2),
    }
    rm.tokenizer.save_pretrained(tmp)
    full_meta = {
        "format": fmt,
        "num_layers": config.num_layers,
        "base_path": base_path,
        "version": rm.version,
        "last_event_id": rm.last_event_id,
        "seed": seed,
        "norm_mean": rm.norm_mean,
        "norm_std": rm.norm_std,
        "max_length": config.max_length,
        "tokenization": "chat_input_ids(prompt) + tokens(answer, no special tokens) + [eos]; right padding",
        **(meta or {}),
        "metrics": rm.metrics,
        "config": dataclasses.asdict(config),
        "heldout_fraction": data.heldout_fraction,
        "created_at": time.time(),
    }
    (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2))
    out_dir = rm.path
    _replace_dir(tmp, out_dir)
    return FittedReward(rm, out_dir, rm.metrics, rm.norm_mean, rm.norm_std, data.counts())


def evaluate(rm: RewardModel, data: PreferenceData, seed: int = 0) -> dict[str, Any]:
    """Held-out pairwise accuracy (overall, per source), Spearman vs utility, train accuracy, counts.

    Values are None where undefined (no held-out pairs, constant utilities).
    """
    acc, acc_by_source = pairwise_accuracy(rm, data.heldout)
    sub = random.Random(seed).sample(data.train, min(len(data.train), MAX_BASE_SAMPLES))  # bounded cost
    train_acc, _ = pairwise_accuracy(rm, sub)
    h = data.heldout_items
    rho = spearman(rm.score_raw([i.prompt for i in h], [i.text for i in h]), [i.utility for i in h]) if h else None
    return {
        "heldout_accuracy": acc,
        **{f"heldout_accuracy_{s}": acc_by_source.get(s) for s in SOURCES},
        "heldout_spearman": rho,
        "train_accuracy": train_acc,
        **data.counts(),
    }


def _rated_texts(data: PreferenceData) -> list[tuple[str, str]]:
    """Every rated (prompt, answer): the normalization set when no base-policy answers exist."""
    pairs = data.train + data.heldout
    return sorted(
        {(it.prompt, it.text) for it in data.items}
        | {(p.prompt, p.chosen) for p in pairs}
        | {(p.rejected_prompt, p.rejected) for p in pairs}
    )


def normalization(raw: list[float]) -> tuple[float, float]:
    """(mean, std) of raw rewards; std 1 when it is undefined or ~0, to keep the raw scale."""
    mean = float(np.mean(raw)) if raw else 0.0
    std = float(np.std(raw)) if len(raw) > 1 else 1.0
    if not math.isfinite(std) or std < 1e-6:
        std = 1.0
    return mean, std


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move the finished `tmp` to `out_dir` with one rename; an old `out_dir` (an unrecorded leftover) goes."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


# -- the trainer's entry point -----------------------------------------------------------------


def base_samples_from_store(store: Store, limit: int = MAX_BASE_SAMPLES) -> list[tuple[str, str]]:
    """(prompt, answer) of the oldest base-policy (version 0) answers, else of the rated answers.

    The oldest, so later versions normalize on the same set once it is full.
    """
    sql = (
        "SELECT p.text AS prompt, g.text AS text FROM generations g JOIN prompts p ON p.id = g.prompt_id "
        "WHERE {where} ORDER BY g.id LIMIT ?"
    )
    rows = store.query(sql.format(where="g.policy_version = 0 AND g.text != ''"), (limit,))
    if not rows:
        rows = store.query(
            sql.format(
                where="g.id IN (SELECT generation_id FROM ratings UNION SELECT generation_a FROM comparisons "
                "UNION SELECT generation_b FROM comparisons)"
            ),
            (limit,),
        )
    return [(r["prompt"], r["text"]) for r in rows]


def fit_and_record(
    store: Store,
    base_path: str,
    config: RewardModelConfig,
    seed: int,
    data_dir: str | Path,
    *,
    base_model_id: str | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> RewardModel | None:
    """Fit a new reward model version on every stored rating and record it; None if too little data.

    The reason for None is logged and is `insufficient_data_reason(build_preference_data(...))`.
    Saved under `<data_dir>/reward_models/v<version>`, recorded with that path relative to the data dir.
    """
    last_event = store.last_event_id()  # read first: votes arriving during the fit count as new
    data = build_preference_data(store, config.heldout_fraction, config.max_cross_pairs_per_item, seed)
    reason = insufficient_data_reason(data)
    if reason:
        log.info("%s", reason)
        return None
    version = store.next_reward_model_version()
    rel = Path("reward_models") / f"v{version}"
    if config.method == "features":
        from .reward_features import fit_feature_reward_model as fit
    else:
        fit = fit_reward_model
    fitted = fit(
        base_path, data, config, seed, Path(data_dir) / rel, base_samples_from_store(store),
        version=version, last_event_id=last_event, on_progress=on_progress,
    )
    store.add_reward_model(
        version,
        path=str(rel),
        base_model_id=base_model_id or str(base_path),
        last_event_id=last_event,
        norm_mean=fitted.norm_mean,
        norm_std=fitted.norm_std,
        seed=seed,
        metrics=fitted.metrics,
    )
    m = fitted.metrics
    log.info(
        "reward model v%d: %d train / %d held-out pairs, held-out accuracy %s, spearman %s, %.1f s",
        version, m["n_train_pairs"], m["n_heldout_pairs"], m["heldout_accuracy"], m["heldout_spearman"],
        m["fit_seconds"],
    )
    return fitted.reward_model
