"""Generated documents: math exercises and structured data (JSON, CSV, logs, configs), seeded."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from fractions import Fraction
from math import gcd

from moe_core.corpus.docs import MAX_DOC_CHARS, MIN_DOC_CHARS, Doc

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


def generated_docs(label: str, rng: random.Random, budget: int) -> list[Doc]:
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
