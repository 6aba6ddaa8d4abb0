"""The console's state in SQLite: what it read from the topics, and its users and sessions.

Everything but the users and sessions is a view of the topics (alerts, the input messages'
texts joined to them by message id, verdicts, the bank's changes, campaigns), with the
offsets it has read up to: delete the file and the console reads the topics again from
their start (texts older than the retention are then skipped). Message texts are kept
for `text_retention_s` and purged after it (the rest of the alert stays).

One connection, shared by the reading thread and the web requests under a lock: SQLite
serializes writers anyway, and the console's writes are small.
"""

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fraud.errors import ConfigError
from fraud.index.changelog import BankChange
from fraud.schemas import Decision

SCHEMA = """
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT, partition INTEGER, next_offset INTEGER, PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS messages (
    message_id TEXT PRIMARY KEY, text TEXT, sender TEXT, recipient TEXT, received_ms INTEGER);
CREATE INDEX IF NOT EXISTS messages_received ON messages (received_ms);
CREATE TABLE IF NOT EXISTS alerts (
    message_id TEXT PRIMARY KEY, seq INTEGER, score REAL, category TEXT, scored_ms INTEGER,
    status TEXT DEFAULT 'open', campaign_id TEXT, decision TEXT);
CREATE INDEX IF NOT EXISTS alerts_scored ON alerts (scored_ms);
CREATE INDEX IF NOT EXISTS alerts_score ON alerts (score);
CREATE INDEX IF NOT EXISTS alerts_seq ON alerts (seq);
CREATE INDEX IF NOT EXISTS alerts_status ON alerts (status, scored_ms);
CREATE TABLE IF NOT EXISTS verdicts (
    message_id TEXT, verdict TEXT, category TEXT, reason TEXT, analyst TEXT,
    sent_ms INTEGER, partition INTEGER, offset INTEGER);
CREATE INDEX IF NOT EXISTS verdicts_message ON verdicts (message_id);
CREATE TABLE IF NOT EXISTS bank (
    reference_id INTEGER PRIMARY KEY, text TEXT, label TEXT, category TEXT, source TEXT,
    disabled INTEGER, weight REAL, changed_by TEXT, reason TEXT, raw BLOB);
CREATE TABLE IF NOT EXISTS bank_history (
    reference_id INTEGER, label TEXT, category TEXT, disabled INTEGER, weight REAL,
    changed_by TEXT, reason TEXT, removed INTEGER, partition INTEGER, offset INTEGER,
    written_ms INTEGER, verdict_ms INTEGER);
CREATE INDEX IF NOT EXISTS bank_history_ref ON bank_history (reference_id);
CREATE TABLE IF NOT EXISTS campaigns (
    campaign_id TEXT PRIMARY KEY, category TEXT, size INTEGER, recipients INTEGER,
    first_seen_ms INTEGER, last_seen_ms INTEGER, confirmed_by TEXT, members TEXT);
CREATE TABLE IF NOT EXISTS campaign_members (
    campaign_id TEXT, message_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT, hash TEXT);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, name TEXT, csrf TEXT, expires REAL);
"""

STATUSES = ("open", "confirmed", "cleared")
SORTS = {"newest": "scored_ms DESC", "score": "score DESC, scored_ms DESC"}


@dataclass(frozen=True)
class QueueFilter:
    """What the queue page shows: a status, a category, a score range, alerts since a time
    (ms), newest or highest score first, one page."""

    status: str | None = "open"
    category: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    since_ms: int | None = None
    sort: str = "newest"
    page: int = 1
    page_size: int = 50

    def where(self) -> tuple[str, list]:
        clauses, args = [], []
        for clause, value in (
            ("status = ?", self.status),
            ("category = ?", self.category),
            ("score >= ?", self.min_score),
            ("score <= ?", self.max_score),
            ("scored_ms >= ?", self.since_ms),
        ):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


