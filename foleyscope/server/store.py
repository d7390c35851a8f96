"""Job records in SQLite (WAL) under the data directory, so a restart loses no queued or finished job.

One connection behind a lock: the server writes a handful of rows per job (submit, start, stage
changes, end), never one per denoising step, so a single writer is plenty and the status poll reads a
row by its primary key. Dict fields (settings, stage times) are stored as JSON text."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
_JSON = ("spec", "stage_times", "input")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    spec TEXT NOT NULL,
    input TEXT NOT NULL,
    idem_key TEXT UNIQUE,
    idem_hash TEXT,
    stage TEXT,
    stage_times TEXT,
    processing_s REAL,
    upload_s REAL,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    enqueued INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class DuplicateKey(Exception):
    """Another job already holds this Idempotency-Key."""


class JobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [_decode(r) for r in self._db.execute(sql, args).fetchall()]

    def _one(self, sql: str, args: tuple = ()) -> dict[str, Any] | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    def insert(self, job_id: str, spec: dict, input_info: dict, *, idem_key: str | None = None,
               idem_hash: str | None = None, upload_s: float | None = None) -> dict[str, Any]:
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO jobs (id, status, created, spec, input, idem_key, idem_hash, upload_s) "
                    "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                    (job_id, time.time(), json.dumps(spec), json.dumps(input_info), idem_key, idem_hash, upload_s))
        except sqlite3.IntegrityError:
            raise DuplicateKey(idem_key) from None
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))

    def by_idempotency_key(self, key: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM jobs WHERE idem_key = ?", (key,))

    def recent(self, limit: int) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))

    def update(self, job_id: str, **values: Any) -> None:
        if not values:
            return
        cols = ", ".join(f"{k} = ?" for k in values)
        args = tuple(json.dumps(v) if k in _JSON and v is not None else v for k, v in values.items())
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*args, job_id))

    def finish(self, job_id: str, status: str, **values: Any) -> bool:
        """Move a job to a terminal status once: False if it already was (a duplicate or late event)."""
        assert status in TERMINAL
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET status = ?, finished = ? WHERE id = ? AND status NOT IN "
                "('succeeded', 'failed', 'canceled')", (status, time.time(), job_id))
        if cur.rowcount:
            self.update(job_id, **values)
        return bool(cur.rowcount)

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel a job that has not started; False if it has (or has ended) meanwhile."""
        with self._lock:
            cur = self._db.execute("UPDATE jobs SET status = 'canceled', finished = ?, cancel_requested = 1 "
                                   "WHERE id = ? AND status = 'queued'", (time.time(), job_id))
        return bool(cur.rowcount)

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def claim_next(self, worker: str) -> dict[str, Any] | None:
        """The oldest queued job, marked running on `worker` (embedded queue: the server dispatches)."""
        with self._lock:
            row = self._db.execute(
                "UPDATE jobs SET status = 'running', started = ?, worker = ?, attempts = attempts + 1, "
                "stage = NULL WHERE seq = (SELECT seq FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1) "
                "RETURNING *", (time.time(), worker)).fetchone()
        return _decode(row) if row else None

    def queue_position(self, job: dict[str, Any]) -> int | None:
        """Jobs ahead of this one (0: it starts next), or None once it is no longer queued."""
        if job["status"] != "queued":
            return None
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND seq < ?",
                                    (job["seq"],)).fetchone()
        return int(n)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {s: 0 for s in STATUSES} | {r[0]: int(r[1]) for r in rows}

    def with_status(self, status: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM jobs WHERE status = ? ORDER BY seq", (status,))

    def recover(self, max_attempts: int, reason: str) -> tuple[list[str], list[str]]:
        """After a restart: running jobs go back to the queue, or fail with `reason` once they have been
        tried `max_attempts` times. Returns (re-queued ids, failed ids)."""
        requeued, failed = [], []
        for job in self.with_status("running"):
            if job["attempts"] >= max_attempts:
                self.finish(job["id"], "failed", error=f"{reason} ({job['attempts']} attempts)")
                failed.append(job["id"])
            else:
                self.update(job["id"], status="queued", started=None, stage=None, worker=None)
                requeued.append(job["id"])
        return requeued, failed

    def meta_get(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return row["value"] if row else None

    def meta_set(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    for k in _JSON:
        if k in d and d[k] is not None:
            d[k] = json.loads(d[k])
    return d
