"""Everything the app runs on, built once: store, model, served policy, answerer, trainer.

The web UI (`ui.py`), the headless simulator (`simulate.py`) and the stand-alone trainer
(`train.py`) all start from `Runtime.build(settings)`, so a simulated rater's click and a
person's click go through the same objects.

    from rlhf_app.config import load_settings
    from rlhf_app.runtime import Runtime
    rt = Runtime.build(load_settings([]))
    ans = rt.answerer.answer("Tell me a fun fact about cats.")
    rt.store.rate(ans.generation_ids[0], rater="me", kind="score", value=4)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .generation import Answerer
from .models import LoadedModel, load_model
from .policy import PolicyHolder, ServingGate
from .prompts import load_prompts, seed_prompts
from .store import Store
from .trainer import LiveTrainer, load_live_policy

log = logging.getLogger(__name__)

DB_NAME = "rlhf.db"


def quiet_offline_env() -> None:
    """No telemetry and no update checks: the app must start and run with no network."""
    for k, v in {
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():
        os.environ.setdefault(k, v)


@dataclass
class Runtime:
    settings: Settings
    store: Store
    base: LoadedModel
    holder: PolicyHolder
    gate: ServingGate
    answerer: Answerer
    trainer: LiveTrainer

    @classmethod
    def build(cls, settings: Settings) -> "Runtime":
        quiet_offline_env()
        data = Path(settings.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        store = Store(data / DB_NAME)
        interrupted = store.fail_interrupted_rounds()
        if interrupted:
            log.warning("%d training round(s) were interrupted by the last shutdown", interrupted)
        seed_prompts(store, load_prompts(settings.prompts))
        base = load_model(settings.model, data, settings.device)
        store.ensure_base_version(base.model_id)
        holder = PolicyHolder(load_live_policy(settings, store, base))
        gate = ServingGate()
        trainer = LiveTrainer(settings, store, holder, gate, base)
        answerer = Answerer(settings, holder, store, gate, scorer=lambda: trainer.reward_model)
        log.info("serving %s, policy v%d, data in %s", base.model_id, holder.version, data.resolve())
        return cls(settings, store, base, holder, gate, answerer, trainer)

    def status(self) -> dict:
        """Trainer state, ratings until the next round, and the live version: for the page and the API."""
        t = self.trainer
        live = self.store.live()
        rm = t.reward_model
        return {
            "trainer": "paused" if t.status.paused and t.status.phase == "idle" else t.status.phase,
            "detail": t.status.detail,
            "paused": t.status.paused,
            "trainer_running": t.running,
            "ratings_until_next_round": t.ratings_until_next_round(),
            "live_version": live["version"],
            "live_since": live["since"],
            "live_reason": live["reason"],
            "reward_model_version": rm.version if rm is not None else None,
            "algorithm": self.settings.algorithm,
            "last_round": {k: t.status.last_round.get(k) for k in ("id", "status", "reason", "policy_version")}
            if t.status.last_round
            else None,
            "last_error": t.status.last_error,
            **{f"count_{k}": v for k, v in self.store.stats().items()},
        }
