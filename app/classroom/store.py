"""The live class's answers, shared by every Streamlit session (and every server process) through one SQLite file.

Pure SQLite, no Streamlit, so it is unit-tested directly. A class is a short code; the teacher who started it
holds a secret token that alone may change its question or reveal the answer. A student joins with a token of
their own (one per browser session) and answers the class's current question: the key (class, student,
question) makes a repeated answer replace the earlier one, so a session that answers 1,000 times counts once.
Bad input raises `ClassError` with a message meant for the person who typed it; the tally is never touched then.

Every call opens its own connection (cheap, and safe from any thread or process); the file is in WAL mode so
readers (the teacher's live tally) never wait for writers, and each answer is one short write transaction.
Classes expire `ttl_s` after their last change; expired ones are refused and purged when a class starts.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off a projector, typed on a phone
CODE_LEN = 5  # 32^5 = 33 million codes
MAX_NAME_CHARS = 40
MAX_TOKEN_CHARS = 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS classes (
    code TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,          -- the teacher's secret token
    question TEXT NOT NULL,         -- id of the current question ("" before one is chosen)
    n_options INTEGER NOT NULL,
    revealed INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS students (
    code TEXT NOT NULL REFERENCES classes(code) ON DELETE CASCADE,
    student TEXT NOT NULL,
    name TEXT,                      -- only when the student chose to give one
    PRIMARY KEY (code, student)
);
CREATE TABLE IF NOT EXISTS answers (
    code TEXT NOT NULL REFERENCES classes(code) ON DELETE CASCADE,
    student TEXT NOT NULL,
    question TEXT NOT NULL,
    option INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (code, student, question)
);
"""


class ClassError(ValueError):
    """Bad input from a teacher or student: the message is shown to them as it is."""


@dataclass(frozen=True)
class ClassInfo:
    code: str
    question: str  # "" until the teacher picks one
    n_options: int
    revealed: bool
    expires: float  # unix time


@dataclass(frozen=True)
class StoreConfig:
    path: Path  # the SQLite file (app.settings.class_db(); tests use a temporary one)
    ttl_s: float = 4 * 3600.0  # a class lives 4 hours after its last change: a lesson, not a term
    busy_timeout_s: float = 10.0  # a writer waits this long for another (each write takes well under 1 ms)


def normalise_code(text: str | None) -> str:
    """What a student typed, as a code: upper case, only A-Z and 0-9 kept (so a code is safe in any message)."""
    return "".join(ch for ch in (text or "").upper() if ch.isascii() and ch.isalnum())[:16]


