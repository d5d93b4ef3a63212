"""A domain-labelled corpus built offline: the ground truth for expert specialization.

Four domains (the `label` of every document), roughly equal in characters:
- `prose`: English. The seed sentences (`sample_data/seed_sentences.txt`), the docstrings and comment
  blocks of the running interpreter's standard library (found with `ast`), and the language reference
  topics that ship with it (`pydoc_data/topics.py`). Indented blocks, doctests and non-ASCII paragraphs
  are left out, so what remains is running English text.
- `code`: standard-library Python source with docstrings (via `ast`) and comments removed.
- `math`: generated arithmetic, equations, fractions, algebra, percentages and word problems.
- `data`: generated JSON records, CSV tables, log lines and key=value / INI configs.

Everything is seeded (`random.Random(seed)`, sorted file lists), so one seed and one interpreter give
byte-identical files. Documents are ~0.5-3 kB. The split is by document, stratified by domain.

Output of `build_corpus(out_dir)`:
    train.jsonl, val.jsonl   one JSON object per line: {"doc_id", "label", "source", "text"}
    manifest.json            sizes per domain and split (docs, chars), sources, seed, python version
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import random
import re
import sys
import sysconfig
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from math import gcd
from pathlib import Path

from moe_core.paths import SAMPLE_DATA

FORMAT = "moe-explorer-corpus/1"
LABELS = ("prose", "code", "math", "data")
SIZES = {"small": 300_000, "default": 2_500_000}  # target characters per domain
VAL_FRACTION = 0.05  # share of each domain's documents held out for validation
MIN_DOC_CHARS = 500  # generated/extracted documents are 0.5-3 kB
MAX_DOC_CHARS = 3000
SEED_SENTENCES = SAMPLE_DATA / "seed_sentences.txt"
# stdlib folders that are tests, GUI tools, third-party installs or mostly non-English/data tables
SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "encodings", "turtledemo"}


@dataclass
class Doc:
    """One labelled document."""

    text: str
    label: str  # domain, e.g. "code"; for user files the folder or file name
    source: str  # where it came from, e.g. "stdlib:json/decoder.py" or "generated:math"
    doc_id: int = -1  # unique within a corpus; -1 until assigned


# ---------------------------------------------------------------------------------------------------------
# Splitting text into documents


def split_text(text: str, target_chars: int = 2000, max_chars: int = 4000) -> list[str]:
    """Cut `text` into chunks of about `target_chars` at paragraph (blank line) boundaries, else at line
    boundaries (else at spaces), never longer than `max_chars`. Lossless: "".join(chunks) == text.
    """
    if target_chars <= 0 or max_chars < target_chars:
        raise ValueError("need 0 < target_chars <= max_chars")
    pieces: list[str] = []
    for para in re.split(r"(?<=\n\n)", text):  # keeps the blank line with the paragraph before it
        if len(para) <= max_chars:
            pieces.append(para)
        else:  # an over-long paragraph goes line by line, an over-long line at spaces
            for line in para.splitlines(keepends=True):
                while len(line) > max_chars:
                    cut = line.rfind(" ", 0, max_chars) + 1 or max_chars
                    pieces.append(line[:cut])
                    line = line[cut:]
                pieces.append(line)
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + len(piece) > max_chars:
            chunks.append(current)
            current = ""
        current += piece
        if len(current) >= target_chars:
            chunks.append(current)
            current = ""
    if current:
        if chunks and len(chunks[-1]) + len(current) <= max_chars and len(current) < target_chars // 4:
            chunks[-1] += current  # fold a small tail into the previous chunk
        else:
            chunks.append(current)
    return chunks


def _pack(paragraphs: Iterable[str], max_chars: int = MAX_DOC_CHARS) -> list[str]:
    """Join paragraphs with blank lines into documents of at most `max_chars` (longer ones are cut)."""
    docs: list[str] = []
    current = ""
    for para in paragraphs:
        for part in split_text(para, max_chars // 2, max_chars) if len(para) > max_chars else [para]:
            part = part.strip("\n")
            if current and len(current) + 2 + len(part) > max_chars:
                docs.append(current)
                current = ""
            current = f"{current}\n\n{part}" if current else part
    if current:
        docs.append(current)
    return docs


# ---------------------------------------------------------------------------------------------------------
# prose and code from the standard library


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


def _strip_code(source: str, tree: ast.Module, lines: list[str]) -> str:
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


class _Stdlib:
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
    texts = _pack(paragraphs, 1500)
    if len(texts) > 1 and len(texts[-1]) < MIN_DOC_CHARS:
        texts[-2:] = [texts[-2] + "\n\n" + texts[-1]]  # no tiny last doc
    return [Doc(text, "prose", "seed_sentences") for text in texts]


def _prose_docs(stdlib: _Stdlib, rng: random.Random, budget: int) -> list[Doc]:
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
            new = [Doc(t, "prose", f"pydoc_topics:{item}") for t in _pack(paragraphs) if len(t) >= 300]
        else:
            parsed = stdlib.parse(item)
            if parsed is None:
                continue
            rel, source, tree = parsed
            texts = [ast.get_docstring(owner) or "" for owner in _owners(tree)]
            texts += _comment_blocks(source.splitlines(), _string_lines(tree))
            paragraphs = [p for text in texts for p in _paragraphs(text) if _is_english(p)]
            new = [Doc(t, "prose", f"stdlib:{rel}") for t in _pack(paragraphs) if len(t) >= 300]
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


def _code_docs(stdlib: _Stdlib, rng: random.Random, budget: int) -> list[Doc]:
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
        code = _strip_code(source, tree, source.splitlines(keepends=True))
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


# ---------------------------------------------------------------------------------------------------------
# math: generated exercises, each a few lines; formats vary on purpose


def _math_arithmetic(r: random.Random) -> str:
    a, b = r.randint(2, 999), r.randint(2, 999)
    op = r.choice("+-*/")
    if op == "+":
        return f"{a} + {b} = {a + b}"
    if op == "-":
        return f"{a} - {b} = {a - b}"
    if op == "*":
        a, b = r.randint(2, 99), r.randint(2, 99)
        return r.choice([f"{a} * {b} = {a * b}", f"{a} × {b} = {a * b}", f"{a}·{b} = {a * b}"])
    q = r.randint(2, 50)
    return f"{b * q} / {b} = {q}"


def _math_expression(r: random.Random) -> str:
    a, b, c, d = (r.randint(1, 30) for _ in range(4))
    expr, value = r.choice(
        [
            (f"({a} + {b}) * {c}", (a + b) * c),
            (f"{a} * {b} - {c}", a * b - c),
            (f"{a} + {b} * {c} - {d}", a + b * c - d),
            (f"({a} - {b}) * ({c} + {d})", (a - b) * (c + d)),
        ]
    )
    return f"{expr} = {value}"


def _math_fraction(r: random.Random) -> str:
    x = Fraction(r.randint(1, 12), r.randint(2, 12))
    y = Fraction(r.randint(1, 12), r.randint(2, 12))
    op = r.choice("+-*")
    result = {"+": x + y, "-": x - y, "*": x * y}[op]
    return f"{x.numerator}/{x.denominator} {op} {y.numerator}/{y.denominator} = {result}"


def _math_linear(r: random.Random) -> str:
    x = r.randint(-20, 20)
    a = r.choice([i for i in range(-9, 10) if i not in (0, 1)])
    b = r.randint(-50, 50)
    c = a * x + b
    var = r.choice("xyzn")
    sign = "+" if b >= 0 else "-"
    lines = [f"Solve {a}{var} {sign} {abs(b)} = {c}."]
    lines.append(f"{a}{var} = {c} {'-' if b >= 0 else '+'} {abs(b)} = {c - b}")
    lines.append(f"{var} = {c - b} / {a} = {x}")
    return "\n".join(lines)


def _math_expand(r: random.Random) -> str:
    a, b = r.randint(-9, 9), r.randint(-9, 9)

    def term(k: int) -> str:
        return f"+ {k}" if k >= 0 else f"- {-k}"

    lhs = f"(x {term(a)})(x {term(b)})"
    middle, const = a + b, a * b
    return f"Expand {lhs}: x^2 {term(middle)}x {term(const)}"


def _math_quadratic(r: random.Random) -> str:
    p, q = r.randint(-9, 9), r.randint(-9, 9)
    s, t = -(p + q), p * q
    sign_s = "+" if s >= 0 else "-"
    sign_t = "+" if t >= 0 else "-"
    roots = sorted({p, q})
    answer = " or ".join(f"x = {v}" for v in roots)
    return f"x^2 {sign_s} {abs(s)}x {sign_t} {abs(t)} = 0 factors as (x - {p})(x - {q}) = 0, so {answer}."


def _math_percent(r: random.Random) -> str:
    base = r.randint(2, 80) * 10
    pct = r.choice([5, 10, 12, 15, 20, 25, 30, 40, 50, 75])
    value = Fraction(base * pct, 100)
    shown = f"{float(value):g}"
    return r.choice([f"{pct}% of {base} = {shown}", f"What is {pct} percent of {base}? {shown}"])


def _math_power(r: random.Random) -> str:
    k = r.randint(2, 30)
    kind = r.randrange(4)
    if kind == 0:
        return f"sqrt({k * k}) = {k}"
    if kind == 1:
        e = r.randint(2, 5)
        return f"{k}^{e} = {k**e}"
    if kind == 2:
        a, b = r.randint(2, 200), r.randint(2, 200)
        return f"gcd({a}, {b}) = {gcd(a, b)}, lcm({a}, {b}) = {a * b // gcd(a, b)}"
    a, m = r.randint(10, 500), r.randint(2, 13)
    return f"{a} mod {m} = {a % m}"


NAMES = ["Alice", "Bob", "Carla", "Dmitri", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kofi", "Lena"]
ITEMS = ["apples", "books", "marbles", "stamps", "pencils", "coins", "cards", "shells"]


def _math_word_problem(r: random.Random) -> str:
    name, other = r.sample(NAMES, 2)
    item = r.choice(ITEMS)
    a, b, k = r.randint(3, 60), r.randint(2, 40), r.randint(2, 9)
    kind = r.randrange(4)
    if kind == 0:
        question = f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?"
        return f"{question}\n{a} + {b} = {a + b}. Answer: {a + b}"
    if kind == 1:
        total = a + b
        return (
            f"{name} had {total} {item} and gave {b} to {other}. How many are left?\n{total} - {b} = {a}. Answer: {a}"
        )
    if kind == 2:
        return f"Each box holds {k} {item}. How many {item} are in {a} boxes?\n{a} × {k} = {a * k}. Answer: {a * k}"
    speed, hours = r.randint(20, 90), r.randint(2, 8)
    question = f"A train travels at {speed} km/h for {hours} hours. How far does it go?"
    return f"{question}\nd = v·t = {speed} × {hours} = {speed * hours} km."


def _math_sequence(r: random.Random) -> str:
    start, step, n = r.randint(-10, 20), r.randint(2, 9), r.randint(5, 8)
    seq = [start + i * step for i in range(n)]
    if r.random() < 0.5:
        return f"Next term of {', '.join(map(str, seq[:-1]))}, ...: {seq[-1]} (add {step} each time)"
    return f"Sum of {seq[0]} + {seq[1]} + ... + {seq[-1]} ({n} terms) = {n} × ({seq[0]} + {seq[-1]}) / 2 = {sum(seq)}"


MATH_KINDS: list[Callable[[random.Random], str]] = [
    _math_arithmetic,
    _math_expression,
    _math_fraction,
    _math_linear,
    _math_expand,
    _math_quadratic,
    _math_percent,
    _math_power,
    _math_word_problem,
    _math_sequence,
]


def _math_doc(r: random.Random, target: int) -> str:
    kinds = r.sample(MATH_KINDS, r.randint(1, 3))  # a few kinds per document, like an exercise sheet
    style = r.randrange(3)
    header = r.choice(["", f"Exercise set {r.randint(1, 99)}\n\n", f"Worksheet {r.randint(1, 40)}: practice\n\n"])
    lines: list[str] = []
    size = len(header)
    while size < target:
        item = r.choice(kinds)(r)
        n = len(lines) + 1
        item = {0: item, 1: f"{n}. {item}", 2: f"Problem {n}: {item}"}[style]
        lines.append(item)
        size += len(item) + 2
    return header + ("\n\n" if style == 2 else "\n").join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# data: generated structured records with varied schemas

CITIES = ["Lisbon", "Osaka", "Nairobi", "Quito", "Oslo", "Perth", "Lyon", "Austin", "Pune", "Gdansk"]
PRODUCTS = ["widget", "gadget", "sprocket", "adapter", "cable", "sensor", "valve", "bracket"]
SERVICES = ["api", "auth", "db", "cache", "worker", "scheduler", "gateway"]
LEVELS = ["DEBUG", "INFO", "INFO", "INFO", "WARNING", "ERROR"]
MESSAGES = [
    "request completed in {ms} ms",
    "connection from 10.0.{a}.{b} accepted",
    "cache miss for key user:{id}",
    "retrying job {id} (attempt {n})",
    "disk usage at {pct}%",
    "user {id} logged in",
    "timeout after {ms} ms talking to {svc}",
    "loaded {n} records from storage",
]


def _date(r: random.Random) -> str:
    return f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"


def _time(r: random.Random) -> str:
    return f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}"


def _record(r: random.Random, schema: int, i: int) -> dict:
    if schema == 0:
        return {
            "id": i,
            "name": r.choice(NAMES),
            "city": r.choice(CITIES),
            "age": r.randint(18, 90),
            "active": r.random() < 0.7,
        }
    if schema == 1:
        qty = r.randint(1, 20)
        price = round(r.uniform(1, 200), 2)
        return {
            "order_id": f"ORD-{r.randint(10000, 99999)}",
            "product": r.choice(PRODUCTS),
            "qty": qty,
            "unit_price": price,
            "total": round(qty * price, 2),
            "date": _date(r),
        }
    if schema == 2:
        return {
            "sensor": f"s{r.randint(1, 40):03d}",
            "ts": f"{_date(r)}T{_time(r)}Z",
            "temp_c": round(r.uniform(-10, 40), 1),
            "humidity": r.randint(10, 99),
            "battery": round(r.random(), 2),
        }
    return {
        "event": r.choice(["click", "view", "purchase", "signup", "logout"]),
        "user": {"id": r.randint(1, 5000), "plan": r.choice(["free", "pro", "team"])},
        "tags": r.sample(["mobile", "web", "beta", "eu", "us", "new"], r.randint(0, 3)),
        "value": r.choice([None, r.randint(1, 500)]),
    }


def _data_json(r: random.Random, target: int) -> str:
    schema, start = r.randrange(4), r.randint(1, 9000)
    records: list[dict] = []
    if r.random() < 0.5:  # JSON Lines
        lines = []
        while sum(map(len, lines)) < target:
            lines.append(json.dumps(_record(r, schema, start + len(lines))))
        return "\n".join(lines) + "\n"
    while len(json.dumps(records, indent=2)) < target:
        records.append(_record(r, schema, start + len(records)))
    return json.dumps(records, indent=r.choice([2, 4])) + "\n"


def _data_csv(r: random.Random, target: int) -> str:
    schema, start = r.randrange(3), r.randint(1, 9000)
    sep = r.choice([",", ",", ";", "\t"])
    first = _record(r, schema, start)
    lines = [sep.join(first)]
    i = 0
    while sum(len(line) + 1 for line in lines) < target:
        values = _record(r, schema, start + i).values()
        lines.append(sep.join(str(v).lower() if isinstance(v, bool) else str(v) for v in values))
        i += 1
    return "\n".join(lines) + "\n"


def _data_log(r: random.Random, target: int) -> str:
    day = _date(r)
    style = r.randrange(2)
    lines: list[str] = []
    size = 0
    while size < target:
        msg = r.choice(MESSAGES).format(
            ms=r.randint(1, 3000),
            a=r.randint(0, 255),
            b=r.randint(1, 254),
            id=r.randint(1, 99999),
            n=r.randint(1, 9),
            pct=r.randint(40, 99),
            svc=r.choice(SERVICES),
        )
        level, svc = r.choice(LEVELS), r.choice(SERVICES)
        if style == 0:
            line = f"{day} {_time(r)},{r.randint(0, 999):03d} {level:<7} [{svc}] {msg}"
        else:
            line = f'ts={day}T{_time(r)}Z level={level.lower()} service={svc} msg="{msg}"'
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines) + "\n"


def _data_config(r: random.Random, target: int) -> str:
    ini = r.random() < 0.5
    lines: list[str] = []
    size = 0
    while size < target:
        section = r.choice(SERVICES) + (f"_{r.randint(1, 9)}" if r.random() < 0.5 else "")
        keys = {
            "host": f"{r.choice(SERVICES)}.internal",
            "port": r.randint(1024, 65535),
            "timeout_s": r.choice([5, 10, 30, 60]),
            "retries": r.randint(0, 5),
            "debug": r.choice(["true", "false"]),
            "log_level": r.choice(LEVELS).lower(),
            "max_connections": r.choice([16, 64, 128, 512]),
            "region": r.choice(["eu-west-1", "us-east-2", "ap-south-1"]),
            "path": f"/var/lib/{section}/data",
        }
        chosen = r.sample(sorted(keys), r.randint(3, len(keys)))
        block = [f"[{section}]"] if ini else []
        prefix = "" if ini else section.upper() + "_"
        block += [f"{prefix}{k.upper() if not ini else k}={keys[k]}" if not ini else f"{k} = {keys[k]}" for k in chosen]
        lines += block + [""]
        size += sum(len(line) + 1 for line in block) + 1
    return "\n".join(lines).rstrip("\n") + "\n"


DATA_KINDS = {"json": _data_json, "csv": _data_csv, "log": _data_log, "config": _data_config}


def _generated_docs(label: str, rng: random.Random, budget: int) -> list[Doc]:
    docs: list[Doc] = []
    total = 0
    while total < budget:
        target = rng.randint(MIN_DOC_CHARS, MAX_DOC_CHARS - 500)  # generators overshoot by one item
        if label == "math":
            kind, text = "math", _math_doc(rng, target)
        else:
            kind = rng.choice(sorted(DATA_KINDS))
            text = DATA_KINDS[kind](rng, target)
        docs.append(Doc(text, label, f"generated:{kind}"))
        total += len(text)
    return docs


# ---------------------------------------------------------------------------------------------------------
# building, saving and loading


def make_docs(seed: int = 0, chars_per_domain: int = SIZES["default"]) -> list[Doc]:
    """All documents of the built-in corpus, domain by domain, with doc_ids 0..n-1 (not yet split)."""
    if chars_per_domain <= 0:
        raise ValueError(f"chars_per_domain must be > 0, got {chars_per_domain}")
    stdlib = _Stdlib()
    docs: list[Doc] = []
    # one RNG per domain, derived from the seed, so changing one generator leaves the others unchanged
    for index, label in enumerate(LABELS):
        rng = random.Random(f"{seed}:{index}:{label}")
        if label == "prose":
            docs += _prose_docs(stdlib, rng, chars_per_domain)
        elif label == "code":
            docs += _code_docs(stdlib, rng, chars_per_domain)
        else:
            docs += _generated_docs(label, rng, chars_per_domain)
    for i, doc in enumerate(docs):
        doc.doc_id = i
    return docs


def split_docs(docs: list[Doc], seed: int = 0, val_fraction: float = VAL_FRACTION) -> tuple[list[Doc], list[Doc]]:
    """Split by document, stratified by label: each label keeps round(val_fraction*n) (>= 1 if n >= 2) docs
    for validation. Both splits come back shuffled (seeded) so domains are interleaved."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = random.Random(f"{seed}:split")
    train: list[Doc] = []
    val: list[Doc] = []
    for label in sorted({d.label for d in docs}):
        group = [d for d in docs if d.label == label]
        rng.shuffle(group)
        n_val = round(val_fraction * len(group))
        if val_fraction > 0 and len(group) >= 2:
            n_val = max(1, n_val)
        val += group[:n_val]
        train += group[n_val:]
    rng.shuffle(train)
    rng.shuffle(val)
    return train, val


