"""Prose and code from the running interpreter's standard library (and the shipped seed sentences).

- prose: the seed sentences, then docstrings and comment blocks (found with `ast`) and the language reference
  topics (`pydoc_data/topics.py`); indented blocks, doctests and non-ASCII paragraphs are left out, so what
  remains is running English text.
- code: stdlib .py source with docstrings and comments removed.
"""

from __future__ import annotations

import ast
import random
import re
import sysconfig
from pathlib import Path

from moe_core.corpus.docs import MAX_DOC_CHARS, MIN_DOC_CHARS, Doc, pack_paragraphs, split_text
from moe_core.paths import SAMPLE_DATA

SEED_SENTENCES = SAMPLE_DATA / "seed_sentences.txt"
# stdlib folders that are tests, GUI tools, third-party installs or mostly non-English/data tables
SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "encodings", "turtledemo"}


def stdlib_files() -> tuple[Path, list[Path]]:
    """The standard library's root and its .py files (sorted), minus tests, GUI tools and data tables."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [
        p
        for p in root.rglob("*.py")
        if not SKIP_DIRS.intersection(p.relative_to(root).parts[:-1]) and p.name != "topics.py"
    ]
    return root, sorted(files, key=lambda p: p.relative_to(root).as_posix())


_DOC_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _docstring_nodes(tree: ast.Module) -> list[ast.Expr]:
    """The `Expr` nodes that are docstrings (first statement of a module, class or function body)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, _DOC_OWNERS) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    found.append(first)
    return found


def _string_lines(tree: ast.Module) -> set[int]:
    """Line numbers that lie inside a multi-line string literal (a `#` there is not a comment)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Constant, ast.JoinedStr)) and node.end_lineno and node.end_lineno > node.lineno:
            lines.update(range(node.lineno + 1, node.end_lineno + 1))
    return lines


def _is_english(paragraph: str) -> bool:
    """Running English text: enough words, mostly letters, ASCII, not an indented (code) block."""
    lines = paragraph.splitlines()
    if not lines or all(line[:1].isspace() for line in lines):
        return False
    if any(line.lstrip().startswith((">>>", "...")) for line in lines):
        return False
    if len(paragraph.split()) < 5:
        return False
    letters = sum(c.isalpha() or c == " " for c in paragraph)
    ascii_chars = sum(c.isascii() for c in paragraph)
    return letters >= 0.75 * len(paragraph) and ascii_chars >= 0.99 * len(paragraph)


def _paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]


def _comment_blocks(lines: list[str], skip: set[int]) -> list[str]:
    """Runs of comment-only lines (outside string literals), with the `#` removed, one string per run."""
    blocks, current = [], []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if number not in skip and stripped.startswith("#") and not stripped.startswith("#!"):
            current.append(stripped.lstrip("#").strip())
            continue
        if current:
            blocks.append("\n".join(current))  # an empty '#' line becomes a paragraph break
            current = []
    if current:
        blocks.append("\n".join(current))
    return blocks


def strip_code(source: str, tree: ast.Module, lines: list[str]) -> str:
    """Source without docstrings and comments; formatting (indentation, blank lines) otherwise kept."""
    drop: set[int] = set()  # 0-based line indices to remove
    replace: dict[int, str] = {}
    owners = {}
    for node in ast.walk(tree):
        if isinstance(node, _DOC_OWNERS) and node.body:
            owners[id(node.body[0])] = node
    for expr in _docstring_nodes(tree):
        first, last = expr.lineno - 1, expr.end_lineno - 1
        if lines[first][: expr.col_offset].strip() or lines[last][expr.end_col_offset :].strip(" \t\r\n;"):
            continue  # shares its line with other code: leave it
        drop.update(range(first, last + 1))
        owner = owners.get(id(expr))
        if owner is not None and len(owner.body) == 1 and not isinstance(owner, ast.Module):
            replace[first] = " " * expr.col_offset + "pass\n"  # keep the body non-empty
        elif last + 1 < len(lines) and not lines[last + 1].strip():
            drop.add(last + 1)  # and the blank line that followed it
    in_string = _string_lines(tree)
    out = []
    for i, line in enumerate(lines):
        if i in replace:
            out.append(replace[i])
            continue
        if i in drop:
            continue
        if (i + 1) not in in_string and "#" in line:
            stripped = line.lstrip()
            if stripped.startswith("#"):
                continue  # comment-only line
            before, _, _ = line.partition("#")
            if "'" not in before and '"' not in before:  # no string before the '#': it is a comment
                line = before.rstrip() + "\n"
        out.append(line)
    text = "".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text)  # removed blocks leave runs of blank lines
    return text.strip("\n") + "\n"


class Stdlib:
    """The standard library's .py files, each read and parsed on first use (small corpora touch few)."""

    def __init__(self) -> None:
        self.root, self.files = stdlib_files()
        self._parsed: dict[Path, tuple[str, str, ast.Module] | None] = {}
        self._topics: dict[str, str] | None = None

    def parse(self, path: Path) -> tuple[str, str, ast.Module] | None:
        """(relative path, source, tree), or None if the file does not decode/parse or is not ~all ASCII."""
        if path not in self._parsed:
            self._parsed[path] = self._read(path)
        return self._parsed[path]

    def _read(self, path: Path) -> tuple[str, str, ast.Module] | None:
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            return None
        if sum(not c.isascii() for c in source) > 0.001 * len(source):
            return None  # non-English text or character tables
        return path.relative_to(self.root).as_posix(), source, tree

    def topics(self) -> dict[str, str]:
        if self._topics is None:
            self._topics = _pydoc_topics()
        return self._topics


