"""The web page of the live RLHF demo.

`build_ui(runtime)` returns the Gradio app (page and public API); `app.py` launches it with
`theme=THEME, css=CSS`. Every callback is a few lines that call the package (`Answerer.stream`,
and `api.record_rating` / `record_comparison` / `admin_do`, shared with the API).

The page: a status line on top, refreshed every 2 s (trainer state, ratings until the next
round, live policy version and since when), then three tabs:

- Chat: prompt (or a starter example), sampling sliders, Generate / Stop, the streamed answer,
  👍 / 👎 and a 1-5 score for the answer just shown; best-of-N shows every candidate's score;
- Compare: two answers to one prompt side by side, then A better / B better / Tie / Both bad;
- Admin: train now, pause, resume, make a policy version live.

Stop sets a threading.Event of this browser session and tab; the answer checks it between
tokens, so the partial answer is still stored and can be rated. Refused requests (UserError)
show their message in the tab's message line; anything else shows a short notice and is logged.

The public API (/generate, /rate_thumb, ...) and who may call the admin endpoints: see
`rlhf_app/api.py`.
"""

from __future__ import annotations

import logging
import threading
import time

import gradio as gr

from .api import (GENERATE_CONCURRENCY, admin_actor, admin_do, hf_login_available, rater_id, record_comparison,
                  record_rating, register_api)
from .errors import UserError
from .generation import Answer
from .prompts import load_prompts
from .runtime import Runtime
from .store import Store
from .trainer import FITTING, OPTIMIZING
from .ui_dashboard import build_dashboard_tab

log = logging.getLogger(__name__)

REFRESH_SECONDS = 2.0
"""Seconds between refreshes of the status line (every open tab asks)."""

CSS = """
.status-line { font-size: 0.95em; }
.answer textarea { font-size: 1.05em; }
"""
THEME = gr.themes.Default(primary_hue="orange", secondary_hue="blue")


def friendly(e: Exception) -> str:
    """The message line for a failed request: a UserError's own words, else a short notice (logged)."""
    if isinstance(e, UserError):
        return f"⚠️ {e}"
    log.error("request failed", exc_info=e)
    return f"⚠️ Something went wrong on the server ({type(e).__name__}); it has been logged. Please try again."



# -- how things read on the page ----------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _ago(t: float | None, now: float | None = None) -> str:
    if not t:
        return "at start"
    s = max(0, int((now or time.time()) - t))
    ago = f"{s} s" if s < 90 else f"{s // 60} min" if s < 5400 else f"{s // 3600} h"
    return f"since {time.strftime('%H:%M UTC', time.gmtime(t))}, {ago} ago"


def status_markdown(st: dict, auto: bool = True, now: float | None = None) -> str:
    """One line from `Runtime.status()`: trainer state, ratings until the next round, live version.

    `auto`: whether rounds start by themselves (`settings.trainer`); without it only Train now does.

    >>> st = {"trainer": "optimizing", "detail": "PPO step 2 of 4", "trainer_running": True,
    ...       "ratings_until_next_round": 3, "live_version": 1, "live_since": None, "count_votes": 9}
    >>> for part in status_markdown(st).split(" · "):
    ...     print(part)
    **Trainer:** PPO step 2 of 4
    3 more ratings until the next round
    **live policy v1** (at start)
    9 votes so far
    """
    phase, detail = st.get("trainer", "idle"), st.get("detail") or ""
    if not st.get("trainer_running"):
        trainer = "not running in this process"
    elif phase == OPTIMIZING and detail:
        trainer = detail
    elif phase == FITTING and detail:
        trainer = f"{phase} ({detail})"
    elif phase == "error":
        trainer = f"the last round failed ({(st.get('last_error') or '')[:120]})"
    elif phase == "idle" and not auto:
        trainer = "idle; rounds start only when an admin asks (--trainer false)"
    else:
        trainer = phase
    parts = [f"**Trainer:** {trainer}"]
    if auto:
        n = st.get("ratings_until_next_round", 0)
        parts.append(f"{_plural(n, 'more rating')} until the next round" if n else "next round due")
    parts.append(f"**live policy v{st.get('live_version', 0)}** ({_ago(st.get('live_since'), now)})")
    parts.append(_plural(st.get("count_votes", 0), "vote") + " so far")
    last = st.get("last_round") or {}
    if last.get("status") in ("skipped", "discarded"):  # say why nothing changed
        parts.append(f"last round {last['status']}: {last.get('reason') or ''}")
    return " · ".join(parts)


