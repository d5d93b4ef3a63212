"""The domain-labelled corpus: deterministic, balanced, split by document, honest manifest; user files."""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_core import corpus
from moe_core.corpus import (
    LABELS,
    Doc,
    build_corpus,
    docs_from_paths,
    load_docs,
    make_docs,
    split_text,
)
from moe_core.corpus.stdlib_text import strip_code

TINY = 6000  # characters per domain: a few docs each, builds in well under a second


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    out = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        manifest = build_corpus(root / name, seed=seed, chars_per_domain=TINY)
        out[name] = (root / name, manifest)
    return out


def read_bytes(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in ("train.jsonl", "val.jsonl", "manifest.json")}


def test_same_seed_same_files(built):
    assert read_bytes(built["a"][0]) == read_bytes(built["b"][0])


def test_different_seed_different_files(built):
    a, c = read_bytes(built["a"][0]), read_bytes(built["c"][0])
    assert a["train.jsonl"] != c["train.jsonl"]
    texts_a = {d.text for d in load_docs(built["a"][0])}
    texts_c = {d.text for d in load_docs(built["c"][0])}
    assert texts_a != texts_c


def test_all_labels_in_both_splits_and_balanced(built):
    directory, _ = built["a"]
    for split in ("train", "val"):
        assert {d.label for d in load_docs(directory, split)} == set(LABELS)
    chars = Counter()
    for split in ("train", "val"):
        for d in load_docs(directory, split):
            chars[d.label] += len(d.text)
    for label in LABELS:  # each domain reaches its budget and overshoots by less than one doc (3 kB + slack)
        assert TINY <= chars[label] < TINY + 4000, (label, chars[label])


def test_split_is_disjoint_and_ids_unique(built):
    directory, manifest = built["a"]
    train, val = load_docs(directory, "train"), load_docs(directory, "val")
    train_ids, val_ids = [d.doc_id for d in train], [d.doc_id for d in val]
    assert len(set(train_ids)) == len(train_ids) and len(set(val_ids)) == len(val_ids)
    assert not set(train_ids) & set(val_ids)
    assert sorted(train_ids + val_ids) == list(range(manifest["total"]["docs"]))
    assert not {d.text for d in train} & {d.text for d in val}


def test_manifest_matches_files(built):
    directory, manifest = built["a"]
    assert json.loads((directory / "manifest.json").read_text()) == manifest
    for split in ("train", "val"):
        counted: dict[str, dict[str, int]] = {}
        for d in load_docs(directory / f"{split}.jsonl"):
            entry = counted.setdefault(d.label, {"docs": 0, "chars": 0})
            entry["docs"] += 1
            entry["chars"] += len(d.text)
        assert manifest[split] == counted
    total_docs = sum(v["docs"] for s in ("train", "val") for v in manifest[s].values())
    total_chars = sum(v["chars"] for s in ("train", "val") for v in manifest[s].values())
    assert manifest["total"] == {"docs": total_docs, "chars": total_chars}
    assert manifest["seed"] == 0 and manifest["val_fraction"] == 0.05
    assert set(manifest["sources"]) == set(LABELS)
    assert manifest["python"].count(".") == 2


def test_jsonl_lines_have_the_four_fields(built):
    line = (built["a"][0] / "train.jsonl").read_text().splitlines()[0]
    assert set(json.loads(line)) == {"doc_id", "label", "source", "text"}


def test_stratified_split_fraction():
    docs = [Doc(f"t{i}", "x" if i < 40 else "y", "s", i) for i in range(60)]
    train, val = corpus.split_docs(docs, seed=3, val_fraction=0.05)
    assert Counter(d.label for d in val) == {"x": 2, "y": 1}
    assert len(train) == 57


