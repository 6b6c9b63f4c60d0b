"""The SQLite store: prompts, generations, ratings, comparisons, policy and reward-model versions.

Everything people give the app ends up here, and the ratings are the one thing it must never
lose: the database runs in WAL mode with `synchronous=FULL`, and every write is one committed
transaction before the call returns, so an acknowledged rating survives `kill -9`.

One `Store` object is shared by the web server's threads and the trainer thread; each thread gets
its own SQLite connection.

>>> store = Store(":memory:")
>>> gen = store.add_generation(prompt="Hi", text="Hello!", model_id="tiny", policy_version=0)
>>> store.rate(gen, rater="session:abc", kind="thumb", value=1)
1
>>> store.rate(gen, rater="session:abc", kind="thumb", value=-1)   # a changed mind: same rating
1
>>> [r["value"] for r in store.rating_history(gen)]
[1, -1]
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils

from .errors import UserError

SCHEMA_VERSION = 1

THUMB, SCORE = "thumb", "score"
RATING_KINDS = {THUMB: (-1, 1), SCORE: (1, 5)}
OUTCOMES = ("a", "b", "tie", "both_bad")


class StoreError(UserError):
    """A request the store refuses (unknown generation, bad value); nothing was written."""


def now() -> float:
    return time.time()


# Migrations, in order: migration i brings the schema from version i to i+1. Never edit a
# migration that has shipped; add a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE prompts (
        id INTEGER PRIMARY KEY,
        text TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,              -- 'starter' | 'user'
        created_at REAL NOT NULL
    );
    CREATE TABLE generations (
        id INTEGER PRIMARY KEY,
        prompt_id INTEGER NOT NULL REFERENCES prompts(id),
        text TEXT NOT NULL,
        model_id TEXT NOT NULL,
        policy_version INTEGER NOT NULL,
        temperature REAL,
        top_p REAL,
        max_new_tokens INTEGER,
        seed INTEGER,
        n_tokens INTEGER,
        finish_reason TEXT,                -- 'eos' | 'length' | 'stopped'
        ttft_s REAL,
        tokens_per_s REAL,
        best_of_n INTEGER NOT NULL DEFAULT 1,
        candidate_scores TEXT,             -- JSON list: reward of each best-of-N candidate
        reward_model_version INTEGER,      -- the reward model that chose it, when best_of_n > 1
        reward REAL,                       -- its normalized reward, when scored
        source TEXT NOT NULL DEFAULT 'ui', -- 'ui' | 'api' | 'compare' | 'simulate' | 'eval'
        session TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX generations_prompt ON generations(prompt_id);
    CREATE INDEX generations_version ON generations(policy_version);
    CREATE TABLE ratings (
        id INTEGER PRIMARY KEY,
        generation_id INTEGER NOT NULL REFERENCES generations(id),
        rater TEXT NOT NULL,
        kind TEXT NOT NULL,                -- 'thumb' (-1 | 1) | 'score' (1..5)
        value INTEGER NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (generation_id, rater, kind)
    );
    CREATE TABLE comparisons (
        id INTEGER PRIMARY KEY,
        generation_a INTEGER NOT NULL REFERENCES generations(id),
        generation_b INTEGER NOT NULL REFERENCES generations(id),
        rater TEXT NOT NULL,
        outcome TEXT NOT NULL,             -- 'a' | 'b' | 'tie' | 'both_bad'
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (generation_a, generation_b, rater)
    );
    -- Append-only: every vote as given, so a changed mind keeps its history.
    CREATE TABLE rating_events (
        id INTEGER PRIMARY KEY,
        rating_id INTEGER,
        comparison_id INTEGER,
        rater TEXT NOT NULL,
        kind TEXT NOT NULL,                -- 'thumb' | 'score' | 'compare'
        value TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE policy_versions (
        version INTEGER PRIMARY KEY,       -- 0 is the base model
        parent INTEGER,
        path TEXT,                         -- adapter/weights directory, relative to the data dir
        model_id TEXT NOT NULL,
        algorithm TEXT,
        reward_model_version INTEGER,
        round_id INTEGER,
        seed INTEGER,
        settings TEXT,                     -- JSON
        metrics TEXT,                      -- JSON
        created_at REAL NOT NULL
    );
    -- Append-only: which version went live when, and why (publish, rollback, restart).
    CREATE TABLE live_events (
        id INTEGER PRIMARY KEY,
        version INTEGER NOT NULL REFERENCES policy_versions(version),
        reason TEXT NOT NULL,
        actor TEXT,
        created_at REAL NOT NULL
    );
    CREATE TABLE reward_models (
        version INTEGER PRIMARY KEY,
        path TEXT NOT NULL,
        base_model_id TEXT NOT NULL,
        last_event_id INTEGER NOT NULL,    -- newest rating_events row it was fitted on
        norm_mean REAL NOT NULL,
        norm_std REAL NOT NULL,
        seed INTEGER,
        metrics TEXT,                      -- JSON: held-out accuracy, correlation, counts
        created_at REAL NOT NULL
    );
    CREATE TABLE rounds (
        id INTEGER PRIMARY KEY,
        algorithm TEXT NOT NULL,
        status TEXT NOT NULL,              -- 'running' | 'published' | 'discarded' | 'skipped' | 'failed'
        reason TEXT,
        parent_version INTEGER,
        policy_version INTEGER,
        reward_model_version INTEGER,
        seed INTEGER,
        n_ratings INTEGER,
        last_event_id INTEGER,             -- newest vote the round had seen when it started
        metrics TEXT,                      -- JSON
        started_at REAL NOT NULL,
        finished_at REAL
    );
    """,
]