def answer_summary(ans: Answer) -> str:
    i = ans.chosen or 0
    end = {"stopped": " · stopped by you", "length": " · hit the length limit"}.get(ans.finish_reasons[i], "")
    speed = f" · {ans.tokens_per_s:.0f} tokens/s" if ans.tokens_per_s else ""
    ids = " and ".join(f"#{g}" for g in ans.generation_ids)
    return (f"Answer {ids} by policy v{ans.policy_version} · {max(ans.n_tokens)} tokens{speed}{end}. "
            "Rate it below.")


def candidates_markdown(ans: Answer) -> str:
    """Best-of-N: every candidate's reward score, the chosen one marked."""
    if not ans.candidate_scores:
        return ""
    rows = ["| | reward | candidate |", "|---|---|---|"]
    for i, (score, text) in enumerate(zip(ans.candidate_scores, ans.texts)):
        snippet = " ".join(text.split())[:140].replace("|", "\\|") or "(empty)"
        rows.append(f"| {'✅ shown' if i == ans.chosen else i + 1} | {score:+.3f} | {snippet} |")
    return f"Best of {len(ans.texts)}, scored by reward model v{ans.reward_model_version}:\n\n" + "\n".join(rows)


class StopSwitches:
    """One threading.Event per browser session and tab: Stop sets it, the answer checks it per token.

    The switch is made when Generate is clicked (before the request waits in the queue), so a
    Stop pressed while waiting is not lost.
    """

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], threading.Event] = {}
        self._lock = threading.Lock()

    def arm(self, session: str, tab: str) -> threading.Event:
        with self._lock:
            ev = self._events[(session, tab)] = threading.Event()
        return ev

    def get(self, session: str, tab: str) -> threading.Event:
        with self._lock:
            ev = self._events.get((session, tab))
        return ev if ev is not None else self.arm(session, tab)

    def stop(self, session: str, tab: str) -> None:
        with self._lock:
            ev = self._events.get((session, tab))
        if ev is not None:
            ev.set()

    def forget(self, session: str) -> None:
        with self._lock:
            for key in [k for k in self._events if k[0] == session]:
                del self._events[key]


# -- the page -----------------------------------------------------------------------------------

QUICK = dict(concurrency_limit=None, api_visibility="private", show_progress="hidden")
GENERATE = dict(concurrency_limit=GENERATE_CONCURRENCY, concurrency_id="generate", api_visibility="private")


def _sampling_controls(s, best_of: bool) -> list[gr.components.Component]:
    with gr.Accordion("Sampling", open=True):
        controls = [
            gr.Slider(0.05, 2.0, value=s.temperature, step=0.05, label="Temperature"),
            gr.Slider(0.1, 1.0, value=s.top_p, step=0.05, label="Top-p"),
            gr.Slider(1, s.max_new_tokens_limit, value=s.max_new_tokens, step=1, label="Max new tokens"),
        ]
        if best_of:
            controls.append(gr.Slider(1, s.best_of_n_limit, value=s.best_of_n, step=1, label="Best of N",
                                      info="N answers; the reward model shows you the best one."))
    return controls


def _wire_generation(stops: StopSwitches, tab: str, triggers: list, stop: gr.Button, fn, inputs, outputs) -> None:
    """Generate = arm this tab's stop switch at once (not queued), then stream `fn` (queued, 2 at a time)."""

    def arm(request: gr.Request) -> None:
        stops.arm(request.session_hash, tab)

    def on_stop(request: gr.Request) -> None:
        stops.stop(request.session_hash, tab)

    gr.on(triggers, arm, None, None, **QUICK).then(fn, inputs, outputs, **GENERATE)
    stop.click(on_stop, None, None, **QUICK)


