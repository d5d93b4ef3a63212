"""The built-in sample texts (Token routing's examples) and, labelled by their names, the documents pages and
`moe-explorer ablate --hf` measure a source without eval documents on. No Streamlit: the CLI imports it."""

from __future__ import annotations

SAMPLES = {
    "Prose": "The old lighthouse keeper climbed the stairs every evening. From the top he could see the fishing "
    "boats coming home, their lights bobbing on the dark water like fireflies.",
    "Python code": "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
    "    return a\n\nprint([fibonacci(i) for i in range(10)])\n",
    "Math": "Let f(x) = 3x^2 + 2x - 5. Then f'(x) = 6x + 2, so the minimum is at x = -1/3, "
    "where f(-1/3) = 1/3 - 2/3 - 5 = -16/3.",
    "JSON": '{"name": "moe-explorer", "experts": 16, "top_k": 2, "layers": [1, 2, 3], "shared": true}',
    "Escaping test": "<script>alert(1)</script> & <b>not bold</b>",
}


def labelled_samples() -> tuple[tuple[str, str, str], ...]:
    """The built-in samples as documents labelled by their name (for a source without eval documents)."""
    return tuple((name, name, text) for name, text in SAMPLES.items() if name != "Escaping test")
