"""Nothing written over: --force deletes only what the toolkit's earlier output wrote (its manifest), and a shrunk
checkpoint never replaces its source, an existing file without --force, or a run's state on --resume."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import eval as eval_script
import train as train_script
from engine.cli import cli_main
from utils.checkpoint import load_checkpoint, shrink_checkpoint
from utils.io import OUTPUT_MARKER, staged_output_dir

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--name", "unet", "--channels", "4", "8", "8", "16", "16", "--batch-size", "4", "-j", "0", "--lr", "0.002"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny synthetic set, its cache and a one-step run."""
    from data.synthetic import write_dataset

    tmp = tmp_path_factory.mktemp("overwrite")
    data = write_dataset(tmp / "oct", seed=11, train=2, val=1, test=1, slices=6, height=48, width=32)
    run, cache = tmp / "run", tmp / "c"
    train_script.main(
        [
            *TINY,
            "-d",
            str(data),
            "--out",
            str(run),
            "--cache-dir",
            str(cache),
            "--epochs",
            "1",
            "--steps-per-epoch",
            "1",
        ]
    )
    return {"data": data, "cache": cache, "run": run, "latest": run / "checkpoint" / "checkpoint_latest.pth.tar"}


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(module, argv, monkeypatch) -> str:
    """The driver's command line, in this process: what it printed as its error (SystemExit's message)."""
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *argv])
    with pytest.raises(SystemExit) as stop:
        cli_main(f"{module.__name__}.py", module.parse_args, module.main, relaunch=False)
    return stop.value.code


def _one_error_line(message, *needles):
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    assert "Traceback" not in message and all(n in message for n in needles), message


def _manifest(folder: Path) -> list[str]:
    return json.loads((folder / OUTPUT_MARKER).read_text())["entries"]


# --------------------------------------------------------------------------------------------------- --force
def test_force_refuses_an_output_folder_holding_a_run_saved_into_it_later(run, tmp_path, monkeypatch):
    """The red-team case: eval --out e7, train --out e7/finetune, eval --out e7 --force."""
    e7 = tmp_path / "e7"
    ev = ["--seg-path", str(run["latest"]), "-d", str(run["data"]), "--cache-dir", str(run["cache"]), "--out", str(e7)]
    eval_script.main(ev)
    assert _manifest(e7) == sorted(p.name for p in e7.iterdir() if p.name != OUTPUT_MARKER)
    assert "metrics.json" in _manifest(e7)
    nested = e7 / "finetune"
    argv = ["-d", str(run["data"]), "--out", str(nested), "--cache-dir", str(run["cache"]), "--epochs", "1"]
    train_script.main([*TINY, *argv, "--steps-per-epoch", "1"])
    before, metrics = _tree(nested), (e7 / "metrics.json").read_bytes()
    assert (nested / "checkpoint" / "checkpoint_latest.pth.tar").is_file() and (nested / "log.csv").is_file()

    _one_error_line(_cli(eval_script, [*ev, "--force"], monkeypatch), str(e7), "finetune", "move them away")
    assert _tree(nested) == before and (e7 / "metrics.json").read_bytes() == metrics  # nothing deleted
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name or ".old-" in p.name]

    shutil.move(nested, tmp_path / "finetune")  # moved away, --force replaces the eval's own output
    (e7 / "metrics.json").write_text("{}")  # ... unless a user edited it since
    _one_error_line(_cli(eval_script, [*ev, "--force"], monkeypatch), "metrics.json (changed since it was written)")
    assert (e7 / "metrics.json").read_text() == "{}"
    (e7 / "metrics.json").unlink()
    eval_script.main([*ev, "--force"])
    assert json.loads((e7 / "metrics.json").read_text())["split"] == "val"
    assert _tree(tmp_path / "finetune") == before


def test_force_names_up_to_three_foreign_entries_and_replaces_only_manifest_entries(tmp_path):
    out = tmp_path / "out"
    with staged_output_dir(out, force=False) as stage:
        (stage / "segment").mkdir()
        (stage / "segment" / "a.npy").write_bytes(b"a")
        (stage / "metrics.json").write_text("{}")
    assert _manifest(out) == ["metrics.json", "segment"]
    (out / "segment" / "stale.npy").write_bytes(b"")  # inside an entry the run wrote: foreign all the same
    with pytest.raises(FileExistsError, match="segment/stale.npy, not written"), staged_output_dir(out, force=True):
        pass
    (out / "segment" / "stale.npy").unlink()
    for name in ("notes.txt", "b", "c", "d"):
        (out / name).write_text("mine")
    with pytest.raises(FileExistsError) as refused, staged_output_dir(out, force=True):
        pass
    message = str(refused.value)
    assert "\n" not in message and str(out) in message and "b, c, d and 1 more" in message, message
    assert all((out / n).read_text() == "mine" for n in ("notes.txt", "b", "c", "d"))
    for name in ("notes.txt", "b", "c", "d"):
        (out / name).unlink()
    with staged_output_dir(out, force=True) as stage:
        (stage / "segment").mkdir()
    assert sorted(os.listdir(out)) == [OUTPUT_MARKER, "segment"] and not any((out / "segment").iterdir())
    assert _manifest(out) == ["segment"]


