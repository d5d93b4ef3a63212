"""The one-way import rule (app -> analysis -> moe_core), no private names across packages, and module
aliases spelled out."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("moe_core", "analysis", "app")
FORBIDDEN = {
    "moe_core": ("analysis", "app", "streamlit", "plotly", "pandas"),
    "analysis": ("app", "streamlit"),
}


def sources(folders=PACKAGES + ("bench", "scripts")):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_imports_go_one_way():
    bad = []
    for package, banned in FORBIDDEN.items():
        pattern = re.compile(rf"^\s*(from|import)\s+({'|'.join(banned)})\b", re.M)
        for path in (ROOT / package).rglob("*.py"):
            for match in pattern.finditer(path.read_text()):
                bad.append(f"{path.relative_to(ROOT)}: {match.group(0).strip()}")
    assert not bad, "imports against the one-way rule:\n" + "\n".join(bad)


def test_no_private_names_across_packages():
    """`from moe_core.moe import _helper` in analysis (or bench) reaches into another package's insides:
    make the name public instead."""
    pattern = re.compile(r"^\s*from\s+((\w+)[\w.]*)\s+import\s+\(?([^)\n]*(?:\n[^)\n]*)*?)\)?\s*$", re.M)
    bad = []
    for path in sources():
        own = path.relative_to(ROOT).parts[0]
        for match in pattern.finditer(path.read_text()):
            package = match.group(2)
            if package not in PACKAGES or package == own:
                continue
            names = [n.strip().split(" as ")[0] for n in match.group(3).replace("\n", " ").split(",")]
            private = [n for n in names if n.startswith("_")]
            module_private = any(part.startswith("_") and part != "__init__" for part in match.group(1).split("."))
            if private or module_private:
                bad.append(f"{path.relative_to(ROOT)}: {match.group(0).strip()}")
    assert not bad, "private names imported across packages:\n" + "\n".join(bad)


def test_module_aliases_are_spelled_out():
    """`from app import figures as F` hides which module a call goes to (F is torch.nn.functional elsewhere):
    our modules are imported under their own names; short aliases only for the usual third-party ones."""
    conventional = {("numpy", "np"), ("pandas", "pd"), ("plotly.graph_objects", "go"), ("plotly.express", "px"),
                    ("streamlit", "st"), ("pyarrow", "pa"), ("pyarrow.parquet", "pq"),
                    ("torch.nn.functional", "F"), ("torch.distributed", "dist")}  # fmt: skip
    pattern = re.compile(r"^\s*(?:from\s+([\w.]+)\s+)?import\s+([\w.]+)\s+as\s+(\w+)", re.M)
    bad = []
    for path in sources(PACKAGES):
        for source, name, alias in pattern.findall(path.read_text()):
            module = f"{source}.{name}" if source else name
            ours = (ROOT / module.replace(".", "/")).with_suffix(".py").is_file() or (
                ROOT / module.replace(".", "/")
            ).is_dir()
            if (ours and alias != name) or (len(alias) <= 2 and (module, alias) not in conventional):
                bad.append(f"{path.relative_to(ROOT)}: {module} as {alias}")
    assert not bad, "spell out module aliases:\n" + "\n".join(bad)
