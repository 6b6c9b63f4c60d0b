"""Run the whole loop headless, with scripted raters instead of people.

    python -m rlhf_app.simulate --rater likes_enthusiasm --ratings 100 --mode score --data-dir /tmp/sim
    python -m rlhf_app.simulate --rater mymodule:my_preference --mode compare

A simulated rater asks for answers and rates them through the same objects a person's clicks
reach (`Answerer.stream`, `Store.rate` / `Store.compare`); the trainer runs its rounds on the
trigger it uses in the app (`LiveTrainer.due`), publishes versions, and the answerer serves them.
Nothing feeds the trainer directly. After each published version the simulator measures the
rater's hidden oracle score on fresh answers of the served policy (and with best-of-N).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from .config import build_parser, load_settings
from .prompts import STARTER_PROMPTS, load_prompts
from .raters import get_rater
from .reward import base_samples_from_store, normalization
from .runtime import Runtime
from .sampling import SamplingParams, sample_texts
from .store import Store
from .versions import load_for_serving

log = logging.getLogger(__name__)

MODES = ("thumb", "score", "compare")


def eval_prompts(prompts: list[str]) -> list[str]:
    """The prompts the oracle is measured on: every 4th of a long set, all of a short one.

    >>> len(eval_prompts(STARTER_PROMPTS)), len(eval_prompts(load_prompts("emoji")))
    (5, 6)
    """
    return prompts[::4] if len(prompts) > 8 else list(prompts)


EVAL_PROMPTS = eval_prompts(STARTER_PROMPTS)
"""Measured prompts of the default set; training samples from every stored prompt."""


@dataclass
class Checkpoint:
    """The state of a simulated run after a policy version went live."""

    policy_version: int
    ratings: int
    cpu_s: float
    """CPU seconds of this process so far, evaluation excluded."""
    wall_s: float
    """Wall seconds so far, evaluation excluded."""
    oracle: float
    oracle_best_of_n: float | None
    reward_model_version: int | None
    reward_model_accuracy: float | None
    kl_ref: float | None
    """KL from the served version to the initial policy, as measured by the round that made it (0 for v0)."""
    round_status: str | None = None


@dataclass
class Endpoints:
    """Version 0 and the version served when the run stopped, each measured on `samples_per_prompt`
    answers per eval prompt (many more than a checkpoint's), on the same random numbers.

    Why: a checkpoint's score is a mean over a few dozen answers; version 0 alone, the same model
    in every run, measured 0.37-0.46 over three seeds at 4 answers per prompt on the pets prompts
    (0.39-0.43 at 32), so a gain read off two such checkpoints could be off by 0.05 and more."""

    samples_per_prompt: int
    seed: int
    v0: float
    version: int
    """The version measured: the last one served inside the wall budget."""
    oracle: float
    gain_se: float | None = None
    """Standard error of `gain` from sampling alone: of the mean of the answer-by-answer differences
    (answer i of both versions shares its prompt and random numbers). It says how far another draw
    of answers could move this run's gain, not how far another seed's run would land."""

    @property
    def gain(self) -> float:
        return self.oracle - self.v0

    @classmethod
    def measure(cls, samples_per_prompt: int, seed: int, v0_scores: list[float], version: int,
                scores: list[float]) -> Endpoints:
        diffs = [b - a for a, b in zip(v0_scores, scores)]
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
        return cls(samples_per_prompt, seed, statistics.fmean(v0_scores), version, statistics.fmean(scores), se)


@dataclass
class SimulationResult:
    rater: str
    mode: str
    seed: int
    checkpoints: list[Checkpoint] = field(default_factory=list)
    endpoints: Endpoints | None = None

    @property
    def gain(self) -> float:
        """At the endpoints' precision when they were measured, else between the first and last checkpoints."""
        if self.endpoints is not None:
            return self.endpoints.gain
        return self.checkpoints[-1].oracle - self.checkpoints[0].oracle

    def to_dict(self) -> dict:
        return {**asdict(self), "gain": self.gain}


def evaluate(rt: Runtime, oracle: Callable[[str, str], float], seed: int, samples_per_prompt: int,
             best_of_n: int, max_new_tokens: int) -> tuple[float, float | None]:
    """Mean oracle score of fresh answers from the served policy, plain and with best-of-N, on the
    evaluation prompts of the app's prompt set (`--prompts`: the simulated person asks those too).

    Batched, with the page's temperature and top-p, and the same seed at every checkpoint, so
    versions are compared on the same random numbers and the difference is the policy's.
    Best-of-N takes `max(1, samples_per_prompt // 4)` answers per prompt, each the reward model's
    pick of `best_of_n` samples.
    """
    s = rt.settings
    policy = rt.holder.current()
    measured = eval_prompts(load_prompts(s.prompts))
    plain = oracle_score(rt, policy.model, oracle, seed, samples_per_prompt, max_new_tokens)
    rm = rt.trainer.reward_model
    if best_of_n <= 1 or rm is None:
        return plain, None
    groups = [p for p in measured for _ in range(max(1, samples_per_prompt // 4))]
    candidates = [p for p in groups for _ in range(best_of_n)]
    with rt.gate.serving():
        texts = sample_texts(policy.model, policy.tokenizer, candidates,
                             SamplingParams(s.temperature, s.top_p, max_new_tokens, seed + 1))
    scores = rm.score(candidates, texts)
    best = []
    for g, prompt in enumerate(groups):
        k = max(range(g * best_of_n, (g + 1) * best_of_n), key=lambda i: scores[i])
        best.append(oracle(texts[k], prompt))
    return plain, statistics.fmean(best)


def oracle_scores(rt: Runtime, model, oracle: Callable[[str, str], float], seed: int, samples_per_prompt: int,
                  max_new_tokens: int) -> list[float]:
    """Oracle score of each of `model`'s answers to the eval prompts, sampled as the page samples."""
    s = rt.settings
    prompts = [p for p in eval_prompts(load_prompts(s.prompts)) for _ in range(samples_per_prompt)]
    with rt.gate.serving():
        texts = sample_texts(model, rt.base.tokenizer, prompts,
                             SamplingParams(s.temperature, s.top_p, max_new_tokens, seed))
    return [oracle(t, p) for p, t in zip(prompts, texts)]


def oracle_score(rt: Runtime, model, oracle: Callable[[str, str], float], seed: int, samples_per_prompt: int,
                 max_new_tokens: int) -> float:
    """Mean of `oracle_scores`."""
    return statistics.fmean(oracle_scores(rt, model, oracle, seed, samples_per_prompt, max_new_tokens))


def normalized_oracle(oracle: Callable[[str, str], float], store: Store) -> Callable[..., list[float]]:
    """`oracle` as a reward on the reward model's scale: mean 0 and std 1 over the base policy's answers.

    The KL price is per nat against rewards on that scale; the raw oracle (0-1, spread about 0.15-0.25)
    would meet a KL price several times steeper than any reward model does, and stop short of what
    a perfect reward model would reach.
    """
    def reward(prompts: list[str], completions: list[str], **_: object) -> list[float]:
        base = base_samples_from_store(store)  # grows until it holds MAX_BASE_SAMPLES answers, as the RM's does
        mean, std = normalization([oracle(c, p) for p, c in base])
        return [(oracle(c, p) - mean) / std for p, c in zip(prompts, completions)]

    return reward


def simulate(
    rt: Runtime,
    rater_name: str,
    *,
    mode: str = "score",
    ratings: int = 100,
    noise: float = 0.1,
    seed: int = 0,
    eval_samples: int = 8,
    best_of_n: int = 4,
    max_new_tokens: int = 48,
    wall_budget_s: float | None = None,
    oracle_reward: bool = False,
    endpoint_samples: int = 0,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
) -> SimulationResult:
    """Rate `ratings` answers as the rater would, training as the app does; measure each version.

    `oracle_reward` is a measurement, not the app: the policy optimizer is scored by the rater's
    hidden oracle instead of the reward model (which is still fitted, and used for best-of-N), so
    a run shows how far the optimizer alone gets with a perfect reward model in the same time.

    `endpoint_samples` > 0 also measures version 0 (before the first rating) and the last version
    served inside `wall_budget_s` (after the last) on that many answers per eval prompt
    (`Endpoints`); their time is left out of the loop's like every evaluation's.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    rater = get_rater(rater_name, noise=noise)
    if oracle_reward:
        rt.trainer.reward_override = normalized_oracle(rater.oracle, rt.store)
    rng = random.Random(seed)
    result = SimulationResult(rater.name, mode, seed)
    cpu0, wall0 = time.process_time(), time.time()
    eval_cpu = eval_wall = 0.0  # measuring is not part of the loop: its time is left out
    who = f"sim:{rater.name}:{seed}"

    def checkpoint(n_ratings: int, round_status: str | None) -> None:
        nonlocal eval_cpu, eval_wall
        c, w = time.process_time(), time.time()
        oracle, oracle_bon = evaluate(rt, rater.oracle, seed, eval_samples, best_of_n, max_new_tokens)
        eval_cpu += time.process_time() - c
        eval_wall += time.time() - w
        rm = rt.trainer.reward_model
        served = rt.holder.version
        cp = Checkpoint(
            policy_version=served,
            ratings=n_ratings,
            cpu_s=time.process_time() - cpu0 - eval_cpu,
            wall_s=time.time() - wall0 - eval_wall,
            oracle=oracle,
            oracle_best_of_n=oracle_bon,
            reward_model_version=rm.version if rm else None,
            reward_model_accuracy=(rm.metrics.get("heldout_accuracy") if rm else None),
            kl_ref=0.0 if served == 0 else rt.store.policy_version(served)["metrics"].get("kl/ref"),
            round_status=round_status,
        )
        result.checkpoints.append(cp)
        log.info("checkpoint %s", cp)
        if on_checkpoint:
            on_checkpoint(cp)

    endpoint_seed = seed + 1_000_003  # not the checkpoints' answers again
    v0_precise = None
    if endpoint_samples > 0:
        c, w = time.process_time(), time.time()
        v0_precise = oracle_scores(rt, rt.holder.current().model, rater.oracle, endpoint_seed, endpoint_samples,
                                   max_new_tokens)
        eval_cpu += time.process_time() - c
        eval_wall += time.time() - w
    checkpoint(0, None)
    if result.checkpoints[0].oracle >= 0.95:
        log.warning("version 0 already scores %.2f with %s on these prompts: little is left to learn; give prompts "
                    "where answers vary in what it cares about (--prompts, e.g. emoji for dislikes_emoji)",
                    result.checkpoints[0].oracle, rater.name)
    given = 0
    while given < ratings:
        if wall_budget_s is not None and time.time() - wall0 - eval_wall > wall_budget_s:
            log.info("wall budget of %.0f s spent after %d ratings", wall_budget_s, given)
            break
        prompt = rng.choice(rt.store.prompts())
        if mode == "compare":
            ans = rt.answerer.answer(prompt, pair=True, max_new_tokens=max_new_tokens, seed=rng.randrange(2**31),
                                     session=who, source="simulate")
            a, b = ans.generation_ids
            rt.store.compare(a, b, who, rater.compare(ans.texts[0], ans.texts[1], prompt, rng))
        else:
            ans = rt.answerer.answer(prompt, max_new_tokens=max_new_tokens, seed=rng.randrange(2**31),
                                     session=who, source="simulate")
            value = rater.thumb(ans.texts[0], prompt, rng) if mode == "thumb" else rater.score(ans.texts[0], prompt, rng)
            rt.store.rate(ans.generation_ids[0], who, mode, value)
        given += 1
        if rt.trainer.due():
            before = rt.holder.version
            row = rt.trainer.run_round()
            if rt.holder.version != before:
                checkpoint(given, row["status"])
    if not result.checkpoints or result.checkpoints[-1].ratings != given:
        checkpoint(given, None)
    if v0_precise is not None:
        inside = [c for c in result.checkpoints[1:] if wall_budget_s is None or c.wall_s <= wall_budget_s]
        version = inside[-1].policy_version if inside else 0  # v0 serves from the start
        if version == rt.holder.version:
            model = rt.holder.current().model
        else:  # a round that began inside the budget published after it
            model = load_for_serving(rt.base.model, rt.settings.data_dir, rt.store.policy_version(version))
        result.endpoints = Endpoints.measure(endpoint_samples, endpoint_seed, v0_precise, version, oracle_scores(
            rt, model, rater.oracle, endpoint_seed, endpoint_samples, max_new_tokens))
        log.info("endpoints: %s", result.endpoints)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser("Run the live RLHF loop headless with a simulated rater.")
    own = argparse.ArgumentParser(add_help=False)
    for p in (parser, own):
        p.add_argument("--rater", default="likes_enthusiasm", help="Rater name (see rlhf_app/raters.py) or module:function.")
        p.add_argument("--mode", default="score", choices=MODES, help="How the rater rates.")
        p.add_argument("--ratings", type=int, default=100, help="Ratings to give.")
        p.add_argument("--noise", type=float, default=0.1, help="Probability a rating is random.")
        p.add_argument("--eval-samples", type=int, default=8, help="Answers per eval prompt at each checkpoint.")
        p.add_argument("--endpoint-samples", type=int, default=0,
                       help="Also measure version 0 and the last version inside the wall budget on this many "
                            "answers per eval prompt, for a precise gain (0: off).")
        p.add_argument("--best-of", type=int, default=4, help="N of the best-of-N evaluation.")
        p.add_argument("--answer-tokens", type=int, default=48, help="Length cap of the rated and evaluated answers.")
        p.add_argument("--wall-budget", type=float, default=None,
                       help="Stop rating after this many seconds of the loop (evaluation time not counted).")
        p.add_argument("--oracle-reward", action="store_true",
                       help="Measure the optimizer alone: train on the rater's hidden oracle, not the reward model.")
        p.add_argument("--out", default=None, help="Write the result as JSON here.")
    parser.parse_args(argv)  # --help and errors for every flag
    mine, rest = own.parse_known_args(argv)
    settings = load_settings(rest)
    settings.trainer = False  # rounds run in this thread, on the app's own trigger
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rt = Runtime.build(settings)
    result = simulate(rt, mine.rater, mode=mine.mode, ratings=mine.ratings, noise=mine.noise, seed=settings.seed,
                      eval_samples=mine.eval_samples, best_of_n=mine.best_of, max_new_tokens=mine.answer_tokens,
                      wall_budget_s=mine.wall_budget, oracle_reward=mine.oracle_reward,
                      endpoint_samples=mine.endpoint_samples)
    text = json.dumps(result.to_dict(), indent=2)
    if mine.out:
        with open(mine.out, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
