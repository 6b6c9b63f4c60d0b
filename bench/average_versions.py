"""Would serving an average of a run's last policy versions have scored higher than its last one?

Post hoc, on the data directory a simulated run kept (`python -m rlhf_app.simulate --data-dir D ...`
with the run's `--out D/../result.json`): each policy is measured as the run's endpoints were, on
32 answers per eval prompt with the endpoints' seed, against version 0 on the same random numbers.
Averages are taken over the LoRA weights (A and B each, as `--policy-average` does live) and over
the merged full weights, to see whether averaging A and B apart loses anything.

    python -m rlhf_app.simulate --data-dir /tmp/run/data --seed 0 --rater wants_topic --prompts pets \\
        --eval-samples 4 --endpoint-samples 32 --wall-budget 900 --out /tmp/run/result.json
    python bench/average_versions.py /tmp/run/data --seed 0 --rater wants_topic --prompts pets

Post hoc the answers people rated stay those of the versions served; live, serving an average
changes them (bench/live_improvement.py, ppo-average0.5).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlhf_app.config import load_settings  # noqa: E402
from rlhf_app.policy import merged_copy  # noqa: E402
from rlhf_app.raters import get_rater  # noqa: E402
from rlhf_app.runtime import Runtime  # noqa: E402
from rlhf_app.simulate import Endpoints, oracle_scores  # noqa: E402

OUT = ROOT / "bench" / "results" / "average_versions.json"


def ema_weights(n: int, decay: float) -> list[float]:
    """Weights of versions 1..n in `avg <- decay * avg + (1 - decay) * v`, started at version 1.

    >>> [round(w, 3) for w in ema_weights(3, 0.5)]
    [0.25, 0.25, 0.5]
    """
    w = [(1 - decay) * decay ** (n - v) for v in range(1, n + 1)]
    w[0] = decay ** (n - 1)
    return w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rater", default="wants_topic")
    ap.add_argument("--prompts", default="pets")
    ap.add_argument("--samples", type=int, default=32, help="Answers per eval prompt.")
    args = ap.parse_args()
    data = Path(args.data_dir)
    run = json.loads((data.parent / "result.json").read_text())
    last = run["endpoints"]["version"]
    rt = Runtime.build(load_settings(["--data-dir", str(data), "--prompts", args.prompts, "--seed", str(args.seed)]))
    oracle = get_rater(args.rater).oracle
    seed = run["endpoints"]["seed"]
    policies = data / "policies"

    def score(model) -> list[float]:
        return oracle_scores(rt, model, oracle, seed, args.samples, 48)

    def lora_average(versions: list[int], weights: list[float]):
        heads = [load_file(str(policies / f"v{v}" / "adapter_model.safetensors")) for v in versions]
        avg = {k: sum(w * h[k].float() for w, h in zip(weights, heads)) for k in heads[0]}
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(policies / f"v{versions[-1]}" / "adapter_config.json", tmp)
            save_file(avg, str(Path(tmp) / "adapter_model.safetensors"))
            return merged_copy(rt.base.model, tmp)

    def full_average(versions: list[int], weights: list[float]):
        models = [merged_copy(rt.base.model, str(policies / f"v{v}")) for v in versions]
        states = [m.state_dict() for m in models]
        models[0].load_state_dict({k: sum(w * s[k].float() for w, s in zip(weights, states)).to(states[0][k].dtype)
                                   for k in states[0]})
        return models[0]

    v0 = score(merged_copy(rt.base.model, None))
    rows = []

    def measure(name: str, model) -> None:
        ends = Endpoints.measure(args.samples, seed, v0, last, score(model))
        row = {"policy": name, "gain": ends.gain, "gain_se": ends.gain_se}
        rows.append(row)
        print(f"{name:28s} gain {row['gain']:+.3f} +- {row['gain_se']:.3f}", flush=True)

    measure(f"v{last}", lora_average([last], [1.0]))
    for k in (2, 3, 4):
        versions = list(range(last - k + 1, last + 1))
        measure(f"LoRA mean v{versions[0]}-v{last}", lora_average(versions, [1 / k] * k))
        measure(f"full mean v{versions[0]}-v{last}", full_average(versions, [1 / k] * k))
    for decay in (0.5, 0.7):
        measure(f"LoRA EMA {decay} v1-v{last}", lora_average(list(range(1, last + 1)), ema_weights(last, decay)))
    OUT.write_text(json.dumps({"rater": args.rater, "prompts": args.prompts, "seed": args.seed,
                               "samples_per_prompt": args.samples, "v0": statistics.fmean(v0),
                               "run_gain": run["endpoints"]["oracle"] - run["endpoints"]["v0"],
                               "versions": rows}, indent=2) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
