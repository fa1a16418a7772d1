"""Small phantoms that reproduce, on synthetic data, the ways the first models failed.

Issue 9 measured the first shipped models on real volumes: on contrast liver CT they
segmented air, on a plain noisy volume of four tubes they returned 60-90 "trees", and on
two-photon stacks large vessels came out hollow. Real data cannot run in CI, so these
phantoms carry each failure into the test suite and the benchmarks:

* :func:`ct_phantom` - an int16 CT in Hounsfield units: air around an elliptic body, a
  fat rim, a liver-like organ filling the body (110 +- 20 HU), contrast-filled vessel
  trees (about 170 HU), a curved bone plate (about 800 HU) and dark air-filled tubes
  (bowel gas, bronchi) that are not vessels;
* :func:`four_tubes` - the issue's uint16 volume of four bright tubes in Gaussian noise
  (contrast-to-noise 6, vessels under 1 % of voxels);
* :func:`sparse_tubes` - the same tubes in one quarter of a larger volume, noise alone
  elsewhere, for the "tile of noise read as vessel" failure;
* :func:`thick_tube_phantom` - a microscopy-like uint16 stack with one thick vessel
  (radius 14 voxels) beside thin ones, for the "hollow vessel" failure;
* :func:`tof_mra_head` - a time-of-flight MRA-like head: bright vessels in brain, a
  dark skull and a bright scalp (subcutaneous fat), the sheet the U-Nets mark.

All are deterministic from ``seed`` and return the ground truth with the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "ct_phantom",
    "four_tubes",
    "paint_tubes",
    "sparse_tubes",
    "thick_tube_phantom",
    "tof_mra_head",
    "vein_beside_spine",
]


def paint_tubes(shape, tubes: Sequence, labels: bool = False) -> np.ndarray:
    """Rasterise straight tubes (capsules) into a mask or a label image.

    Parameters
    ----------
    shape : tuple of 3 int
        Output shape ``(Z, Y, X)``.
    tubes : sequence of ``(start, end, radius)``
        End points in voxel coordinates ``(z, y, x)`` and the radius in voxels.
    labels : bool
        If True return int32 labels (tube ``k`` is ``k + 1``; later tubes win where they
        overlap), else a bool mask.

    Returns
    -------
    ndarray of bool or int32, shape ``shape``

    Raises
    ------
    ValueError
        If ``shape`` is not 3 positive sizes or a radius is not positive.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive sizes (z, y, x), got {shape!r}")
    out = np.zeros(shape, dtype=np.int32)
    for k, (a, b, r) in enumerate(tubes, start=1):
        a, b, r = np.asarray(a, float), np.asarray(b, float), float(r)
        if not r > 0:
            raise ValueError(f"tube {k}: radius must be > 0, got {r!r}")
        lo = np.maximum(np.floor(np.minimum(a, b) - r - 1).astype(int), 0)
        hi = np.minimum(np.ceil(np.maximum(a, b) + r + 2).astype(int), shape)
        if np.any(hi <= lo):
            continue
        z, y, x = (np.arange(l0, h0, dtype=np.float32) for l0, h0 in zip(lo, hi, strict=True))
        ab = b - a
        l2 = float(ab @ ab)
        dz, dy, dx = z[:, None, None] - a[0], y[None, :, None] - a[1], x[None, None, :] - a[2]
        t = np.clip((dz * ab[0] + dy * ab[1] + dx * ab[2]) / l2, 0, 1) if l2 > 0 else 0.0
        d2 = (dz - t * ab[0]) ** 2 + (dy - t * ab[1]) ** 2 + (dx - t * ab[2]) ** 2
        sl = tuple(slice(l0, h0) for l0, h0 in zip(lo, hi, strict=True))
        out[sl][d2 <= r * r] = k
    return out if labels else out > 0


def four_tubes(shape=(64, 256, 256), *, seed: int = 0, cnr: float = 6.0):
    """The issue-9 volume: four bright tubes (radii 1.5-4 voxels) in Gaussian noise.

    Parameters
    ----------
    shape : tuple of 3 int, optional
        ``(Z, Y, X)``; the default is the issue's size.
    seed : int, optional
        Seed of the noise and the tube placement.
    cnr : float, optional
        Contrast-to-noise ratio: (tube level - background level) / noise std.

    Returns
    -------
    image : ndarray of uint16, shape ``shape``
        Background about 1000, tubes about ``1000 + 60 * cnr``, noise std 60, with a
        one-voxel Gaussian point-spread function.
    labels : ndarray of int32, shape ``shape``
        Tube ``k`` is ``k + 1`` (4 separate trees); 0 is background.
    """
    rng = np.random.default_rng(seed)
    z, y, x = (int(s) for s in shape)
    tubes = []
    radii = [1.5, 2.5, 3.0, 4.0]
    for i, r in enumerate(radii):
        # each tube crosses the volume roughly along x, in its own band of y
        yc = (i + 0.5) * y / 4
        a = (rng.uniform(0.3, 0.7) * z, yc + rng.uniform(-0.08, 0.08) * y, 0.0)
        b = (rng.uniform(0.3, 0.7) * z, yc + rng.uniform(-0.08, 0.08) * y, x - 1.0)
        tubes.append((a, b, r))
    labels = paint_tubes(shape, tubes, labels=True)
    signal = ndi.gaussian_filter((labels > 0).astype(np.float32), 1.0)
    img = 1000.0 + 60.0 * cnr * signal + rng.normal(0.0, 60.0, size=shape)
    return np.clip(img, 0, 65535).astype(np.uint16), labels


