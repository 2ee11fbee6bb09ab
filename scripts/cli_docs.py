"""Write docs/CLI.md: the --help of every driver at 120 columns (tests/test_cli.py checks it is current).

python scripts/cli_docs.py
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["COLUMNS"] = "120"

import eval as eval_script  # noqa: E402
import predict as predict_script  # noqa: E402
import sweep as sweep_script  # noqa: E402
import test as test_script  # noqa: E402
import train as train_script  # noqa: E402
from tools import calibrate as calibrate_tool  # noqa: E402

HEADER = """# Command line

The `--help` of each driver (`COLUMNS=120 python <driver> --help`; regenerate this file with
`python scripts/cli_docs.py`). Options of `train.py` override the settings of `--config FILE` (JSON or YAML, same
names, dashes or underscores), which override the task's defaults, which override the toolkit's; each option shows
its effective default and, where a task changes it, that task's (`vessel: ...`).
"""

blocks = [HEADER]
for name, module in (
    ("train.py", train_script),
    ("eval.py", eval_script),
    ("test.py", test_script),
    ("predict.py", predict_script),
    ("sweep.py", sweep_script),
    ("python -m tools.calibrate", calibrate_tool),
):
    blocks.append(f"## {name}\n\n```text\n{module.build_parser().format_help()}```\n")
(ROOT / "docs" / "CLI.md").write_text("\n".join(blocks))
print(f"wrote {ROOT / 'docs' / 'CLI.md'}")
