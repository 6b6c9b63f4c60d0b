"""The real app, launched on the tiny model and driven through its public API with gradio_client.

One server for the module (trainer not started); every test checks what reached SQLite.
A last test starts `python app.py` in a subprocess and fetches the page.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace as NS

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from rlhf_app.config import load_settings
from rlhf_app.errors import UserError
from rlhf_app.runtime import Runtime
from rlhf_app.api import admin_actor
from rlhf_app.ui import build_ui

ROOT = Path(__file__).resolve().parents[1]
TOKENS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("appdata")
    settings = load_settings(["--model", str(tiny_model_dir), "--data-dir", str(data), "--trainer", "false",
                              "--device", "cpu", "--max-new-tokens", str(TOKENS)], env={})
    rt = Runtime.build(settings)
    demo = build_ui(rt)
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    yield NS(rt=rt, store=rt.store, client=client, url=f"http://127.0.0.1:{port}/")
    demo.close()


def count(store, table: str) -> int:
    return store.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]


def generate(client, prompt: str = "tell me about cats", **kw):
    job = client.submit(prompt, 1.0, 1.0, TOKENS, 1, 123, api_name="/generate", **kw)
    final = job.result()
    return job.outputs(), final


def test_generate_streams_then_stores_and_rates(app):
    outputs, (gid, text, info) = generate(app.client)
    partial = [o for o in outputs if o[0] is None]
    assert len(partial) >= 2 and partial[-1][1]  # the text arrived token by token
    assert info["done"] and info["seed"] == 123 and info["policy_version"] == 0
    row = app.store.generation(gid)
    assert (row["text"], row["prompt"], row["source"], row["seed"]) == (text, "tell me about cats", "api", 123)

    thumb = app.client.predict(gid, True, api_name="/rate_thumb")
    score = app.client.predict(gid, 4, api_name="/rate_score")
    rows = app.store.query("SELECT id, kind, value, rater FROM ratings WHERE generation_id=? ORDER BY id", (gid,))
    assert [(r["kind"], r["value"]) for r in rows] == [("thumb", 1), ("score", 4)]
    assert rows[0]["rater"].startswith("session:")
    assert thumb["changed_from"] is None and "Saved" in thumb["message"] and score["rating_id"] == rows[1]["id"]


def test_double_vote_is_one_rating_with_history(app):
    _, (gid, _, _) = generate(app.client)
    app.client.predict(gid, 1, api_name="/rate_thumb")
    changed = app.client.predict(gid, -1, api_name="/rate_thumb")
    assert changed["changed_from"] == 1 and "Changed your mind" in changed["message"]
    rows = app.store.query("SELECT value FROM ratings WHERE generation_id=? AND kind='thumb'", (gid,))
    assert [r["value"] for r in rows] == [-1]
    assert [e["value"] for e in app.store.rating_history(gid)] == [1, -1]


def test_pair_then_compare(app):
    job = app.client.submit("a story about the sun", 1.0, 1.0, TOKENS, 7, api_name="/generate_pair")
    a, text_a, b, text_b = job.result()
    assert len(job.outputs()) >= 2 and job.outputs()[0][0] is None
    res = app.client.predict(a, b, "b", api_name="/compare")
    (row,) = app.store.query("SELECT * FROM comparisons WHERE id=?", (res["comparison_id"],))
    assert (row["generation_a"], row["generation_b"], row["outcome"]) == (a, b, "b")
    assert [app.store.generation(g)["text"] for g in (a, b)] == [text_a, text_b]


def test_best_of_n_returns_every_candidate_score(app):
    from rlhf_app.reward import fit_and_record

    for i in range(8):  # enough rated answers for a real reward model
        gid, _, _ = app.client.predict("tell me a story", 1.0, 1.0, TOKENS, 1, i, api_name="/generate")
        app.client.predict(gid, i % 2 == 0, api_name="/rate_thumb")
    rm = fit_and_record(app.store, app.rt.base.path, app.rt.settings.reward, 0, Path(app.rt.settings.data_dir))
    assert rm is not None
    app.rt.trainer.reward_model = rm
    try:
        gid, text, info = app.client.submit("tell me a joke", 1.0, 1.0, TOKENS, 3, api_name="/generate").result()
    finally:
        app.rt.trainer.reward_model = None
    scores = info["candidate_scores"]
    assert len(scores) == 3 and info["chosen"] == scores.index(max(scores))
    row = app.store.generation(gid)
    assert row["best_of_n"] == 3 and row["reward_model_version"] == rm.version
    assert rm.score(["tell me a joke"], [text]) == pytest.approx([max(scores)], abs=1e-4)


@pytest.mark.parametrize(
    "endpoint, args, message",
    [
        ("/generate", ("   ",), "The prompt is empty"),
        ("/generate", ("x" * 5000,), "the limit is 2000"),
        ("/generate", ("hi", 9.0), "Temperature must be between"),
        ("/generate_pair", ("",), "The prompt is empty"),
        ("/rate_thumb", (987654, True), "There is no generation 987654"),
        ("/rate_thumb", (1, 0), "A thumb is up"),
        ("/rate_score", (1, 7), "between 1 and 5"),
        ("/rate_score", (987654, 3), "There is no generation 987654"),
        ("/compare", (987654, 987655, "a"), "There is no generation 987654"),
        ("/compare", (1, 2, "maybe"), "Unknown outcome"),
    ],
)
def test_bad_input_is_refused_with_a_message_and_nothing_written(app, endpoint, args, message):
    tables = ("prompts", "generations", "ratings", "comparisons", "rating_events")
    before = {t: count(app.store, t) for t in tables}
    with pytest.raises(AppError, match=message):
        app.client.predict(*args, api_name=endpoint)
    assert {t: count(app.store, t) for t in tables} == before


def test_stats_counts(app):
    stats = app.client.predict(api_name="/stats")
    assert stats["count_generations"] == count(app.store, "generations")
    assert stats["count_votes"] == count(app.store, "rating_events")
    assert stats["live_version"] == 0 and stats["trainer_running"] is False


def test_admin_on_localhost_without_token(app):
    res = app.client.predict(api_name="/pause")
    assert app.rt.trainer.status.paused and "not running in this process" in res["message"]
    assert res["status"]["trainer"] == "paused"
    app.client.predict(api_name="/resume")
    assert not app.rt.trainer.status.paused
    res = app.client.predict(0, api_name="/set_live")
    assert "v0 is live" in res["message"]
    event = app.store.live_events()[-1]
    assert event["reason"] == "made live by an admin" and event["actor"].startswith("localhost (session:")
    with pytest.raises(AppError, match="no policy version 99"):
        app.client.predict(99, api_name="/set_live")


def test_admin_token_when_set(app, monkeypatch):
    monkeypatch.setattr(app.rt.settings, "admin_token", "s3cret")
    for token in ("", "wrong"):
        with pytest.raises(AppError, match="Wrong or missing admin token"):
            app.client.predict(token, api_name="/train_now")
    assert "requested" in app.client.predict("s3cret", api_name="/train_now")["message"]


def test_admin_without_token_only_from_this_machine():
    settings = NS(admin_token="")

    def req(peer, host):
        return NS(client=NS(host=peer), headers={"host": host}, username=None, session_hash="s")

    assert admin_actor(settings, "", req("127.0.0.1", "127.0.0.1:7860")).startswith("localhost")
    assert admin_actor(settings, "", req("::1", "[::1]:7860")).startswith("localhost")
    remote = [("10.0.0.5", "10.0.0.9:7860"), ("10.0.0.5", "localhost:7860"), ("127.0.0.1", "demo.example.org")]
    for peer, host in remote:
        with pytest.raises(UserError, match="only allowed from the machine"):
            admin_actor(settings, "", req(peer, host))


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}


def test_app_py_serves_the_page(tiny_model_dir, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--model", str(tiny_model_dir), "--data-dir", str(tmp_path), "--port", str(port),
         "--trainer", "false"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        # generous: importing gradio and torch on a loaded 2-core machine took over a minute once
        deadline, status = time.time() + 180, None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    status, page = r.status, r.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert status == 200, f"app.py did not serve the page; exit code {proc.poll()}"
        assert "Live RLHF" in page
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
    assert "Traceback" not in out, out


def test_app_py_model_error_is_one_message_and_exit_1(tmp_path, capsys):
    import app as app_py  # in this process: the subprocess test above already covers a real start

    code = app_py.main(["--model", str(tmp_path / "no-such-model"), "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "The app cannot start: Could not load the model" in err and "Traceback" not in err


def test_app_py_help_lists_every_setting():
    from rlhf_app.config import Settings, _walk, flag_name

    out = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    missing = [flag_name(d) for d, _, _ in _walk(Settings) if flag_name(d) not in out.stdout]
    assert not missing