def _chat_tab(rt: Runtime, stops: StopSwitches) -> None:
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Your prompt", lines=2, placeholder="Ask the model anything…")
            with gr.Row():
                go = gr.Button("Generate", variant="primary", scale=3)
                stop = gr.Button("Stop", variant="stop", scale=1)
            answer = gr.Textbox(label="Answer", lines=6, interactive=False, buttons=["copy"], elem_id="answer",
                                elem_classes="answer")
            candidates = gr.Markdown()
            with gr.Row(equal_height=True):
                up = gr.Button("👍 Good", scale=1)
                down = gr.Button("👎 Bad", scale=1)
                score = gr.Radio([1, 2, 3, 4, 5], label="Score (1 = bad, 5 = great)", scale=3)
            message = gr.Markdown("Write a prompt, or click an example, then Generate.")
        with gr.Column(scale=2):
            gr.Examples([[p] for p in load_prompts(rt.settings.prompts)], inputs=[prompt], label="Or try one",
                        examples_per_page=6, api_visibility="private")
            sampling = _sampling_controls(rt.settings, best_of=True)
    generation_id = gr.State(None)

    def on_generate(prompt, temperature, top_p, max_new_tokens, best_of_n, request: gr.Request):
        switch = stops.get(request.session_hash, "chat")
        if switch.is_set():
            yield gr.skip(), None, "Stopped before it started.", "", None
            return
        working = ("Writing…" if best_of_n <= 1
                   else f"Sampling {int(best_of_n)} answers for the reward model to pick…")
        yield "", None, working, "", None
        try:
            for ans in rt.answerer.stream(prompt, temperature=temperature, top_p=top_p,
                                          max_new_tokens=int(max_new_tokens), best_of=int(best_of_n),
                                          session=request.session_hash, source="ui", stop=switch):
                if not ans.done:
                    yield ans.texts[0], None, working, gr.skip(), gr.skip()
        except Exception as e:  # noqa: BLE001 - shown as a message, never a traceback
            yield gr.skip(), None, friendly(e), gr.skip(), gr.skip()
            return
        yield ans.texts[ans.chosen or 0], ans.generation_ids[0], answer_summary(ans), candidates_markdown(ans), None

    def on_thumb(value: int):
        def rate(gid, request: gr.Request, profile: gr.OAuthProfile | None):
            try:
                return record_rating(rt.store, gid, rater_id(request, profile), "thumb", value)["message"]
            except Exception as e:  # noqa: BLE001
                return friendly(e)
        return rate

    def on_score(gid, value, request: gr.Request, profile: gr.OAuthProfile | None):
        try:
            return record_rating(rt.store, gid, rater_id(request, profile), "score", value)["message"]
        except Exception as e:  # noqa: BLE001
            return friendly(e)

    _wire_generation(stops, "chat", [go.click, prompt.submit], stop,
                     on_generate, [prompt, *sampling], [answer, generation_id, message, candidates, score])
    up.click(on_thumb(1), [generation_id], message, **QUICK)
    down.click(on_thumb(-1), [generation_id], message, **QUICK)
    score.input(on_score, [generation_id, score], message, **QUICK)


def _compare_tab(rt: Runtime, stops: StopSwitches) -> None:
    gr.Markdown("Two answers to the same prompt, side by side. Which one is better?")
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=2, placeholder="Ask something; you will get two answers.")
            with gr.Row():
                go = gr.Button("Generate two answers", variant="primary")
                stop = gr.Button("Stop", variant="stop")
        with gr.Column(scale=2):
            sampling = _sampling_controls(rt.settings, best_of=False)
    with gr.Row():
        answer_a = gr.Textbox(label="Answer A", lines=6, interactive=False, elem_classes="answer")
        answer_b = gr.Textbox(label="Answer B", lines=6, interactive=False, elem_classes="answer")
    with gr.Row():
        buttons = {o: gr.Button(label) for o, label in
                   [("a", "A is better"), ("b", "B is better"), ("tie", "Tie"), ("both_bad", "Both bad")]}
    message = gr.Markdown()
    pair = gr.State([])

    def on_generate(prompt, temperature, top_p, max_new_tokens, request: gr.Request):
        n = rt.settings.pair_candidates
        working = ("Writing two answers…" if n <= 2 or rt.trainer.reward_model is None else
                   f"Writing {n} answers; you will see the two the reward model is least sure between…")
        switch = stops.get(request.session_hash, "compare")
        if switch.is_set():
            yield gr.skip(), gr.skip(), [], "Stopped before it started."
            return
        yield "", "", [], working
        try:
            for ans in rt.answerer.stream(prompt, temperature=temperature, top_p=top_p,
                                          max_new_tokens=int(max_new_tokens), pair=True,
                                          session=request.session_hash, source="ui", stop=switch):
                if not ans.done:
                    yield ans.texts[0], ans.texts[1], [], working
        except Exception as e:  # noqa: BLE001
            yield gr.skip(), gr.skip(), [], friendly(e)
            return
        yield ans.texts[0], ans.texts[1], ans.generation_ids, answer_summary(ans).replace("Rate it", "Compare them")

    def on_compare(outcome: str):
        def vote(ids, request: gr.Request, profile: gr.OAuthProfile | None):
            try:
                return record_comparison(rt.store, ids, rater_id(request, profile), outcome)["message"]
            except Exception as e:  # noqa: BLE001
                return friendly(e)
        return vote

    _wire_generation(stops, "compare", [go.click, prompt.submit], stop,
                     on_generate, [prompt, *sampling], [answer_a, answer_b, pair, message])
    for outcome, button in buttons.items():
        button.click(on_compare(outcome), [pair], message, **QUICK)


