"""The empty-tile test: which tiles hold nothing but noise, and predict() skipping them."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_topo.data.phantoms import sparse_tubes
from napari_topo.inference.empty_tiles import (
    KAPPA,
    Z_THRESHOLD,
    empty_tiles,
    tile_structure_scores,
)
from napari_topo.inference.pipeline import predict
from napari_topo.models.registry import AUTO_NORMALIZATION, ModelCard


def _scores(arr) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(arr, np.float32))[:, None]
    return tile_structure_scores(t).numpy()


def _tube(radius: float, contrast: float, rng, n: int = 8) -> np.ndarray:
    zz, yy = np.mgrid[:64, :64]
    disc = ((zz - 31.5) ** 2 + (yy - 31.5) ** 2 <= radius**2).astype(np.float32)
    tube = np.repeat(ndi.gaussian_filter(disc, 0.5)[:, :, None], 64, axis=2)
    return np.stack([rng.normal(0, 1, (64, 64, 64)) + contrast * tube for _ in range(n)])


def test_kappa_is_the_smoothed_to_residual_ratio_of_white_noise():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (1, 1, 96, 96, 96))
    g = np.exp(-(np.arange(-3, 4) ** 2) / 2.0)
    g /= g.sum()
    s = x[0, 0]
    for axis in range(3):
        s = ndi.correlate1d(s, g, axis=axis, mode="constant")
    inner = (slice(3, -3),) * 3
    ratio = s[inner].std() / (x[0, 0][inner] - s[inner]).std()
    assert ratio == pytest.approx(KAPPA, rel=0.02)


def test_white_noise_tiles_are_empty():
    rng = np.random.default_rng(0)
    scores = np.concatenate([_scores(rng.normal(0, 1, (8, 64, 64, 64))) for _ in range(6)])
    # 48 tiles: about 4.3-6 (the module docstring's figures)
    assert 4.0 < scores.min() and scores.max() < 6.5, scores
    assert (scores < Z_THRESHOLD).mean() >= 0.9
    # Poisson counts (photon noise): skewed at a low mean, so fewer tiles are called empty
    assert (_scores(rng.poisson(20, (8, 64, 64, 64))) < Z_THRESHOLD).mean() >= 0.75
    assert (_scores(rng.poisson(3, (8, 64, 64, 64))) < Z_THRESHOLD).mean() >= 0.25


@pytest.mark.parametrize(
    ("radius", "contrast"), [(1.0, 2.0), (2.0, 1.0), (1.5, 3.0), (4.0, 0.5), (6.0, 0.4)]
)
def test_a_faint_tube_is_structure(radius, contrast):
    # thin ones show at the fine scale, thick faint ones at the 2 x 2 x 2 scale (radius 6
    # at 0.4 sd: the fine scale alone called 5 tiles in 8 empty)
    tiles = torch.from_numpy(_tube(radius, contrast, np.random.default_rng(1)).astype(np.float32))
    assert not empty_tiles(tiles[:, None]).any()


def test_a_thin_tube_at_the_edge_of_visibility_is_mostly_run():
    # radius 1 voxel at 1.5 noise sd: the line scale catches what the blob scales miss
    tiles = _tube(1.0, 1.5, np.random.default_rng(7), n=16)
    assert (_scores(tiles) >= Z_THRESHOLD).mean() >= 0.85


def test_constant_clipped_and_correlated_tiles():
    tiles = np.zeros((4, 64, 64, 64), np.float32)
    tiles[1] = 0.7  # constant: the air around a body after a CT window
    tiles[2, :, :, 32:] = 1.0  # a step in clipped data: no residual spread, structure
    rng = np.random.default_rng(2)
    tiles[3] = ndi.gaussian_filter(rng.normal(0, 1, (64, 64, 64)), 1.5)  # correlated noise
    s = _scores(tiles)
    assert s[0] == 0 and s[1] == 0
    assert s[2] > 1e3  # the residual's spread is rounding alone
    assert s[3] > 5 * Z_THRESHOLD  # read as structure: always run (68)
    assert empty_tiles(torch.from_numpy(tiles)[:, None]).tolist() == [True, True, False, False]


def test_small_or_misshapen_tiles():
    small = torch.zeros((2, 1, 16, 64, 64))
    assert not empty_tiles(small).any()  # too few voxels to judge: run
    with pytest.raises(ValueError, match=r"\(B, 1, Z, Y, X\)"):
        tile_structure_scores(torch.zeros((2, 64, 64, 64)))
    with pytest.raises(ValueError, match="at least 14"):
        tile_structure_scores(torch.zeros((1, 1, 12, 64, 64)))
    # a non-finite voxel: never called empty
    noise = torch.from_numpy(np.random.default_rng(5).normal(0, 1, (1, 1, 64, 64, 64)))
    noise[0, 0, 10, 10, 10] = float("nan")
    assert not empty_tiles(noise.float()).any()


class _Counting(torch.nn.Module):
    """A network that calls everything vessel and counts the tiles it sees."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor(5.0))
        self.seen = 0

    def forward(self, x):
        self.seen += x.shape[0]
        return torch.zeros_like(x) + self.bias


def _card():
    return ModelCard(name="counting", architecture="unet3d", normalization=AUTO_NORMALIZATION)


