from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci.startswith("python -m pip install") and "pytest" in ci
    assert ci in (ROOT / "README.md").read_text()


def test_readme_commands_name_files_that_exist():
    readme = (ROOT / "README.md").read_text()
    for script in ("demo.sh", "train.py", "eval.py", "test.py", "requirements-dev.txt"):
        assert script in readme and (ROOT / script).exists()


def test_reliability_rows_name_tests_that_exist():
    """Every row of docs/RELIABILITY.md names at least one test, every named test exists, and the count it states is
    the number of rows."""
    import re

    text = (ROOT / "docs" / "RELIABILITY.md").read_text()
    rows = [r for r in text.splitlines() if r.startswith("| ") and not r.startswith(("| fault |", "| input |"))]
    defined = {
        (f.name, name)
        for f in (ROOT / "tests").glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", f.read_text(), re.M)
    }
    for row in rows:
        named = re.findall(r"`(test_\w+\.py)::(test_\w+)`", row.rsplit("|", 2)[-2])
        assert named, f"a row without a test: {row}"
        missing = [n for n in named if n not in defined]
        assert not missing, f"{row}\nnames tests that do not exist: {missing}"
    count = re.search(r"\*\*Count\.\*\* (\d+) rows \(faults tried\), (\d+) of which lose nothing", text)
    assert count and int(count.group(1)) == len(rows), (count and count.group(0), len(rows))
