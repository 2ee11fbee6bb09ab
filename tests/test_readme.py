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
