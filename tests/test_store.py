"""The SQLite store: migrations, prompts, generations, ratings, comparisons, versions, rounds, stats.

Every refused write must leave the database exactly as it was: the tests count rows before and
after, on a real file-backed store (WAL, per-thread connections), not an in-memory one.
"""

import sqlite3

import pytest

from rlhf_app.store import SCHEMA_VERSION, Store, StoreError

TABLES = ("prompts", "generations", "ratings", "comparisons", "rating_events", "policy_versions", "live_events",
          "reward_models", "rounds")


def counts(store: Store) -> dict[str, int]:
    return {t: store.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}


def gen(store: Store, prompt: str = "Tell me a joke", text: str = "Why did the cat...", version: int = 0) -> int:
    return store.add_generation(prompt=prompt, text=text, model_id="tiny", policy_version=version)


# -- migrations ------------------------------------------------------------------------------------


def test_fresh_db_gets_schema_version(tmp_path):
    store = Store(tmp_path / "new" / "rlhf.db")  # the parent folder is created too
    assert store.schema_version() == SCHEMA_VERSION
    assert all(n == 0 for n in counts(store).values())
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_is_idempotent_and_keeps_data(tmp_path):
    path = tmp_path / "rlhf.db"
    store = Store(path)
    g = gen(store)
    store.rate(g, rater="r", kind="thumb", value=1)
    before = counts(store)
    for _ in range(2):
        again = Store(path)
        assert again.schema_version() == SCHEMA_VERSION
        assert again.migrate() == SCHEMA_VERSION
        assert counts(again) == before
    assert [r["value"] for r in again.rating_history(g)] == [1]


def test_newer_schema_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "rlhf.db"
    Store(path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(RuntimeError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than this code"):
        Store(path)
    with sqlite3.connect(path) as conn:  # the refusal did not "fix" the recorded version
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION + 1
        )


# -- prompts and generations -------------------------------------------------------------------------


def test_prompts_dedupe_on_stripped_text(store):
    a = store.add_prompt("Tell me a joke")
    b = store.add_prompt("  Tell me a joke\n", source="starter")
    c = store.add_prompt("Tell me a story")
    assert a == b != c
    assert store.prompts() == ["Tell me a joke", "Tell me a story"]
    assert store.prompts(limit=1) == ["Tell me a joke"]
    assert store.query("SELECT source FROM prompts WHERE id=?", (a,))[0]["source"] == "user"  # first one wins


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_prompt_is_refused(store, text):
    with pytest.raises(StoreError, match="empty"):
        store.add_prompt(text)
    assert counts(store)["prompts"] == 0


def test_generation_round_trip(store):
    fields = dict(
        temperature=0.7, top_p=0.9, max_new_tokens=64, seed=1234, n_tokens=12, finish_reason="eos",
        ttft_s=0.05, tokens_per_s=21.5, best_of_n=4, candidate_scores=[0.1, 0.9, -0.3, 0.2],
        reward_model_version=3, reward=0.9, source="api", session="s1",
    )
    g = store.add_generation("Hi", "Hello!", "smollm2.gguf", 2, **fields)
    row = store.generation(g)
    assert row["prompt"] == "Hi" and row["text"] == "Hello!"
    assert row["model_id"] == "smollm2.gguf" and row["policy_version"] == 2
    assert row["candidate_scores"] == "[0.1, 0.9, -0.3, 0.2]"  # stored as JSON text
    for k, v in fields.items():
        if k != "candidate_scores":
            assert row[k] == v, k
    assert row["created_at"] > 0
    # Two answers to one prompt share the prompt row.
    g2 = store.add_generation("Hi", "Hey.", "smollm2.gguf", 2)
    assert store.generation(g2)["prompt_id"] == row["prompt_id"]
    assert store.generation(g2)["best_of_n"] == 1 and store.generation(g2)["source"] == "ui"


@pytest.mark.parametrize("gid", [999, -1, "nope", None])
def test_unknown_generation_lookup(store, gid):
    gen(store)
    with pytest.raises(StoreError, match="no generation"):
        store.generation(gid)


# -- ratings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, value", [("thumb", 1), ("thumb", -1), ("score", 1), ("score", 3), ("score", 5),
                                          ("score", "4"), ("score", 2.0)])
