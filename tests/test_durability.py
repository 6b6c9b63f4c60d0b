"""An acknowledged rating survives `kill -9`.

A child process writes ratings as fast as it can and prints an ack line after each `rate()`
returns; the test SIGKILLs it right after reading the Nth ack, so the kill lands while the child
is in the middle of later writes. Every acknowledged rating must be in the reopened database,
with its value and its history event, and the file must pass `PRAGMA integrity_check`.

(kill -9 loses what the process had not handed to the OS; a power cut would also lose what the OS
had not synced. The store's `synchronous=FULL` covers that second case; this test the first.)
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_app.store import Store

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys
from rlhf_app.store import Store

store = Store(sys.argv[1])
gen = int(sys.argv[2])
print("ready", flush=True)
i = 0
while True:  # until killed
    value = i % 5 + 1
    rid = store.rate(gen, rater=f"r{i}", kind="score", value=value)
    print(f"ack {i} {rid} {value}", flush=True)
    i += 1
"""


@pytest.mark.parametrize("kill_after", [1, 7, 40, 150])
def test_acknowledged_ratings_survive_kill_9(tmp_path, kill_after):
    path = tmp_path / "rlhf.db"
    store = Store(path)
    gen = store.add_generation("Rate me", "An answer", "tiny", 0)
    del store  # the child is the only writer from here on

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(gen)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    acked: dict[str, tuple[int, int]] = {}  # rater -> (rating id, value)
    try:
        assert child.stdout.readline().strip() == "ready"
        while len(acked) < kill_after:
            line = child.stdout.readline()
            assert line.startswith("ack "), f"child stopped early: {line!r}"
            _, i, rid, value = line.split()
            acked[f"r{i}"] = (int(rid), int(value))
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    reopened = Store(path)
    conn = reopened.db.conn
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {r["rater"]: (r["id"], r["value"]) for r in reopened.query("SELECT id, rater, value FROM ratings")}
    missing = {rater: v for rater, v in acked.items() if stored.get(rater) != v}
    assert not missing, f"{len(missing)} acknowledged ratings lost or changed: {sorted(missing)[:5]}"
    events = {(e["rater"], e["value"]) for e in reopened.rating_history(gen)}
    assert {(rater, v) for rater, (_, v) in acked.items()} <= events
    # Writes that were under way when the kill came are either whole or absent: every rating has
    # its event, and the new connection can write at once (no stale lock left behind).
    assert reopened.stats()["ratings"] == reopened.stats()["votes"] >= kill_after
    reopened.rate(gen, rater="after", kind="thumb", value=1)