def test_an_entry_that_appears_while_the_output_is_rebuilt_is_kept(tmp_path, caplog):
    out = tmp_path / "out"
    with staged_output_dir(out, force=False) as stage:
        (stage / "metrics.json").write_text("{}")
    with staged_output_dir(out, force=True) as stage:
        (stage / "metrics.json").write_text('{"new": 1}')
        (out / "finetune").mkdir()  # e.g. a training run started into the old folder meanwhile
        (out / "finetune" / "log.csv").write_text("epoch\n")
    assert json.loads((out / "metrics.json").read_text()) == {"new": 1}
    (kept,) = [p for p in tmp_path.iterdir() if ".old-" in p.name]
    assert os.listdir(kept) == ["finetune"] and (kept / "finetune" / "log.csv").read_text() == "epoch\n"
    assert f"kept {kept}" in caplog.text


def test_an_older_output_without_a_manifest_is_still_replaced_whole(tmp_path):
    out = tmp_path / "out"
    (out / "segment").mkdir(parents=True)
    (out / "notes.txt").write_text("old")
    (out / OUTPUT_MARKER).write_text(json.dumps({"written_by": "retina-lesion", "command": ["test.py"]}))
    with staged_output_dir(out, force=True) as stage:
        (stage / "metrics.json").write_text("{}")
    assert sorted(os.listdir(out)) == sorted([OUTPUT_MARKER, "metrics.json"]) and _manifest(out) == ["metrics.json"]
    (out / OUTPUT_MARKER).write_text("not json")  # a damaged marker says nothing about what may go: refused
    with pytest.raises(FileExistsError, match="unreadable output marker"), staged_output_dir(out, force=True):
        pass
    assert (out / "metrics.json").is_file()


# ------------------------------------------------------------------------------------------ shrunk checkpoints
def _shrink_cli(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "utils.checkpoint", *map(str, argv)], cwd=ROOT, capture_output=True, text=True
    )


def test_shrink_never_writes_over_its_source_or_an_existing_file_without_force(run, tmp_path):
    src = tmp_path / "ckpt" / "checkpoint_latest.pth.tar"
    src.parent.mkdir()
    shutil.copy(run["latest"], src)
    full = src.read_bytes()
    (tmp_path / "link.pth.tar").symlink_to(src)
    for spelling in (src, tmp_path / "ckpt" / ".." / "ckpt" / src.name, tmp_path / "link.pth.tar"):
        with pytest.raises(FileExistsError, match="is the checkpoint being shrunk"):
            shrink_checkpoint(src, spelling, force=True)
    os.link(src, tmp_path / "hard.pth.tar")  # another name of the same file
    with pytest.raises(FileExistsError, match="is the checkpoint being shrunk"):
        shrink_checkpoint(src, tmp_path / "hard.pth.tar", force=True)
    assert src.read_bytes() == full and "optimizer" in load_checkpoint(src)

    done = _shrink_cli(src, src, "--force")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert (
        done.stderr.strip() == f"error: {src} is the checkpoint being shrunk; writing over it would lose its "
        "optimiser state and full-precision weights: name another file"
    )
    assert src.read_bytes() == full

    dst = tmp_path / "ship.pth.tar"
    dst.write_bytes(b"an earlier copy")
    done = _shrink_cli(src, dst)
    assert (
        done.returncode == 1
        and done.stderr.strip() == f"error: {dst} already exists; pass --force to replace it, or name another file"
    ), done.stderr
    assert dst.read_bytes() == b"an earlier copy"
    with pytest.raises(FileExistsError, match="not written by this toolkit as a single output file"):  # the user's
        shrink_checkpoint(src, dst, force=True)
    assert dst.read_bytes() == b"an earlier copy"
    dst.unlink()
    assert shrink_checkpoint(src, dst) == dst and "optimizer" not in load_checkpoint(dst)
    assert shrink_checkpoint(src, dst, force=True) == dst  # its own earlier copy: replaced with --force
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # written through a temporary file
    with pytest.raises(FileExistsError, match="is a folder; name the file"):
        shrink_checkpoint(src, tmp_path / "ckpt", force=True)


