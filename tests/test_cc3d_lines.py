"""Connected components of line-shaped volumes (napari_topo._cc3d).

cc3d 4.1.1 raises "maximum length exception" when it labels a (1, 1, n) volume holding
many runs at 26-connectivity; the fine-tune's threshold choice met it on a one-voxel
held-out line. The wrapper labels such volumes as 26-connectivity defines.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_topo import _cc3d as cc3d
from napari_topo.topology.metrics import compute_metrics
from napari_topo.topology.skeleton import skeletonize

#: The mask that failed (the held-out view of a tiny fine-tune): 12 runs along x.
FAILED = np.array(
    [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0]
    + [1, 0, 1, 0, 1, 0, 1],
    dtype=bool,
)


@pytest.mark.parametrize("shape", [(1, 1, 37), (1, 37, 1), (37, 1, 1)])
@pytest.mark.parametrize("connectivity", [26, 18, 6])
def test_a_line_of_runs_is_labelled_run_by_run(shape, connectivity):
    mask = FAILED.reshape(shape)
    labels, n = cc3d.connected_components(mask, connectivity=connectivity, return_N=True)
    expected, m = ndi.label(FAILED)
    assert n == m == 12
    assert np.array_equal(labels.ravel() > 0, FAILED)
    # one label per run, as scipy gives (same partition)
    pairs = set(zip(labels.ravel()[FAILED].tolist(), expected[FAILED].tolist(), strict=True))
    assert len(pairs) == 12
    kept = cc3d.dust(mask, threshold=2, connectivity=connectivity)
    assert kept.sum() == 3  # the one run of 3 voxels


def test_random_lines_and_other_shapes_match_scipy():
    rng = np.random.default_rng(0)
    full = ndi.generate_binary_structure(3, 3)
    for shape in [(1, 1, 200), (1, 200, 1), (2, 1, 50), (1, 6, 30), (5, 6, 7)]:
        for _ in range(20):
            mask = rng.random(shape) < 0.5
            _, n = cc3d.connected_components(mask, connectivity=26, return_N=True)
            assert n == ndi.label(mask, structure=full)[1], shape


def test_metrics_and_skeleton_of_a_line_shaped_volume():
    mask = FAILED.reshape(1, 1, -1)
    assert np.array_equal(skeletonize(mask) > 0, mask)  # one-voxel runs are their own
    m = compute_metrics(mask, mask)
    assert m["Dice"] == pytest.approx(1.0) and m["clDice"] == pytest.approx(1.0)
