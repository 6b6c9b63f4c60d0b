"""The public API: what a program can do with the app, and who may do it.

`register_api(runtime)` adds the endpoints to the Blocks being built (`ui.build_ui` calls it);
the page's buttons call the same functions (`record_rating`, `record_comparison`, `admin_do`).

Stable names; callers pass ids explicitly (no page state); a refused request raises
`gradio_client.exceptions.AppError` carrying the message a person would see.

    endpoint        arguments                                              returns
    /generate       prompt, temperature=0.7, top_p=0.9,                    streams (generation_id, text, info);
                    max_new_tokens=128, best_of_n=1, seed=None             generation_id is None until the end
    /generate_pair  prompt, temperature, top_p, max_new_tokens, seed=None  streams (generation_a, text_a,
                                                                           generation_b, text_b)
    /rate_thumb     generation_id, up (True/False or 1/-1)                 {rating_id, changed_from, message}
    /rate_score     generation_id, score (1-5)                             {rating_id, changed_from, message}
    /compare        generation_a, generation_b, outcome                    {comparison_id, changed_from, message}
                    ('a' | 'b' | 'tie' | 'both_bad')
    /stats          -                                                      Runtime.status(): counts, trainer, live
    /train_now, /pause, /resume   admin_token=""                           {message, status}
    /set_live       version, admin_token=""                                {message, status}

(defaults of /generate are the app's settings; `info` holds policy_version, finish_reason,
n_tokens, seed, timings and, for best-of-N, every candidate's reward score.)

Example, against a running app (`python app.py`):

    from gradio_client import Client
    c = Client("http://127.0.0.1:7860/")
    gid, text, info = c.predict("Tell me a fun fact about cats.", 0.7, 0.9, 64, 1, api_name="/generate")
    c.predict(gid, True, api_name="/rate_thumb")      # 👍; calling again with False changes it
    c.predict(gid, 4, api_name="/rate_score")
    job = c.submit("Describe a rainy afternoon in two sentences.", api_name="/generate_pair")
    for partial in job:                               # the two texts grow token by token
        pass
    a, text_a, b, text_b = job.result()
    c.predict(a, b, "a", api_name="/compare")
    print(c.predict(api_name="/stats")["count_votes"])

Raters: a logged-in Hugging Face user (Spaces with `hf_oauth: true`) rates as their username;
everyone else as "session:<session hash>" (one browser tab, or one `Client`). The store keeps
one rating per rater, generation and kind; rating again changes it and keeps the history.

Admin actions: with `--admin-token` set, they need that token (from anywhere, localhost
included). With no token set, they are allowed only to a browser or client on the machine
itself: the connection must come from a loopback address AND be addressed to a loopback host,
so neither a forged `Host: localhost` from the network nor a tunnel or proxy running on the
machine passes. Behind a reverse proxy on the same machine, set a token. Making a version
live is recorded in `live_events` with who did it; train now / pause / resume are logged.
"""

from __future__ import annotations

import contextlib
import hmac
import importlib.util
import ipaddress
import logging
import os
from typing import Any, Iterator
from urllib.parse import urlsplit

import gradio as gr

from .errors import UserError
from .generation import Answer
from .runtime import Runtime
from .store import Store, StoreError

log = logging.getLogger(__name__)

GENERATE_CONCURRENCY = 2
"""Answers generated at once, page and API together; the rest wait in the queue."""

THUMB_LABEL = {1: "👍", -1: "👎"}
OUTCOME_LABEL = {"a": "A is better", "b": "B is better", "tie": "a tie", "both_bad": "both bad"}


# -- who is asking ------------------------------------------------------------------------------


def rater_id(request: gr.Request | None, profile: gr.OAuthProfile | None = None) -> str:
    """The Hugging Face username when logged in (or the Gradio auth user), else 'session:<hash>'.

    >>> from types import SimpleNamespace as NS
    >>> rater_id(NS(username=None, session_hash="abc"))
    'session:abc'
    >>> rater_id(NS(username=None, session_hash="abc"), NS(username="ada"))
    'ada'
    """
    if profile is not None and getattr(profile, "username", None):
        return profile.username
    if request is not None and getattr(request, "username", None):
        return request.username
    if request is None or not getattr(request, "session_hash", None):
        raise UserError("This request has no session: reload the page (API: use gradio_client).")
    return f"session:{request.session_hash}"


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_local_request(request: gr.Request | None) -> bool:
    """A connection from this machine, addressed to this machine (both, see the module docstring).

    >>> from types import SimpleNamespace as NS
    >>> is_local_request(NS(client=NS(host="127.0.0.1"), headers={"host": "127.0.0.1:7860"}))
    True
    >>> is_local_request(NS(client=NS(host="10.1.2.3"), headers={"host": "localhost:7860"}))
    False
    """
    try:
        peer = request.client.host
        addressed = urlsplit("//" + request.headers.get("host", "")).hostname
    except AttributeError:
        return False
    return _loopback(peer) and _loopback(addressed)