def sparse_tubes(*, seed: int = 1, noise_seed: int = 5):
    """:func:`four_tubes` of 64 x 128 x 128 in one quarter of a 64 x 256 x 256 volume.

    The other three quarters hold i.i.d. Gaussian noise of the same level and spread
    (1000 +- 60), so most 64^3 inference tiles hold no vessel at all: a model that reads
    a tile of noise alone as vessel (each tile is normalised on its own) marks them.

    Parameters
    ----------
    seed : int, optional
        Seed of :func:`four_tubes` (tubes and their noise).
    noise_seed : int, optional
        Seed of the surrounding noise.

    Returns
    -------
    image : ndarray of uint16, shape (64, 256, 256)
    labels : ndarray of int32, shape (64, 256, 256)
        Tube ``k`` is ``k + 1``, all in ``[:, :128, :128]``; 0 is background.
    """
    image, labels = four_tubes((64, 128, 128), seed=seed)
    rng = np.random.default_rng(noise_seed)
    big = np.clip(np.rint(rng.normal(1000.0, 60.0, (64, 256, 256))), 0, 65535)
    big = big.astype(np.uint16)
    big[:, :128, :128] = image
    out = np.zeros(big.shape, labels.dtype)
    out[:, :128, :128] = labels
    return big, out


def thick_tube_phantom(shape=(48, 160, 160), *, seed: int = 0, radius: float = 14.0):
    """A fluorescence-like stack: one thick vessel beside thin ones, bright on dark.

    Parameters
    ----------
    shape : tuple of 3 int, optional
    seed : int, optional
    radius : float, optional
        Radius of the thick vessel in voxels (the thin ones have 2 and 3).

    Returns
    -------
    image : ndarray of uint16, shape ``shape``
    mask : ndarray of bool, shape ``shape``
    thick : ndarray of bool, shape ``shape``
        The thick vessel alone.
    """
    rng = np.random.default_rng(seed)
    z, y, x = shape
    zc = z / 2
    thick_t = [((zc, 0.3 * y, 0.0), (zc, 0.35 * y, x - 1.0), radius)]
    thin_t = [
        ((zc, 0.75 * y, 0.0), (zc + 4, 0.7 * y, x - 1.0), 2.0),
        ((zc - 6, 0.9 * y, 0.2 * x), (zc + 6, 0.55 * y, 0.9 * x), 3.0),
    ]
    thick = paint_tubes(shape, thick_t)
    mask = thick | paint_tubes(shape, thin_t)
    signal = ndi.gaussian_filter(mask.astype(np.float32), (1.5, 0.7, 0.7))
    img = 300.0 + 2500.0 * signal * rng.uniform(0.8, 1.2)
    img = rng.poisson(img).astype(np.float32) + rng.normal(0, 30, size=shape)
    return np.clip(img, 0, 65535).astype(np.uint16), mask, thick


