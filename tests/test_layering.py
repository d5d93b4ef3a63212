"""The one-way import rule: app -> analysis -> moe_core."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "moe_core": ("analysis", "app", "streamlit", "plotly", "pandas"),
    "analysis": ("app", "streamlit"),
}


def test_imports_go_one_way():
    bad = []
    for package, banned in FORBIDDEN.items():
        pattern = re.compile(rf"^\s*(from|import)\s+({'|'.join(banned)})\b", re.M)
        for path in (ROOT / package).rglob("*.py"):
            for match in pattern.finditer(path.read_text()):
                bad.append(f"{path.relative_to(ROOT)}: {match.group(0).strip()}")
    assert not bad, "imports against the one-way rule:\n" + "\n".join(bad)