def test_valid_rating(store, kind, value):
    g = gen(store)
    rid = store.rate(g, rater="session:a", kind=kind, value=value)
    assert store.query("SELECT generation_id, rater, kind, value FROM ratings WHERE id=?", (rid,)) == [
        {"generation_id": g, "rater": "session:a", "kind": kind, "value": int(value)}
    ]
    assert counts(store)["rating_events"] == 1


@pytest.mark.parametrize(
    "kind, value, message",
    [
        ("thumb", 0, "thumb is 1"),
        ("thumb", 2, "thumb is 1"),
        ("thumb", -2, "thumb is 1"),
        ("score", 0, "between 1 and 5"),
        ("score", 6, "between 1 and 5"),
        ("score", -3, "between 1 and 5"),
        ("stars", 3, "Unknown rating kind"),
        ("", 1, "Unknown rating kind"),
        ("score", "three", "whole number"),
        ("score", None, "whole number"),
        ("score", 2.5, "whole number"),  # not silently truncated to 2
        ("thumb", 0.5, "whole number"),
        ("score", float("nan"), "whole number"),
        ("score", float("inf"), "whole number"),
        ("score", [3], "whole number"),
    ],
)
def test_bad_rating_is_refused_and_nothing_written(store, kind, value, message):
    g = gen(store)
    store.rate(g, rater="other", kind="thumb", value=1)
    before = counts(store)
    with pytest.raises(StoreError, match=message):
        store.rate(g, rater="session:a", kind=kind, value=value)
    assert counts(store) == before


@pytest.mark.parametrize("gid", [999, 0, "x", None])
def test_rating_an_unknown_generation_is_refused(store, gid):
    gen(store)
    before = counts(store)
    with pytest.raises(StoreError, match="no generation"):
        store.rate(gid, rater="session:a", kind="thumb", value=1)
    assert counts(store) == before


def test_rating_needs_a_rater(store):
    g = gen(store)
    with pytest.raises(StoreError, match="rater"):
        store.rate(g, rater="", kind="thumb", value=1)
    assert counts(store)["ratings"] == 0


def test_changed_mind_updates_one_row_and_history_keeps_every_vote(store):
    g = gen(store)
    first = store.rate(g, rater="session:a", kind="thumb", value=1)
    second = store.rate(g, rater="session:a", kind="thumb", value=-1)
    assert first == second
    rows = store.query("SELECT value, created_at, updated_at FROM ratings")
    assert len(rows) == 1 and rows[0]["value"] == -1 and rows[0]["updated_at"] >= rows[0]["created_at"]
    assert [(e["rater"], e["kind"], e["value"]) for e in store.rating_history(g)] == [
        ("session:a", "thumb", 1),
        ("session:a", "thumb", -1),
    ]
    # A score is a separate rating from the thumb; another rater is a separate rating too.
    store.rate(g, rater="session:a", kind="score", value=4)
    store.rate(g, rater="session:b", kind="thumb", value=1)
    assert counts(store)["ratings"] == 3
    assert [e["value"] for e in store.rating_history(g)] == [1, -1, 4, 1]
    assert store.last_event_id() == 4
    assert {(r["rater"], r["kind"], r["value"]) for r in store.pointwise_ratings()} == {
        ("session:a", "thumb", -1), ("session:a", "score", 4), ("session:b", "thumb", 1)
    }


def test_pending_votes(store):
    g = gen(store)
    assert store.pending_votes(0) == (0, None)
    store.rate(g, rater="a", kind="thumb", value=1)
    mark = store.last_event_id()
    store.rate(g, rater="b", kind="thumb", value=1)
    store.rate(g, rater="b", kind="thumb", value=-1)
    n, first = store.pending_votes(mark)
    assert n == 2 and first is not None


# -- comparisons -----------------------------------------------------------------------------------


