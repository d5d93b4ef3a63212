"""The live class's answer store: answers, bad input, concurrent writers (threads and processes), expiry, restart."""

import multiprocessing
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.classroom.store import ClassError, ClassStore, StoreConfig, new_student_token, normalise_code


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def store(tmp_path):
    return ClassStore(StoreConfig(tmp_path / "classes.sqlite3", ttl_s=3600), clock=Clock())


def open_class(store, question="l1", n=3):
    code, teacher = store.start_class()
    store.set_question(code, teacher, question, n)
    return code, teacher


def test_answers_are_tallied_and_a_repeated_answer_replaces_the_first(store):
    code, _ = open_class(store)
    a, b = new_student_token(), new_student_token()
    store.join(code, a)
    store.join(code.lower(), b)  # codes are typed on phones: case does not matter
    store.answer(code, a, "l1", 0)
    store.answer(code, b, "l1", 2)
    assert store.tally(code) == [1, 0, 1]
    store.answer(code, a, "l1", 1)
    assert store.tally(code) == [0, 1, 1]
    assert store.my_answer(code, a, "l1") == 1


def test_a_thousand_answers_from_one_session_count_once(store):
    code, _ = open_class(store)
    token = new_student_token()
    store.join(code, token)
    for i in range(1000):
        store.answer(code, token, "l1", i % 3)
    assert sum(store.tally(code)) == 1 and store.tally(code)[999 % 3] == 1


def test_bad_input_gets_a_clear_message_and_leaves_the_tally_alone(store):
    code, teacher = open_class(store)
    other, _ = open_class(store)
    token = new_student_token()
    store.join(code, token)
    store.answer(code, token, "l1", 0)
    with pytest.raises(ClassError, match="no class with the code ZZZZZ"):
        store.join("zzzzz", new_student_token())
    with pytest.raises(ClassError, match="not joined class"):  # a forged answer for another class
        store.answer(other, token, "l1", 1)
    with pytest.raises(ClassError, match="not one of the offered answers"):
        store.answer(code, token, "l1", 7)
    with pytest.raises(ClassError, match="question is closed"):
        store.answer(code, token, "l2", 0)
    with pytest.raises(ClassError, match="no valid student id"):
        store.answer(code, "x", "l1", 0)
    with pytest.raises(ClassError, match="Only the teacher"):
        store.reveal(code, "not-the-teacher-token")
    with pytest.raises(ClassError, match="Type the class code"):
        store.get_class("  ")
    assert store.tally(code) == [1, 0, 0] and store.tally(other) == [0, 0, 0]
    assert store.get_class(code).revealed is False
    store.reveal(code, teacher)
    assert store.get_class(code).revealed is True


def test_names_only_when_given_and_question_change_starts_a_fresh_tally(store):
    code, teacher = open_class(store)
    named, anonymous = new_student_token(), new_student_token()
    store.join(code, named, name="  Ada   <b>L</b> ")
    store.join(code, anonymous)
    store.answer(code, named, "l1", 2)
    store.answer(code, anonymous, "l1", 2)
    assert store.names(code) == [("Ada <b>L</b>", 2)]  # stored as typed (pages render it as text)
    assert store.n_students(code) == 2
    store.set_question(code, teacher, "l2", 2)
    assert store.tally(code) == [0, 0] and store.tally(code, "l1") == [0, 0, 2]


def test_classes_expire_and_are_purged(tmp_path):
    clock = Clock()
    store = ClassStore(StoreConfig(tmp_path / "c.sqlite3", ttl_s=60), clock=clock)
    code, teacher = open_class(store)
    token = new_student_token()
    store.join(code, token)
    clock.now += 61
    with pytest.raises(ClassError, match="has ended"):
        store.answer(code, token, "l1", 0)
    with pytest.raises(ClassError, match="has ended"):
        store.join(code, new_student_token())
    with pytest.raises(ClassError, match="has ended"):
        store.set_question(code, teacher, "l2", 2)
    store.start_class()  # purges
    with sqlite3.connect(tmp_path / "c.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM classes WHERE code = ?", (code,)).fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM students WHERE code = ?", (code,)).fetchone()[0] == 0
    with pytest.raises(ClassError, match="no class with the code"):
        store.get_class(code)


def test_a_restart_reopens_the_same_classes_and_answers(tmp_path):
    path = tmp_path / "c.sqlite3"
    first = ClassStore(StoreConfig(path))
    code, teacher = open_class(first)
    token = new_student_token()
    first.join(code, token)
    first.answer(code, token, "l1", 1)
    del first
    again = ClassStore(StoreConfig(path))  # a new server process opens the file again
    assert again.tally(code) == [0, 1, 0]
    again.reveal(code, teacher)  # the teacher's token still works
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_concurrent_answers_from_threads_are_all_kept(store):
    code, _ = open_class(store, n=4)
    tokens = [new_student_token() for _ in range(40)]

    def student(i):
        store.join(code, tokens[i])
        for j in range(5):  # each answers 5 times; the last one counts
            store.answer(code, tokens[i], "l1", (i + j) % 4)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(student, range(40)))
    expected = [0] * 4
    for i in range(40):
        expected[(i + 4) % 4] += 1
    assert store.tally(code) == expected and sum(expected) == 40


def _process_student(path, code, offset):
    store = ClassStore(StoreConfig(path))
    for i in range(10):
        token = f"proc{offset:03d}student{i:03d}"
        store.join(code, token)
        store.answer(code, token, "l1", i % 3)


def test_concurrent_answers_from_processes_are_all_kept(tmp_path):
    path = tmp_path / "c.sqlite3"
    store = ClassStore(StoreConfig(path))
    code, _ = open_class(store)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_student, args=(path, code, p)) for p in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert store.tally(code) == [16, 12, 12]  # 4 processes x (4, 3, 3)


def test_normalise_code():
    assert normalise_code(" ab-c d ") == "ABCD" and normalise_code(None) == ""
    assert normalise_code("<b>x</b>*é") == "BXB"  # nothing that markdown or HTML would read
