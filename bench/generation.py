"""How fast does the served model answer on this machine? Time to first token and tokens/s.

    ./run.sh python bench/generation.py                          # default model, 64 tokens, 3 reps
    ./run.sh python bench/generation.py --max-new-tokens 128 --reps 5
    python bench/generation.py --data-dir data --threads 1       # from an activated venv

Measures the app's own serving path (`Answerer.stream`: chat template, sampling loop with KV
cache, streaming decode, the SQLite write) for one answer and for the side-by-side pair (two
answers in one batch), with fixed seeds 0..reps-1, after one warm-up answer. Prints a table and
writes bench/results/generation.json with every repetition, median and best, the machine and its
load (`uptime` before and after: other work on the cores lowers every figure several-fold).

Figures, per request:
- ttft_s: from the call to the first token reaching the caller (validation, template, prefill);
- decode tok/s per answer: (steps - 1) / (last token time - first token time), the speed a
  reader watches the text grow at; for the pair both answers grow at this speed;
- decode tok/s total: the same, counting every answer's tokens: what the batch buys;
- end-to-end s: from the call to the stored answer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402

from rlhf_app.config import DEFAULT_MODEL, Settings  # noqa: E402
from rlhf_app.generation import Answerer  # noqa: E402
from rlhf_app.models import load_model  # noqa: E402
from rlhf_app.policy import PolicyHolder, ServedPolicy, ServingGate  # noqa: E402
from rlhf_app.store import Store  # noqa: E402

PROMPT = "Write a short story about a robot who learns to paint."


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="data", help="Data dir holding (or to receive) the converted model.")
    p.add_argument("--model", default=DEFAULT_MODEL, help="Model setting: 'smollm2', a hub id or a local path.")
    p.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'.")
    p.add_argument("--max-new-tokens", type=int, default=64, help="Length cap of every answer.")
    p.add_argument("--reps", type=int, default=3, help="Repetitions of each shape, seeds 0..reps-1.")
    p.add_argument("--temperature", type=float, default=0.7, help="Sampling temperature (the app's default).")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    p.add_argument("--prompt", default=PROMPT, help="The prompt every repetition answers.")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "generation.json"), help="JSON output.")
    return p.parse_args()


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or None
    except OSError:
        return None


def one_request(answerer: Answerer, prompt: str, seed: int, pair: bool, max_new_tokens: int,
                temperature: float) -> dict:
    """Stream one request to its stored end; the timings of every token as the caller saw them."""
    token_times = []
    t0 = time.perf_counter()
    for answer in answerer.stream(prompt, seed=seed, pair=pair, max_new_tokens=max_new_tokens,
                                  temperature=temperature, source="eval"):
        if not answer.done:
            token_times.append(time.perf_counter())
    t_done = time.perf_counter()
    steps = len(token_times)
    decode_s = token_times[-1] - token_times[0] if steps > 1 else None
    per_answer = (steps - 1) / decode_s if decode_s else None
    return {
        "seed": seed,
        "n_answers": len(answer.texts),
        "n_tokens": answer.n_tokens,
        "steps": steps,
        "finish_reasons": answer.finish_reasons,
        "ttft_s": token_times[0] - t0 if steps else None,
        "decode_tok_s_per_answer": per_answer,
        "decode_tok_s_total": sum(n - 1 for n in answer.n_tokens) / decode_s if decode_s else None,
        "end_to_end_s": t_done - t0,
        "stored_ttft_s": answer.ttft_s,
        "stored_tokens_per_s": answer.tokens_per_s,
        "text_start": answer.texts[0][:80],
    }


def summarize(runs: list[dict]) -> dict:
    def pick(key, best):
        xs = [r[key] for r in runs if r[key] is not None]
        return {"median": statistics.median(xs), "best": best(xs)} if xs else None

    return {
        "ttft_s": pick("ttft_s", min),
        "decode_tok_s_per_answer": pick("decode_tok_s_per_answer", max),
        "decode_tok_s_total": pick("decode_tok_s_total", max),
        "end_to_end_s": pick("end_to_end_s", min),
    }


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = uptime()
    t0 = time.perf_counter()
    loaded = load_model(args.model, args.data_dir, device=args.device)
    load_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="bench-generation-") as tmp:
        store = Store(Path(tmp) / "rlhf.db")  # every answer is stored, as in the app, but not in its data
        holder = PolicyHolder(ServedPolicy(loaded.model, loaded.tokenizer, 0, loaded.model_id, time.time()))
        settings = Settings(max_new_tokens_limit=max(512, args.max_new_tokens))
        answerer = Answerer(settings, holder, store, ServingGate())
        one_request(answerer, args.prompt, seed=1000, pair=False, max_new_tokens=4, temperature=args.temperature)

        results = {}
        for shape, pair in (("single", False), ("pair", True)):
            runs = [one_request(answerer, args.prompt, seed, pair, args.max_new_tokens, args.temperature)
                    for seed in range(args.reps)]
            results[shape] = {"runs": runs, "summary": summarize(runs)}

    report = {
        "what": "bench/generation.py: time to first token and tokens/s of the served model via Answerer.stream",
        "model": loaded.model_id,
        "model_path": loaded.path,
        "device": str(loaded.device),
        "dtype": str(loaded.dtype),
        "load_s": load_s,
        "prompt": args.prompt,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "reps": args.reps,
        "results": results,
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "uptime_before": load_before,
            "uptime_after": uptime(),
        },
        "git_commit": git_commit(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    m = report["machine"]
    print(f"{loaded.model_id} on {loaded.device} ({loaded.dtype}), {m['cpu_count']} cores, "
          f"{m['torch_threads']} torch threads; loaded in {load_s:.1f} s")
    print(f"load before: {m['uptime_before']}\nload after:  {m['uptime_after']}")
    print(f"{args.reps} reps x {args.max_new_tokens} new tokens, seeds 0..{args.reps - 1}; median (best)")
    print(f"{'shape':8} {'TTFT s':>14} {'tok/s/answer':>16} {'tok/s total':>16} {'end-to-end s':>16}")
    for shape, r in results.items():
        s = r["summary"]
        cell = lambda k, f: f"{s[k]['median']:{f}} ({s[k]['best']:{f}})" if s[k] else "-"  # noqa: E731
        print(f"{shape:8} {cell('ttft_s', '.3f'):>14} {cell('decode_tok_s_per_answer', '.1f'):>16} "
              f"{cell('decode_tok_s_total', '.1f'):>16} {cell('end_to_end_s', '.2f'):>16}")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
