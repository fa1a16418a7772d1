"""Region-shaped masks (organs, tumours) against tube-shaped ones (vessels)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_topo.data import make_vessel_volume
from napari_topo.topology.shape import REGION_RATIO, looks_like_region, thickness_ratio


def _ellipsoid(shape, semi_axes, spacing=(1.0, 1.0, 1.0)):
    grid = np.indices(shape).astype(float)
    centre = [(n - 1) / 2 for n in shape]
    r2 = sum(
        ((g - c) * s / a) ** 2 for g, c, s, a in zip(grid, centre, spacing, semi_axes, strict=True)
    )
    return r2 < 1


@pytest.mark.parametrize(
    ("semi_axes", "low"),
    [((25, 25, 25), 0.17), ((10, 20, 30), 0.075)],
)
def test_balls_and_ellipsoids_are_regions(semi_axes, low):
    mask = _ellipsoid((64, 64, 64), semi_axes)
    ratio = thickness_ratio(mask)
    assert ratio > low
    assert looks_like_region(mask)
    # a liver-and-tumour label volume (LiTS' segmentation files): 1 and 2 alike
    labels = mask.astype(np.uint8)
    labels[30:34, 30:34, 30:34] = 2
    assert looks_like_region(labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("shape", "radii"), [((64, 64, 64), (1, 6)), ((96, 96, 96), (1, 12))])
def test_vessel_trees_are_not_regions(seed, shape, radii):
    mask = make_vessel_volume(shape, seed=seed, radius_range=radii, randomize_image=False).mask
    ratio = thickness_ratio(mask)
    assert ratio < (0.04 if radii[1] <= 6 else REGION_RATIO)
    assert not looks_like_region(mask)


def test_a_straight_tube_is_not_a_region():
    z, y, x = np.indices((64, 64, 64))
    tube = ((y - 32) ** 2 + (x - 32) ** 2 < 9) & (z >= 2) & (z < 62)
    assert thickness_ratio(tube) == pytest.approx(1.5 / 60, abs=0.002)
    assert not looks_like_region(tube)


def test_the_ratio_is_measured_in_spacing_units():
    # a ball of radius 20 mm on 2 x 1 x 1 mm voxels (squashed in voxel space)
    spacing = (2.0, 1.0, 1.0)
    ball = _ellipsoid((32, 64, 64), (20, 20, 20), spacing)
    assert thickness_ratio(ball, spacing) == pytest.approx(
        thickness_ratio(_ellipsoid((64, 64, 64), (20, 20, 20))), rel=0.1
    )
    # a tube along z, 2 mm voxels along it: thin for its length in mm, not in voxels
    z, y, x = np.indices((40, 16, 16))
    tube = ((y - 8) ** 2 + (x - 8) ** 2 < 9) & (z >= 2) & (z < 38)
    assert not looks_like_region(tube, (4.0, 1.0, 1.0))
    assert thickness_ratio(tube, (4.0, 1.0, 1.0)) < thickness_ratio(tube) / 3


def test_large_and_read_only_inputs_are_sampled(tmp_path):
    mask = np.zeros((200, 200, 200), np.uint8)  # 8 M voxels: read with a stride of 2
    mask[20:180, 20:180, 20:180] = _ellipsoid((160, 160, 160), (70, 70, 70))
    path = tmp_path / "liver.npy"
    np.save(path, mask)
    mapped = np.load(path, mmap_mode="r")  # read-only
    assert looks_like_region(mapped)
    assert thickness_ratio(mapped) == pytest.approx(thickness_ratio(mask), rel=1e-6)


def test_too_little_foreground_cannot_tell_and_bad_input_raises():
    tiny = np.zeros((16, 16, 16), bool)
    tiny[8, 8, 4:10] = True
    assert thickness_ratio(tiny) is None
    assert not looks_like_region(tiny)
    assert thickness_ratio(np.zeros((8, 8), bool)) is None
    disk = _ellipsoid((1, 64, 64), (1, 25, 25))[0]
    assert looks_like_region(disk)  # 2D works too
    with pytest.raises(ValueError, match="2D or 3D"):
        thickness_ratio(np.zeros((2, 2, 2, 2)))
    assert looks_like_region(disk[None])  # a (1, y, x) mask is measured as 2D
    assert thickness_ratio(disk, (-1.0, 1.0)) == thickness_ratio(disk)  # a flipped axis
    for bad in ((0.0, 1.0), (1.0, 1.0, 1.0), 2.0, (np.nan, 1.0)):
        with pytest.raises(ValueError, match="non-zero numbers"):
            thickness_ratio(disk, bad)


def test_two_organs_apart_are_regions_not_one_long_shape():
    # KiTS' segmentation files hold both kidneys (and tumours): far apart, their joint
    # bounding box is long, each kidney's is not
    spacing = (2.5, 0.8, 0.8)
    kidney = _ellipsoid((40, 100, 70), (55, 30, 20), spacing)
    both = np.zeros((40, 100, 300), np.uint8)
    both[:, :, :70] = kidney
    both[:, :, 230:] = kidney
    both[18:22, 40:44, 30:34] = 2  # a tumour
    assert thickness_ratio(both, spacing) == pytest.approx(
        thickness_ratio(kidney, spacing), rel=0.05
    )
    assert looks_like_region(both, spacing)


def test_a_cropped_organ_is_still_a_region():
    # the array's faces are not the mask's edge: a ground truth cropped to a slab of a
    # liver (as for a region run) read as thin when they were
    ball = _ellipsoid((64, 64, 64), (30, 30, 30))
    for crop in (ball[20:44], ball[28:36], ball[16:48, 8:56, 8:56]):
        assert looks_like_region(crop), crop.shape
    assert thickness_ratio(np.ones((16, 16, 16), bool)) is None  # no edge at all