class Store:
    """The console's database (SCHEMA above). Methods take the lock; rows come back as
    dicts."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise ConfigError(
                f"console database {path}: cannot be opened ({e}): set --database "
                "(FRAUD_CONSOLE__DATABASE) to a writable file"
            ) from None
        self.db.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        with self.lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
            self._seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM alerts").fetchone()[0]

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def query(self, sql: str, args: Iterable = ()) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self.db.execute(sql, tuple(args)).fetchall()]

    def one(self, sql: str, args: Iterable = ()) -> dict | None:
        rows = self.query(sql, args)
        return rows[0] if rows else None

    def execute(self, sql: str, args: Iterable = ()) -> None:
        with self.lock:
            self.db.execute(sql, tuple(args))

    def transaction(self):
        """`with store.transaction() as db:` several writes at once (BEGIN ... COMMIT)."""
        return _Transaction(self)

    # -- offsets: where the reading thread goes on from -----------------------------------

    def offsets(self, topic: str) -> dict[int, int]:
        rows = self.query("SELECT partition, next_offset FROM offsets WHERE topic = ?", [topic])
        return {r["partition"]: r["next_offset"] for r in rows}

    # -- writes from the topics (inside a transaction: `db` is the connection) -------------

    @staticmethod
    def note_offset(db, topic: str, partition: int, next_offset: int) -> None:
        db.execute(
            "INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT (topic, partition) "
            "DO UPDATE SET next_offset = excluded.next_offset",
            (topic, partition, next_offset),
        )

    @staticmethod
    def put_message(db, message_id: str, text: str, sender, recipient, received_ms: int) -> None:
        db.execute(
            "INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?)",
            (message_id, text, _str(sender), _str(recipient), received_ms),
        )

    def put_alert(self, db, decision: Decision, scored_ms: int) -> None:
        """An alert, or a newer decision on the same message (a retroactive alert, a replay
        with another bank version): the latest decision kept, the review status too."""
        self._seq += 1
        db.execute(
            "INSERT INTO alerts (message_id, seq, score, category, scored_ms, campaign_id, "
            "decision) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (message_id) DO UPDATE SET "
            "seq = excluded.seq, score = excluded.score, category = excluded.category, "
            "scored_ms = excluded.scored_ms, campaign_id = COALESCE(excluded.campaign_id, "
            "campaign_id), decision = excluded.decision",
            (
                decision.message_id,
                self._seq,
                decision.score,
                decision.category,
                scored_ms,
                decision.campaign_id,
                decision.model_dump_json(),
            ),
        )

    @staticmethod
    def put_verdict(db, verdict, sent_ms: int, partition: int, offset: int) -> None:
        db.execute(
            "INSERT INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                verdict.message_id,
                verdict.verdict,
                verdict.category,
                verdict.reason,
                verdict.analyst,
                sent_ms,
                partition,
                offset,
            ),
        )
        status = "confirmed" if verdict.verdict == "fraud" else "cleared"
        db.execute(
            "UPDATE alerts SET status = ? WHERE message_id = ?", (status, verdict.message_id)
        )

    @staticmethod
    def put_bank_change(db, change: BankChange, raw, partition: int, offset: int, ms: int) -> None:
        ref = change.reference
        if ref is None:
            db.execute("DELETE FROM bank WHERE reference_id = ?", (change.reference_id,))
            row = (change.reference_id, None, None, 0, None, None, None, 1)
        else:
            db.execute(
                "INSERT OR REPLACE INTO bank VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ref.id,
                    ref.text,
                    ref.label,
                    ref.category,
                    ref.source,
                    int(ref.disabled),
                    ref.weight,
                    ref.changed_by,
                    ref.reason,
                    raw,
                ),
            )
            row = (ref.id, ref.label, ref.category, int(ref.disabled), ref.weight)
            row += (ref.changed_by, ref.reason, 0)
        db.execute(
            "INSERT INTO bank_history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*row, partition, offset, ms, change.verdict_ms),
        )

    @staticmethod
    def put_campaign(db, record: dict) -> None:
        members = [str(m) for m in record.get("members", [])]
        db.execute(
            "INSERT OR REPLACE INTO campaigns VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record["campaign_id"],
                record.get("category"),
                record.get("size"),
                record.get("recipients"),
                record.get("first_seen_ms"),
                record.get("last_seen_ms"),
                record.get("confirmed_by"),
                json.dumps(members),
            ),
        )
        db.executemany(
            "INSERT OR REPLACE INTO campaign_members VALUES (?, ?)",
            [(record["campaign_id"], m) for m in members],
        )

    def purge_texts(self, retention_s: float, now_s: float | None = None) -> int:
        """Forget the texts of messages received more than retention_s ago; how many."""
        cutoff = int(((now_s or time.time()) - retention_s) * 1000)
        with self.lock:
            done = self.db.execute(
                "UPDATE messages SET text = NULL WHERE received_ms < ? AND text IS NOT NULL",
                (cutoff,),
            )
            return done.rowcount

    # -- reads for the pages ----------------------------------------------------------------

    def queue(self, f: QueueFilter) -> tuple[list[dict], int]:
        """One page of alerts with their texts, and how many match in all."""
        where, args = f.where()
        # The interpolated SQL is QueueFilter's fixed clauses and SORTS; values are parameters.
        total = self.one(f"SELECT COUNT(*) AS n FROM alerts{where}", args)["n"]  # noqa: S608
        order = SORTS[f.sort]
        page = f"SELECT * FROM alerts{where} ORDER BY {order} LIMIT ? OFFSET ?"  # noqa: S608
        rows = self.query(
            "SELECT a.message_id, a.seq, a.score, a.category, a.scored_ms, a.status, "  # noqa: S608
            f"a.campaign_id, m.text, m.sender, m.recipient FROM ({page}) a "
            f"LEFT JOIN messages m USING (message_id) ORDER BY {order}",
            [*args, f.page_size, (f.page - 1) * f.page_size],
        )
        return rows, total

    def alerts_after(self, seq: int, limit: int = 100) -> list[dict]:
        """Alerts new or changed since `seq` (the live queue), oldest first."""
        return self.query(
            "SELECT a.message_id, a.seq, a.score, a.category, a.scored_ms, a.status, "
            "m.text, m.sender, m.recipient FROM alerts a LEFT JOIN messages m "
            "USING (message_id) WHERE a.seq > ? ORDER BY a.seq LIMIT ?",
            [seq, limit],
        )

    def last_seq(self) -> int:
        with self.lock:
            return self._seq

    def alert(self, message_id: str) -> dict | None:
        return self.one(
            "SELECT a.*, m.text, m.sender, m.recipient, m.received_ms FROM alerts a "
            "LEFT JOIN messages m USING (message_id) WHERE a.message_id = ?",
            [message_id],
        )

    def message(self, message_id: str) -> dict | None:
        return self.one("SELECT * FROM messages WHERE message_id = ?", [message_id])

    def references(self, ids: Iterable[int]) -> dict[int, dict]:
        ids = list(ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.query(f"SELECT * FROM bank WHERE reference_id IN ({marks})", ids)  # noqa: S608
        return {r["reference_id"]: r for r in rows}

    def bank_search(self, text: str, category: str, source: str, label: str, limit: int = 200):
        """References whose text and source contain the given strings, of the given category
        and label (empty: any), newest id first, at most `limit`; and how many match."""
        clauses, args = [], []
        for clause, value in (
            ("text LIKE ?", f"%{text}%" if text else None),
            ("category = ?", category or None),
            ("source LIKE ?", f"%{source}%" if source else None),
            ("label = ?", label or None),
        ):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""  # fixed clauses only
        total = self.one(f"SELECT COUNT(*) AS n FROM bank{where}", args)["n"]  # noqa: S608
        columns = "reference_id, text, label, category, source, disabled, weight, changed_by"
        rows = self.query(
            f"SELECT {columns}, reason FROM bank{where} ORDER BY reference_id DESC LIMIT ?",  # noqa: S608
            [*args, limit],
        )
        return rows, total

    def judged(self, message_ids: list[str]) -> set[str]:
        """Which of these messages have a verdict."""
        marks = ",".join("?" * len(message_ids))
        sql = f"SELECT DISTINCT message_id FROM verdicts WHERE message_id IN ({marks})"  # noqa: S608
        return {r["message_id"] for r in self.query(sql, message_ids)}

    def bank_history(self, reference_id: int) -> list[dict]:
        return self.query(
            "SELECT * FROM bank_history WHERE reference_id = ? ORDER BY written_ms DESC, "
            "offset DESC",
            [reference_id],
        )

    def verdicts(self, message_id: str) -> list[dict]:
        return self.query(
            "SELECT * FROM verdicts WHERE message_id = ? ORDER BY sent_ms", [message_id]
        )

    def campaign_of(self, message_id: str) -> dict | None:
        row = self.one(
            "SELECT c.* FROM campaign_members cm JOIN campaigns c USING (campaign_id) "
            "WHERE cm.message_id = ?",
            [message_id],
        )
        if row is not None:
            row["members"] = json.loads(row["members"])
        return row

    def campaign(self, campaign_id: str) -> dict | None:
        row = self.one("SELECT * FROM campaigns WHERE campaign_id = ?", [campaign_id])
        if row is not None:
            row["members"] = json.loads(row["members"])
        return row

    def categories(self) -> list[str]:
        rows = self.query("SELECT DISTINCT category FROM alerts WHERE category IS NOT NULL")
        return sorted(r["category"] for r in rows)


class _Transaction:
    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store.lock.acquire()
        self.store.db.execute("BEGIN")
        return self.store.db

    def __exit__(self, kind, *_) -> None:
        try:
            self.store.db.execute("ROLLBACK" if kind else "COMMIT")
        finally:
            self.store.lock.release()


def _str(value) -> str | None:
    return None if value is None else str(value)