def test_resume_refuses_a_shrunk_checkpoint_naming_it(run, tmp_path, monkeypatch):
    small = shrink_checkpoint(run["latest"], tmp_path / "small.pth.tar")
    new = tmp_path / "new"
    argv = [*TINY, "-d", str(run["data"]), "--cache-dir", str(run["cache"]), "--epochs", "2", "--steps-per-epoch", "1"]
    message = _cli(train_script, [*argv, "--out", str(new), "--resume", str(small)], monkeypatch)
    _one_error_line(message, str(small), "deployable copy without optimiser state", "checkpoint_latest.pth.tar")
    assert not (new / "checkpoint" / "checkpoint_latest.pth.tar").exists()

    # the incident: a run's checkpoint_latest replaced by its shrunk copy (an older tool), then --resume auto
    copy = tmp_path / "run"
    shutil.copytree(run["run"], copy, ignore=shutil.ignore_patterns(".lock"))
    for p in (copy / "checkpoint").glob("*.pth.tar"):
        p.unlink()
    latest = copy / "checkpoint" / "checkpoint_latest.pth.tar"
    shutil.copy(small, latest)
    before = _tree(copy)
    message = _cli(train_script, [*argv, "--out", str(copy), "--resume", "auto"], monkeypatch)
    _one_error_line(message, str(latest), "deployable copy without optimiser state")
    after = _tree(copy)
    own = {"train.log", ".lock"}  # the log says what happened; the lock names the last process
    assert {k: v for k, v in after.items() if k.name not in own} == {
        k: v for k, v in before.items() if k.name not in own
    }


def test_staging_folders_of_a_killed_run_are_removed_by_the_next_run_on_that_output(tmp_path):
    """A SIGKILLed eval/test leaves <out>.staging-XXXX (with the toolkit's marker) beside the output; the next run
    on that output holds its lock, so no live run writes those: they are removed. A folder of that name without
    the marker is somebody else's and stays, as does another output's staging folder."""
    out = tmp_path / "ev"
    dead = tmp_path / "ev.staging-dead1xyz"  # tempfile.mkdtemp's 8 characters
    dead.mkdir()
    (dead / OUTPUT_MARKER).write_text(json.dumps({"written_by": "retina-lesion", "command": []}))
    (dead / "metrics.json").write_text("{}")
    foreign = tmp_path / "ev.staging-mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    other = tmp_path / "ev2.staging-dead2xyz"
    other.mkdir()
    (other / OUTPUT_MARKER).write_text("{}")
    with staged_output_dir(out, force=False) as stage:
        (stage / "metrics.json").write_text("{}")
    assert not dead.exists() and (foreign / "notes.txt").read_text() == "mine" and other.is_dir()
    assert (out / "metrics.json").is_file() and [p.name for p in tmp_path.glob("ev.staging-*")] == ["ev.staging-mine"]


def test_a_marker_naming_paths_outside_the_folder_deletes_nothing_and_browser_clutter_is_no_obstacle(tmp_path):
    """--force deletes what the marker lists: a listed "../victim" or absolute path is refused, not followed; the
    .DS_Store / Thumbs.db a file browser leaves in an output does not count as somebody's files."""
    out = tmp_path / "ev"
    with staged_output_dir(out, force=False) as stage:
        (stage / "metrics.json").write_text("{}")
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "data.txt").write_text("keep")
    marker = json.loads((out / OUTPUT_MARKER).read_text())
    old_style = {k: v for k, v in marker.items() if k not in ("files", "dirs")}  # an earlier version's marker
    for evil in (["../victim"], [str(tmp_path / "victim")], [".."]):
        (out / OUTPUT_MARKER).write_text(json.dumps({**old_style, "entries": evil}))
        with pytest.raises(FileExistsError, match="not names of entries in the folder"), staged_output_dir(out, True):
            pass
        assert (tmp_path / "victim" / "data.txt").read_text() == "keep"
    # a marker listing files outside the folder (with their true size and time): names are never followed, only
    # what lies in the folder is deleted
    st = (tmp_path / "victim" / "data.txt").stat()
    for evil in ("../victim/data.txt", str(tmp_path / "victim" / "data.txt")):
        files = {**marker["files"], evil: [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]}
        (out / OUTPUT_MARKER).write_text(json.dumps({**marker, "files": files}))
        with staged_output_dir(out, force=True) as stage:
            (stage / "metrics.json").write_text("{}")
        assert (tmp_path / "victim" / "data.txt").read_text() == "keep"
        marker = json.loads((out / OUTPUT_MARKER).read_text())
    (out / ".DS_Store").write_bytes(b"\0")
    (out / "Thumbs.db").write_bytes(b"\0")
    with staged_output_dir(out, force=True) as stage:
        (stage / "metrics.json").write_text('{"new": 1}')
    assert json.loads((out / "metrics.json").read_text()) == {"new": 1} and not list(tmp_path.glob("ev.old-*"))