def admin_actor(settings, token: str | None, request: gr.Request | None) -> str:
    """Who did an admin action (recorded with it), or UserError when not allowed."""
    who = rater_id(request) if request is not None and getattr(request, "session_hash", None) else "api"
    if settings.admin_token:
        if not token or not hmac.compare_digest(str(token).encode(), settings.admin_token.encode()):
            raise UserError("Wrong or missing admin token: admin actions need the token the app was started with.")
        return f"admin token ({who})"
    if not is_local_request(request):
        raise UserError(
            "Admin actions are only allowed from the machine the app runs on, because no admin token is set. "
            "Start the app with --admin-token (or RLHF_ADMIN_TOKEN) to allow them from elsewhere."
        )
    return f"localhost ({who})"


def hf_login_available() -> bool:
    """On a Space with `hf_oauth: true` (Spaces then set OAUTH_CLIENT_ID) and gradio[oauth] installed."""
    return bool(os.environ.get("SPACE_ID") and os.environ.get("OAUTH_CLIENT_ID")) and (
        importlib.util.find_spec("authlib") is not None
    )


# -- what callers can do ------------------------------------------------------------------------


@contextlib.contextmanager
def api_errors() -> Iterator[None]:
    """API callers get a refused request's message as a gr.Error (client: AppError)."""
    try:
        yield
    except UserError as e:
        raise gr.Error(str(e), print_exception=False) from None


def thumb_value(up: Any) -> int:
    """True/1 -> 1, False/-1 -> -1 (bool is tested first: False == 0 in Python)."""
    if isinstance(up, bool):
        return 1 if up else -1
    if up in (1, -1, "1", "-1"):
        return int(up)
    raise StoreError(f"A thumb is up (True or 1) or down (False or -1), not {up!r}.")


def record_rating(store: Store, generation_id: Any, rater: str, kind: str, value: Any) -> dict:
    """Store a thumb or a score; returns {rating_id, changed_from, message}."""
    if generation_id is None:
        raise UserError("There is no finished answer to rate yet: generate one (or wait for it to finish).")
    before = store.query(
        "SELECT value FROM ratings WHERE generation_id=? AND rater=? AND kind=?", (str(generation_id), rater, kind)
    )
    rating_id = store.rate(generation_id, rater=rater, kind=kind, value=value)
    show = (lambda v: THUMB_LABEL[int(v)]) if kind == "thumb" else (lambda v: f"score {int(v)}/5")
    old = before[0]["value"] if before else None
    if old is None:
        message = f"✅ Saved {show(value)} for answer #{generation_id} (rating {rating_id})."
    elif int(old) == int(value):
        message = f"✅ You had already given {show(value)} to answer #{generation_id} (rating {rating_id})."
    else:
        message = (f"✅ Changed your mind: {show(old)} → {show(value)} for answer #{generation_id} "
                   f"(rating {rating_id}; both votes are kept in the history).")
    return {"rating_id": rating_id, "changed_from": old, "message": message}


def record_comparison(store: Store, pair: list | tuple, rater: str, outcome: str) -> dict:
    """Store an A/B vote on two generation ids; returns {comparison_id, changed_from, message}."""
    if not pair or len(pair) != 2 or None in pair:
        raise UserError("Generate a pair of answers first, then compare them.")
    a, b = pair
    before = store.query(
        "SELECT outcome FROM comparisons WHERE generation_a=? AND generation_b=? AND rater=?", (str(a), str(b), rater)
    )
    cid = store.compare(a, b, rater=rater, outcome=outcome)
    old = before[0]["outcome"] if before else None
    label = OUTCOME_LABEL.get(outcome, outcome)
    if old is None or old == outcome:
        message = f"✅ Saved: {label} (answers #{a} and #{b}, comparison {cid})."
    else:
        message = f"✅ Changed your mind: {OUTCOME_LABEL.get(old, old)} → {label} (comparison {cid})."
    return {"comparison_id": cid, "changed_from": old, "message": message}


def admin_do(rt: Runtime, action: str, actor: str, version: Any = None) -> str:
    """Run one admin action ('train_now', 'pause', 'resume', 'set_live'); returns what happened."""
    t = rt.trainer
    log.info("admin action %s by %s%s", action, actor, f" (version {version})" if version is not None else "")
    off = "" if t.running else " But the trainer's thread is not running in this process, so nothing will happen."
    if action == "train_now":
        t.request_round()
        return f"Training round requested; it starts within a second or two unless paused.{off}"
    if action == "pause":
        t.pause()
        return f"Paused: no new rounds start, and a running round stops after its current step.{off}"
    if action == "resume":
        t.resume()
        auto = "when enough ratings arrive" if rt.settings.trainer else "when an admin asks (--trainer false)"
        return f"Resumed: rounds start again {auto}.{off}"
    if action == "set_live":
        if version is None or str(version).strip() == "":
            raise UserError("Give the number of the policy version to make live.")
        try:
            v = int(float(version))
        except (TypeError, ValueError):
            raise UserError(f"A policy version is a whole number, not {version!r}.") from None
        t.set_live(v, actor=actor)
        return f"Policy v{v} is live now (recorded, by {actor})."
    raise UserError(f"Unknown admin action {action!r}.")