def _write_jsonl(path: Path, docs: list[Doc]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for d in docs:
            f.write(json.dumps({"doc_id": d.doc_id, "label": d.label, "source": d.source, "text": d.text}) + "\n")
    os.replace(tmp, path)


def _sizes(docs: list[Doc]) -> dict[str, dict[str, int]]:
    sizes: dict[str, dict[str, int]] = {}
    for d in docs:
        entry = sizes.setdefault(d.label, {"docs": 0, "chars": 0})
        entry["docs"] += 1
        entry["chars"] += len(d.text)
    return {label: sizes[label] for label in sorted(sizes)}


def build_corpus(
    out_dir: str | os.PathLike,
    seed: int = 0,
    size: str = "default",
    chars_per_domain: int | None = None,
    val_fraction: float = VAL_FRACTION,
) -> dict:
    """Build the built-in corpus into `out_dir` (train.jsonl, val.jsonl, manifest.json); return the manifest.

    `size` picks the characters per domain ("small" ~300 kB, "default" ~2.5 MB); `chars_per_domain`
    overrides it (tests use a few kB).
    """
    if size not in SIZES:
        raise ValueError(f"unknown corpus size {size!r}; choose from {', '.join(SIZES)}")
    target = SIZES[size] if chars_per_domain is None else int(chars_per_domain)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs = make_docs(seed, target)
    train, val = split_docs(docs, seed, val_fraction)
    sources: dict[str, dict[str, int]] = {}
    for d in docs:  # e.g. {"code": {"stdlib": 1200}, "math": {"generated:math": 900}}
        kind = d.source if d.source.startswith("generated:") else d.source.split(":", 1)[0]
        sources.setdefault(d.label, {}).setdefault(kind, 0)
        sources[d.label][kind] += 1
    manifest = {
        "format": FORMAT,
        "seed": seed,
        "size": size if chars_per_domain is None else "custom",
        "chars_per_domain": target,
        "val_fraction": val_fraction,
        "labels": list(LABELS),
        "files": {"train": "train.jsonl", "val": "val.jsonl"},
        "train": _sizes(train),
        "val": _sizes(val),
        "total": {"docs": len(docs), "chars": sum(len(d.text) for d in docs)},
        "sources": {label: dict(sorted(sources[label].items())) for label in sorted(sources)},
        "source_descriptions": {
            "prose": "seed sentences + English docstrings/comments of the stdlib + pydoc_data topics",
            "code": "stdlib .py source, docstrings and comments removed",
            "math": "generated arithmetic, equations, fractions, algebra, word problems",
            "data": "generated JSON/JSON Lines, CSV, log lines, key=value and INI configs",
        },
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "stdlib": sysconfig.get_paths()["stdlib"],
    }
    _write_jsonl(out / "train.jsonl", train)
    _write_jsonl(out / "val.jsonl", val)
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / "manifest.json")
    return manifest


