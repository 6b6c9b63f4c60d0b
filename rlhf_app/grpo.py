"""GRPO with TRL's `GRPOTrainer`, behind the same `step()` as the PPO trainer (`ppo.py`).

The app's trainer loop (`trainer.py`) calls `step(prompts, reward_fn)` once per optimizer step,
`grpo.steps_per_round` times a round, and averages the returned metrics. One `step` here is one
TRL training step: for each of the `len(prompts)` prompts, `num_generations` answers are sampled,
scored with `reward_fn`, compared within their group (the advantages), and one AdamW update is made.

    runner = GRPORunner(peft_policy, tokenizer, settings.grpo, gate=gate, seed=0)
    m = runner.step(["Tell me a joke."] * 2, reward_fn)   # reward_fn(prompts, completions) -> scores
    m["reward/mean"], m["kl/ref"], m["samples"]["completions"]

Why a short-lived `GRPOTrainer` per step and what is kept across them: TRL's trainer owns its
loop (`train()`), while the app owns the round (prompts per step, pausing, publishing), so each
`step` builds a trainer for exactly one step. What would be lost by that is kept here instead:
the AdamW optimizer (its moments survive from step to step and round to round, as in PPO), the
reference policy, and a step counter that varies the seed. Building the trainer costs well under
a second, against many seconds of sampling per step on the real model.

What each step undoes, because the policy object lives on between steps (the pitfalls of
running TRL in short rounds, see /work/shared/FIELD_NOTES.md):

- TRL patches the model's `forward` (a fused LM head); it is restored, or the patches would
  nest one level per step;
- TRL seeds the whole process (`set_seed`); the global random states are restored afterwards,
  so serving and the rest of the app see no reseeding;
- `train()` leaves the model in training mode: it is put back in `.eval()`;
- `train()` opens with a full `gc.collect()`, which holds the GIL (stalling streamed answers)
  every step; it is skipped (see `_skip_gc_at_train_start`);
- a peft adapter named `ref` (which TRL adds when given a PeftModel with `beta > 0`, and which
  makes the next wrap fail with "Adapter with name 'ref' already exists") is never created here,
  and one left by other code is deleted.

The reference policy is the one the app means by "KL to the initial policy": with LoRA, the base
model with the adapter disabled (no second copy is held); with full fine-tuning, `ref_model` or
a frozen copy of the policy as given (as `ppo.PPOTrainer` does). TRL would instead copy the
current adapter into a `ref` adapter (so each step's reference would be the previous step), or
reload full weights from `config._name_or_path` on disk. To get the base as reference, the trainer
is built with `beta=0` (so it sets up neither) and the KL term is then switched on with the
reference chosen here.

Serving comes first: `gate.wait_until_idle()` runs at each step's begin and end and before every
forward pass of the policy, i.e. between sampled tokens and before each loss computation.
"""

from __future__ import annotations

import copy
import random
import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, TrainerCallback

from .config import GRPOSettings
from .policy import ServingGate
from .ppo import is_peft

SAMPLES_KEY = "samples"
"""Key of the step's raw samples in the metrics dict, as in `ppo.py`; pop it before logging numbers."""

RewardFn = Callable[[list[str], list[str]], Sequence[float]]
"""`reward_fn(prompts, completions) -> scores`, one prompt per completion, one float per completion."""

MEASURE_ONLY_BETA = 1e-12
"""KL coefficient used when `beta` is 0: TRL computes the KL to the reference only when its
coefficient is non-zero, and the app's `max_kl` guard needs that KL. 1e-12 changes no update."""


# --------------------------------------------------------------------------------------------
# What GRPO hands to reward functions: plain strings, or chat messages.
# --------------------------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    """Text of a message's content: a string, or a list of parts like {"type": "text", "text": ...}."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)


def prompt_text(prompt: str | list[dict[str, Any]]) -> str:
    """The user's request in a GRPO prompt: the string itself, or the last user message's text.

    >>> prompt_text([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}])
    'Hi'
    >>> prompt_text("Hi")
    'Hi'
    """
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if m.get("role") == "user"]
    return _content_text((users or list(prompt))[-1].get("content")) if prompt else ""


def completion_text(completion: str | list[dict[str, Any]]) -> str:
    """The answer in a GRPO completion: the string itself, or its assistant messages' text.

    GRPO decodes completions without special tokens, so there is no EOS to strip.

    >>> completion_text([{"role": "assistant", "content": "yes yes"}])
    'yes yes'
    """
    if isinstance(completion, str):
        return completion
    parts = [m for m in completion if m.get("role", "assistant") == "assistant"]
    return "".join(_content_text(m.get("content")) for m in parts)