def test_documents_look_like_their_domain():
    docs = make_docs(seed=2, chars_per_domain=TINY)
    by_label = {label: [d for d in docs if d.label == label] for label in LABELS}
    for d in by_label["prose"]:
        assert ">>>" not in d.text
        assert sum(c.isalpha() or c.isspace() for c in d.text) > 0.8 * len(d.text)
    for d in by_label["code"]:
        assert re.search(r"^\s*(def|class|import|from|return|if|for) ", d.text, re.M), d.text[:200]
        assert not re.search(r"^\s*#", d.text, re.M)  # comment-only lines are gone
        assert d.source.startswith("stdlib:")
    for d in by_label["data"]:
        if d.source == "generated:json":  # JSON array or JSON Lines, both parse
            text = d.text.strip()
            rows = json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines()]
            assert rows
    for d in docs:
        assert 250 <= len(d.text) <= 3500, (d.label, len(d.text))


def test_math_answers_are_right():
    docs = make_docs(seed=0, chars_per_domain=20_000)
    checked = 0
    for d in docs:
        if d.label != "math":
            continue
        for m in re.finditer(r"(?:^|\. |: )(\d+) ([-+]) (\d+) = (-?\d+)$", d.text, re.M):
            a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
            assert (a + b if op == "+" else a - b) == c, m[0]
            checked += 1
        for m in re.finditer(r"(\d+) × (\d+) = (\d+)\b", d.text):
            assert int(m[1]) * int(m[2]) == int(m[3]), m[0]
            checked += 1
    assert checked > 20


def test_strip_code_removes_docstrings_and_comments():
    source = '''"""Module docstring."""
import os  # why we import os

# a comment block
# over two lines
def f(x):
    """Only a docstring, so a pass is needed."""


class A:
    """Class docstring."""

    url = "http://x#y"  # comment after a string with '#'

    def g(self):
        """Docstring."""
        return "#not a comment"
'''
    tree = ast.parse(source)
    out = strip_code(source, tree, source.splitlines(keepends=True))
    ast.parse(out)  # still valid Python
    assert "docstring" not in out.lower()
    assert "why we import" not in out and "comment block" not in out
    assert 'return "#not a comment"' in out and '"http://x#y"' in out
    assert "def f(x):\n    pass\n" in out


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ab \n", max_size=300), st.integers(5, 40))
def test_split_text_is_lossless_and_bounded(text, target):
    chunks = split_text(text, target, 2 * target)
    assert "".join(chunks) == text
    assert all(0 < len(c) <= 2 * target for c in chunks)


def test_docs_from_paths_labels(tmp_path):
    mine = tmp_path / "mine"
    (mine / "legal").mkdir(parents=True)
    (mine / "a.txt").write_text("alpha text\n")
    (mine / "legal" / "contract.md").write_text("the party of the first part\n")
    (mine / ".hidden").write_text("secret\n")
    (mine / "image.bin").write_bytes(b"\x89PNG\x00\x00\x01")
    (mine / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    docs = docs_from_paths([mine, notes])
    assert [(d.label, Path(d.source).name, d.text) for d in docs] == [
        ("mine", "a.txt", "alpha text\n"),
        ("legal", "contract.md", "the party of the first part\n"),
        ("notes", "notes.txt", "my notes\n"),
    ]
    assert [d.doc_id for d in docs] == [0, 1, 2]


def test_docs_from_paths_splits_long_files(tmp_path):
    paragraphs = [f"Paragraph {i}. " + "word " * 100 for i in range(40)]  # ~20 kB
    text = "\n\n".join(paragraphs) + "\n"
    path = tmp_path / "long.txt"
    path.write_text(text)
    docs = docs_from_paths([path])
    assert len(docs) > 4
    assert "".join(d.text for d in docs) == text
    assert all(len(d.text) <= 4000 for d in docs)
    assert all(d.text.startswith("Paragraph") for d in docs)  # cut at paragraph boundaries
    assert {d.label for d in docs} == {"long"}


def test_docs_from_paths_errors(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x.dat").write_bytes(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="no usable text.*1 binary"):
        docs_from_paths([tmp_path / "bin"])
    with pytest.raises(ValueError, match="no such file"):
        docs_from_paths([tmp_path / "missing"])


def test_load_docs_errors(tmp_path):
    with pytest.raises(ValueError, match="no such corpus file"):
        load_docs(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"doc_id": 0, "label": "x", "source": "s", "text": "t"}\n{"oops": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_docs(bad)


def test_build_corpus_rejects_unknown_size(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus size"):
        build_corpus(tmp_path, size="huge")
