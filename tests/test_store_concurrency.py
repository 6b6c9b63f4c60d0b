"""Many writers at once: the web server's threads on one Store, and separate processes on one file.

Each writer adds its own answer to a shared prompt, then rates and re-rates answers, so the test
covers prompt dedupe under contention, the IMMEDIATE transactions, WAL set-up by concurrent
openers of a fresh file, and the append-only history. No write may fail with "database is locked".
"""

import multiprocessing
import threading
import traceback

from rlhf_app.store import Store

PROMPT = "Say something nice"
RATINGS = 50  # per writer


def write_many(store: Store, writer: str) -> None:
    """One writer's work: an answer of its own, then RATINGS votes, every other one a changed mind."""
    own = store.add_generation(PROMPT, f"answer by {writer}", "tiny", 0)
    for i in range(RATINGS):
        # Votes 2k and 2k+1 rate the same answer: the second replaces the first (a changed mind).
        rater = f"{writer}/rater{i // 2}"
        store.rate(own, rater=rater, kind="thumb", value=1 if i % 2 == 0 else -1)


def check(store: Store, writers: list[str]) -> None:
    per_writer = RATINGS // 2
    assert store.stats()["prompts"] == 1
    assert store.stats()["generations"] == len(writers)
    assert store.stats()["ratings"] == len(writers) * per_writer
    assert store.stats()["votes"] == len(writers) * RATINGS
    by_text = {r["text"]: r["id"] for r in store.query("SELECT id, text FROM generations")}
    for w in writers:
        history = store.rating_history(by_text[f"answer by {w}"])
        assert len(history) == RATINGS
        for j in range(per_writer):  # each rater's two votes, in the order given
            assert [(e["rater"], e["value"]) for e in history if e["rater"] == f"{w}/rater{j}"] == [
                (f"{w}/rater{j}", 1),
                (f"{w}/rater{j}", -1),
            ]
    assert {r["value"] for r in store.pointwise_ratings()} == {-1}  # every current rating is the changed mind
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_threads_share_one_store(tmp_path):
    store = Store(tmp_path / "rlhf.db")
    writers = [f"thread{i}" for i in range(8)]
    errors: list[str] = []
    start = threading.Barrier(len(writers))

    def run(name):
        try:
            start.wait()
            write_many(store, name)
        except BaseException:  # noqa: BLE001 - reported below
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    assert not any(t.is_alive() for t in threads)
    check(store, writers)


def process_writer(path: str, name: str, start, errors) -> None:
    """Runs in a spawned process: its own Store (and connections) on the shared file."""
    try:
        start.wait()  # every process opens the still-missing file at the same moment
        write_many(Store(path), name)
    except BaseException:  # noqa: BLE001 - reported to the parent
        errors.put(traceback.format_exc())
        raise


def test_processes_share_one_file(tmp_path):
    path = str(tmp_path / "rlhf.db")  # not created yet: the processes race to create and migrate it
    ctx = multiprocessing.get_context("spawn")
    writers = [f"process{i}" for i in range(4)]
    start, errors = ctx.Barrier(len(writers)), ctx.Queue()
    procs = [ctx.Process(target=process_writer, args=(path, w, start, errors)) for w in writers]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert not failures, failures[0]
    assert [p.exitcode for p in procs] == [0] * len(procs)
    check(Store(path), writers)