def _versions_markdown(store: Store) -> str:
    live = store.live()["version"]
    lines = [
        f"- **v{r['version']}**{' (live)' if r['version'] == live else ''}: "
        + ("base model" if r["version"] == 0 else f"{r['algorithm']}, round {r['round_id']}, "
           f"reward model v{r['reward_model_version']}")
        + f", {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(r['created_at']))}"
        for r in store.policy_versions()[-12:]
    ]
    return "Policy versions (newest 12):\n\n" + "\n".join(lines)


def _admin_tab(rt: Runtime) -> None:
    how = ("The admin token is set: enter it to act." if rt.settings.admin_token
           else "No admin token is set: admin actions work only from the machine the app runs on.")
    gr.Markdown(f"Control the background trainer and which policy version is served. {how}")
    token = gr.Textbox(label="Admin token", type="password", max_lines=1)
    with gr.Row():
        train = gr.Button("Train now", variant="primary")
        pause = gr.Button("Pause")
        resume = gr.Button("Resume")
    with gr.Row(equal_height=True):
        version = gr.Number(label="Policy version", precision=0, minimum=0)
        make_live_button = gr.Button("Make live")
    message = gr.Markdown()
    versions = gr.Markdown(_versions_markdown(rt.store))
    make_live = make_live_handler(rt)

    def on_admin(action: str):
        def click(token, request: gr.Request):
            return admin_message(rt, action, token, request), _versions_markdown(rt.store)
        return click

    def on_make_live(token, version, request: gr.Request):
        return make_live(version, token, request), _versions_markdown(rt.store)

    for button, action in [(train, "train_now"), (pause, "pause"), (resume, "resume")]:
        button.click(on_admin(action), [token], [message, versions], **QUICK)
    make_live_button.click(on_make_live, [token, version], [message, versions],
                           api_visibility="private", show_progress="minimal")


def admin_message(rt: Runtime, action: str, token, request: gr.Request, version=None) -> str:
    """Run an admin action for the page, checked like the API's; returns the message line."""
    try:
        return admin_do(rt, action, admin_actor(rt.settings, token, request), version)
    except Exception as e:  # noqa: BLE001
        return friendly(e)


def make_live_handler(rt: Runtime):
    """The page's admin-checked "Make live": `fn(version, token, request) -> message` (Admin and Dashboard tabs)."""

    def make_live(version, token, request: gr.Request) -> str:
        return admin_message(rt, "set_live", token, request, version)

    return make_live


def build_ui(runtime: Runtime) -> gr.Blocks:
    """The whole app: status line, Chat / Compare / Admin tabs, and the public API.

    Launch it with the page's look: `build_ui(rt).launch(theme=THEME, css=CSS)`.
    """
    stops = StopSwitches()
    with gr.Blocks(title="Live RLHF") as demo:
        register_api(runtime)  # first, so the public names are taken before any page event's
        with gr.Row(equal_height=True):
            gr.Markdown("## Live RLHF\nRate the answers: every rating trains a reward model, and a background "
                        "trainer improves the model from it and swaps each new version in while you chat.")
            if hf_login_available():
                gr.LoginButton(scale=0)
        status = gr.Markdown("…", elem_classes="status-line")
        with gr.Tabs():
            with gr.Tab("Chat"):
                _chat_tab(runtime, stops)
            with gr.Tab("Compare"):
                _compare_tab(runtime, stops)
            with gr.Tab("Admin"):
                _admin_tab(runtime)
            build_dashboard_tab(runtime, make_live_handler(runtime))

        def refresh() -> str:
            return status_markdown(runtime.status(), auto=runtime.settings.trainer)

        timer = gr.Timer(REFRESH_SECONDS)
        timer.tick(refresh, None, status, **QUICK)
        demo.load(refresh, None, status, **QUICK)

        def forget(request: gr.Request) -> None:
            stops.forget(request.session_hash)

        demo.unload(forget)
    return demo
