"""The README table of issue 25's DRIVE experiments, from the ``results.tsv`` that ``scripts/drive_experiments.sh``
writes (one row per run and test set): one line per experiment with the mean over its seeds and each seed's figure,
the losses on the other cameras and copies against native scale, and whether the issue's limits hold.

    python -m tools.drive_results runs/drive_experiments/results.tsv
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

# issue 25: at native scale at least these; on the copies, at most these losses against native
NATIVE_FLOOR = {"auc_roc": 0.982, "f1": 0.825}
MAX_LOSS = {
    "x1.77": {"auc_roc": 0.003, "f1": 0.005},
    "x0.6": {"auc_roc": 0.003, "f1": 0.005},
    "jpeg75": {"auc_roc": 0.005},
    "warm": {"auc_roc": 0.005},
}


def read_results(path: Path) -> dict[str, dict[int, dict[str, dict[str, float]]]]:
    """{experiment: {seed: {set: {figure: value}}}} from rows named ``<experiment>_s<seed>``."""
    out: dict = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            name, sep, seed = row["run"].rpartition("_s")
            if not sep or not seed.isdigit():
                raise ValueError(f"{path}: run {row['run']!r} is not named <experiment>_s<seed>")
            figures = {k: float(v) for k, v in row.items() if k not in ("run", "set")}
            out.setdefault(name, {}).setdefault(int(seed), {})[row["set"]] = figures
    return out


def summarise(runs: dict[int, dict[str, dict[str, float]]]) -> dict:
    """One experiment: native AUC-ROC and F1 (mean and per seed), the worst loss of each copy over the seeds, and
    the limits that fail; an experiment with a seed still missing a set is marked incomplete."""
    seeds = sorted(runs)
    complete = all("native" in runs[s] and all(c in runs[s] for c in MAX_LOSS) for s in seeds)
    native = {k: [runs[s]["native"][k] for s in seeds if "native" in runs[s]] for k in NATIVE_FLOOR}
    losses = {
        (copy, k): max(
            runs[s]["native"][k] - runs[s][copy][k] for s in seeds if copy in runs[s] and "native" in runs[s]
        )
        for copy, limits in MAX_LOSS.items()
        for k in limits
        if any(copy in runs[s] and "native" in runs[s] for s in seeds)
    }
    fails = [
        f"native {k} {statistics.mean(v):.4f} < {NATIVE_FLOOR[k]}"
        for k, v in native.items()
        if v and statistics.mean(v) < NATIVE_FLOOR[k]
    ]
    fails += [f"{c} loses {v:.4f} {k} > {MAX_LOSS[c][k]}" for (c, k), v in losses.items() if v > MAX_LOSS[c][k]]
    return {"seeds": seeds, "complete": complete, "native": native, "losses": losses, "fails": fails}


def table(results: dict) -> str:
    """Markdown: one line per experiment, in the order of the file."""
    cols = ["experiment", "seeds", "AUC-ROC native", "F1 native"]
    cols += [f"{c} loss {'AUC' if k == 'auc_roc' else 'F1'}" for c, limits in MAX_LOSS.items() for k in limits]
    cols += ["issue 25's limits"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, runs in results.items():
        s = summarise(runs)
        cells = [f"`{name}`", ", ".join(map(str, s["seeds"]))]
        for k in NATIVE_FLOOR:
            v = s["native"][k]
            cells.append(f"{statistics.mean(v):.4f} ({' / '.join(f'{x:.4f}' for x in v)})" if v else "")
        cells += [
            f"{s['losses'][(c, k)]:+.4f}" if (c, k) in s["losses"] else "" for c, lim in MAX_LOSS.items() for k in lim
        ]
        verdict = "incomplete" if not s["complete"] else "hold" if not s["fails"] else "; ".join(s["fails"])
        cells.append(verdict)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="results.tsv of scripts/drive_experiments.sh")
    a = p.parse_args(argv)
    if not a.results.is_file():
        sys.exit(f"error: {a.results}: no such file (scripts/drive_experiments.sh writes it as runs finish)")
    text = table(read_results(a.results))
    print(text)
    return text


if __name__ == "__main__":
    main()