def test_comparison_and_change_of_mind(store):
    a, b = gen(store, text="A"), gen(store, text="B")
    cid = store.compare(a, b, rater="session:a", outcome="a")
    assert store.compare(a, b, rater="session:a", outcome="tie") == cid
    rows = store.comparisons()
    assert len(rows) == 1
    assert (rows[0]["outcome"], rows[0]["text_a"], rows[0]["text_b"], rows[0]["prompt"]) == (
        "tie", "A", "B", "Tell me a joke"
    )
    events = store.query("SELECT comparison_id, kind, value FROM rating_events ORDER BY id")
    assert events == [{"comparison_id": cid, "kind": "compare", "value": "a"},
                      {"comparison_id": cid, "kind": "compare", "value": "tie"}]
    # Another rater's vote on the same pair is its own row.
    store.compare(a, b, rater="session:b", outcome="both_bad")
    assert counts(store)["comparisons"] == 2


@pytest.mark.parametrize(
    "which, outcome, message",
    [
        ("unknown_a", "a", "no generation"),
        ("unknown_b", "a", "no generation"),
        ("same", "a", "two different answers"),
        ("other_prompt", "a", "same prompt"),
        ("ok", "c", "Unknown outcome"),
        ("ok", "", "Unknown outcome"),
    ],
)
def test_bad_comparison_is_refused_and_nothing_written(store, which, outcome, message):
    a, b = gen(store, text="A"), gen(store, text="B")
    c = gen(store, prompt="Something else", text="C")
    store.compare(a, b, rater="earlier", outcome="a")
    pair = {"unknown_a": (999, b), "unknown_b": (a, 999), "same": (a, a), "other_prompt": (a, c), "ok": (a, b)}
    before = counts(store)
    with pytest.raises(StoreError, match=message):
        store.compare(*pair[which], rater="session:a", outcome=outcome)
    assert counts(store) == before


# -- versions and live events ----------------------------------------------------------------------


def test_ensure_base_version_is_idempotent(store):
    assert store.live() == {"version": 0, "since": None, "reason": "base model"}
    store.ensure_base_version("tiny")
    store.ensure_base_version("tiny")
    assert [v["version"] for v in store.policy_versions()] == [0]
    assert store.policy_version(0)["model_id"] == "tiny"
    assert len(store.live_events()) == 1
    live = store.live()
    assert live["version"] == 0 and live["reason"] == "base model" and live["since"] > 0
    assert store.next_policy_version() == 1


def test_live_follows_the_last_event(store):
    store.ensure_base_version("tiny")
    store.add_policy_version(1, parent=0, model_id="tiny", algorithm="ppo", settings={"lr": 1e-4},
                             metrics={"reward/mean": 0.5})
    assert store.live()["version"] == 1 and store.live()["reason"] == "published"
    store.add_policy_version(2, parent=1, model_id="tiny", make_live=False)
    assert store.live()["version"] == 1  # recorded, not live
    store.set_live(0, reason="rollback", actor="admin")
    assert store.live()["version"] == 0 and store.live()["reason"] == "rollback"
    store.set_live(2, reason="roll forward", actor="admin")
    assert store.live()["version"] == 2
    assert [e["version"] for e in store.live_events()] == [0, 1, 0, 2]
    v1 = store.policy_version(1)
    assert v1["settings"] == {"lr": 1e-4} and v1["metrics"] == {"reward/mean": 0.5}
    assert store.next_policy_version() == 3
    # A new store on the same file sees the same live version.
    assert Store(store.path).live()["version"] == 2


def test_set_live_unknown_version_is_refused(store):
    store.ensure_base_version("tiny")
    before = counts(store)
    with pytest.raises(StoreError, match="no policy version 7"):
        store.set_live(7, reason="typo", actor="admin")
    with pytest.raises(StoreError, match="no policy version 7"):
        store.policy_version(7)
    assert counts(store) == before
    assert store.live()["version"] == 0


