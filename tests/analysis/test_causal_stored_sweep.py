"""Sweep tables stored with a model: read with checks, looked up per ablation; bad files give one-line errors."""

import pandas as pd
import pytest

from analysis.causal.ablation import Ablation
from analysis.causal.stored_sweep import COLUMNS, lookup, read_sweep, stored_sweeps, sweep_path
from moe_core.paths import default_run_path


def table(mode: str = "reroute") -> pd.DataFrame:
    rows = []
    for name, m, expert, delta in [("e0", mode, 0, 0.01), ("e1", mode, 1, 0.02), ("all", "layer", -1, 0.5)]:
        for label, n in (("code", 3), ("all", 5)):
            rows.append((name, 0, m, expert, label, n, 10 * n, delta, delta - 0.01, delta + 0.01))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def test_paths_and_lookup(tmp_path):
    assert sweep_path(tmp_path, 2000, "reroute") == tmp_path / "causal" / "sweep_step2000_reroute.csv"
    assert sweep_path(tmp_path, None, "zero").name == "sweep_stepnone_zero.csv"
    rows = lookup(table(), Ablation(0, "reroute", 1))
    assert rows.columns.tolist() == ["label", "n_docs", "n_tokens", "delta", "lo", "hi"]
    assert rows["delta"].tolist() == [0.02, 0.02] and rows["label"].tolist() == ["code", "all"]
    assert lookup(table(), Ablation(0, "layer"))["delta"].tolist() == [0.5, 0.5]
    assert lookup(table(), Ablation(0, "zero", 1)) is None and lookup(table(), Ablation(1, "shared")) is None
    assert lookup(None, Ablation(0, "layer")) is None


def test_stored_sweeps_merge_modes_and_report_bad_files(tmp_path):
    (tmp_path / "causal").mkdir()
    table("reroute").to_csv(sweep_path(tmp_path, 5, "reroute"), index=False)
    table("zero").to_csv(sweep_path(tmp_path, 5, "zero"), index=False)
    sweep_path(tmp_path, 5, "layer").write_bytes(b"\x00\xff\xfe binary")
    merged, errors = stored_sweeps(tmp_path, 5)
    assert len(merged) == 10  # 2 experts x 2 modes x 2 labels, and the reference once
    assert len(errors) == 1 and "sweep_step5_layer.csv" in errors[0]
    assert stored_sweeps(tmp_path, 6) == (None, [])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a readable CSV"),
        (b"a,b\n1,2\n", "missing columns: ablation, layer, mode"),
        (b"\xff\xfe\x00\x01", "not a"),
    ],
)
def test_bad_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "sweep.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        read_sweep(path)
    assert "sweep.csv" in str(err.value) and "\n" not in str(err.value)


def test_bad_values(tmp_path):
    bad_mode, bad_number = table(), table()
    bad_mode.loc[0, "mode"] = "delete"
    bad_number["delta"] = bad_number["delta"].astype(object)
    bad_number.loc[0, "delta"] = "lots"
    for frame, message in ((bad_mode, "unknown ablation modes delete"), (bad_number, "not a number")):
        frame.to_csv(tmp_path / "t.csv", index=False)
        with pytest.raises(ValueError, match=message):
            read_sweep(tmp_path / "t.csv")


def test_the_shipped_sweep_reads():
    merged, errors = stored_sweeps(default_run_path(), 2000)
    assert errors == [] and merged["ablation"].nunique() == 54
    assert set(merged["label"]) == {"code", "data", "math", "prose", "all"}
