"""The Dashboard tab: is the model getting better? Plots and tables from `dashboard.py`, refreshed by a timer."""

from __future__ import annotations

import datetime as dt

import gradio as gr
import pandas as pd

from . import dashboard
from .api import GENERATE_CONCURRENCY
from .errors import UserError
from .prompts import load_prompts

REFRESH_S = 5.0


def _when(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%H:%M:%S") if t else ""


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)


def dashboard_frames(runtime) -> tuple[pd.DataFrame, ...]:
    """Everything the tab shows, as frames: votes over time, human rating per version, RM accuracy,
    rounds, versions."""
    store = runtime.store
    votes = pd.DataFrame(dashboard.ratings_over_time(store), columns=["time", "votes", "kind"])
    votes["time"] = pd.to_datetime(votes["time"], unit="s")
    human = _frame(dashboard.human_rating_by_version(store), ["version", "n", "mean", "low", "high"])
    rms = _frame(dashboard.reward_model_history(store),
                 ["version", "heldout_accuracy", "heldout_spearman", "n_train_pairs", "n_heldout_pairs"])
    rounds = dashboard.round_history(store)
    per_round = pd.DataFrame(
        [{"round": r["id"], "metric": k, "value": r[k]} for r in rounds
         for k in ("reward/mean", "kl/ref", "kl/budget", "entropy") if r.get(k) is not None],
        columns=["round", "metric", "value"],
    )
    round_table = _frame(
        [{**r, "started": _when(r["started_at"])} for r in rounds],
        ["id", "started", "algorithm", "status", "policy_version", "reward_model_version", "n_ratings",
         "reward/mean", "kl/ref", "kl/budget", "entropy", "reason"],
    )
    versions = _frame(
        [{**v, "live": "LIVE" if v["live"] else "", "created": _when(v["created_at"])}
         for v in dashboard.versions_table(store)],
        ["version", "live", "created", "parent", "algorithm", "reward_model", "reward/mean", "kl/ref",
         "human_mean", "human_n"],
    )
    return votes, human, rms, per_round, round_table, versions


def build_dashboard_tab(runtime, make_live) -> None:
    """Add the Dashboard tab to the Blocks being built. `make_live(version, token, request)` is the
    admin-checked rollback of the Admin tab, reused here."""
    with gr.Tab("Dashboard"):
        gr.Markdown(
            "Is the model getting better while people rate it? Human rating per version uses "
            f"one scale in [-1, 1] ({dashboard.UTILITY_HELP}); bars are 95% intervals."
        )
        with gr.Row():
            votes_plot = gr.LinePlot(x="time", y="votes", title="Votes over time", height=260)
            human_plot = gr.LinePlot(x="version", y="mean", title="Mean human rating per policy version",
                                     y_lim=[-1, 1], height=260)
        with gr.Row():
            rm_plot = gr.LinePlot(x="version", y="heldout_accuracy", title="Reward model held-out accuracy",
                                  y_lim=[0, 1], height=260)
            round_plot = gr.LinePlot(x="round", y="value", color="metric",
                                     title="Per round: reward, KL, KL budget, entropy", height=260)
        human_table = gr.Dataframe(label="Human rating per version (n, mean, 95% interval)", interactive=False)
        versions_table = gr.Dataframe(label="Policy versions", interactive=False)
        rounds_table = gr.Dataframe(label="Training rounds", interactive=False)
        with gr.Accordion("Make another version live (admin)", open=False):
            with gr.Row():
                version_box = gr.Number(label="Version", precision=0, value=0)
                token_box = gr.Textbox(label="Admin token", type="password")
                live_btn = gr.Button("Make live")
            live_msg = gr.Markdown()
        gr.Markdown("### Before and after: the same prompt, version 0 vs the live version, same seed")
        with gr.Row():
            examples = load_prompts(runtime.settings.prompts)
            ba_prompt = gr.Dropdown(choices=examples, value=examples[0], allow_custom_value=True,
                                    label="Prompt", scale=4)
            ba_btn = gr.Button("Answer with both", scale=1)
        with gr.Row():
            before = gr.Textbox(label="Version 0", lines=6, interactive=False)
            after = gr.Textbox(label="Live version", lines=6, interactive=False)

        outputs = [votes_plot, human_plot, rm_plot, round_plot, human_table, versions_table, rounds_table]

        def refresh():
            votes, human, rms, per_round, round_table, versions = dashboard_frames(runtime)
            return votes, human, rms, per_round, human, versions, round_table

        def on_before_after(prompt):
            try:
                r = dashboard.before_after(runtime, prompt)
            except UserError as e:
                raise gr.Error(str(e))
            label = lambda side: (f"v{r[side]['version']}" + (f" · reward {r[side]['reward']:+.2f}"  # noqa: E731
                                  if "reward" in r[side] else " · no reward model yet"))
            return (gr.update(value=r["before"]["text"], label=label("before")),
                    gr.update(value=r["after"]["text"], label=label("after")))

        timer = gr.Timer(REFRESH_S)
        timer.tick(refresh, outputs=outputs, api_visibility="private", show_progress="hidden")
        gr.on([live_btn.click], make_live, inputs=[version_box, token_box], outputs=live_msg,
              api_visibility="private").then(refresh, outputs=outputs, api_visibility="private")
        ba_btn.click(on_before_after, inputs=ba_prompt, outputs=[before, after], api_visibility="private",
                     concurrency_id="generate", concurrency_limit=GENERATE_CONCURRENCY)
