"""The live trainer: a background loop that turns new ratings into a better served policy.

A round reads top to bottom as the seed's iterative loop:

1. fit the reward model on every stored rating, if ratings changed since the last fit (reward.py);
2. run the policy optimizer against it on stored prompts: PPO (ppo.py), GRPO (grpo.py) or best-of-N
   distillation (best_of_n.py), until the round's steps are done or the policy has spent its KL
   budget (`kl_budget`: `max_kl`, or, with `kl_ramp_ratings` set, a share of it that grows with
   the number of ratings);
3. check the result: measure the new policy's KL to the initial one after its last update; past
   the budget, pull it back onto it (kl_bound.py, `kl_pull_back`). A round with NaN metrics, or
   still over `max_kl`, or (with `publish_gate`) whose answers the reward model scores below the
   live version's (acceptance.py), is discarded and logged, and the served policy stays;
4. publish: save the new version atomically, record it in SQLite, swap it in for serving. With
   `policy_average` set, the version saved is a moving average of the rounds' weights
   (averaging.py), and the optimizer goes on from its own.

A round starts after `train_every_ratings` new votes, or `train_every_seconds` after the last
round when there is at least one new vote, or when asked (`request_round()`, the admin button,
the `/train_now` endpoint). It runs in a daemon thread started once by the app, or in the
foreground with `python -m rlhf_app.train`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .averaging import WeightAverage
from .config import Settings, env_name, flag_name
from .demonstrations import liked_answers
from .errors import UserError
from .models import LoadedModel
from .policy import PolicyHolder, ServedPolicy, ServingGate, clone_model
from .store import Store
from .versions import is_adapter, load_for_serving, save_version, version_dir

log = logging.getLogger(__name__)

KL_ADVICE = ("if rounds keep stopping at the KL bound, the policy cannot move further from the initial one: raise "
             f"max_kl ({env_name('max_kl')}, {flag_name('max_kl')}) to let ratings change it again, or make an "
             "earlier version live")
"""What a person running the app can do when the trainer is stuck at `max_kl` (with `kl_pull_back` 0, live
runs reached it by 56-88 ratings on the pets prompts and published nothing after)."""

IDLE, FITTING, OPTIMIZING, CHECKING_KL, CHECKING, PUBLISHING, PAUSED, ERROR = (
    "idle", "fitting the reward model", "optimizing", "measuring KL to the initial policy",
    "comparing with the live version", "publishing", "paused", "error",
)


@dataclass
class TrainerStatus:
    """What the page shows about the trainer; refreshed by a timer."""

    phase: str = IDLE
    detail: str = ""
    paused: bool = False
    round_id: int | None = None
    last_round: dict[str, Any] = field(default_factory=dict)
    last_error: str | None = None


class LiveTrainer:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        holder: PolicyHolder,
        gate: ServingGate,
        base: LoadedModel,
    ):
        self.settings = settings
        self.store = store
        self.holder = holder
        self.gate = gate
        self.base = base
        self.data_dir = Path(settings.data_dir)
        self.status = TrainerStatus()
        self.reward_model = None
        self.reward_override = None
        """A `(prompts, completions) -> scores` used instead of the reward model's by the optimizer.

        Only for measuring: the simulator's `--oracle-reward` puts the rater's hidden oracle here
        to see how far the policy optimizer alone gets with a perfect reward model.
        """
        self._optimizer = None  # PPO trainer / GRPO runner, rebuilt when the trainable policy is
        self._trainable = None
        self._average = None
        """`WeightAverage` of the trainable policy's rounds, served instead of it (`policy_average` > 0)."""
        self._trainable_version: int | None = None
        self._policy_kl = 0.0
        """KL of the trainable policy to the initial one, as its newest step measured (nats per answer)."""
        self._wake = threading.Condition()
        self._round_requested = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self._round_lock = threading.Lock()
        self._load_latest_reward_model()

    # -- control --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (once; later calls do nothing).

        With `settings.trainer` off it only follows the live version and runs requested rounds.
        """
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="live-trainer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def request_round(self) -> None:
        with self._wake:
            self._round_requested = True
            self._wake.notify_all()

    def pause(self) -> None:
        self.status.paused = True

    def resume(self) -> None:
        self.status.paused = False
        with self._wake:
            self._wake.notify_all()

    # -- triggers -------------------------------------------------------------------------------

    def _seen_event_id(self) -> int:
        last = self.store.last_round()
        return (last or {}).get("last_event_id") or 0

    def ratings_until_next_round(self) -> int:
        return max(0, self.settings.train_every_ratings - self.store.pending_votes(self._seen_event_id())[0])

    def due(self) -> bool:
        """True after `train_every_ratings` new votes, or `train_every_seconds` after the first new one."""
        new, first = self.store.pending_votes(self._seen_event_id())
        if new == 0:
            return False
        return new >= self.settings.train_every_ratings or time.time() - first >= self.settings.train_every_seconds

    def _loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait(timeout=1.0)
                if self._stop:
                    return
                requested, self._round_requested = self._round_requested, False
            try:
                self.follow_live()
                if self.status.paused or not (self.settings.trainer or requested):
                    continue
                if requested or self.due():
                    self.run_round()
            except Exception:  # noqa: BLE001 - the trainer must outlive any one round
                log.exception("training round crashed; serving goes on")

    def follow_live(self) -> None:
        """Serve what the store says is live, when another process (`python -m rlhf_app.train`)
        or an admin changed it."""
        live = self.store.live()["version"]
        if live != self.holder.version:
            row = self.store.policy_version(live)
            served = load_for_serving(self.base.model, self.data_dir, row)
            self.holder.swap(ServedPolicy(served, self.base.tokenizer, live, self.base.model_id, time.time()))
            log.info("now serving policy v%d", live)

    # -- the round ------------------------------------------------------------------------------

    def run_round(self) -> dict:
        """Run one round now (in the calling thread); returns its `rounds` row."""
        with self._round_lock:
            return self._run_round()

    def _run_round(self) -> dict:
        s = self.settings
        live = self.store.live()["version"]
        seed = s.seed + len(self.store.rounds())  # recorded with the round; varies round to round
        round_id = self.store.start_round(s.algorithm, live, seed)
        self.status.round_id = round_id
        try:
            self._round(round_id, seed, live)
        except Exception as e:  # noqa: BLE001
            self.status.phase, self.status.last_error = ERROR, f"{type(e).__name__}: {e}"
            self.store.finish_round(round_id, "failed", reason=self.status.last_error[:2000])
            log.error("round %d failed:\n%s", round_id, traceback.format_exc())
            self._drop_trainable()  # its weights may be half-updated
        return self._finish_status(round_id)

    def _finish_status(self, round_id: int) -> dict:
        row = [r for r in self.store.rounds() if r["id"] == round_id][0]
        self.status.last_round = row
        if self.status.phase != ERROR:
            self.status.phase, self.status.detail = IDLE, ""
        return row

    def _round(self, round_id: int, seed: int, live: int) -> dict:
        s = self.settings
        # 1. reward model
        if self.reward_model is None or self.store.last_event_id() > self.reward_model.last_event_id:
            self._set(FITTING, "reading the ratings")
            rm = self._fit_reward_model(seed)
            if rm is None and self.reward_model is None:
                self.store.finish_round(round_id, "skipped", reason="not enough ratings to fit a reward model yet")
                return {}
            if rm is not None:
                self.reward_model = rm
        rm = self.reward_model

        # 2. optimize the policy against it
        torch.manual_seed(seed)  # a fresh LoRA adapter's init; sampling has its own seeded generators
        self._ensure_trainable(live, seed)
        prompts = self.store.prompts()
        rng = random.Random(seed)
        reward_fn = self.reward_override or rm.score
        steps = s.optimizer.steps_per_round
        budget = kl_budget(s, self.store.stats()["votes"])
        # PPO's supervised term (ppo.imitation_coef): the answers the ratings liked, read once a round.
        imitate = {"demonstrations": liked_answers(self.store)} if s.algorithm == "ppo" and s.ppo.imitation_coef else {}
        per_step: list[dict] = []
        for k in range(steps):
            if self.status.paused or self._policy_kl >= budget:
                break
            self._set(OPTIMIZING, f"{s.algorithm.upper()} step {k + 1} of {steps}")
            batch = [rng.choice(prompts) for _ in range(s.optimizer.batch_prompts)]
            m = self._optimizer.step(batch, reward_fn, on_progress=lambda p, k=k: self._set(
                OPTIMIZING, f"{s.algorithm.upper()} step {k + 1} of {steps}: {p}"), **imitate)
            m.pop("samples", None)
            per_step.append(m)
            # Measured on this step's samples, i.e. before its update: the policy may end one
            # update past the budget.
            self._policy_kl = m.get("kl/ref", self._policy_kl)
            if not all(math.isfinite(v) for v in m.values() if isinstance(v, (int, float))):
                break
        metrics = _mean_metrics(per_step)
        metrics["round/steps"] = len(per_step)
        metrics["kl/budget"] = budget
        metrics["reward_model/version"] = rm.version
        metrics.update({f"reward_model/{k}": v for k, v in rm.metrics.items() if isinstance(v, (int, float))})

        # 3. check
        if per_step and not _non_finite(metrics):
            metrics.update(self._bound_kl(budget))
        bad = _non_finite(metrics)
        kl = metrics.get("kl/ref", 0.0)
        reason = None
        if not per_step and not self.status.paused:
            reason = f"KL budget spent: the policy is {self._policy_kl:.2f} nats from the initial one, and "
            reason += (f"{budget:.2f} of max_kl {s.max_kl:g} is allowed until there are {s.kl_ramp_ratings} ratings"
                       if budget < s.max_kl else f"max_kl is {s.max_kl:g}; {KL_ADVICE}")
            log.info("round %d skipped: %s", round_id, reason)
            self.store.finish_round(round_id, "skipped", reason=reason, metrics=_finite(metrics),
                                    reward_model_version=rm.version)
            return metrics
        if not per_step:
            reason = "paused before the first step"
        elif self.store.live()["version"] != live:
            reason = f"an admin made another version live during the round (it started from v{live})"
        elif bad:
            reason = f"non-finite metrics: {', '.join(bad)}"
        elif kl > budget:  # pulling back fell short, or is off
            reason = f"KL to the initial policy {kl:.2f} nats is over the bound {budget:.3g}. The next round starts "
            reason += "from the live version again; " + (
                KL_ADVICE if budget >= s.max_kl
                else f"the bound grows to max_kl {s.max_kl:g} at {s.kl_ramp_ratings} ratings")
        elif s.publish_gate:
            metrics.update(self._compare_with_live(prompts, reward_fn, seed, rng))
            if metrics["gate/gain"] < 0:
                reason = (f"the reward model scores its answers {metrics['gate/candidate']:.3f} on average, below "
                          f"the live version's {metrics['gate/live']:.3f}")
        if reason:
            log.warning("round %d discarded: %s", round_id, reason)
            self.store.finish_round(round_id, "discarded", reason=reason, metrics=_finite(metrics),
                                    reward_model_version=rm.version)
            self._drop_trainable()
            return metrics

        # 4. publish
        if self._average is not None:
            metrics.update(self._fold_into_average(kl))
        self._set(PUBLISHING, "saving the new policy version")
        version = self.publish(round_id, seed, live, rm.version, metrics)
        self._policy_kl = kl
        note = None
        if "kl/ref_before_pull_back" in metrics:
            note = (f"pulled back from {metrics['kl/ref_before_pull_back']:.2f} to {kl:.2f} nats (alpha "
                    f"{metrics['kl/pull_back']:.3f}): the policy is at the KL budget {budget:.2f} and moves along it")
        self.store.finish_round(round_id, "published", reason=note, metrics=metrics, policy_version=version,
                                reward_model_version=rm.version)
        return metrics

    def _bound_kl(self, budget: float) -> dict:
        """The round's policy's own KL, measured after its last update on that step's answers, and
        if it is past `budget`, the policy pulled back onto it (kl_bound.py). GRPO samples inside
        TRL and keeps no answers: its last step's KL stands."""
        from .kl_bound import pull_back

        opt, s = self._optimizer, self.settings
        if getattr(opt, "last_rollout", None) is None:
            return {}
        self._set(CHECKING_KL)
        kl = self._measure_kl()
        out = {"kl/ref_last_step": self._policy_kl, "kl/ref": kl, "kl/pull_back": 1.0}
        if kl > budget and s.kl_pull_back > 0:
            self._set(CHECKING_KL, f"{kl:.2f} nats is past the budget {budget:.2f}: pulling the policy back")
            got = pull_back(self._trainable, opt.ref_model, self._measure_kl, kl, target=s.kl_pull_back * budget,
                            bound=budget)
            if got is not None:
                out.update({"kl/ref_before_pull_back": kl, "kl/pull_back": got[0], "kl/ref": got[1]})
                log.info("pulled the policy back from %.2f to %.2f nats (alpha %.3f)", kl, got[1], got[0])
        return out

    def _measure_kl(self) -> float:
        """KL of the trainable policy (as its weights are now) to the initial one, on the last step's answers."""
        from .kl_bound import answers_kl

        opt = self._optimizer
        return answers_kl(self._trainable, opt.ref_model, opt.last_rollout, opt.config.temperature,
                          opt.config.minibatch_size, between=self.gate.wait_until_idle)

    def _fold_into_average(self, trained_kl: float) -> dict:
        """Update the served average with the round's weights; the version's `kl/ref` becomes the
        average's own (GRPO keeps no answers to measure it on: the trained policy's stands)."""
        self._average.update()
        out = {"average/decay": self._average.decay, "kl/ref_trained": trained_kl}
        if getattr(self._optimizer, "last_rollout", None) is not None:
            self._set(CHECKING_KL, "measuring the averaged policy")
            with self._average.applied():
                out["kl/ref"] = self._measure_kl()
        return out

    def _compare_with_live(self, prompts: list[str], reward_fn, seed: int, rng: random.Random) -> dict:
        from .acceptance import compare_with_live
        from .sampling import SamplingParams

        s = self.settings
        self._set(CHECKING)
        params = SamplingParams(s.temperature, s.top_p, s.optimizer.max_new_tokens, seed)
        return compare_with_live(self._trainable, self.holder.current().model, self.base.tokenizer, prompts,
                                 reward_fn, params, s.publish_gate_answers, rng,
                                 between_tokens=lambda: self.gate.wait_until_idle() or True)

    def _set(self, phase: str, detail: str = "") -> None:
        self.status.phase, self.status.detail = phase, detail

    # -- reward model ---------------------------------------------------------------------------

    def _fit_reward_model(self, seed: int):
        from .reward import fit_and_record

        return fit_and_record(self.store, self.base.path, self.settings.reward, seed, self.data_dir,
                              on_progress=lambda p: self._set(FITTING, p))

    def _load_latest_reward_model(self) -> None:
        row = self.store.latest_reward_model()
        if row is None:
            return
        from .reward import RewardModel

        try:
            self.reward_model = RewardModel.load(self.data_dir / row["path"])
        except Exception:  # noqa: BLE001 - a missing RM is refitted at the next round
            log.exception("could not load reward model v%s; it will be refitted", row["version"])

    # -- trainable policy -----------------------------------------------------------------------

    def _ensure_trainable(self, live: int, seed: int) -> None:
        """A trainable copy of the live version (LoRA on the base, or full weights)."""
        if self._trainable is not None and self._trainable_version == live:
            return
        s = self.settings
        model = clone_model(self.base.model)
        ref_model = None
        row = self.store.policy_version(live)
        if s.lora_r > 0:
            from peft import PeftModel

            path = self.data_dir / row["path"] if row.get("path") else None
            if path is not None and is_adapter(path):
                model = PeftModel.from_pretrained(model, str(path), is_trainable=True)
            else:
                model = with_new_lora(model, s)
        else:
            if live != 0:
                model = load_for_serving(self.base.model, self.data_dir, row)
            ref_model = clone_model(self.base.model).eval().requires_grad_(False)
        self._optimizer = make_optimizer(s, model, self.base.tokenizer, gate=self.gate, seed=seed,
                                         ref_model=ref_model)
        self._trainable, self._trainable_version = model, live
        self._average = WeightAverage(model, s.policy_average) if s.policy_average > 0 else None
        self._policy_kl = float((row.get("metrics") or {}).get("kl/ref") or 0.0)  # v0 has none: 0

    def _drop_trainable(self) -> None:
        self._trainable = self._optimizer = self._average = None
        self._trainable_version = None

    # -- publishing and rollback ----------------------------------------------------------------

    def publish(self, round_id: int, seed: int, parent: int, reward_version: int, metrics: dict) -> int:
        """Save the trainable policy (or its average) as a new version, record it, make it live, swap it in."""
        version = self.store.next_policy_version()
        meta = dict(version=version, parent=parent, round_id=round_id, seed=seed, algorithm=self.settings.algorithm,
                    reward_model_version=reward_version, model_id=self.base.model_id,
                    settings=self.settings.to_dict(), metrics=metrics)
        with self._average.applied() if self._average is not None else contextlib.nullcontext():
            path = save_version(self._trainable, self.data_dir, version, meta)
        row = dict(parent=parent, path=path, model_id=self.base.model_id, algorithm=self.settings.algorithm,
                   reward_model_version=reward_version, round_id=round_id, seed=seed,
                   settings=self.settings.to_dict(), metrics=_finite(metrics))
        served = load_for_serving(self.base.model, self.data_dir, {"version": version, "path": path})
        self.store.add_policy_version(version, make_live=True, **row)
        self.holder.swap(ServedPolicy(served, self.base.tokenizer, version, self.base.model_id, time.time()))
        self._trainable_version = version
        log.info("published policy v%d (round %d)", version, round_id)
        return version

    def set_live(self, version: int, actor: str) -> None:
        """Serve an older (or newer) version again; recorded in `live_events`."""
        row = self.store.policy_version(int(version))
        if row["version"] != 0 and not version_dir(self.data_dir, row["version"]).exists():
            raise UserError(f"The files of policy version {version} are missing from {self.data_dir}.")
        served = load_for_serving(self.base.model, self.data_dir, row)
        self.store.set_live(row["version"], reason="made live by an admin", actor=actor)
        self.holder.swap(ServedPolicy(served, self.base.tokenizer, row["version"], self.base.model_id, time.time()))