class ClassStore:
    def __init__(self, config: StoreConfig, clock: Callable[[], float] = time.time):
        self.config = config
        self.clock = clock  # tests move time forward to expire classes
        Path(config.path).parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # persistent: set once per file
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.config.path, timeout=self.config.busy_timeout_s, isolation_level=None)
        try:
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front (BEGIN IMMEDIATE) so concurrent writers queue, never deadlock."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # --- the teacher ---------------------------------------------------------------------------------------

    def start_class(self) -> tuple[str, str]:
        """A new class: (code, teacher token). Purges expired classes first."""
        now = self.clock()
        teacher = secrets.token_urlsafe(24)
        with self._write() as db:
            db.execute("DELETE FROM classes WHERE expires < ?", (now,))
            for _ in range(20):
                code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LEN))
                try:
                    db.execute(
                        "INSERT INTO classes (code, teacher, question, n_options, revealed, created, expires) "
                        "VALUES (?, ?, '', 0, 0, ?, ?)",
                        (code, teacher, now, now + self.config.ttl_s),
                    )
                    return code, teacher
                except sqlite3.IntegrityError:  # a live class has this code: draw again
                    continue
        raise ClassError("Could not find a free class code; try again.")

    def set_question(self, code: str, teacher: str, question: str, n_options: int) -> None:
        """Open `question` (with `n_options` choices) in the class; its answer is hidden again."""
        if not question or n_options < 2:
            raise ValueError("a question needs an id and at least 2 options")
        with self._write() as db:
            self._teacher_class(db, code, teacher)
            db.execute(
                "UPDATE classes SET question = ?, n_options = ?, revealed = 0, expires = ? WHERE code = ?",
                (question, n_options, self.clock() + self.config.ttl_s, code),
            )

    def reveal(self, code: str, teacher: str, revealed: bool = True) -> None:
        with self._write() as db:
            self._teacher_class(db, code, teacher)
            db.execute("UPDATE classes SET revealed = ? WHERE code = ?", (int(revealed), code))

    def end_class(self, code: str, teacher: str) -> None:
        with self._write() as db:
            self._teacher_class(db, code, teacher)
            db.execute("DELETE FROM classes WHERE code = ?", (code,))

    def _teacher_class(self, db: sqlite3.Connection, code: str, teacher: str) -> None:
        row = db.execute("SELECT teacher, expires FROM classes WHERE code = ?", (code,)).fetchone()
        if row is None or row[1] < self.clock():
            raise ClassError(f"Class {code} has ended; start a new one.")
        if not secrets.compare_digest(row[0], teacher):
            raise ClassError(f"Only the teacher who started class {code} can change it.")

    def tally(self, code: str, question: str | None = None) -> list[int]:
        """Answers per option to `question` (default: the current one)."""
        info = self.get_class(code)
        question = info.question if question is None else question
        counts = [0] * max(info.n_options, 0)
        with self._connect() as db:
            rows = db.execute(
                "SELECT option, COUNT(*) FROM answers WHERE code = ? AND question = ? GROUP BY option",
                (code, question),
            ).fetchall()
        for option, n in rows:  # an earlier question may have had more options than the current one
            counts += [0] * (option + 1 - len(counts))
            counts[option] = n
        return counts

    def names(self, code: str, question: str | None = None) -> list[tuple[str, int]]:
        """(name, option) of the students who chose to give a name, for the teacher only."""
        info = self.get_class(code)
        with self._connect() as db:
            return db.execute(
                "SELECT s.name, a.option FROM answers a JOIN students s ON s.code = a.code AND s.student = a.student "
                "WHERE a.code = ? AND a.question = ? AND s.name IS NOT NULL ORDER BY s.name",
                (code, info.question if question is None else question),
            ).fetchall()

    def n_students(self, code: str) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM students WHERE code = ?", (code,)).fetchone()[0]

    # --- the students --------------------------------------------------------------------------------------

    def get_class(self, code: str) -> ClassInfo:
        """The class with this code, or ClassError when there is none or it has expired."""
        code = normalise_code(code)
        if not code:
            raise ClassError("Type the class code shown on the teacher's screen.")
        with self._connect() as db:
            row = db.execute(
                "SELECT code, question, n_options, revealed, expires FROM classes WHERE code = ?", (code,)
            ).fetchone()
        if row is None:
            raise ClassError(f"There is no class with the code {code}. Check the code on the teacher's screen.")
        if row[4] < self.clock():
            raise ClassError(f"Class {code} has ended. Ask your teacher for the new code.")
        return ClassInfo(row[0], row[1], row[2], bool(row[3]), row[4])

    def join(self, code: str, student: str, name: str | None = None) -> ClassInfo:
        """Register a student token in a class (again: updates the optional name)."""
        info = self.get_class(code)
        _check_token(student)
        name = " ".join((name or "").split())[:MAX_NAME_CHARS] or None
        with self._write() as db:
            db.execute(
                "INSERT INTO students (code, student, name) VALUES (?, ?, ?) "
                "ON CONFLICT (code, student) DO UPDATE SET name = excluded.name",
                (info.code, student, name),
            )
        return info

    def answer(self, code: str, student: str, question: str, option: int) -> None:
        """Record (or replace) a student's answer to the class's current question, in one write transaction."""
        code = normalise_code(code)
        _check_token(student)
        with self._write() as db:
            row = db.execute("SELECT question, n_options, expires FROM classes WHERE code = ?", (code,)).fetchone()
            if row is None:
                raise ClassError(f"There is no class with the code {code}; your answer was not recorded.")
            if row[2] < self.clock():
                raise ClassError(f"Class {code} has ended; your answer was not recorded.")
            joined = db.execute("SELECT 1 FROM students WHERE code = ? AND student = ?", (code, student)).fetchone()
            if joined is None:
                raise ClassError(f"You have not joined class {code}; join it first, then answer.")
            if question != row[0]:
                raise ClassError("That question is closed: the teacher has moved on. Answer the one shown now.")
            if not isinstance(option, int) or isinstance(option, bool) or not 0 <= option < row[1]:
                raise ClassError("That is not one of the offered answers.")
            db.execute(
                "INSERT INTO answers (code, student, question, option, at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (code, student, question) DO UPDATE SET option = excluded.option, at = excluded.at",
                (code, student, question, option, self.clock()),
            )

    def my_answer(self, code: str, student: str, question: str) -> int | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT option FROM answers WHERE code = ? AND student = ? AND question = ?",
                (normalise_code(code), student, question),
            ).fetchone()
        return None if row is None else row[0]


def new_student_token() -> str:
    return secrets.token_urlsafe(16)


def _check_token(token: str) -> None:
    if not isinstance(token, str) or not 8 <= len(token) <= MAX_TOKEN_CHARS:
        raise ClassError("This browser session has no valid student id; reload the page and join again.")
