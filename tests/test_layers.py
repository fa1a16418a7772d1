"""Layer data tuples of empty results, and :func:`napari_topo.layers.create_layers`.

An empty result (nothing above the threshold) is a valid result: every layer function
returns a tuple napari turns into an (empty) layer, and ``create_layers`` makes all of a
result's layers or raises one short error naming the layer it could not make. No Qt.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari.layers import Image, Labels, Points, Shapes  # noqa: E402

from napari_topo import layers as L  # noqa: E402
from napari_topo.analysis import VesselAnalysis  # noqa: E402


@pytest.mark.parametrize("ndim", [2, 3])
def test_empty_centerline_is_a_layer_napari_accepts(ndim):
    data, meta, kind = L.points_layer(
        np.zeros((0, ndim)),
        np.zeros(0),
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
        name="v",
        scale=(2.0,) * ndim,
    )
    (layer,) = L.create_layers([(data, meta, kind)])
    assert isinstance(layer, Points) and layer.data.shape == (0, ndim)
    assert list(layer.features.columns) == ["id", "radius", "tree", "parent"]
    assert L.layer_kind(layer) == "centerline"
    # points added later get the colour of unassigned points
    layer.add(np.ones(ndim))
    np.testing.assert_allclose(layer.face_color[0], L.UNASSIGNED_COLOR)


def test_an_empty_analysis_gives_every_layer_empty():
    analysis = VesselAnalysis.from_outputs(
        {"vessel": np.zeros((12, 12, 12), np.float32)}, spacing=(2.0, 1.0, 1.0)
    )
    assert not analysis.mask.any() and len(analysis.points) == 0
    tuples = analysis.to_layers("empty", scale=(2.0, 1.0, 1.0), skeleton=True)
    made = L.create_layers(tuples)
    kinds = {L.layer_kind(layer): layer for layer in made}
    assert list(kinds) == ["probability", "mask", "skeleton", "trees", "branches", "centerline"]
    assert isinstance(kinds["probability"], Image)
    for kind in ("mask", "skeleton", "trees"):
        assert isinstance(kinds[kind], Labels) and not kinds[kind].data.any()
    assert isinstance(kinds["branches"], Shapes) and kinds["branches"].nshapes == 0
    assert kinds["centerline"].data.shape == (0, 3)
    for layer in made:
        np.testing.assert_allclose(layer.scale, (2.0, 1.0, 1.0))


def test_create_layers_is_all_or_nothing_with_a_one_line_reason():
    good = L.mask_layer(np.zeros((4, 4, 4), bool), name="v")
    data, meta, kind = L.points_layer(np.ones((3, 3)), name="v")
    bad = (data, {**meta, "size": np.ones(7)}, kind)  # 7 sizes for 3 points: napari refuses
    with pytest.raises(L.LayerBuildError) as info:
        L.create_layers([good, bad, good])
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.name, err.layer_type) == ("v centerline", "points")
    message = str(err)
    assert message.startswith("could not make the points layer 'v centerline' (")
    assert "\n" not in message and len(message) < 260
    with pytest.raises(L.LayerBuildError, match="could not make the unknown layer"):
        L.create_layers([("just data",)])
    assert L.create_layers([]) == []


def test_reference_and_prediction_trees_are_clearly_apart():
    # A ground truth shown with a result: light, opaque outlines against saturated fills.
    # No reference colour is near any prediction colour (trees 1..40 of both), in hue
    # purity (HSV saturation) and in RGB distance.
    import colorsys

    pred, ref = L.tree_colors(40)[:, :3], L.tree_colors(40, "reference")[:, :3]
    sat = {
        name: np.array([colorsys.rgb_to_hsv(*c)[1] for c in rgb])
        for name, rgb in (("pred", pred), ("ref", ref))
    }
    assert sat["ref"].max() <= 0.25 and sat["pred"].min() >= 0.6, sat
    # light: they stand out of a dark or noisy grey image
    assert min(colorsys.rgb_to_hsv(*c)[2] for c in ref) >= 0.85
    distance = np.linalg.norm(ref[:, None] - pred[None], axis=-1)
    assert distance.min() > 0.35, np.unravel_index(distance.argmin(), distance.shape)
    # neighbouring reference ids still differ (brightness alternates)
    assert (np.linalg.norm(np.diff(ref, axis=0), axis=1) > 0.1).all()
    trees = np.zeros((4, 8, 8), np.uint8)
    trees[1:3, 2:6, 2:6] = 1
    # Outlines (napari's Labels takes no contour argument: create_layers sets it) ...
    reference, result = L.create_layers(
        [L.trees_layer(trees, 1, palette="reference"), L.trees_layer(trees, 1)]
    )
    assert reference.contour == L.REFERENCE_CONTOUR >= 1
    assert result.contour == 0  # a result's trees are filled
    # ... once: a contour the user set afterwards is kept.
    reference.contour = 0
    assert not L.apply_look(reference) and reference.contour == 0
    assert not L.apply_look(result) and result.contour == 0
    plain = Labels(*L.trees_layer(trees, 1, palette="reference")[:1])
    assert not L.apply_look(plain) and plain.contour == 0  # not ours: untouched