def make_reward_func(
    reward_fn: RewardFn,
    record: list[tuple[list[str], list[str], list[float]]],
    on_progress: Callable[[str], None] | None = None,
) -> Callable[..., list[float]]:
    """Wrap the app's `reward_fn(prompts, completions)` as TRL's `f(prompts, completions, **kw)`.

    Prompts and completions arrive as chat messages (the dataset is conversational); the app's
    reward model scores plain texts, so they are reduced to the user's request and the answer.
    Every call is appended to `record` as (prompts, completions, scores), the step's samples.
    `on_progress` hears "scoring" before and "update" after: TRL scores last, then updates.
    """

    progress = on_progress or (lambda phase: None)

    def reward(prompts: list, completions: list, **_: Any) -> list[float]:
        progress("scoring")
        ps = [prompt_text(p) for p in prompts]
        cs = [completion_text(c) for c in completions]
        scores = [float(s) for s in reward_fn(ps, cs)]
        if len(scores) != len(cs):
            raise ValueError(f"reward_fn returned {len(scores)} scores for {len(cs)} completions")
        record.append((ps, cs, scores))
        progress("update")
        return scores

    reward.__name__ = "reward"  # TRL names its per-function metrics after it
    return reward


# --------------------------------------------------------------------------------------------
# Process state TRL touches, saved and put back.
# --------------------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "random": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


_NO_ATTR = object()


class _PatchedForwards:
    """Save the instance-level `forward` of some modules and put it back (TRL's fused LM head)."""

    def __init__(self, modules: list[nn.Module]):
        self._saved = [(m, m.__dict__.get("forward", _NO_ATTR)) for m in modules]

    def restore(self) -> None:
        for module, fwd in self._saved:
            if fwd is _NO_ATTR:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = fwd


def _skip_gc_at_train_start(accelerator: Any) -> None:
    """Make `train()`'s opening `accelerator.free_memory()` skip its `gc.collect()`.

    On the fresh accelerator of a one-step trainer that call only resets a few lists; the full
    garbage collection it adds holds the GIL for as long as it walks every object of a process
    full of torch, transformers and gradio (measured: 0.77 s a step on the shared 2-core machine,
    most of a tiny-model step), stalling every streamed answer once per step. Python's own
    collector still runs as usual.
    """

    def free_memory(*objects: Any) -> list[None]:
        accelerator._schedulers, accelerator._optimizers = [], []
        accelerator._models, accelerator._dataloaders = [], []
        accelerator.step = 0
        return [None] * len(objects)

    accelerator.free_memory = free_memory


class _StepCallback(TrainerCallback):
    """Yield to serving around the step, report progress, and keep TRL's per-step logs."""

    def __init__(self, gate: ServingGate | None, progress: Callable[[str], None]):
        self.gate = gate
        self.progress = progress
        self.logs: list[dict[str, float]] = []

    def on_step_begin(self, args, state, control, **kwargs):
        if self.gate is not None:
            self.gate.wait_until_idle()
        self.progress("sampling")

    def on_step_end(self, args, state, control, **kwargs):
        if self.gate is not None:
            self.gate.wait_until_idle()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:  # the step's log, not the end-of-train summary
            self.logs.append(dict(logs))


