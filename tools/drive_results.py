"""The README table of issue 25's DRIVE experiments, from the ``results.tsv`` that ``scripts/drive_experiments.sh``
writes (one row per run and test set): one line per experiment with the mean over its seeds and each seed's figure,
the losses on the other cameras and copies against native scale, and whether the issue's limits hold.

    python -m tools.drive_results runs/drive_experiments/results.tsv
"""

from __future__ import annotations

import argparse
import csv
import math
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
SEEDS = (1, 2)  # every experiment runs these (scripts/drive_experiments.sh)
BASELINE = "base"  # the recipe without any option, against which each option is read
DIGITS = 4  # results.tsv's: a loss of exactly a limit is compared as written, not as its float difference


def read_results(path: Path) -> dict[str, dict[int, dict[str, dict[str, float]]]]:
    """{experiment: {seed: {set: {figure: value}}}} from rows named ``<experiment>_s<seed>``."""
    out: dict = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = {"run", "set", *NATIVE_FLOOR} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: no column {', '.join(sorted(missing))} in its first line (a results.tsv)")
        for line, row in enumerate(reader, start=2):
            name, sep, seed = row["run"].rpartition("_s")
            if not sep or not seed.isdigit():
                raise ValueError(f"{path}:{line}: run {row['run']!r} is not named <experiment>_s<seed>")
            try:
                figures = {k: float(v) for k, v in row.items() if k not in ("run", "set")}
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: a figure that is not a number: {row}") from None
            out.setdefault(name, {}).setdefault(int(seed), {})[row["set"]] = figures
    if not out:
        raise ValueError(f"{path}: no results yet (a row is written as each run is scored)")
    return out


def _mean(values: list[float]) -> float:
    return round(statistics.mean(values), DIGITS) if values else math.nan


def summarise(runs: dict[int, dict[str, dict[str, float]]]) -> dict:
    """One experiment: native AUC-ROC and F1 (mean and per seed), the worst loss of each copy over the seeds, and
    the limits that fail; one that misses a seed of ``SEEDS`` or a set is incomplete."""
    seeds = sorted(runs)
    missing = [f"seed {s}" for s in SEEDS if s not in runs]
    missing += [f"{c} of seed {s}" for s in seeds for c in ("native", *MAX_LOSS) if c not in runs[s]]
    native = {k: [runs[s]["native"][k] for s in seeds if "native" in runs[s]] for k in NATIVE_FLOOR}
    losses = {}
    for copy, limits in MAX_LOSS.items():
        for k in limits:
            pairs = [(runs[s]["native"][k], runs[s][copy][k]) for s in seeds if copy in runs[s] and "native" in runs[s]]
            if pairs:
                diffs = [round(a - b, DIGITS) for a, b in pairs]
                losses[(copy, k)] = math.nan if any(map(math.isnan, diffs)) else max(diffs)
    fails = []
    for k, values in native.items():
        m = _mean(values)
        if values and not m >= NATIVE_FLOOR[k]:  # a NaN fails too
            fails.append(f"native {k} {m:.4f} < {NATIVE_FLOOR[k]}")
    for (copy, k), v in losses.items():
        if not v <= MAX_LOSS[copy][k]:
            fails.append(f"{copy} loses {v:.4f} {k} > {MAX_LOSS[copy][k]}")
    return {"seeds": seeds, "missing": missing, "native": native, "losses": losses, "fails": fails}


def table(results: dict) -> str:
    """Markdown: one line per experiment, in the order of the file; each option's native figures also as the
    difference of its mean from ``BASELINE``'s, the comparison the screening is for."""
    cols = ["experiment", "seeds", "AUC-ROC native", "F1 native", f"vs `{BASELINE}` (AUC-ROC, F1)"]
    cols += [f"{c} loss {'AUC' if k == 'auc_roc' else 'F1'}" for c, limits in MAX_LOSS.items() for k in limits]
    cols += ["issue 25's limits"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    base = summarise(results[BASELINE]) if BASELINE in results else None
    for name, runs in results.items():
        s = summarise(runs)
        cells = [f"`{name}`", ", ".join(map(str, s["seeds"]))]
        for k in NATIVE_FLOOR:
            v = s["native"][k]
            cells.append(f"{_mean(v):.4f} ({' / '.join(f'{x:.4f}' for x in v)})" if v else "")
        if base is not None and name != BASELINE and all(s["native"][k] and base["native"][k] for k in NATIVE_FLOOR):
            cells.append(", ".join(f"{_mean(s['native'][k]) - _mean(base['native'][k]):+.4f}" for k in NATIVE_FLOOR))
        else:
            cells.append("")
        cells += [
            f"{s['losses'][(c, k)]:+.4f}" if (c, k) in s["losses"] else "" for c, lim in MAX_LOSS.items() for k in lim
        ]
        verdict = "hold" if not s["fails"] else "; ".join(s["fails"])
        if s["missing"]:
            verdict = f"incomplete (no {', '.join(s['missing'])})" + (
                f"; so far: {verdict}" if s["native"]["f1"] else ""
            )
        cells.append(verdict)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="results.tsv of scripts/drive_experiments.sh")
    a = p.parse_args(argv)
    if not a.results.is_file():
        sys.exit(f"error: {a.results}: no such file (scripts/drive_experiments.sh writes it as runs finish)")
    try:
        text = table(read_results(a.results))
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(text)
    return text


if __name__ == "__main__":
    main()