def test_predict_skips_empty_tiles_and_gives_them_zero():
    big, labels = sparse_tubes()
    net = _Counting()
    out = predict(big, (net, _card()), device="cpu", zoom=1)
    assert out.compute["empty tiles"] == "16 of 25 tiles empty, not run"
    assert net.seen == 25 - 16
    prob = out["vessel"]
    assert prob[labels > 0].min() > 0.9  # every tube voxel lies in a tile that ran
    # a quarter no tube reaches, far from the tubes' tiles: covered by empty tiles only
    assert prob[:, 200:, 200:].max() == 0
    # off: every tile runs, nothing is said
    net_all = _Counting()
    out_all = predict(big, (net_all, _card()), device="cpu", zoom=1, skip_empty_tiles=False)
    assert net_all.seen == 25
    assert out_all.compute["empty tiles"] == "not tested: every tile run"
    assert out_all["vessel"].min() > 0.99
    with pytest.raises(ValueError, match="skip_empty_tiles"):
        predict(big, (net_all, _card()), device="cpu", skip_empty_tiles="no")


def test_a_first_batch_of_empty_tiles_is_not_blended_in():
    # the outputs' shapes are unknown until the network has run once: it runs on one
    # tile to learn them, and that prediction is thrown away
    rng = np.random.default_rng(4)
    vol = rng.normal(100, 5, (64, 64, 256)).astype(np.float32)
    vol[:, 28:36, 200:] += 60  # a bar in the last two tiles only (x starts 144, 192)
    net = _Counting()
    out = predict(vol, (net, _card()), device="cpu", zoom=1, batch_size=1)
    assert out.compute["empty tiles"] == "3 of 5 tiles empty, not run"
    assert net.seen == 1 + 2  # the probe, and the bar's two tiles
    assert out["vessel"][..., :144].max() == 0  # only skipped tiles cover these
    assert out["vessel"][:, 30, 230].min() > 0.9


def test_noise_in_the_first_corner_is_not_read_as_vessel():
    # the sparse-tubes volume mirrored: the tubes in the last corner, noise where the
    # sliding window starts
    big, labels = sparse_tubes()
    big, labels = big[::-1, ::-1, ::-1].copy(), labels[::-1, ::-1, ::-1].copy()
    net = _Counting()
    out = predict(big, (net, _card()), device="cpu", zoom=1)
    assert out.compute["empty tiles"] == "16 of 25 tiles empty, not run"
    assert net.seen == 1 + 9
    assert out["vessel"][:, :40, :40].max() == 0
    assert out["vessel"][labels > 0].min() > 0.9


def test_the_threshold_reaches_the_line_scale():
    tiles = torch.from_numpy(_tube(1.0, 2.0, np.random.default_rng(8), n=8).astype(np.float32))
    scores = tile_structure_scores(tiles[:, None], threshold=100.0)
    assert (empty_tiles(tiles[:, None], threshold=100.0) == (scores < 100.0)).all()
    assert (scores >= tile_structure_scores(tiles[:, None])).all()


def test_skipped_tiles_take_no_part_in_the_blend():
    from napari_topo.inference.sliding import sliding_window_inference

    vol = np.zeros((32, 32, 160), np.float32)
    vol[..., 80:] = 1.0  # tiles starting at x >= 80 (of 0, 16, ..., 128) are "empty" here

    def skip(x):
        return x.flatten(1).amin(dim=1) > 0.5

    stats = {}
    res = sliding_window_inference(
        vol, lambda x: torch.ones_like(x), tile=32, overlap=0.5, skip=skip, stats=stats
    )[0]
    assert stats == {"tiles": 9, "skipped": 4}
    # a tile that ran keeps its value where it overlaps a skipped one (zeros blended in
    # with full weight pulled it down before); only skipped tiles: 0
    assert np.all(res[..., :96] == 1.0)
    assert np.all(res[..., 96:] == 0.0)
    plain = sliding_window_inference(vol, lambda x: 2 * x + 1, tile=32, overlap=0.5)
    same = sliding_window_inference(
        vol,
        lambda x: 2 * x + 1,
        tile=32,
        overlap=0.5,
        skip=lambda x: torch.zeros(len(x), dtype=bool),
    )
    np.testing.assert_allclose(same, plain, rtol=1e-6)
    with pytest.raises(ValueError, match="skip returned shape"):
        sliding_window_inference(vol, lambda x: x, tile=32, skip=lambda x: torch.zeros(3))
    with pytest.raises(ValueError, match="skip must be callable"):
        sliding_window_inference(vol, lambda x: x, tile=32, skip=True)


def test_a_faint_vessel_beside_an_empty_tile_keeps_its_probability():
    # a bar crossing from a tile with structure into the overlap of one without: the
    # network's output there is what it was with every tile run
    rng = np.random.default_rng(6)
    vol = rng.normal(100, 10, (64, 64, 208)).astype(np.float32)
    vol[28:36, 28:36, :120] += 60
    net = _Counting()
    on = predict(vol, (net, _card()), device="cpu", zoom=1)
    off = predict(vol, (_Counting(), _card()), device="cpu", zoom=1, skip_empty_tiles=False)
    assert on.compute["empty tiles"].startswith("1 of 4")
    covered = np.zeros(vol.shape, bool)
    covered[..., :160] = True  # covered by a tile that ran (starts 0, 48, 96)
    np.testing.assert_allclose(on["vessel"][covered], off["vessel"][covered], rtol=1e-5)
    assert on["vessel"][..., 160:].max() == 0
