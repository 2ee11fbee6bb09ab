"""tools.drive_results: issue 25's table from results.tsv, figures computed by hand."""

import pytest

from tools import drive_results

HEADER = "run\tset\tauc_roc\tauc_pr\tf1\tiou\tsensitivity\tspecificity\tthreshold\n"
COPIES = ("x1.77", "x0.6", "jpeg75", "warm")


def _row(run, name, auc, f1):
    return f"{run}\t{name}\t{auc:.4f}\t0.9000\t{f1:.4f}\t0.7000\t0.8000\t0.9700\t0.5000\n"


def _write(tmp_path, rows):
    path = tmp_path / "results.tsv"
    path.write_text(HEADER + "".join(rows))
    return path


def test_means_worst_losses_and_limits_by_hand(tmp_path):
    rows = []
    # long: seed 1 native 0.9830 / 0.8260, seed 2 0.9820 / 0.8250 -> means 0.9825 / 0.8255
    for seed, (auc, f1) in {1: (0.9830, 0.8260), 2: (0.9820, 0.8250)}.items():
        rows.append(_row(f"long_s{seed}", "native", auc, f1))
        rows.append(_row(f"long_s{seed}", "x1.77", auc - 0.001 * seed, f1 - 0.005))  # AUC worst 0.002; F1 at its limit
        rows.append(_row(f"long_s{seed}", "x0.6", auc - 0.004, f1))  # 0.004 > 0.003: fails
        rows.append(_row(f"long_s{seed}", "jpeg75", auc - 0.005, f1))  # exactly the limit: holds
        rows.append(_row(f"long_s{seed}", "warm", auc + 0.001, f1))  # a gain is a negative loss
    # base: native 0.9800 / 0.8200 and 0.9790 / 0.8180 -> means 0.9795 / 0.8190; long is +0.0030, +0.0065 against it
    rows += [_row("base_s1", "native", 0.9800, 0.8200), _row("base_s2", "native", 0.9790, 0.8180)]
    rows.append(_row("clahe_s1", "native", 0.9790, 0.8100))  # one seed, its copies not scored yet
    results = drive_results.read_results(_write(tmp_path, rows))
    s = drive_results.summarise(results["long"])
    assert s["seeds"] == [1, 2] and s["missing"] == []
    assert s["losses"][("x1.77", "auc_roc")] == pytest.approx(0.002)
    assert s["losses"][("x1.77", "f1")] == pytest.approx(0.005)
    assert s["losses"][("warm", "auc_roc")] == pytest.approx(-0.001)
    assert s["fails"] == ["x0.6 loses 0.0040 auc_roc > 0.003"]  # not the F1 of x1.77 nor JPEG, at their limits
    clahe = drive_results.summarise(results["clahe"])
    assert clahe["missing"][0] == "seed 2" and "x1.77 of seed 1" in clahe["missing"]
    assert clahe["fails"] == ["native auc_roc 0.9790 < 0.982", "native f1 0.8100 < 0.825"]
    text = drive_results.main([str(tmp_path / "results.tsv")])
    line = {row.split(" | ")[0]: row for row in text.splitlines()}
    assert "| 0.9825 (0.9830 / 0.9820) | 0.8255 (0.8260 / 0.8250) | +0.0030, +0.0065 |" in line["| `long`"]
    assert line["| `long`"].endswith("| x0.6 loses 0.0040 auc_roc > 0.003 |")
    assert line["| `clahe`"].endswith("; so far: native auc_roc 0.9790 < 0.982; native f1 0.8100 < 0.825 |")
    assert "| incomplete (no seed 2, x1.77 of seed 1," in line["| `clahe`"]


def test_a_nan_figure_fails(tmp_path):
    rows = [_row(f"a_s{s}", c, 0.99, 0.83) for s in (1, 2) for c in ("native", *COPIES)]
    rows[1] = "a_s1\tx1.77\tnan\t0.9\t0.83\t0.7\t0.8\t0.97\t0.5\n"
    s = drive_results.summarise(drive_results.read_results(_write(tmp_path, rows))["a"])
    assert s["missing"] == [] and s["fails"] == ["x1.77 loses nan auc_roc > 0.003"]


@pytest.mark.parametrize(
    "text, message",
    [
        (HEADER, "results.tsv: no results yet"),
        ("", "results.tsv: no column auc_roc, f1, run, set in its first line"),
        (HEADER + _row("long", "native", 0.98, 0.82), "results.tsv:2: run 'long' is not named <experiment>_s<seed>"),
        (HEADER + "long_s1\tnative\t\t0.9\t0.8\t0.7\t0.8\t0.97\t0.5\n", "results.tsv:2: a figure that is not a number"),
    ],
    ids=["header_only", "empty", "unnamed_seed", "blank_figure"],
)
def test_bad_files_are_refused_naming_the_file(tmp_path, text, message):
    path = tmp_path / "results.tsv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        drive_results.read_results(path)
    with pytest.raises(SystemExit, match="error: .*" + message):
        drive_results.main([str(path)])