def _seed_docs() -> list[Doc]:
    if not SEED_SENTENCES.is_file():
        return []
    sentences = [line.strip() for line in SEED_SENTENCES.read_text(encoding="utf-8").splitlines() if line.strip()]
    sentences = [s if s.endswith((".", "?", "!")) else s + "." for s in sentences]
    paragraphs = []
    for i in range(0, len(sentences), 5):
        paragraphs.append(" ".join(sentences[i : i + 5]))
    texts = pack_paragraphs(paragraphs, 1500)
    if len(texts) > 1 and len(texts[-1]) < MIN_DOC_CHARS:
        texts[-2:] = [texts[-2] + "\n\n" + texts[-1]]  # no tiny last doc
    return [Doc(text, "prose", "seed_sentences") for text in texts]


def prose_docs(stdlib: Stdlib, rng: random.Random, budget: int) -> list[Doc]:
    """English docs: the seed sentences, then stdlib docstrings/comments and reference topics, sources in
    seeded order until the budget is reached."""
    docs = _seed_docs()
    total = sum(len(d.text) for d in docs)
    sources: list[Path | str] = [*stdlib.files, *sorted(stdlib.topics())]  # a str is a topic name
    rng.shuffle(sources)
    for item in sources:
        if total >= budget:
            break
        if isinstance(item, str):
            paragraphs = [p for p in _paragraphs(stdlib.topics()[item]) if _is_english(p)]
            new = [Doc(t, "prose", f"pydoc_topics:{item}") for t in pack_paragraphs(paragraphs) if len(t) >= 300]
        else:
            parsed = stdlib.parse(item)
            if parsed is None:
                continue
            rel, source, tree = parsed
            texts = [ast.get_docstring(owner) or "" for owner in _owners(tree)]
            texts += _comment_blocks(source.splitlines(), _string_lines(tree))
            paragraphs = [p for text in texts for p in _paragraphs(text) if _is_english(p)]
            new = [Doc(t, "prose", f"stdlib:{rel}") for t in pack_paragraphs(paragraphs) if len(t) >= 300]
        docs += new
        total += sum(len(d.text) for d in new)
    return _take(docs, budget)


def _owners(tree: ast.Module) -> list[ast.AST]:
    return [node for node in ast.walk(tree) if isinstance(node, _DOC_OWNERS)]


def _pydoc_topics() -> dict[str, str]:
    """The language reference shipped with the interpreter (`pydoc_data.topics`), read as a literal."""
    path = Path(sysconfig.get_paths()["stdlib"]) / "pydoc_data" / "topics.py"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
                topics = ast.literal_eval(node.value)
                return {k: v for k, v in topics.items() if isinstance(k, str) and isinstance(v, str)}
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        pass
    return {}


def code_docs(stdlib: Stdlib, rng: random.Random, budget: int) -> list[Doc]:
    """Stdlib source without docstrings/comments, files in seeded order, cut into ~2 kB docs."""
    files = list(stdlib.files)
    rng.shuffle(files)
    docs: list[Doc] = []
    total = 0
    for path in files:
        if total >= budget:
            break
        parsed = stdlib.parse(path)
        if parsed is None:
            continue
        rel, source, tree = parsed
        code = strip_code(source, tree, source.splitlines(keepends=True))
        for chunk in split_text(code, 2000, MAX_DOC_CHARS):
            chunk = chunk.strip("\n")
            if len(chunk) >= MIN_DOC_CHARS // 2:
                docs.append(Doc(chunk + "\n", "code", f"stdlib:{rel}"))
                total += len(chunk) + 1
    return _take(docs, budget)


def _take(docs: list[Doc], budget: int) -> list[Doc]:
    """The first docs whose characters add up to about `budget` (at least one doc)."""
    taken, total = [], 0
    for doc in docs:
        if taken and total >= budget:
            break
        taken.append(doc)
        total += len(doc.text)
    return taken