def ct_phantom(shape=(64, 112, 112), *, seed: int = 0):
    """An int16 contrast CT in Hounsfield units with vessels, bone and air tubes.

    The vessel trees come from :func:`~napari_topo.data.synthetic.make_vessel_volume`
    (radii 1-5 voxels) and run inside a liver-like organ; the rest is built to make the
    first models' failure visible: air outside the body (-1000 HU), fat (-100 HU), two
    dark air-filled tubes inside the body (-900 HU, like bowel gas or bronchi) and a curved
    bone plate (800 HU).

    Returns
    -------
    dict
        ``hu`` (int16, shape ``shape``), ``vessels`` (bool), ``trees`` (int32),
        ``air_tubes`` (bool), ``bone`` (bool), ``body`` (bool), ``liver`` (bool),
        ``sources`` (``(n_trees, 3)`` int64 roots of the trees).
    """
    from .synthetic import make_vessel_volume

    rng = np.random.default_rng(seed)
    z, y, x = shape
    vol = make_vessel_volume(
        shape, n_trees=2, seed=seed, radius_range=(1.0, 5.0), randomize_image=False
    )
    zz, yy, xx = np.ogrid[:z, :y, :x]
    body = ((yy - y / 2) / (0.48 * y)) ** 2 + ((xx - x / 2) / (0.48 * x)) ** 2 < 1.0
    body = np.broadcast_to(body, shape).copy() | vol.mask
    # the organ fills the body but a fat rim under the skin (a large blob, not a tube
    # around the vessels: that would itself look like a vessel)
    liver = ndi.binary_erosion(body, iterations=6) | (body & vol.mask)
    hu = np.where(body, -100.0, -1000.0).astype(np.float32)  # fat inside the body
    hu[liver] = 110.0
    hu += np.where(body, rng.normal(0.0, 20.0, size=shape), 0.0).astype(np.float32)
    free = body & ~ndi.binary_dilation(vol.mask, iterations=3)
    air_tubes = (
        paint_tubes(
            shape,
            [
                ((0.2 * z, 0.1 * y, 0.15 * x), (0.8 * z, 0.2 * y, 0.85 * x), 3.0),
                ((0.5 * z, 0.85 * y, 0.1 * x), (0.6 * z, 0.8 * y, 0.9 * x), 2.5),
            ],
        )
        & free
    )
    # a curved bone plate (vertebra, pelvis, scapula: most bone a CT shows is plates and
    # blocks; ribs, bright tubes of bone, are a known confusion and are not modelled here)
    ring = np.sqrt(((yy - y / 2) / (0.44 * y)) ** 2 + ((xx - x / 2) / (0.44 * x)) ** 2)
    bone = np.broadcast_to((np.abs(ring - 0.95) < 0.05) & (yy > 0.7 * y), shape).copy()
    bone &= free & ~air_tubes
    hu[air_tubes] = -900.0
    hu[bone] = 800.0
    vessel_hu = np.float32(170.0)
    occupancy = ndi.gaussian_filter(vol.mask.astype(np.float32), 0.6)
    hu = hu + occupancy * (vessel_hu - hu)
    hu = ndi.gaussian_filter(hu, 0.5) + rng.normal(0.0, 12.0, size=shape)
    return {
        "hu": np.clip(np.round(hu), -1024, 3071).astype(np.int16),
        "vessels": vol.mask,
        "trees": vol.trees,
        "air_tubes": air_tubes,
        "bone": bone,
        "body": body,
        "liver": liver,
        "sources": vol.sources,
    }


def vein_beside_spine(
    shape=(32, 256, 256),
    spacing=(1.6, 0.57, 0.57),
    *,
    seed: int = 0,
    vein_radius: float = 10.0,
    bone_radius: float = 20.0,
    gap: float = 5.0,
    bone: bool = True,
):
    """An int16 contrast CT of a large vein beside a vertebra, in Hounsfield units.

    The development CT's portal vein and vena cava (3D-IRCADb-01 patient 01, median 191 HU
    in a ~105 HU liver) were mostly missed (16-23 % of their deep voxels found). This
    phantom reproduces it: a straight vein (radius ``vein_radius`` mm, 190 HU) along z
    in liver-like tissue
    (105 HU, correlated noise), and a vertebra-like cylinder (radius ``bone_radius`` mm,
    a 3 mm cortex at 900 HU around 250 HU marrow) ``gap`` mm from it, in fat; air
    outside a round body. With ``bone=False`` the vertebra and fat are left out (the
    vein alone, which the shipped U-Nets find whole). The models also mark a rim of the
    liver-like tissue just inside the body's edge (about 50 k voxels with unet-dice, far
    from the vein): score the vein's voxels, not the whole mask.

    Parameters
    ----------
    shape : (int, int, int)
        Voxels (z, y, x).
    spacing : (float, float, float)
        Voxel size, mm (z, y, x): the development CT's by default.
    seed : int
        Noise seed.
    vein_radius, bone_radius, gap : float
        mm.
    bone : bool
        Whether the vertebra (and the fat around it) is drawn.

    Returns
    -------
    dict
        ``hu`` (int16, shape ``shape``), ``vein`` (bool), ``bone`` (bool), ``body``
        (bool) and ``spacing`` (the given voxel size, mm).
    """
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing, dtype=float)
    _, yy, xx = (np.arange(n, dtype=np.float32) * s for n, s in zip(shape, sp, strict=True))
    cy, cx = yy[-1] / 2, xx[-1] / 2
    y2, x2 = np.meshgrid(yy, xx, indexing="ij")

    def noise():
        white = rng.normal(0.0, 20.0, size=shape)
        return 2.0 * ndi.gaussian_filter(white, (0.4, 1.0, 1.0))

    d_vein = np.hypot(y2 - cy, x2 - cx)
    hu = 105.0 + noise()
    bone_mask = np.zeros(shape, bool)
    if bone:
        by, bx = cy + 0.45 * (bone_radius + vein_radius), cx + vein_radius + gap + bone_radius
        d_bone = np.hypot(y2 - by, x2 - bx)
        fat = (d_bone <= bone_radius + 12.0) & (d_vein > vein_radius + 2.0)
        hu = np.where(fat[None], -100.0 + noise(), hu)
        inside = d_bone <= bone_radius
        hu = np.where(inside[None], 250.0 + noise(), hu)
        cortex = inside & (d_bone > bone_radius - 3.0)
        hu = np.where(cortex[None], 900.0, hu)
        bone_mask[:] = inside[None]
    vein = np.broadcast_to(d_vein <= vein_radius, shape).copy()
    hu = np.where(vein, 190.0 + noise(), hu)
    body = np.broadcast_to(np.hypot(y2 - cy, x2 - cx) < 0.48 * min(yy[-1], xx[-1]), shape)
    hu = np.where(body, hu, -1000.0)
    return {
        "hu": np.clip(np.round(hu), -1024, 3071).astype(np.int16),
        "vein": vein,
        "bone": bone_mask,
        "body": body.copy(),
        "spacing": tuple(float(v) for v in sp),
    }


