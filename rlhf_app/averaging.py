"""The served policy as a moving average of the trained policy's weights.

With a learned reward model, each round's policy is one noisy point on the optimizer's path:
live runs on the pets prompts (wants_topic) served versions whose oracle score went up and down
by 0.1 from one round to the next while the reward model kept improving. With `policy_average`
set, the trainer publishes the average instead of the newest point:

    served <- decay * served + (1 - decay) * trained        (once per published round)

over every weight the optimizer trains (LoRA's A and B, or all weights in full fine-tuning),
starting from the weights the trainable policy was built from (the live version's). The optimizer
goes on from its own weights, not from the average. WARP (Ramé et al., 2024) serves such an
average of RLHF'd weights.

Off by default, because live it did worse: post hoc, averaging a finished run's last versions
scored +0.175 where its last version scored +0.151 (bench/average_versions.py), but run live at
0.5 wants_topic gained +0.043 and +0.191 against +0.151 and +0.195 (seeds 0, 2). In this app the
served policy also writes the answers people rate; the lagging average fed the reward model
answers the optimizer had already left.

>>> import torch
>>> net = torch.nn.Linear(1, 1, bias=False)
>>> _ = net.weight.data.fill_(0.0)
>>> avg = WeightAverage(net, decay=0.5)
>>> _ = net.weight.data.fill_(1.0); avg.update()
>>> with avg.applied():
...     round(net.weight.item(), 3)
0.5
>>> net.weight.item()       # the optimizer's weights come back
1.0
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class WeightAverage:
    def __init__(self, policy: nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError("decay must be in [0, 1)")
        self.decay = decay
        self.pairs = [(p, p.detach().clone()) for p in policy.parameters() if p.requires_grad]
        if not self.pairs:
            raise ValueError("the policy has no trainable weights to average")

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the policy's current weights."""
        for p, avg in self.pairs:
            avg.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The policy holds the average inside the block (to measure or save it), its own weights after."""
        own = [p.detach().clone() for p, _ in self.pairs]
        try:
            with torch.no_grad():
                for p, avg in self.pairs:
                    p.copy_(avg)
            yield
        finally:
            with torch.no_grad():
                for (p, _), w in zip(self.pairs, own):
                    p.copy_(w)
