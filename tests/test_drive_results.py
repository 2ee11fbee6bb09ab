"""tools.drive_results: issue 25's table from results.tsv, figures computed by hand."""

import pytest

from tools import drive_results

HEADER = "run\tset\tauc_roc\tauc_pr\tf1\tiou\tsensitivity\tspecificity\tthreshold\n"


def _row(run, name, auc, f1):
    return f"{run}\t{name}\t{auc}\t0.9\t{f1}\t0.7\t0.8\t0.97\t0.5\n"


def test_means_worst_losses_and_limits_by_hand(tmp_path):
    rows = [HEADER]
    # long: seed 1 native 0.9830 / 0.8260, seed 2 0.9820 / 0.8250 -> means 0.9825 / 0.8255
    for seed, (auc, f1) in {1: (0.9830, 0.8260), 2: (0.9820, 0.8250)}.items():
        rows.append(_row(f"long_s{seed}", "native", auc, f1))
        rows.append(_row(f"long_s{seed}", "x1.77", auc - 0.001 * seed, f1 - 0.002))  # worst AUC loss 0.002 (seed 2)
        rows.append(_row(f"long_s{seed}", "x0.6", auc - 0.004, f1))  # 0.004 > 0.003: fails
        rows.append(_row(f"long_s{seed}", "jpeg75", auc - 0.001, f1))
        rows.append(_row(f"long_s{seed}", "warm", auc + 0.001, f1))  # a gain is a negative loss
    rows.append(_row("clahe_s1", "native", 0.9790, 0.8100))  # its copies not scored yet
    path = tmp_path / "results.tsv"
    path.write_text("".join(rows))
    results = drive_results.read_results(path)
    s = drive_results.summarise(results["long"])
    assert s["seeds"] == [1, 2] and s["complete"]
    assert s["losses"][("x1.77", "auc_roc")] == pytest.approx(0.002)
    assert s["losses"][("x1.77", "f1")] == pytest.approx(0.002)
    assert s["losses"][("warm", "auc_roc")] == pytest.approx(-0.001)
    assert s["fails"] == ["x0.6 loses 0.0040 auc_roc > 0.003"]
    clahe = drive_results.summarise(results["clahe"])
    assert not clahe["complete"] and clahe["fails"] == ["native auc_roc 0.9790 < 0.982", "native f1 0.8100 < 0.825"]
    text = drive_results.main([str(path)])
    long_line = next(line for line in text.splitlines() if line.startswith("| `long`"))
    assert "0.9825 (0.9830 / 0.9820)" in long_line and "0.8255 (0.8260 / 0.8250)" in long_line
    assert long_line.endswith("| x0.6 loses 0.0040 auc_roc > 0.003 |")
    assert next(line for line in text.splitlines() if line.startswith("| `clahe`")).endswith("| incomplete |")


def test_a_run_not_named_by_seed_is_refused(tmp_path):
    path = tmp_path / "results.tsv"
    path.write_text(HEADER + _row("long", "native", 0.98, 0.82))
    with pytest.raises(ValueError, match="results.tsv: run 'long' is not named <experiment>_s<seed>"):
        drive_results.read_results(path)