def kl_budget(settings: Settings, ratings: int) -> float:
    """KL (nats per answer) the policy may reach with `ratings` stored: `max_kl`, or with a ramp,
    a share of it growing linearly with the ratings.

    >>> from rlhf_app.config import Settings
    >>> kl_budget(Settings(max_kl=8.0, kl_ramp_ratings=96), 24), kl_budget(Settings(max_kl=8.0), 5)
    (2.0, 8.0)
    """
    if settings.kl_ramp_ratings <= 0:
        return settings.max_kl
    return settings.max_kl * min(1.0, ratings / settings.kl_ramp_ratings)


def with_new_lora(model: torch.nn.Module, settings: Settings) -> torch.nn.Module:
    """`model` wrapped in a fresh LoRA adapter of `settings.lora_r` on every projection."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(
        r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    ))


def make_optimizer(settings: Settings, model: torch.nn.Module, tokenizer: Any, gate: ServingGate | None,
                   seed: int, ref_model: torch.nn.Module | None = None) -> Any:
    """The policy optimizer `settings.algorithm` names, with its settings: `step(prompts, reward_fn)`."""
    if settings.algorithm == "ppo":
        from .ppo import PPOTrainer

        return PPOTrainer(model, tokenizer, settings.ppo, ref_model=ref_model, gate=gate, seed=seed)
    if settings.algorithm == "bon":
        from .best_of_n import BestOfNTrainer

        return BestOfNTrainer(model, tokenizer, settings.bon, ref_model=ref_model, gate=gate, seed=seed)
    from .grpo import GRPORunner

    return GRPORunner(model, tokenizer, settings.grpo, gate=gate, seed=seed, ref_model=ref_model)


def _mean_metrics(per_step: list[dict]) -> dict:
    """Average each numeric metric over the round's steps; a NaN in any step stays NaN (-> discard)."""
    out: dict[str, float] = {}
    keys = {k for m in per_step for k, v in m.items() if isinstance(v, (int, float))}
    for k in sorted(keys):
        vals = [float(m[k]) for m in per_step if isinstance(m.get(k), (int, float))]
        out[k] = sum(vals) / len(vals)
    # KL to the initial policy is a state, not a rate: the last step's value is the round's.
    if per_step and "kl/ref" in per_step[-1]:
        out["kl/ref"] = float(per_step[-1]["kl/ref"])
    return out


def _non_finite(metrics: dict) -> list[str]:
    """Names of the metrics that are NaN or infinite."""
    return [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]


def _finite(metrics: dict) -> dict:
    """JSON-safe copy: NaN/inf become None."""
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in metrics.items()}


def load_live_policy(settings: Settings, store: Store, base: LoadedModel) -> ServedPolicy:
    """On start: the latest live version, falling back to the base model if its files are gone."""
    live = store.live()
    row = store.policy_version(live["version"])
    try:
        model = load_for_serving(base.model, Path(settings.data_dir), row)
    except Exception:  # noqa: BLE001
        log.exception("could not load live policy v%d; serving the base model", live["version"])
        store.set_live(0, reason=f"files of v{live['version']} unreadable at start", actor="app")
        model, live = load_for_serving(base.model, Path(settings.data_dir), {"version": 0}), store.live()
    return ServedPolicy(model, base.tokenizer, live["version"], base.model_id, live["since"] or time.time())
