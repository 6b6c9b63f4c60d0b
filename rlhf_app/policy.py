"""The one place that holds the served policy, and the rule that serving comes before training.

A request takes a `ServedPolicy` snapshot (`holder.current()`) when it starts and generates its
whole answer from it. Publishing builds the new model on the side and swaps one reference, so
an answer is never written by a half-updated model: requests already running finish on the old
version and are recorded under it; the next request gets the new one.

>>> gate = ServingGate()
>>> with gate.serving():
...     gate.busy
True
>>> gate.busy
False
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class ServedPolicy:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    version: int
    model_id: str
    since: float


class PolicyHolder:
    def __init__(self, served: ServedPolicy):
        self._served = served
        self._lock = threading.Lock()

    def current(self) -> ServedPolicy:
        with self._lock:
            return self._served

    def swap(self, served: ServedPolicy) -> ServedPolicy:
        """Make `served` the policy of every request that starts from now on; returns the old one."""
        served.model.eval()
        with self._lock:
            old, self._served = self._served, served
        return old

    @property
    def version(self) -> int:
        return self.current().version


class ServingGate:
    """Counts answers being generated, so the trainer can step aside while people wait.

    The trainer calls `wait_until_idle()` between its units of work (a sampled token, a
    minibatch): on a 2-core machine two matrix-multiplying threads halve each other's speed,
    and a person watching text stream matters more than a training step finishing sooner.
    """

    def __init__(self) -> None:
        self._active = 0
        self._cond = threading.Condition()
        self.waited_s = 0.0
        """Total seconds the trainer spent stepping aside (reported in round metrics)."""

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        with self._cond:
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @property
    def busy(self) -> bool:
        return self._active > 0

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Block while an answer is being generated; True when idle."""
        t0 = time.monotonic()
        with self._cond:
            idle = self._cond.wait_for(lambda: self._active == 0, timeout=timeout)
        self.waited_s += time.monotonic() - t0
        return idle


def clone_model(model: PreTrainedModel) -> PreTrainedModel:
    """An independent copy of a model (weights included), for training or a new served version."""
    copy = type(model)(model.config)
    copy.load_state_dict(model.state_dict())
    copy.generation_config = model.generation_config
    return copy.to(next(model.parameters()).device, dtype=next(model.parameters()).dtype)


@torch.no_grad()
def merged_copy(base: PreTrainedModel, adapter_dir: str | None) -> PreTrainedModel:
    """A plain model = base + the LoRA adapter in `adapter_dir`, merged so serving runs at full speed."""
    model = clone_model(base)
    if adapter_dir is None:
        return model.eval()
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter_dir).merge_and_unload().eval()
