"""OCT results beyond one look of the data: a model trained on one scanner style of the generator, scored on another;
detection that uses the segmentation; the test split scored when its labels exist."""

import numpy as np
import pytest

import eval as eval_script
import train as train_script
from data.synthetic import write_dataset

SIZE = dict(train=12, val=5, test=3, slices=16, height=128, width=64)
TRAIN = ["--name", "unet", "--channels", "8", "16", "32", "64", "128", "--batch-size", "8", "-j", "0"]
TRAIN += ["--lr", "0.003", "--lr-mode", "poly", "--loss", "mix_3", "--steps-per-epoch", "12", "--epochs", "30"]


@pytest.fixture(scope="module")
def styles(tmp_path_factory):
    """Two scanner styles of the generator (other eyes too); a model trained on the first with the default OCT
    augmentation."""
    tmp = tmp_path_factory.mktemp("styles")
    data = {s: write_dataset(tmp / s, seed=seed, style=s, **SIZE) for s, seed in (("spectralis", 3), ("topcon", 103))}
    run = tmp / "run"
    train_script.main([*TRAIN, "-d", str(data["spectralis"]), "--out", str(run), "--cache-dir", str(tmp / "c")])
    return {"data": data, "ckpt": str(run / "checkpoint" / "model_best.pth.tar"), "tmp": tmp}


def _eval(styles, style, *extra):
    out = styles["tmp"] / f"ev_{style}_{'_'.join(extra) or 'default'}"
    argv = ["--seg-path", styles["ckpt"], "-d", str(styles["data"][style]), "--cache-dir", str(styles["tmp"] / "c")]
    return eval_script.main([*argv, "--out", str(out), *extra])


def test_a_model_trained_on_one_scanner_style_keeps_most_of_its_dice_on_another(styles):
    own, other = _eval(styles, "spectralis"), _eval(styles, "topcon")
    print(f"trained on Spectralis-like scans: mean Dice {own['dice_mean']:.3f} on its own style's validation eyes, "
          f"{other['dice_mean']:.3f} on Topcon-like ones ({other['dice_mean'] / own['dice_mean']:.0%})")  # fmt: skip
    assert own["dice_mean"] > 0.3  # a trained model, so the ratio means something
    assert other["dice_mean"] >= 0.7 * own["dice_mean"]


def test_detection_from_the_segmentation_and_the_head_beats_the_head_alone(styles):
    head = _eval(styles, "spectralis", "--detection", "head", "--split", "test")
    combined = _eval(styles, "spectralis", "--detection", "combined", "--split", "test")
    print(f"detection AUC on the test eyes: head {head['auc_mean']:.3f}, combined {combined['auc_mean']:.3f}")
    assert combined["auc_mean"] > head["auc_mean"]
    assert combined["dice_mean"] == head["dice_mean"]  # the segmentation itself is the same


def test_the_test_split_is_scored_when_its_labels_exist(styles, tmp_path):
    result = _eval(styles, "topcon", "--split", "test")
    assert result["split"] == "test" and result["volumes"] == 3 and result["dice_mean"] >= 0
    kept = write_dataset(tmp_path / "kept", seed=1, test_labels=False, **SIZE)
    with pytest.raises(ValueError, match="no labels to evaluate against"):
        eval_script.main(["--seg-path", styles["ckpt"], "-d", str(kept), "--split", "test", "--out", f"{tmp_path}/o"])


def test_a_reference_that_marks_only_fluid_is_scored_by_the_fluid_figures(styles, tmp_path):
    """The public 2-D sets mark "fluid", not REA / SRF / PED: with every lesion grey of the reference turned into one
    (255), the any-fluid figures are those of the full reference, while the per-class ones lose their meaning."""
    import shutil

    from PIL import Image

    fluid_only = tmp_path / "fluid_only"
    shutil.copytree(styles["data"]["topcon"], fluid_only)
    for bmp in fluid_only.glob("*/label_images/*_labelMark/*.bmp"):
        grey = np.asarray(Image.open(bmp))
        Image.fromarray(np.where(grey > 0, 255, 0).astype(np.uint8)).save(bmp)
    argv = ["--seg-path", styles["ckpt"], "--split", "test", "--cache-dir", str(tmp_path / "c")]
    full = eval_script.main([*argv, "-d", str(styles["data"]["topcon"]), "--out", str(tmp_path / "full")])
    only = eval_script.main([*argv, "-d", str(fluid_only), "--out", str(tmp_path / "only")])
    keys = ("fluid_dice", "fluid_dice_bscan", "fluid_false_bscans", "fluid_area_ratio")
    print({k: round(full[k], 4) for k in keys})
    assert all(full[k] == pytest.approx(only[k]) for k in keys) and 0 < full["fluid_dice"] <= 1
    assert np.isnan(only["dice_SRF"]) and np.isnan(only["dice_PED"])  # no SRF or PED in a fluid-only reference