def test_reward_models(store):
    assert store.latest_reward_model() is None and store.next_reward_model_version() == 1
    store.add_reward_model(1, path="rm/1", base_model_id="tiny", last_event_id=5, norm_mean=0.1, norm_std=1.2,
                           metrics={"accuracy": 0.7})
    store.add_reward_model(2, path="rm/2", base_model_id="tiny", last_event_id=9, norm_mean=0.0, norm_std=1.0)
    assert store.latest_reward_model()["version"] == 2
    assert store.reward_models()[0]["metrics"] == {"accuracy": 0.7}
    assert store.next_reward_model_version() == 3


# -- rounds ----------------------------------------------------------------------------------------


def test_rounds_record_what_they_saw(store):
    g = gen(store)
    store.rate(g, rater="a", kind="thumb", value=1)
    r1 = store.start_round("ppo", parent_version=0, seed=11)
    row = store.last_round()
    assert row["id"] == r1 and row["status"] == "running" and row["n_ratings"] == 1 and row["last_event_id"] == 1
    store.finish_round(r1, "published", policy_version=1, metrics={"ppo/approx_kl": 0.01})
    r = store.rounds()[0]
    assert r["status"] == "published" and r["policy_version"] == 1 and r["finished_at"] >= r["started_at"]
    assert r["metrics"] == {"ppo/approx_kl": 0.01}


def test_fail_interrupted_rounds(store):
    done = store.start_round("ppo", parent_version=0, seed=1)
    store.finish_round(done, "discarded", reason="KL too high")
    store.start_round("ppo", parent_version=0, seed=2)
    store.start_round("grpo", parent_version=0, seed=3)
    assert store.fail_interrupted_rounds() == 2
    assert [(r["status"], r["reason"]) for r in store.rounds()] == [
        ("discarded", "KL too high"),
        ("failed", "interrupted by a restart"),
        ("failed", "interrupted by a restart"),
    ]
    assert all(r["finished_at"] for r in store.rounds())
    assert store.fail_interrupted_rounds() == 0


# -- stats -----------------------------------------------------------------------------------------


def test_stats(store):
    store.ensure_base_version("tiny")
    assert store.stats() == dict(prompts=0, generations=0, ratings=0, thumbs=0, scores=0, comparisons=0, votes=0,
                                 policy_versions=1, reward_models=0, live_version=0)
    a, b = gen(store, text="A"), gen(store, text="B")
    gen(store, prompt="Other")
    store.rate(a, rater="x", kind="thumb", value=1)
    store.rate(a, rater="x", kind="thumb", value=-1)
    store.rate(a, rater="x", kind="score", value=5)
    store.compare(a, b, rater="x", outcome="b")
    store.add_policy_version(1, parent=0, model_id="tiny")
    assert store.stats() == dict(prompts=2, generations=3, ratings=2, thumbs=1, scores=1, comparisons=1, votes=4,
                                 policy_versions=2, reward_models=0, live_version=1)


def test_in_memory_store_works_too():
    store = Store(":memory:")
    g = gen(store)
    store.rate(g, rater="r", kind="score", value=3)
    assert store.stats()["ratings"] == 1


def test_a_comparison_shown_in_the_other_order_updates_the_same_row(store):
    a = store.add_generation(prompt="p", text="one", model_id="m", policy_version=0)
    b = store.add_generation(prompt="p", text="two", model_id="m", policy_version=0)
    first = store.compare(a, b, "r", "a")
    second = store.compare(b, a, "r", "a")  # now b is on the left and wins: the same pair, a changed mind
    assert first == second
    rows = store.comparisons()
    assert len(rows) == 1 and (rows[0]["generation_a"], rows[0]["outcome"]) == (a, "b")
    events = store.query("SELECT value FROM rating_events WHERE kind='compare' ORDER BY id")
    assert [e["value"] for e in events] == ["a", "b"]


def test_finish_reasons_of_many_generations(store):
    ids = [store.add_generation("Tell me a joke", f"joke {i}", "m", 0, finish_reason=("eos", "length")[i % 2])
           for i in range(1200)]
    reasons = store.finish_reasons(ids + [10**6])  # more ids than one query may bind; an unknown one
    assert len(reasons) == 1200 and reasons[ids[0]] == "eos" and reasons[ids[1]] == "length"
    assert store.finish_reasons([]) == {}