def _f(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------


class GRPORunner:
    """GRPO on a chat policy, one `step` at a time; keeps optimizer and reference between steps.

    `policy` is a peft `PeftModel` whose active adapter is trained (the reference is the base with
    the adapter disabled), or a plain causal LM trained in full (the reference is `ref_model`, or
    a frozen copy of `policy` made here: twice the weights in memory). Pass `ref_model` for full
    fine-tuning of a policy that is no longer the initial one, so the KL is to the initial policy.

    Of `settings`, a step uses `num_generations`, `max_new_tokens`, `temperature`, `learning_rate`
    and `beta`; `batch_prompts` and `steps_per_round` are the caller's (it passes that many
    prompts to each `step` and calls it that many times a round).
    """

    def __init__(
        self,
        policy: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        settings: GRPOSettings,
        gate: ServingGate | None = None,
        seed: int = 0,
        ref_model: nn.Module | None = None,
    ):
        if settings.num_generations < 2:
            raise ValueError("grpo.num_generations must be >= 2: GRPO compares answers to the same prompt")
        if settings.temperature <= 0:
            raise ValueError("grpo.temperature must be > 0: GRPO needs the sampling distribution's log-probs")
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
            raise ValueError("the tokenizer needs a pad token distinct from EOS (see models.fix_pad_token)")
        self.policy = policy
        self.tokenizer = tokenizer
        self.settings = settings
        self.gate = gate
        self.seed = seed
        self.step_count = 0
        self.is_peft = is_peft(policy)
        if self.is_peft:
            if ref_model is not None:
                raise ValueError("with a PeftModel the reference is the base model (adapter off); drop ref_model")
        else:
            if ref_model is None:
                ref_model = copy.deepcopy(policy)
            ref_model.eval().requires_grad_(False)
        self.ref_model = ref_model
        trainable = [p for p in policy.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("the policy has no trainable parameters (a PeftModel loaded with is_trainable=False?)")
        # Kept across steps so Adam's moments carry over, as in PPO. No weight decay: it would pull
        # the weights towards 0, not towards the reference.
        self.optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=0.0)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)  # constant
        self._output_dir = tempfile.TemporaryDirectory(prefix="grpo-")  # TRL wants one; nothing is saved
        self.device = next(policy.parameters()).device

    # -- helpers -------------------------------------------------------------------------------

    def _config(self, n_prompts: int, seed: int):
        from trl import GRPOConfig

        s = self.settings
        return GRPOConfig(
            output_dir=self._output_dir.name,
            # one step = every prompt once, num_generations answers each, in one micro-batch (so
            # TRL's per-token KL times the mean answer length is exactly the mean per-answer KL)
            per_device_train_batch_size=n_prompts * s.num_generations,
            gradient_accumulation_steps=1,
            num_generations=s.num_generations,
            max_steps=1,
            shuffle_dataset=False,
            max_completion_length=s.max_new_tokens,
            temperature=s.temperature,
            top_p=1.0,  # the log-probs TRL trains on are those of the full softmax
            learning_rate=s.learning_rate,
            lr_scheduler_type="constant",  # the default linear decay reaches 0 within a short run
            beta=0.0,  # armed after construction, against the reference chosen here (see module doc)
            seed=seed,
            # TRL defaults meant for GPUs: bf16 and gradient checkpointing on (transformers 5 renamed
            # the latter; setting the new name too keeps its deprecation warning out of every step)
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,
            activation_checkpointing=False,
            use_cpu=self.device.type == "cpu",  # else Trainer would move a CPU policy to CUDA
            disable_dropout=True,  # the same input must give the same log-probs for the ratio
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )

    def _wait_for_serving_hooks(self) -> list[Any]:
        """Forward pre-hooks on the input embeddings of the policy (and of a full-weight reference):
        they run before every forward pass, whichever wrapper (peft, TRL's fused head, `generate`)
        the call came through, so sampling yields between tokens."""
        gate = self.gate

        def hook(module: nn.Module, args: Any) -> None:
            gate.wait_until_idle()

        models = [self.policy] + ([self.ref_model] if self.ref_model is not None else [])
        return [m.get_input_embeddings().register_forward_pre_hook(hook) for m in models]

    def _drop_ref_adapter(self) -> None:
        if self.is_peft and "ref" in self.policy.peft_config:
            self.policy.delete_adapter("ref")

    # -- one GRPO step -------------------------------------------------------------------------

    def step(
        self,
        prompts: list[str],
        reward_fn: RewardFn,
        on_progress: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Sample `num_generations` answers per prompt, score, and update once; returns metrics.

        Metrics (floats; NaN shows a failure, e.g. a NaN score):
        `reward/mean`, `reward/std` (over this step's answers), `kl/ref` (mean per-answer KL to
        the reference, nats: TRL's token-mean of the k3 estimator exp(r)-r-1, r = ref - policy
        log-prob, times the mean answer length, which is the per-answer sum because the step is
        one micro-batch; measured on this step's answers before the update, like PPO's),
        `kl/per_token`, `kl/coef` (beta), `grpo/loss`, `grpo/entropy` (mean per-token, nats),
        `grpo/grad_norm`, `grpo/clip_ratio`, `grpo/frac_reward_zero_std` (groups whose answers
        all scored the same: no signal), `answer/length` (tokens, EOS included),
        `answer/eos_rate`, `time/step_s` (wall time, waiting included, as in PPO), `time/waited_s`
        (of it, waiting for serving); and under `SAMPLES_KEY` the dict {prompts, completions, scores}.
        `on_progress` gets "sampling", "scoring", "update".
        """
        if not prompts:
            raise ValueError("step() needs at least one prompt")
        from transformers import PrinterCallback
        from trl import GRPOTrainer

        t0 = time.monotonic()
        waited0 = self.gate.waited_s if self.gate is not None else 0.0
        progress = on_progress or (lambda phase: None)
        # Same seed mixing as ppo.py: every step of every round samples differently.
        seed = (self.seed * 1_000_003 + self.step_count) % 2**31
        self.step_count += 1

        from datasets import Dataset

        dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in prompts]})
        record: list[tuple[list[str], list[str], list[float]]] = []
        reward_func = make_reward_func(reward_fn, record, progress)
        callback = _StepCallback(self.gate, progress)
        beta = self.settings.beta if self.settings.beta > 0 else MEASURE_ONLY_BETA

        rng = _rng_state()
        base = self.policy.get_base_model() if self.is_peft else self.policy
        forwards = _PatchedForwards([base] + ([self.ref_model] if self.ref_model is not None else []))
        hooks = self._wait_for_serving_hooks() if self.gate is not None else []
        self._drop_ref_adapter()
        try:
            trainer = GRPOTrainer(
                model=self.policy,
                reward_funcs=reward_func,
                args=self._config(len(prompts), seed),
                train_dataset=dataset,
                processing_class=self.tokenizer,
                callbacks=[callback],
                optimizers=(self.optimizer, self.lr_scheduler),
            )
            trainer.remove_callback(PrinterCallback)  # it would print every log dict to stdout
            _skip_gc_at_train_start(trainer.accelerator)
            self._arm_kl(trainer, beta)
            trainer.train()
        finally:
            for hook in hooks:
                hook.remove()
            forwards.restore()
            self._drop_ref_adapter()
            self.optimizer.zero_grad(set_to_none=True)
            self.policy.eval()  # the caller copies and serves it
            _set_rng_state(rng)
        del trainer

        if not callback.logs or not record:
            raise RuntimeError("GRPOTrainer ran no step (no log or no scored answers)")
        log = callback.logs[-1]
        ps = [p for r in record for p in r[0]]
        cs = [c for r in record for c in r[1]]
        scores = torch.tensor([s for r in record for s in r[2]], dtype=torch.float64)
        length = _f(log.get("completions/mean_length"))
        kl_token = _f(log.get("kl"))
        waited = (self.gate.waited_s - waited0) if self.gate is not None else 0.0
        return {
            "reward/mean": scores.mean().item(),
            "reward/std": scores.std().item() if len(scores) > 1 else 0.0,
            "kl/ref": kl_token * length,
            "kl/per_token": kl_token,
            "kl/coef": self.settings.beta,
            "grpo/loss": _f(log.get("loss")),
            "grpo/entropy": _f(log.get("entropy")),
            "grpo/grad_norm": _f(log.get("grad_norm")),
            "grpo/clip_ratio": _f(log.get("clip_ratio/region_mean")),
            "grpo/frac_reward_zero_std": _f(log.get("frac_reward_zero_std")),
            "answer/length": length,
            "answer/eos_rate": 1.0 - _f(log.get("completions/clipped_ratio")),
            "time/step_s": time.monotonic() - t0,
            "time/waited_s": waited,
            SAMPLES_KEY: {"prompts": ps, "completions": cs, "scores": scores.tolist()},
        }

    def _arm_kl(self, trainer: Any, beta: float) -> None:
        """Switch on TRL's KL term against our reference (the trainer was built with beta=0).

        TRL reads `trainer.beta` in the loss and, with `trainer.ref_model` None and no `ref`
        adapter, computes reference log-probs with the adapters disabled: the base model.
        """
        if not hasattr(trainer, "beta") or not hasattr(trainer, "ref_model"):
            raise RuntimeError("this TRL version's GRPOTrainer has no `beta`/`ref_model`: grpo.py needs updating")
        if self.ref_model is not None:
            from trl.trainer.utils import add_fused_lm_head

            # TRL scores the reference through its fused LM head, as it does the policy; the
            # patch is undone after the step (see `_PatchedForwards`).
            add_fused_lm_head(self.ref_model, temperature=self.settings.temperature)
            trainer.ref_model = self.ref_model.to(self.device)
        trainer.beta = beta

