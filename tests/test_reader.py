import shutil

import numpy as np
import pytest
from PIL import Image

from data.cache import VolumeCache
from data.dataset import SliceDataset, neighbour_indices, stack_neighbours
from data.oct import (
    DatasetError,
    detection_targets,
    find_volumes,
    grey_to_classes,
    list_slices,
    read_grey,
)


@pytest.fixture
def dataset_copy(tiny_dataset, tmp_path):
    dst = tmp_path / "oct"
    shutil.copytree(tiny_dataset, dst)
    return dst


def _first_volume_dirs(root, split="train"):
    rec = find_volumes(root, split)[0]
    return rec, rec.image_paths[0].parent, rec.label_paths[0].parent


def test_splits_are_found_from_the_folders(tiny_dataset):
    train, val, test = (find_volumes(tiny_dataset, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (4, 2, 2)
    assert all(r.label_paths is not None and r.num_slices == 8 for r in train + val)
    assert all(r.label_paths is not None for r in test)  # the generator writes them, and they are read
    assert not {r.pid for r in train} & {r.pid for r in val}


def test_slices_sort_numerically(tmp_path):
    folder = tmp_path / "P1.img"
    folder.mkdir()
    for i in range(1, 13):
        Image.fromarray(np.full((4, 4), i, np.uint8)).save(folder / f"{i}.bmp")
    (folder / ".DS_Store").write_bytes(b"junk")
    (folder / "Thumbs.db").write_bytes(b"junk")
    names = [p.name for p in list_slices(folder)]
    assert names == [f"{i}.bmp" for i in range(1, 13)]  # 2 before 10, stray files ignored


def test_label_mapping():
    grey = np.array([[0, 255], [191, 128]], np.uint8)
    assert grey_to_classes(grey).tolist() == [[0, 1], [2, 3]]


def test_bad_label_value_names_the_file_and_values(dataset_copy):
    _, _, label_dir = _first_volume_dirs(dataset_copy)
    bad = np.zeros((64, 48), np.uint8)
    bad[0, 0], bad[0, 1] = 7, 255
    Image.fromarray(bad).save(label_dir / "3.bmp")
    rec = find_volumes(dataset_copy, "train")[0]
    with pytest.raises(DatasetError, match=r"3\.bmp.*\[7\].*found values \[0, 7, 255\]"):
        VolumeCache(dataset_copy / "cache").load(rec)


def test_missing_label_slice(dataset_copy):
    _, _, label_dir = _first_volume_dirs(dataset_copy)
    (label_dir / "8.bmp").unlink()
    with pytest.raises(DatasetError, match=r"7 label slices for 8 image slices.*missing label slices \['8.bmp'\]"):
        find_volumes(dataset_copy, "train")


def test_missing_label_folder(dataset_copy):
    _, _, label_dir = _first_volume_dirs(dataset_copy)
    shutil.rmtree(label_dir)
    with pytest.raises(DatasetError, match="label folder .* not found"):
        find_volumes(dataset_copy, "train")


def test_corrupt_bmp_is_a_clear_error(dataset_copy):
    _, image_dir, _ = _first_volume_dirs(dataset_copy)
    data = (image_dir / "5.bmp").read_bytes()
    (image_dir / "5.bmp").write_bytes(data[: len(data) // 3])
    rec = find_volumes(dataset_copy, "train")[0]
    with pytest.raises(DatasetError, match=r"5\.bmp: cannot decode the image .* corrupt or truncated"):
        VolumeCache(dataset_copy / "cache").load(rec)


def test_gap_and_non_numeric_names(dataset_copy):
    _, image_dir, _ = _first_volume_dirs(dataset_copy)
    (image_dir / "4.bmp").rename(image_dir / "40.bmp")
    with pytest.raises(DatasetError, match=r"without gaps; missing \[4"):
        find_volumes(dataset_copy, "train")
    (image_dir / "40.bmp").rename(image_dir / "four.bmp")
    with pytest.raises(DatasetError, match="four.bmp: unexpected file"):
        find_volumes(dataset_copy, "train")


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder not found"):
        find_volumes(tmp_path / "nope", "train")
    with pytest.raises(DatasetError, match="Edema_trainingset/original_images"):
        find_volumes(tmp_path, "train")


def test_image_and_label_of_different_sizes(dataset_copy):
    rec, _, label_dir = _first_volume_dirs(dataset_copy)
    for p in rec.label_paths:
        Image.fromarray(np.zeros((32, 48), np.uint8)).save(p)
    with pytest.raises(DatasetError, match="label slices are 32x48 but image slices .* are 64x48"):
        VolumeCache(dataset_copy / "cache").load(find_volumes(dataset_copy, "train")[0])


def test_grey_rgb_and_palette_accepted_colour_and_16_bit_rejected(tmp_path):
    grey = (np.arange(64 * 48) % 256).astype(np.uint8).reshape(64, 48)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.bmp")
    assert (read_grey(tmp_path / "rgb.bmp") == grey).all()
    Image.fromarray(grey).convert("P").save(tmp_path / "pal.png")
    assert (read_grey(tmp_path / "pal.png") == grey).all()
    colour = np.stack([grey, grey, 255 - grey], -1)
    Image.fromarray(colour).save(tmp_path / "colour.bmp")
    with pytest.raises(DatasetError, match="colour.bmp: colour image"):
        read_grey(tmp_path / "colour.bmp")
    Image.fromarray(grey.astype(np.uint16) * 200).save(tmp_path / "deep.png")
    with pytest.raises(DatasetError, match="deep.png: image mode") as e:
        read_grey(tmp_path / "deep.png")
    assert "corrupt" not in str(e.value)  # a valid file of another mode, not a damaged one
    Image.fromarray(grey > 127).save(tmp_path / "bits.png")
    with pytest.raises(DatasetError, match=r"bits.png: image mode '1'") as e:
        read_grey(tmp_path / "bits.png")
    assert "corrupt" not in str(e.value)


def test_cache_decodes_once_and_notices_edits(dataset_copy, monkeypatch):
    import data.oct as oct_mod

    rec = find_volumes(dataset_copy, "train")[0]
    cache = VolumeCache(dataset_copy / "cache")
    image, labels = cache.load(rec)
    assert image.dtype == np.uint8 and image.shape == (8, 64, 48) and labels.max() <= 3
    assert isinstance(image, np.memmap)
    calls = []
    monkeypatch.setattr(oct_mod, "read_grey", lambda p: calls.append(p) or read_grey(p))
    again, _ = cache.load(rec)
    assert calls == [] and (again == image).all()  # nothing decoded the second time
    Image.fromarray(np.zeros((64, 48), np.uint8)).save(rec.image_paths[0])
    changed, _ = VolumeCache(dataset_copy / "cache").load(find_volumes(dataset_copy, "train")[0])
    assert len(calls) == 8 and changed[0].max() == 0


def test_list_dir_with_the_original_list_files(tiny_dataset, tmp_path):
    recs = find_volumes(tiny_dataset, "val")
    images = [str(r.image_paths[0].parent.relative_to(tiny_dataset)) for r in recs]
    labels = [str(r.label_paths[0].parent.relative_to(tiny_dataset)) for r in recs]
    (tmp_path / "val_images.txt").write_text("\n".join(images) + "\n")
    (tmp_path / "val_labels.txt").write_text("\n".join(labels) + "\n")
    assert find_volumes(tiny_dataset, "val", tmp_path) == recs


def test_neighbour_stacking_repeats_edges():
    assert neighbour_indices(np.array([0, 3, 7]), 8).tolist() == [[0, 0, 1], [2, 3, 4], [6, 7, 7]]
    vol = np.arange(4, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)
    assert stack_neighbours(vol, np.array([0]))[0, :, 0, 0].tolist() == [0, 0, 1]


def test_dataset_items_and_detection_targets(tiny_dataset, tmp_path):
    recs = find_volumes(tiny_dataset, "train")
    cache = VolumeCache(tmp_path / "cache")
    ds = SliceDataset(recs, cache, augment=None)
    assert len(ds) == 32
    item = ds[9]  # volume 1, slice 1
    image, labels = cache.load(recs[1])
    assert item["image"].dtype.is_floating_point is False and item["image"].shape == (3, 64, 48)
    assert (item["image"].numpy() == image[[0, 1, 2]]).all()
    assert (item["label"].numpy() == labels[1]).all()
    assert item["det"].tolist() == detection_targets(np.asarray(labels))[1].tolist()
    assert detection_targets(np.array([[[0, 1], [3, 0]]])).tolist() == [[1.0, 0.0, 1.0]]


def test_list_files_of_slice_files_name_whole_volumes(tiny_dataset, tmp_path):
    """The original list files name slice files; a volume is read whole, so a list that names only some slices
    (or a slice that is not there) is refused instead of scoring every slice of the folder."""
    recs = find_volumes(tiny_dataset, "val")
    rel = [[str(p.relative_to(tiny_dataset)) for p in paths] for r in recs for paths in (r.image_paths, r.label_paths)]
    images, labels = rel[0::2], rel[1::2]
    (tmp_path / "val_images.txt").write_text("".join(f"{p}\n" for vol in images for p in vol))
    (tmp_path / "val_labels.txt").write_text("".join(f"{p}\n" for vol in labels for p in vol))
    assert find_volumes(tiny_dataset, "val", tmp_path) == recs  # every slice listed: the same volumes
    n = len(images[0])
    partial = [vol[:3] if i == 0 else vol for i, vol in enumerate(images)]
    (tmp_path / "val_images.txt").write_text("".join(f"{p}\n" for vol in partial for p in vol))
    with pytest.raises(DatasetError, match=rf"lists 3 slice files of .*, which holds {n}; not listed: \['4.bmp'"):
        find_volumes(tiny_dataset, "val", tmp_path)
    extra = [[*vol, vol[0].replace("/1.bmp", f"/{n + 1}.bmp")] if i == 0 else vol for i, vol in enumerate(images)]
    (tmp_path / "val_images.txt").write_text("".join(f"{p}\n" for vol in extra for p in vol))
    with pytest.raises(DatasetError, match=rf"not in the folder: \['{n + 1}.bmp'\]"):
        find_volumes(tiny_dataset, "val", tmp_path)


def test_label_and_numbering_messages_say_what_is_wrong(dataset_copy):
    """More label slices than images, and slices numbered from 0, used to say "missing []"; an upper-case .IMG
    folder is the same patient as .img (test.py and predict.py name its outputs alike)."""
    import shutil

    rec = find_volumes(dataset_copy, "train")[0]
    label_dir = rec.label_paths[0].parent
    shutil.copy(label_dir / "1.bmp", label_dir / "9.bmp")
    with pytest.raises(
        DatasetError, match=r"9 label slices for 8 image slices .*; label slices without an image \['9.bmp'\]"
    ):
        find_volumes(dataset_copy, "train")
    (label_dir / "9.bmp").unlink()
    image_dir = rec.image_paths[0].parent
    for i in range(1, 9):
        (image_dir / f"{i}.bmp").rename(image_dir / f"{i - 1}.bmp")
    with pytest.raises(DatasetError, match=r"numbered 1..N without gaps; numbered 0..7, found 8 files"):
        find_volumes(dataset_copy, "train")
    for i in reversed(range(8)):
        (image_dir / f"{i}.bmp").rename(image_dir / f"{i + 1}.bmp")
    image_dir.rename(image_dir.with_name(f"{rec.pid}.IMG"))
    assert find_volumes(dataset_copy, "train")[0].pid == rec.pid


def test_a_damaged_label_folder_in_the_test_split_does_not_stop_test_py(dataset_copy, caplog):
    """test.py never reads test labels: one label slice missing there is a warning and the volume is read without
    labels; in a labelled split (train, val) it stays an error."""
    import logging

    rec = find_volumes(dataset_copy, "test")[0]
    assert rec.label_paths is not None
    rec.label_paths[-1].unlink()
    with caplog.at_level(logging.WARNING, "data.oct"):
        again = find_volumes(dataset_copy, "test")[0]
    assert again.label_paths is None and again.image_paths == rec.image_paths
    assert "read without labels" in caplog.text and "missing label slices" in caplog.text
    train = find_volumes(dataset_copy, "train")[0]
    train.label_paths[-1].unlink()
    with pytest.raises(DatasetError, match="missing label slices"):
        find_volumes(dataset_copy, "train")