def load_docs(path: str | os.PathLike, split: str = "train") -> list[Doc]:
    """Docs from a .jsonl file, or from `<path>/<split>.jsonl` when `path` is a corpus directory."""
    path = Path(path)
    if path.is_dir():
        path = path / f"{split}.jsonl"
    if not path.is_file():
        raise ValueError(f"no such corpus file: {path}")
    docs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                docs.append(Doc(str(row["text"]), str(row["label"]), str(row.get("source", "")), int(row["doc_id"])))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: not a corpus line ({type(exc).__name__}: {exc})") from None
    return docs


# ---------------------------------------------------------------------------------------------------------
# the user's own files


def _read_text_file(path: Path) -> str | None:
    """The file's text, or None when it looks binary or is not UTF-8."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if b"\x00" in raw[:8192]:
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def docs_from_paths(paths: Iterable[str | os.PathLike], target_chars: int = 3000, max_chars: int = 4000) -> list[Doc]:
    """Labelled docs from the user's files and folders; doc_ids 0..n-1 in the order found.

    Labels: a file given directly -> its stem ("notes.txt" -> "notes"); a file directly inside a given
    folder -> the folder's name; a file deeper inside a given folder -> the name of the first subfolder
    (so `corpus/legal/*.txt` and `corpus/poems/*.txt` give labels "legal" and "poems").
    Hidden files/folders are skipped, binary or non-UTF-8 files too. Long files are split into docs of
    ~`target_chars` at paragraph or line boundaries (see `split_text`).
    """
    paths = list(paths)
    found: list[tuple[Path, str]] = []
    for given in paths:
        given = Path(given)
        if given.is_file():
            found.append((given, given.stem))
        elif given.is_dir():
            name = given.resolve().name or "docs"
            for path in sorted(given.rglob("*"), key=lambda p: p.relative_to(given).as_posix()):
                rel = path.relative_to(given).parts
                if not path.is_file() or any(part.startswith(".") for part in rel):
                    continue
                found.append((path, rel[0] if len(rel) > 1 else name))
        else:
            raise ValueError(f"no such file or folder: {given}")
    docs: list[Doc] = []
    skipped = []
    for path, label in found:
        text = _read_text_file(path)
        if text is None:
            skipped.append(path)
            continue
        for chunk in split_text(text, target_chars, max_chars):
            if chunk.strip():
                docs.append(Doc(chunk, label, str(path), len(docs)))
    if not docs:
        detail = f" ({len(skipped)} binary or non-UTF-8 file(s) skipped)" if skipped else ""
        raise ValueError(f"no usable text in {', '.join(map(str, paths))}{detail}")
    return docs


# ---------------------------------------------------------------------------------------------------------
# CLI: moe-explorer corpus


def add_corpus_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory (train.jsonl, val.jsonl, manifest.json)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", choices=sorted(SIZES), default="default", help="~2.5 MB or ~300 kB per domain")


def run_corpus(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    manifest = build_corpus(args.out, seed=args.seed, size=args.size)
    seconds = time.perf_counter() - start
    for label in manifest["labels"]:
        tr, va = manifest["train"].get(label, {}), manifest["val"].get(label, {})
        print(
            f"{label:>6}: {tr.get('docs', 0):5d} train docs ({tr.get('chars', 0) / 1e6:.2f} MB), "
            f"{va.get('docs', 0):4d} val docs ({va.get('chars', 0) / 1e6:.2f} MB)"
        )
    total = manifest["total"]
    print(f"wrote {total['docs']} docs, {total['chars'] / 1e6:.2f} M chars to {args.out} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":  # python -m moe_core.corpus --out DIR
    p = argparse.ArgumentParser(prog="moe_core.corpus")
    add_corpus_args(p)
    sys.exit(run_corpus(p.parse_args()))