class Store:
    """Typed functions over the SQLite database; every write is committed before it returns."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._local = threading.local()
        self._memory_conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # serializes writers of an in-memory store only
        if self.path == ":memory:":
            self._memory_conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.migrate()

    # -- connections -------------------------------------------------------------------------

    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            if self._memory_conn is not None:
                conn = self._memory_conn
            else:
                conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
                _enable_wal(conn)
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=60000")
            db = sqlite_utils.Database(conn)
            self._local.db = db
        return db

    def _write(self, fn, *args):
        """Run fn(conn, *args) in one IMMEDIATE transaction: all or nothing, then on disk."""
        conn = self.db.conn
        with self._lock if self._memory_conn is not None else _nolock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def migrate(self) -> int:
        """Apply every migration newer than the recorded schema version; returns the version."""
        conn = self.db.conn
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


        def run(conn):
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {version}, newer than this code ({SCHEMA_VERSION}): "
                    "upgrade the app instead of downgrading the data."
                )
            for i in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[i].split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(
                "INSERT INTO meta(key, value) VALUES('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(SCHEMA_VERSION),),
            )
            return SCHEMA_VERSION

        return self._write(run)

    def schema_version(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])

    def query(self, sql: str, params: Iterable[Any] | dict = ()) -> list[dict]:
        return list(self.db.query(sql, params))

    # -- prompts and generations ----------------------------------------------------------------

    def add_prompt(self, text: str, source: str = "user") -> int:
        """Id of the prompt with this text, inserting it if new."""
        text = text.strip()
        if not text:
            raise StoreError("The prompt is empty: write something for the model to answer.")

        def run(conn):
            conn.execute(
                "INSERT INTO prompts(text, source, created_at) VALUES(?, ?, ?) ON CONFLICT(text) DO NOTHING",
                (text, source, now()),
            )
            return conn.execute("SELECT id FROM prompts WHERE text=?", (text,)).fetchone()[0]

        return self._write(run)

    def prompts(self, limit: int | None = None) -> list[str]:
        sql = "SELECT text FROM prompts ORDER BY id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [r["text"] for r in self.db.query(sql)]

    def add_generation(
        self,
        prompt: str,
        text: str,
        model_id: str,
        policy_version: int,
        *,
        candidate_scores: list[float] | None = None,
        **fields: Any,
    ) -> int:
        """Store one answer with how it was made; returns its id."""
        prompt_id = self.add_prompt(prompt, source=fields.pop("prompt_source", "user"))
        row = dict(
            prompt_id=prompt_id,
            text=text,
            model_id=model_id,
            policy_version=policy_version,
            candidate_scores=json.dumps(candidate_scores) if candidate_scores is not None else None,
            created_at=now(),
            **fields,
        )
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        return self._write(
            lambda conn: conn.execute(f"INSERT INTO generations({cols}) VALUES({marks})", list(row.values())).lastrowid
        )

    def generation(self, generation_id: int) -> dict:
        rows = self.query(
            "SELECT g.*, p.text AS prompt FROM generations g JOIN prompts p ON p.id = g.prompt_id WHERE g.id=?",
            (generation_id,),
        )
        if not rows:
            raise StoreError(f"There is no generation {generation_id}: generate an answer first, then rate it.")
        return rows[0]

    def finish_reasons(self, generation_ids: Iterable[int]) -> dict[int, str | None]:
        """{id: 'eos' | 'length' | 'stopped' | None (not recorded)} of existing generations."""
        ids, out = [int(g) for g in generation_ids], {}
        for i in range(0, len(ids), 500):  # under SQLite's limit on bound parameters
            chunk = ids[i : i + 500]
            sql = f"SELECT id, finish_reason FROM generations WHERE id IN ({','.join('?' * len(chunk))})"
            out.update({r["id"]: r["finish_reason"] for r in self.query(sql, chunk)})
        return out

    def _check_generation(self, conn: sqlite3.Connection, generation_id: Any) -> int:
        try:
            gid = int(generation_id)
        except (TypeError, ValueError):
            raise StoreError(f"There is no generation {generation_id!r}: generate an answer first, then rate it.")
        if conn.execute("SELECT 1 FROM generations WHERE id=?", (gid,)).fetchone() is None:
            raise StoreError(f"There is no generation {gid}: generate an answer first, then rate it.")
        return gid

    # -- ratings ---------------------------------------------------------------------------------

    def rate(self, generation_id: int, rater: str, kind: str, value: int) -> int:
        """Record a thumb (-1/1) or a 1-5 score; one per rater, generation and kind.

        Rating again replaces the value; the change is kept in `rating_events`. Returns the
        rating's id. Raises StoreError, writing nothing, for an unknown generation or a bad value.
        """
        if kind not in RATING_KINDS:
            raise StoreError(f"Unknown rating kind {kind!r}: use 'thumb' or 'score'.")
        lo, hi = RATING_KINDS[kind]
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)  # int() would silently truncate a 4.5 to 4
            value = int(value)
        except (TypeError, ValueError, OverflowError):
            raise StoreError(f"A {kind} must be a whole number, not {value!r}.")
        if kind == THUMB and value not in (-1, 1):
            raise StoreError("A thumb is 1 (up) or -1 (down).")
        if not lo <= value <= hi:
            raise StoreError(f"A score must be between {lo} and {hi}, not {value}.")
        if not rater:
            raise StoreError("A rating needs a rater.")

        def run(conn):
            gid = self._check_generation(conn, generation_id)
            t = now()
            conn.execute(
                "INSERT INTO ratings(generation_id, rater, kind, value, created_at, updated_at) "
                "VALUES(?, ?, ?, ?, ?, ?) ON CONFLICT(generation_id, rater, kind) "
                "DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
                (gid, rater, kind, value, t, t),
            )
            rid = conn.execute(
                "SELECT id FROM ratings WHERE generation_id=? AND rater=? AND kind=?", (gid, rater, kind)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO rating_events(rating_id, rater, kind, value, created_at) VALUES(?, ?, ?, ?, ?)",
                (rid, rater, kind, str(value), t),
            )
            return rid

        return self._write(run)

    def compare(self, generation_a: int, generation_b: int, rater: str, outcome: str) -> int:
        """Record which of two answers to the same prompt is better: 'a', 'b', 'tie' or 'both_bad'."""
        if outcome not in OUTCOMES:
            raise StoreError(f"Unknown outcome {outcome!r}: use one of {', '.join(OUTCOMES)}.")
        if not rater:
            raise StoreError("A comparison needs a rater.")

        def run(conn):
            a = self._check_generation(conn, generation_a)
            b = self._check_generation(conn, generation_b)
            if a == b:
                raise StoreError("A comparison needs two different answers.")
            if a > b:  # one row per pair whatever the order it is shown in: a changed mind updates it
                a, b = b, a
                as_stored = {"a": "b", "b": "a"}.get(outcome, outcome)
            else:
                as_stored = outcome
            pa, pb = (
                conn.execute("SELECT prompt_id FROM generations WHERE id=?", (g,)).fetchone()[0] for g in (a, b)
            )
            if pa != pb:
                raise StoreError("Only two answers to the same prompt can be compared.")
            t = now()
            conn.execute(
                "INSERT INTO comparisons(generation_a, generation_b, rater, outcome, created_at, updated_at) "
                "VALUES(?, ?, ?, ?, ?, ?) ON CONFLICT(generation_a, generation_b, rater) "
                "DO UPDATE SET outcome=excluded.outcome, updated_at=excluded.updated_at",
                (a, b, rater, as_stored, t, t),
            )
            cid = conn.execute(
                "SELECT id FROM comparisons WHERE generation_a=? AND generation_b=? AND rater=?", (a, b, rater)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO rating_events(comparison_id, rater, kind, value, created_at) VALUES(?, ?, 'compare', ?, ?)",
                (cid, rater, as_stored, t),
            )
            return cid

        return self._write(run)

    def rating_history(self, generation_id: int) -> list[dict]:
        """Every vote ever given on this generation (thumbs and scores), oldest first."""
        return self.query(
            "SELECT e.rater, e.kind, CAST(e.value AS INTEGER) AS value, e.created_at FROM rating_events e "
            "JOIN ratings r ON r.id = e.rating_id WHERE r.generation_id=? ORDER BY e.id",
            (generation_id,),
        )

    def pointwise_ratings(self) -> list[dict]:
        """Current thumbs and scores with their generation's prompt and text."""
        return self.query(
            "SELECT r.generation_id, r.rater, r.kind, r.value, g.text, g.policy_version, g.prompt_id, "
            "p.text AS prompt, r.updated_at FROM ratings r JOIN generations g ON g.id = r.generation_id "
            "JOIN prompts p ON p.id = g.prompt_id ORDER BY r.id"
        )

    def comparisons(self) -> list[dict]:
        """Current A/B votes with both texts and their prompt."""
        return self.query(
            "SELECT c.id, c.rater, c.outcome, c.generation_a, c.generation_b, ga.text AS text_a, "
            "gb.text AS text_b, ga.policy_version AS version_a, gb.policy_version AS version_b, "
            "p.text AS prompt, c.updated_at FROM comparisons c "
            "JOIN generations ga ON ga.id = c.generation_a JOIN generations gb ON gb.id = c.generation_b "
            "JOIN prompts p ON p.id = ga.prompt_id ORDER BY c.id"
        )

    def last_event_id(self) -> int:
        """Id of the newest vote; the trainer compares it to see whether ratings changed."""
        row = self.db.execute("SELECT MAX(id) FROM rating_events").fetchone()
        return row[0] or 0

    def pending_votes(self, event_id: int) -> tuple[int, float | None]:
        """(number of votes newer than `event_id`, time of the first of them)."""
        n, first = self.db.execute(
            "SELECT COUNT(*), MIN(created_at) FROM rating_events WHERE id > ?", (event_id,)
        ).fetchone()
        return n, first

    # -- versions -------------------------------------------------------------------------------

    def ensure_base_version(self, model_id: str) -> None:
        """Version 0 is the base model; it is live until something else is."""

        def run(conn):
            if conn.execute("SELECT 1 FROM policy_versions WHERE version=0").fetchone() is None:
                conn.execute(
                    "INSERT INTO policy_versions(version, model_id, created_at, metrics) VALUES(0, ?, ?, '{}')",
                    (model_id, now()),
                )
            if conn.execute("SELECT 1 FROM live_events").fetchone() is None:
                conn.execute(
                    "INSERT INTO live_events(version, reason, actor, created_at) VALUES(0, 'base model', 'app', ?)",
                    (now(),),
                )

        self._write(run)

    def next_policy_version(self) -> int:
        return (self.db.execute("SELECT MAX(version) FROM policy_versions").fetchone()[0] or 0) + 1

    def add_policy_version(self, version: int, *, make_live: bool = True, **fields: Any) -> None:
        """Record a published policy version (and make it live) in one transaction."""
        row = {"version": version, "created_at": now(), **fields}
        for k in ("settings", "metrics"):
            if k in row and not isinstance(row[k], str):
                row[k] = json.dumps(row[k])
        cols, marks = ", ".join(row), ", ".join("?" for _ in row)

        def run(conn):
            conn.execute(f"INSERT INTO policy_versions({cols}) VALUES({marks})", list(row.values()))
            if make_live:
                conn.execute(
                    "INSERT INTO live_events(version, reason, actor, created_at) VALUES(?, 'published', 'trainer', ?)",
                    (version, now()),
                )

        self._write(run)

    def policy_versions(self) -> list[dict]:
        rows = self.query("SELECT * FROM policy_versions ORDER BY version")
        for r in rows:
            r["settings"] = json.loads(r["settings"]) if r["settings"] else None
            r["metrics"] = json.loads(r["metrics"]) if r["metrics"] else {}
        return rows

    def policy_version(self, version: int) -> dict:
        rows = [r for r in self.policy_versions() if r["version"] == int(version)]
        if not rows:
            raise StoreError(f"There is no policy version {version}.")
        return rows[0]

    def set_live(self, version: int, reason: str, actor: str) -> None:
        """Make an existing version live (rollback or roll forward); recorded in live_events."""

        def run(conn):
            if conn.execute("SELECT 1 FROM policy_versions WHERE version=?", (int(version),)).fetchone() is None:
                raise StoreError(f"There is no policy version {version}.")
            conn.execute(
                "INSERT INTO live_events(version, reason, actor, created_at) VALUES(?, ?, ?, ?)",
                (int(version), reason, actor, now()),
            )

        self._write(run)

    def live(self) -> dict:
        """{'version': int, 'since': float, 'reason': str} of the live policy."""
        row = self.db.execute(
            "SELECT version, created_at, reason FROM live_events ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return {"version": 0, "since": None, "reason": "base model"}
        return {"version": row[0], "since": row[1], "reason": row[2]}

    def live_events(self) -> list[dict]:
        return self.query("SELECT * FROM live_events ORDER BY id")

    def add_reward_model(self, version: int, **fields: Any) -> None:
        row = {"version": version, "created_at": now(), **fields}
        if "metrics" in row and not isinstance(row["metrics"], str):
            row["metrics"] = json.dumps(row["metrics"])
        cols, marks = ", ".join(row), ", ".join("?" for _ in row)
        self._write(lambda conn: conn.execute(f"INSERT INTO reward_models({cols}) VALUES({marks})", list(row.values())))

    def reward_models(self) -> list[dict]:
        rows = self.query("SELECT * FROM reward_models ORDER BY version")
        for r in rows:
            r["metrics"] = json.loads(r["metrics"]) if r["metrics"] else {}
        return rows

    def latest_reward_model(self) -> dict | None:
        rows = self.reward_models()
        return rows[-1] if rows else None

    def next_reward_model_version(self) -> int:
        return (self.db.execute("SELECT MAX(version) FROM reward_models").fetchone()[0] or 0) + 1

    # -- rounds ---------------------------------------------------------------------------------

    def start_round(self, algorithm: str, parent_version: int, seed: int) -> int:
        """Open a round record; it sees every vote up to now."""

        def run(conn):
            last = conn.execute("SELECT COALESCE(MAX(id), 0) FROM rating_events").fetchone()[0]
            n = conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]
            n += conn.execute("SELECT COUNT(*) FROM comparisons").fetchone()[0]
            return conn.execute(
                "INSERT INTO rounds(algorithm, status, parent_version, seed, n_ratings, last_event_id, started_at) "
                "VALUES(?, 'running', ?, ?, ?, ?, ?)",
                (algorithm, parent_version, seed, n, last, now()),
            ).lastrowid

        return self._write(run)

    def last_round(self) -> dict | None:
        rows = self.query("SELECT * FROM rounds ORDER BY id DESC LIMIT 1")
        if not rows:
            return None
        rows[0]["metrics"] = json.loads(rows[0]["metrics"]) if rows[0]["metrics"] else {}
        return rows[0]

    def finish_round(self, round_id: int, status: str, *, reason: str | None = None, **fields: Any) -> None:
        row = {"status": status, "reason": reason, "finished_at": now(), **fields}
        if "metrics" in row and not isinstance(row["metrics"], str):
            row["metrics"] = json.dumps(row["metrics"], default=float)
        sets = ", ".join(f"{k}=?" for k in row)
        self._write(lambda conn: conn.execute(f"UPDATE rounds SET {sets} WHERE id=?", [*row.values(), round_id]))

    def rounds(self) -> list[dict]:
        rows = self.query("SELECT * FROM rounds ORDER BY id")
        for r in rows:
            r["metrics"] = json.loads(r["metrics"]) if r["metrics"] else {}
        return rows

    def fail_interrupted_rounds(self) -> int:
        """Rounds left 'running' by a process that died: mark them failed (called on start)."""
        return self._write(
            lambda conn: conn.execute(
                "UPDATE rounds SET status='failed', reason='interrupted by a restart', finished_at=? "
                "WHERE status='running'",
                (now(),),
            ).rowcount
        )

    # -- stats ----------------------------------------------------------------------------------

    def stats(self) -> dict:
        one = lambda sql: self.db.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "prompts": one("SELECT COUNT(*) FROM prompts"),
            "generations": one("SELECT COUNT(*) FROM generations"),
            "ratings": one("SELECT COUNT(*) FROM ratings"),
            "thumbs": one("SELECT COUNT(*) FROM ratings WHERE kind='thumb'"),
            "scores": one("SELECT COUNT(*) FROM ratings WHERE kind='score'"),
            "comparisons": one("SELECT COUNT(*) FROM comparisons"),
            "votes": one("SELECT COUNT(*) FROM rating_events"),
            "policy_versions": one("SELECT COUNT(*) FROM policy_versions"),
            "reward_models": one("SELECT COUNT(*) FROM reward_models"),
            "live_version": self.live()["version"],
        }


def _enable_wal(conn: sqlite3.Connection, timeout_s: float = 60.0) -> None:
    """Switch the file to WAL. SQLite answers "database is locked" at once, without waiting, when
    another process is switching or creating the same file (the app and `python -m rlhf_app.train`
    starting together on a fresh data dir), so retry until it is done."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower()
            if mode == "wal":
                return
            error: Exception = RuntimeError(f"SQLite kept journal_mode={mode!r} instead of WAL")
        except sqlite3.OperationalError as e:
            if "locked" not in str(e):
                raise
            error = e
        if time.monotonic() > deadline:
            raise error
        time.sleep(0.05)


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_nolock = _NoLock()