def answer_info(ans: Answer) -> dict:
    """What /generate returns beside the text."""
    i = ans.chosen or 0
    return {
        "done": ans.done, "policy_version": ans.policy_version, "seed": ans.seed,
        "finish_reason": ans.finish_reasons[i] if ans.finish_reasons else None,
        "n_tokens": ans.n_tokens[i] if ans.n_tokens else None,
        "ttft_s": ans.ttft_s, "tokens_per_s": ans.tokens_per_s,
        "candidate_scores": ans.candidate_scores, "chosen": ans.chosen,
        "reward_model_version": ans.reward_model_version,
    }


# -- the API ------------------------------------------------------------------------------------


def register_api(rt: Runtime) -> None:
    s = rt.settings

    def generate(prompt: str, temperature: float = s.temperature, top_p: float = s.top_p,
                 max_new_tokens: int = s.max_new_tokens, best_of_n: int = s.best_of_n, seed: int | None = None,
                 request: gr.Request = None) -> tuple[int | None, str, dict]:
        """One answer, streamed: (None, partial text, {done: False}) per token, then (generation_id, text, info)."""
        with api_errors():
            for ans in rt.answerer.stream(prompt, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                          best_of=best_of_n, seed=seed, session=request.session_hash, source="api"):
                if not ans.done:
                    yield None, ans.texts[0], {"done": False}
            yield ans.generation_ids[0], ans.texts[ans.chosen or 0], answer_info(ans)

    def generate_pair(prompt: str, temperature: float = s.temperature, top_p: float = s.top_p,
                      max_new_tokens: int = s.max_new_tokens, seed: int | None = None,
                      request: gr.Request = None) -> tuple[int | None, str, int | None, str]:
        """Two answers to one prompt, streamed; the last message carries both generation ids for /compare."""
        with api_errors():
            for ans in rt.answerer.stream(prompt, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                          pair=True, seed=seed, session=request.session_hash, source="api"):
                ids = ans.generation_ids if ans.done else [None, None]
                yield ids[0], ans.texts[0], ids[1], ans.texts[1]

    def rate_thumb(generation_id: int, up: bool | int, request: gr.Request = None,
                   profile: gr.OAuthProfile | None = None) -> dict:
        """👍 (True or 1) or 👎 (False or -1) on a generation; again from the same rater changes it."""
        with api_errors():
            return record_rating(rt.store, generation_id, rater_id(request, profile), "thumb", thumb_value(up))

    def rate_score(generation_id: int, score: int, request: gr.Request = None,
                   profile: gr.OAuthProfile | None = None) -> dict:
        """A 1-5 score on a generation; again from the same rater changes it."""
        with api_errors():
            return record_rating(rt.store, generation_id, rater_id(request, profile), "score", score)

    def compare(generation_a: int, generation_b: int, outcome: str, request: gr.Request = None,
                profile: gr.OAuthProfile | None = None) -> dict:
        """Which of two answers to the same prompt is better: 'a', 'b', 'tie' or 'both_bad'."""
        with api_errors():
            return record_comparison(rt.store, (generation_a, generation_b), rater_id(request, profile), outcome)

    def stats() -> dict:
        """Store counts (count_*), trainer state, ratings until the next round, the live version."""
        return rt.status()

    def admin_endpoint(action: str):
        def act(admin_token: str = "", request: gr.Request = None) -> dict:
            with api_errors():
                return {"message": admin_do(rt, action, admin_actor(s, admin_token, request)), "status": rt.status()}
        act.__doc__ = f"Admin: {action.replace('_', ' ')} (needs admin_token, or localhost when none is set)."
        return act

    def set_live(version: int, admin_token: str = "", request: gr.Request = None) -> dict:
        """Admin: serve this policy version from now on (recorded with who did it)."""
        with api_errors():
            said = admin_do(rt, "set_live", admin_actor(s, admin_token, request), version)
            return {"message": said, "status": rt.status()}

    for fn in (generate, generate_pair):
        gr.api(fn, api_name=fn.__name__, concurrency_limit=GENERATE_CONCURRENCY, concurrency_id="generate")
    for fn in (rate_thumb, rate_score, compare, stats):
        gr.api(fn, api_name=fn.__name__, concurrency_limit=None)
    for action in ("train_now", "pause", "resume"):
        gr.api(admin_endpoint(action), api_name=action, concurrency_limit=None)
    gr.api(set_live, api_name="set_live")
