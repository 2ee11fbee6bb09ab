"""``--random-jpeg Q``: half of the training samples pass through a JPEG round trip at quality U(Q, 95), as a
publisher's copy of a photo or a B-scan would (issue 25: the DRIVE model lost 0.008 AUC-ROC on JPEG 75 copies)."""

import dataclasses

import numpy as np
import pytest
import torch

from data.dataset import PhotoPatchDataset
from data.photos import Photo
from data.transforms import Augment, jpeg_round_trip
from utils.config import Settings


def _flat(values) -> torch.Tensor:
    return torch.stack([torch.full((16, 16), v, dtype=torch.uint8) for v in values])


def test_a_flat_plane_keeps_only_its_quantised_dc_term():
    # by hand: libjpeg's quality 10 scales the luminance table by 5000 / 10 %, so the DC step is 16 * 5 = 80; a flat
    # block of 100 has DC (100 - 128) * 8 = -224 -> round(-224 / 80) = -3 -> -240 / 8 + 128 = 98; 60 -> -7 steps -> 58
    out = jpeg_round_trip(_flat([100, 128, 60]), quality=10, colour=False)
    assert [sorted(out[i].unique().tolist()) for i in range(3)] == [[98], [128], [58]]


def test_grey_planes_are_compressed_apart_and_colour_ones_together():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (3, 32, 32), dtype=np.uint8))
    other = image.clone()
    other[1:] = 255 - other[1:]
    # OCT neighbours are separate grey planes: plane 0 does not depend on planes 1 and 2
    assert torch.equal(jpeg_round_trip(image, 50, False)[0], jpeg_round_trip(other, 50, False)[0])
    # a photo is one colour image: its channels share the luminance, so plane 0 depends on the others
    assert not torch.equal(jpeg_round_trip(image, 50, True)[0], jpeg_round_trip(other, 50, True)[0])


def test_lower_quality_loses_more():
    x = np.linspace(0, 1, 64)
    texture = (127.5 + 120 * np.sin(9 * x[:, None]) * np.cos(13 * x[None, :])).astype(np.uint8)
    image = torch.from_numpy(np.stack([texture, texture.T, 255 - texture]))
    errors = [(jpeg_round_trip(image, q, True).float() - image.float()).abs().mean().item() for q in (95, 75, 30, 5)]
    assert errors == sorted(errors) and errors[0] < 2.5 and errors[-1] > 10, errors


def test_half_the_draws_are_compressed_at_qualities_spanning_the_range_and_the_draw_is_seeded():
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.integers(0, 256, (3, 24, 24), dtype=np.uint8))
    label = torch.zeros(24, 24, dtype=torch.uint8)
    aug = Augment(flip=False, jpeg=40, colour=True)
    trips = {q: jpeg_round_trip(image, q, True) for q in range(1, 96)}
    qualities = []
    for d in range(300):
        out, out_label = aug(image, label, torch.Generator().manual_seed(d))
        again, _ = aug(image, label, torch.Generator().manual_seed(d))
        assert torch.equal(out, again) and torch.equal(out_label, label)
        if not torch.equal(out, image):
            matches = [q for q, trip in trips.items() if torch.equal(out, trip)]
            assert matches and min(matches) >= 40, matches  # a round trip at a quality in [40, 95]
            qualities.append(matches[0])
    assert 110 <= len(qualities) <= 190, len(qualities)  # half of 300
    # uniform over the 56 qualities: both ends are reached and the middle is not favoured
    assert min(qualities) <= 42 and max(qualities) >= 93 and 55 < np.mean(qualities) < 80, qualities


def test_the_colour_round_trip_is_the_held_out_jpeg_copies_encoder():
    """Training copies and ``tools.rescale_photos --jpeg`` copies are made by one encoder (channel order included)."""
    from tools.rescale_photos import recolour

    rng = np.random.default_rng(3)
    rgb = np.repeat(np.repeat(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), 4, 0), 4, 1)
    decoded, _ = recolour(rgb, None, 60)
    trip = jpeg_round_trip(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))), 60, True)
    assert np.array_equal(trip.numpy().transpose(1, 2, 0), decoded)
    swapped = jpeg_round_trip(torch.from_numpy(np.ascontiguousarray(rgb[..., ::-1].transpose(2, 0, 1))), 60, True)
    assert not np.array_equal(swapped.numpy()[::-1].transpose(1, 2, 0), decoded)  # RGB order matters to it


def test_off_by_default_and_quality_checked():
    assert Settings().random_jpeg == 0 and Augment().jpeg == 0
    from engine.trainer import augment_for

    assert augment_for(Settings(random_jpeg=50)).colour is False  # OCT inputs: three grey planes
    with pytest.raises(ValueError, match="random_jpeg"):
        Settings(random_jpeg=96).validate()
    with pytest.raises(ValueError, match="jpeg"):
        Augment(jpeg=-1)


def test_train_py_passes_it_on_and_fundus_patches_are_compressed_as_colour_photos(monkeypatch):
    import tasks.vessel
    from engine.cli import train_settings
    from engine.trainer import augment_for
    from train import parse_args

    s = train_settings(parse_args(["--task", "vessel", "-s", "32", "--random-jpeg", "30"]))
    assert s.random_jpeg == 30 and augment_for(s).jpeg == 30
    seen = {}
    monkeypatch.setattr(
        tasks.vessel, "PhotoPatchDataset", lambda photos, augment, *a, **k: seen.setdefault("a", augment)
    )
    task = tasks.vessel.VesselTask(s)
    photo = Photo("p", np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8), np.ones((64, 64), bool), None)
    monkeypatch.setattr(task, "load", lambda record: photo)
    task.train_dataset(["one record"], augment_for(s))
    assert seen["a"].jpeg == 30 and seen["a"].colour and seen["a"].placement == "inside"
    # the patch dataset applies it: a flat photo of 100 comes back as 100, or moved by a low-quality round trip
    grey = Photo("g", np.full((64, 64, 3), 100, np.uint8), np.zeros((64, 64), np.uint8), np.ones((64, 64), bool), None)
    only_jpeg = dataclasses.replace(seen["a"], brightness=0.0, contrast=0.0, gamma=0.0)
    values = {int(PhotoPatchDataset([grey], only_jpeg, 40)[i]["image"].float().mean().round()) for i in range(40)}
    assert 100 in values and len(values) > 1, values
    # a preprocessed patch (green channel, CLAHE) is not what a publisher compresses: refused, naming both options
    green = tasks.vessel.VesselTask(s.with_task(preprocess="green"))
    monkeypatch.setattr(green, "load", lambda record: photo)
    with pytest.raises(ValueError, match="--random-jpeg with --preprocess green"):
        green.train_dataset(["one record"], augment_for(s))