def tof_mra_head(shape=(96, 192, 192), spacing=(0.6, 0.4, 0.4), *, seed: int = 0):
    """A uint16 time-of-flight MRA-like head: vessels, brain, skull and a bright scalp.

    Time-of-flight MRA shows inflowing blood bright, and also fat (short T1): the
    subcutaneous fat of the scalp is a bright shell around the head, about as bright as
    the smaller vessels, and the shipped U-Nets mark it (a sheet, not a tube). An
    ellipsoidal head: brain (180 a.u., smooth texture), ventricles (90), a skull that is
    dark (40) and a scalp shell (420) in air (15); vessel trees from
    :func:`~napari_topo.data.synthetic.make_vessel_volume` (radii 1-4 voxels, 3 trees)
    inside the brain, 650 a.u. at the centre fading to 400 at the brain's edge (inflow
    saturation); a light blur and Rician noise (sigma 18).

    Parameters
    ----------
    shape : (int, int, int)
        Voxels (z, y, x), each at least 64.
    spacing : (float, float, float)
        Voxel size, mm (z, y, x).
    seed : int
        Vessel trees and noise.

    Returns
    -------
    dict
        ``image`` (uint16, shape ``shape``), ``vessels`` (bool), ``scalp`` (bool),
        ``brain`` (bool) and ``spacing``.
    """
    from .synthetic import make_vessel_volume

    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 64:
        raise ValueError(f"shape must be 3 sizes of at least 64; got {shape}")
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing, dtype=float)
    inner = tuple(int(round(n * 2 / 3)) for n in shape)
    vol = make_vessel_volume(inner, n_trees=3, radius_range=(1.0, 4.0), seed=seed)
    lo = [(n - m) // 2 for n, m in zip(shape, inner, strict=True)]
    vessels = np.zeros(shape, bool)
    vessels[tuple(slice(a, a + m) for a, m in zip(lo, inner, strict=True))] = vol.mask
    axes = [(np.arange(n) - n / 2) * s for n, s in zip(shape, sp, strict=True)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    half = [0.45 * n * s for n, s in zip(shape, sp, strict=True)]
    r = np.sqrt((zz / half[0]) ** 2 + (yy / half[1]) ** 2 + (xx / half[2]) ** 2)
    brain = r < 0.85
    skull = (r >= 0.85) & (r < 0.93)
    scalp = (r >= 0.93) & (r < 1.0)
    texture = ndi.gaussian_filter(rng.normal(size=shape).astype(np.float32), 3.0)
    img = np.full(shape, 15.0, dtype=np.float32)
    img[brain] = 180.0 + 75.0 * texture[brain]
    img[skull] = 40.0
    img[scalp] = 420.0
    ventricles = (
        np.sqrt(
            (zz / (0.3 * half[0])) ** 2
            + (yy / (0.17 * half[1])) ** 2
            + ((np.abs(xx) - 0.17 * half[2]) / (0.11 * half[2])) ** 2
        )
        < 1.0
    )
    img[ventricles] = 90.0
    vessels &= brain
    inflow = 650.0 - 250.0 * np.clip(r, 0.0, 1.0)
    img[vessels] = inflow[vessels]
    img = ndi.gaussian_filter(img, 0.6)
    real = img + rng.normal(0.0, 18.0, shape)
    imag = rng.normal(0.0, 18.0, shape)
    img = np.clip(np.round(np.hypot(real, imag)), 0, 65535).astype(np.uint16)
    return {
        "image": img,
        "vessels": vessels,
        "scalp": scalp,
        "brain": brain,
        "spacing": tuple(float(v) for v in sp),
    }
