"""The page in a real browser: Generate, 👍, a score and an A/B vote, clicked in headless Chromium.

Needs Debian's `chromium` package (/usr/bin/chromium) and `pip install playwright`; Playwright's
own browser download is not used. Skipped, with the reason, when either is missing.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: `apt-get install -y chromium` to run the browser test",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="`pip install playwright` to run the browser test")

from rlhf_app.config import load_settings  # noqa: E402
from rlhf_app.runtime import Runtime  # noqa: E402
from rlhf_app.ui import CSS, THEME, build_ui  # noqa: E402


@pytest.fixture(scope="module")
def page_and_runtime(tiny_model_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("browserdata")
    rt = Runtime.build(load_settings(["--model", str(tiny_model_dir), "--data-dir", str(data), "--trainer", "false",
                                      "--device", "cpu", "--max-new-tokens", "12"], env={}))
    demo = build_ui(rt)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, theme=THEME, css=CSS)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which(CHROMIUM) or CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(f"http://127.0.0.1:{port}/")
        yield page, rt
        browser.close()
    demo.close()


def test_generate_then_thumb_and_score(page_and_runtime):
    page, rt = page_and_runtime
    page.get_by_label("Your prompt").fill("tell me about cats")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_text("Rate it below").wait_for()
    shown = page.locator("#answer textarea").input_value()
    page.get_by_role("button", name="👍 Good").click()
    page.get_by_text("Saved 👍").wait_for()
    page.get_by_label("4").check()
    page.get_by_text("Saved score 4/5").wait_for()

    (gen,) = rt.store.query("SELECT id, text FROM generations WHERE source='ui'")
    assert gen["text"] == shown
    rows = rt.store.query("SELECT kind, value, rater FROM ratings WHERE generation_id=? ORDER BY id", (gen["id"],))
    assert [(r["kind"], r["value"]) for r in rows] == [("thumb", 1), ("score", 4)]
    assert rows[0]["rater"].startswith("session:")
    page.get_by_text("votes so far").filter(has_text="2 votes").wait_for()  # the status line refreshed itself


def test_compare_tab_pair_and_vote(page_and_runtime):
    page, rt = page_and_runtime
    page.get_by_role("tab", name="Compare").click()
    page.get_by_label("Prompt", exact=True).fill("a story about the sun")
    page.get_by_role("button", name="Generate two answers").click()
    page.get_by_text("Compare them below").wait_for()
    page.get_by_role("button", name="B is better").click()
    page.get_by_text("Saved: B is better").wait_for()
    (row,) = rt.store.query("SELECT outcome, generation_a, generation_b FROM comparisons")
    assert row["outcome"] == "b" and row["generation_b"] == row["generation_a"] + 1


def test_best_of_n_shows_every_candidate_score(page_and_runtime):
    page, rt = page_and_runtime

    class LengthScorer:  # stands in for the reward model: longer is better
        version = 7

        def score(self, prompts, completions):
            return [float(len(c)) for c in completions]

    rt.trainer.reward_model = LengthScorer()
    try:
        page.get_by_role("tab", name="Chat").click()
        page.get_by_label("number input for Best of N").fill("3")
        page.get_by_label("number input for Best of N").press("Enter")
        page.get_by_role("button", name="Generate", exact=True).click()
        page.get_by_text("Best of 3, scored by reward model v7").wait_for()
    finally:
        rt.trainer.reward_model = None
    rows = page.locator("table").last.locator("tbody tr")
    assert rows.count() == 3 and rows.filter(has_text="✅ shown").count() == 1
    (gen,) = rt.store.query("SELECT best_of_n, candidate_scores FROM generations WHERE best_of_n=3")
    assert len(gen["candidate_scores"].split(",")) == 3
