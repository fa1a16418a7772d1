"""Tests of napari_topo.data.io: round trips, axis order, spacing, laziness, errors."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from napari_topo.data.io import (
    SUPPORTED_SUFFIXES,
    Volume,
    VolumeReadError,
    holds_dicom,
    is_dicom_folder,
    read_volume,
    suffix_of,
    volume_stem,
    write_volume,
)

SPACING = (2.0, 0.6, 0.5)


def _asymmetric(dtype=np.float32, shape=(4, 5, 6)) -> np.ndarray:
    """Distinct values everywhere, so any transposition or flip shows."""
    return np.arange(np.prod(shape)).reshape(shape).astype(dtype)


# ------------------------------------------------------------------------ suffixes
@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("a.nii.gz", ".nii.gz"),
        ("A.NII.GZ", ".nii.gz"),
        ("dir.v1/a.nii", ".nii"),
        ("a.TIFF", ".tiff"),
        ("a.gz", ".gz"),
        ("a.zarr", ".zarr"),
        ("noext", ""),
    ],
)
def test_suffix_of(name, suffix):
    assert suffix_of(name) == suffix


def test_supported_suffixes_all_round_trip(tmp_path):
    a = _asymmetric(np.uint16)
    for suffix in SUPPORTED_SUFFIXES:
        vol = read_volume(write_volume(tmp_path / f"v{suffix}", a))
        assert isinstance(vol, Volume)
        np.testing.assert_array_equal(np.asarray(vol.data), a, err_msg=suffix)
        assert vol.data.dtype == a.dtype, suffix


def test_a_spacing_written_with_its_unit_reads_back_in_that_unit(tmp_path):
    # a newcomer's crop saved with write_volume(..., spacing=) came back unitless, so
    # segment printed lengths without a unit
    a = _asymmetric(np.uint8)
    for suffix in (".tif", ".nii.gz", ".zarr", ".ome.zarr"):
        vol = read_volume(write_volume(tmp_path / f"v{suffix}", a, spacing=SPACING, unit="um"))
        assert vol.geometry.unit == vol.unit == "um", suffix
        # what was read writes back with its unit (a crop written with the spacing alone
        # lost it: the unit was only at vol.geometry.unit)
        again = read_volume(
            write_volume(tmp_path / f"w{suffix}", a, spacing=vol.spacing, unit=vol.unit)
        )
        assert again.unit == "um", suffix
        np.testing.assert_allclose(vol.geometry.spacing, SPACING, err_msg=suffix)
    # other spellings are the same unit; one no format can state is refused
    for spelling in ("µm", "micron"):
        vol = read_volume(write_volume(tmp_path / "m.nii.gz", a, spacing=SPACING, unit=spelling))
        assert vol.geometry.unit == "um", spelling
    # NIfTI states mm, um or m: nm and cm are converted (a newcomer's nm read back unitless)
    for unit, near, scale in (("nm", "um", 1e-3), ("cm", "mm", 10.0)):
        vol = read_volume(write_volume(tmp_path / "c.nii.gz", a, spacing=SPACING, unit=unit))
        assert vol.geometry.unit == near, unit
        np.testing.assert_allclose(vol.geometry.spacing, np.multiply(SPACING, scale), rtol=1e-6)
    assert read_volume(write_volume(tmp_path / "n.npy", a)).unit is None
    with pytest.raises(ValueError, match="needs a spacing"):
        write_volume(tmp_path / "w.tif", a, unit="um")
    with pytest.raises(ValueError, match="unit must be one of"):
        write_volume(tmp_path / "w.tif", a, spacing=SPACING, unit="inch")


# ------------------------------------------------------------------------ NIfTI
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16, np.int32, np.int64])
def test_nifti_round_trip(tmp_path, suffix, dtype):
    a = _asymmetric(dtype)
    p = write_volume(tmp_path / f"a{suffix}", a, spacing=SPACING)
    assert p == tmp_path / f"a{suffix}"
    vol = read_volume(p)
    assert vol.data.shape == (4, 5, 6)
    assert vol.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(vol.data, a)
    assert vol.spacing == SPACING  # exactly: float32 header zooms read back as written
    assert vol.path == p


def test_nifti_bool_becomes_uint8(tmp_path):
    a = _asymmetric(np.int64) % 3 == 0
    vol = read_volume(write_volume(tmp_path / "m.nii.gz", a, spacing=SPACING))
    assert vol.data.dtype == np.uint8
    np.testing.assert_array_equal(vol.data, a.astype(np.uint8))


def test_nifti_axes_and_zooms_written_by_nibabel(tmp_path):
    """A file written in NIfTI's own (x, y, z) order comes back as (z, y, x)."""
    nib = pytest.importorskip("nibabel")
    xyz = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)  # (x, y, z)
    img = nib.Nifti1Image(xyz, np.diag([0.5, 0.6, 2.0, 1.0]))
    img.header.set_zooms((0.5, 0.6, 2.0))
    p = tmp_path / "xyz.nii.gz"
    nib.save(img, p)
    vol = read_volume(p)
    assert vol.data.shape == (4, 5, 6)
    assert vol.spacing == (2.0, 0.6, 0.5)
    # voxel (x=1, y=2, z=3) of the file is voxel (z=3, y=2, x=1) here
    assert vol.data[3, 2, 1] == xyz[1, 2, 3]
    np.testing.assert_array_equal(vol.data, xyz.transpose(2, 1, 0))
    # and the header zooms we write are in x, y, z order too
    out = write_volume(tmp_path / "back.nii", vol.data, spacing=vol.spacing)
    assert nib.load(out).header.get_zooms() == pytest.approx((0.5, 0.6, 2.0))
    np.testing.assert_array_equal(np.asanyarray(nib.load(out).dataobj), xyz)


def test_nifti_scaling_applied_as_nibabel_does(tmp_path):
    nib = pytest.importorskip("nibabel")
    raw = np.arange(24, dtype=np.int16).reshape(4, 3, 2)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(0.5, 10.0)
    p = tmp_path / "scaled.nii"
    nib.save(img, p)
    vol = read_volume(p)
    expected = np.asarray(nib.load(p).get_fdata()).transpose(2, 1, 0)
    np.testing.assert_allclose(vol.data, expected)
    assert vol.data[0, 0, 1] == pytest.approx(10.0 + 0.5 * raw[1, 0, 0])


# ------------------------------------------------------------------------ TIFF
@pytest.mark.parametrize("suffix", [".tif", ".tiff"])
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.uint16, np.int16, np.float32, np.int32, np.uint32, np.float64]
)
def test_tiff_round_trip(tmp_path, suffix, dtype):
    a = _asymmetric(dtype)
    vol = read_volume(write_volume(tmp_path / f"a{suffix}", a, spacing=SPACING))
    assert vol.data.shape == (4, 5, 6)
    # wide integers whose values fit 16 bits (label images: tree ids) are written as
    # 16-bit, which ImageJ / Fiji read with the voxel size; the values are the same
    narrowed = {np.int32: np.uint16, np.uint32: np.uint16}
    assert vol.data.dtype == np.dtype(narrowed.get(dtype, dtype))
    np.testing.assert_array_equal(vol.data, a)
    assert vol.spacing == pytest.approx(SPACING, rel=1e-9)


def test_tiff_labels_are_written_for_imagej(tmp_path):
    # a newcomer's trees TIFF (int32) carried no z spacing for Fiji and its X/Y
    # resolution per inch; the mask and probability TIFFs had ImageJ spacing
    tifffile = pytest.importorskip("tifffile")
    labels = np.zeros((4, 5, 6), np.int32)
    labels[1, 2, 3], labels[2, 2, 2] = 2, 133
    p = write_volume(tmp_path / "trees.tif", labels, spacing=SPACING)
    with tifffile.TiffFile(p) as tif:
        assert tif.is_imagej and tif.imagej_metadata["spacing"] == pytest.approx(2.0)
        assert tif.pages[0].dtype == np.uint16
    signed = labels.copy()
    signed[0, 0, 0] = -1
    with tifffile.TiffFile(write_volume(tmp_path / "s.tif", signed, spacing=SPACING)) as tif:
        assert tif.is_imagej and tif.pages[0].dtype == np.int16
    wide = labels.copy()
    wide[0, 0, 0] = 70_000  # does not fit 16 bits: kept as it is
    vol = read_volume(write_volume(tmp_path / "w.tif", wide, spacing=SPACING))
    assert vol.data.dtype == np.int32 and vol.data[0, 0, 0] == 70_000


def test_tiff_is_imagej_with_spacing(tmp_path):
    """Spacing lands where ImageJ/Fiji look for it: ``spacing`` and X/YResolution."""
    tifffile = pytest.importorskip("tifffile")
    p = write_volume(tmp_path / "ij.tif", _asymmetric(np.uint8), spacing=SPACING)
    with tifffile.TiffFile(p) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["spacing"] == pytest.approx(2.0)
        xres = tif.pages[0].tags["XResolution"].value
        yres = tif.pages[0].tags["YResolution"].value
    assert xres[1] / xres[0] == pytest.approx(0.5)
    assert yres[1] / yres[0] == pytest.approx(0.6)


def test_tiff_spacing_unknown_is_none(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, _asymmetric(np.uint16), photometric="minisblack")
    vol = read_volume(p)
    assert vol.spacing is None
    assert vol.data.shape == (4, 5, 6)
    vol = read_volume(write_volume(tmp_path / "nosp.tif", _asymmetric(np.uint8)))
    assert vol.spacing is None


def test_tiff_2d_round_trip(tmp_path):
    a = _asymmetric(np.float32, (5, 7))
    vol = read_volume(write_volume(tmp_path / "a.tif", a, spacing=(0.25, 0.5)))
    np.testing.assert_array_equal(vol.data, a)
    assert vol.spacing == pytest.approx((0.25, 0.5))


# ------------------------------------------------------------------------ NumPy
def test_npy_is_memory_mapped(tmp_path):
    a = _asymmetric(np.int32)
    vol = read_volume(write_volume(tmp_path / "a.npy", a, spacing=SPACING))
    assert isinstance(vol.data, np.memmap)
    assert not vol.data.flags.writeable
    np.testing.assert_array_equal(vol.data, a)
    assert vol.spacing is None  # .npy cannot hold it


def test_npz_key_and_single_array(tmp_path):
    a = _asymmetric(np.float64)
    vol = read_volume(write_volume(tmp_path / "a.npz", a))
    np.testing.assert_array_equal(vol.data, a)
    assert vol.data.dtype == np.float64
    p = tmp_path / "two.npz"
    np.savez(p, image=a, mask=a > 10)
    np.testing.assert_array_equal(read_volume(p, key="mask").data, a > 10)
    with pytest.raises(VolumeReadError, match=r"'image', 'mask'.*key="):
        read_volume(p)
    with pytest.raises(VolumeReadError, match="no array 'labels'"):
        read_volume(p, key="labels")


# ------------------------------------------------------------------------ zarr
def test_zarr_round_trip_is_lazy_and_chunked(tmp_path):
    zarr = pytest.importorskip("zarr")
    a = _asymmetric(np.float32, (70, 5, 6))
    p = write_volume(tmp_path / "a.zarr", a, spacing=SPACING)
    assert p.is_dir()
    vol = read_volume(p)
    assert isinstance(vol.data, zarr.Array)
    assert not isinstance(vol.data, np.ndarray)
    assert vol.data.chunks == (64, 5, 6)
    assert vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data[:], a)
    assert vol.spacing == pytest.approx(SPACING)


def test_zarr_group(tmp_path):
    zarr = pytest.importorskip("zarr")
    a = _asymmetric(np.uint8)
    p = tmp_path / "g.zarr"
    g = zarr.open_group(str(p), mode="w")
    create = getattr(g, "create_array", None) or g.create_dataset  # zarr 3 / zarr 2
    create("image", shape=a.shape, dtype=a.dtype)[:] = a
    vol = read_volume(p)  # the only array
    assert isinstance(vol.data, zarr.Array)
    np.testing.assert_array_equal(vol.data[:], a)
    assert vol.spacing is None
    create("mask", shape=a.shape, dtype=bool)[:] = a > 3
    g["mask"].attrs["spacing"] = [1.0, 2.0, 3.0]
    with pytest.raises(VolumeReadError, match=r"\['image', 'mask'\].*key="):
        read_volume(p)
    vol = read_volume(p, key="mask")
    np.testing.assert_array_equal(vol.data[:], a > 3)
    assert vol.spacing == (1.0, 2.0, 3.0)


def test_zarr_missing_package_message(tmp_path, monkeypatch):
    import builtins

    p = write_volume(tmp_path / "a.npy", _asymmetric())  # something that exists
    zp = tmp_path / "a.zarr"
    zp.mkdir()
    real_import = builtins.__import__

    def no_zarr(name, *args, **kwargs):
        if name == "zarr" or name.startswith("zarr."):
            raise ImportError("No module named 'zarr'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_zarr)
    with pytest.raises(VolumeReadError, match="needs the zarr package: pip install zarr"):
        read_volume(zp)
    assert read_volume(p).data.shape == (4, 5, 6)  # other formats unaffected


# ------------------------------------------------------------------------ errors
def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_missing_file(tmp_path):
    p = tmp_path / "nope.nii.gz"
    with pytest.raises(VolumeReadError, match="no such file") as ei:
        read_volume(p)
    assert str(p) in _one_line(ei)
    assert issubclass(VolumeReadError, ValueError)


@pytest.mark.parametrize("name", ["scan.png", "scan", "scan.gz"])
def test_unsupported_suffix(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"\x00" * 16)
    with pytest.raises(VolumeReadError, match="unsupported file type") as ei:
        read_volume(p)
    msg = _one_line(ei)
    assert all(s in msg for s in SUPPORTED_SUFFIXES)
    with pytest.raises(VolumeReadError, match="unsupported file type"):
        write_volume(p, np.zeros((2, 2)))


def test_corrupt_nifti_gz(tmp_path):
    p = tmp_path / "bad.nii.gz"
    p.write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))
    with pytest.raises(VolumeReadError, match="as a NIfTI file") as ei:
        read_volume(p)
    assert str(p) in _one_line(ei)
    # not even gzip
    p.write_bytes(b"\x13\x37" * 300)
    with pytest.raises(VolumeReadError, match="as a NIfTI file"):
        read_volume(p)


def test_truncated_nifti_gz(tmp_path):
    p = write_volume(tmp_path / "t.nii.gz", _asymmetric(np.float32, (20, 20, 20)))
    p.write_bytes(p.read_bytes()[:-500])
    with pytest.raises(VolumeReadError, match="as a NIfTI file") as ei:
        read_volume(p)
    _one_line(ei)


def test_corrupt_tiff(tmp_path):
    p = tmp_path / "bad.tif"
    p.write_bytes(b"II*\x00" + b"\xff" * 200)
    with pytest.raises(VolumeReadError, match="as a TIFF file") as ei:
        read_volume(p)
    assert str(p) in _one_line(ei)


def test_corrupt_npy_npz_zarr(tmp_path):
    for name, fmt in (("bad.npy", "NumPy .npy"), ("bad.npz", "NumPy .npz")):
        p = tmp_path / name
        p.write_bytes(b"garbage" * 10)
        with pytest.raises(VolumeReadError, match=fmt) as ei:
            read_volume(p)
        _one_line(ei)
    pytest.importorskip("zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(VolumeReadError, match="zarr") as ei:
        read_volume(tmp_path / "empty.zarr")
    _one_line(ei)


def test_key_for_single_array_format(tmp_path):
    p = write_volume(tmp_path / "a.nii", _asymmetric())
    with pytest.raises(VolumeReadError, match="only .npz files, zarr groups and DICOM folders"):
        read_volume(p, key="image")


def test_write_errors(tmp_path):
    with pytest.raises(VolumeReadError, match="no such folder"):
        write_volume(tmp_path / "missing" / "a.nii", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="spacing must be"):
        write_volume(tmp_path / "a.nii", np.zeros((2, 2, 2)), spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="spacing must be"):
        write_volume(tmp_path / "a.tif", np.zeros((2, 2, 2)), spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="array of numbers"):
        write_volume(tmp_path / "a.tif", np.array(["a", "b"]))


def test_compressed_tiff_reads_and_says_how_to_read_it_without_codecs(tmp_path, monkeypatch):
    """An LZW-compressed stack (as Fiji and microscopes write) reads with the core's
    imagecodecs; where a codec is missing, the one line says what to install."""
    import tifffile

    data = np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8)
    p = tmp_path / "lzw.tif"
    tifffile.imwrite(p, data, compression="lzw")
    np.testing.assert_array_equal(read_volume(p).data, data)

    def no_codec(self, *args, **kwargs):
        raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", no_codec)
    with pytest.raises(VolumeReadError) as info:
        read_volume(p)
    message = str(info.value)
    assert message.endswith("install it: pip install imagecodecs.") and "\n" not in message


def test_a_tiff_without_a_z_step_says_z_was_assumed(tmp_path):
    # ImageJ writes the z step as "spacing"; a stack saved with only a pixel size got
    # z = 1 (um) and nothing said so
    import tifffile

    a = np.zeros((4, 6, 8), np.uint16)
    tifffile.imwrite(tmp_path / "noz.tif", a, imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "um", "axes": "ZYX"})  # fmt: skip
    vol = read_volume(tmp_path / "noz.tif")
    assert vol.spacing == pytest.approx((1.0, 0.5, 0.5)) and vol.assumed == "z"
    tifffile.imwrite(tmp_path / "z.tif", a, imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "um", "axes": "ZYX", "spacing": 5.0})  # fmt: skip
    vol = read_volume(tmp_path / "z.tif")
    assert vol.spacing == pytest.approx((5.0, 0.5, 0.5)) and vol.assumed == ""
    tifffile.imwrite(tmp_path / "none.tif", a, photometric="minisblack")  # nothing stated
    vol = read_volume(tmp_path / "none.tif")
    assert vol.spacing is None and vol.assumed == ""
    vol = read_volume(write_volume(tmp_path / "w.tif", a, spacing=(5.0, 0.5, 0.5)))
    assert vol.assumed == ""
    # ImageJ writes a 1 um pixel as 1 pixel per unit with its unit: stated, not assumed
    tifffile.imwrite(tmp_path / "one.tif", a, imagej=True, resolution=(1.0, 1.0),
                     metadata={"unit": "um", "axes": "ZYX", "spacing": 5.0})  # fmt: skip
    vol = read_volume(tmp_path / "one.tif")
    assert vol.spacing == pytest.approx((5.0, 1.0, 1.0)) and vol.assumed == ""
    # OME-TIFF with PhysicalSizeX/Y but no PhysicalSizeZ
    xy = {"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
    tifffile.imwrite(tmp_path / "noz.ome.tif", a, ome=True, metadata=xy)
    vol = read_volume(tmp_path / "noz.ome.tif")
    assert vol.spacing == pytest.approx((1.0, 0.5, 0.5)) and vol.assumed == "z"


# ------------------------------------------------------------- DICOM, NRRD, MetaImage
# read with SimpleITK (the medical-imaging extra); placement turned from ITK's LPS into
# RAS, as nibabel gives a NIfTI's: a series and the NIfTI converted from it must overlay


def _ct_hu() -> np.ndarray:
    from _dicom import SHAPE

    z, y, x = np.indices(SHAPE)
    return (100 * z + 10 * y + x - 1000).astype(np.int16)  # one value per voxel


def _expected_ras_world(index) -> np.ndarray:
    """World (S, A, R) of voxel (slice, row, column) of the axial series of _dicom."""
    from _dicom import DX, DY, DZ, ORIGIN

    k, j, i = np.asarray(index, float).T
    return np.stack([ORIGIN[2] + DZ * k, -(ORIGIN[1] + DY * j), -(ORIGIN[0] + DX * i)], -1)


def test_a_dicom_folder_reads_as_one_ct_volume_in_hu(tmp_path):
    pytest.importorskip("SimpleITK")
    from _dicom import DX, DY, DZ, write_series

    folder = tmp_path / "series.v2"  # a dot in a folder's name is not a suffix
    write_series(folder, _ct_hu(), stored_offset=1024)
    (folder / "notes.txt").write_text("not DICOM")  # other files are left alone
    vol = read_volume(folder)
    np.testing.assert_array_equal(vol.data, _ct_hu())  # sorted by position, HU
    assert vol.geometry.axes == "zyx" and vol.unit == "mm" and vol.modality == "ct"
    np.testing.assert_allclose(vol.spacing, (DZ, DY, DX))
    corners = np.array([[0, 0, 0], [5, 11, 9], [2, 3, 4]])
    np.testing.assert_allclose(vol.geometry.world(corners), _expected_ras_world(corners))
    assert volume_stem(folder) == "series.v2" and is_dicom_folder(folder)
    # one file of the series reads the whole series
    one = read_volume(next(folder.glob("image_*")).rename(folder / "slice.dcm"))
    np.testing.assert_array_equal(one.data, _ct_hu())


def test_an_oblique_dicom_series_overlays_the_converters_nifti(tmp_path):
    # benchmarks/real/convert.py (pydicom, checked against nibabel's DICOM wrapper)
    # wrote the development CT; the reader must place every voxel where it does
    pytest.importorskip("SimpleITK")
    from _dicom import write_series
    from _scripts import load_script

    c, s = np.cos(np.radians(25)), np.sin(np.radians(25))
    iop = (c, s, 0.0, -s * np.cos(0.3), c * np.cos(0.3), np.sin(0.3))
    write_series(tmp_path / "obl", _ct_hu(), stored_offset=1024, iop=iop)
    convert = load_script("benchmarks/real/convert.py", "convert_for_io")
    files = [(p.name, p) for p in sorted((tmp_path / "obl").iterdir())]
    ref, _, affine, _ = convert.read_dicom_series(files)
    convert._write_nifti(tmp_path / "obl.nii.gz", ref.astype(np.int16), affine, "mm")
    nifti, dicom = read_volume(tmp_path / "obl.nii.gz"), read_volume(tmp_path / "obl")
    np.testing.assert_array_equal(dicom.data, nifti.data)
    np.testing.assert_allclose(dicom.geometry.affine, nifti.geometry.affine, atol=1e-5)


def test_a_folder_of_two_series_needs_the_series_uid(tmp_path):
    pytest.importorskip("SimpleITK")
    from _dicom import write_series

    first, second = "1.2.826.0.1.3680043.8.498.101", "1.2.826.0.1.3680043.8.498.202"
    write_series(tmp_path / "two", _ct_hu(), stored_offset=1024, series_uid=first)
    write_series(tmp_path / "two", _ct_hu() + 7, stored_offset=1024, series_uid=second)
    with pytest.raises(VolumeReadError, match=r"holds 2 DICOM series.*\.101 \(6 files\)") as e:
        read_volume(tmp_path / "two")
    assert "\n" not in str(e.value) and "--key" in str(e.value)
    np.testing.assert_array_equal(read_volume(tmp_path / "two", key=second).data, _ct_hu() + 7)
    with pytest.raises(VolumeReadError, match="no DICOM series '9.9'"):
        read_volume(tmp_path / "two", key="9.9")


def test_a_dicomdir_export_reads_the_series_in_its_subfolders(tmp_path):
    # a CD/PACS export: DICOMDIR at the top, the images in PATIENT/STUDY/SERIES folders
    pytest.importorskip("SimpleITK")
    from _dicom import write_series

    export = tmp_path / "export"
    write_series(export / "P0" / "S0" / "SE0", _ct_hu(), stored_offset=1024)
    dicomdir = (export / "P0" / "S0" / "SE0").iterdir().__next__().read_bytes()
    (export / "DICOMDIR").write_bytes(dicomdir[:132] + b"\0" * 64)  # a DICM file, no image
    vol = read_volume(export)
    np.testing.assert_array_equal(vol.data, _ct_hu())
    assert vol.modality == "ct" and vol.path == export / "P0" / "S0" / "SE0"
    assert volume_stem(export, vol.path) == "export_SE0"  # outputs: not just "SE0"
    assert is_dicom_folder(export)  # the DICOMDIR itself is a DICOM file: napari claims it
    # a folder of series folders without a DICOMDIR reads the same way
    plain = tmp_path / "patient"
    write_series(plain / "series_a", _ct_hu(), stored_offset=1024)
    np.testing.assert_array_equal(read_volume(plain).data, _ct_hu())
    assert holds_dicom(plain) and not is_dicom_folder(plain)
    # two series below: both named in one line, the key picks one wherever it lies
    second = "1.2.826.0.1.3680043.8.498.303"
    write_series(plain / "series_b", _ct_hu() + 7, stored_offset=1024, series_uid=second)
    with pytest.raises(VolumeReadError, match=r"2 DICOM series in its subfolders") as e:
        read_volume(plain)
    msg = str(e.value)
    assert "\n" not in msg and "series_a" in msg and "series_b (6 files" in msg
    assert "--key" in msg
    np.testing.assert_array_equal(read_volume(plain, key=second).data, _ct_hu() + 7)
    with pytest.raises(VolumeReadError, match="no DICOM series '9.9'"):
        read_volume(plain, key="9.9")


def test_dicom_files_without_the_part10_preamble_are_read(tmp_path):
    # older scanners write raw data sets: no 128-byte preamble, no "DICM", no file meta
    pytest.importorskip("SimpleITK")
    pydicom = pytest.importorskip("pydicom")
    from _dicom import write_series
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset

    write_series(tmp_path / "p10", _ct_hu(), stored_offset=1024)
    p10 = read_volume(tmp_path / "p10")
    for implicit in (True, False):
        raw = tmp_path / f"raw_{'implicit' if implicit else 'explicit'}"
        raw.mkdir()
        for f in (tmp_path / "p10").iterdir():
            ds = pydicom.dcmread(f)
            del ds.file_meta
            with open(raw / f.name, "wb") as fh:
                out = DicomFileLike(fh)
                out.is_little_endian, out.is_implicit_VR = True, implicit
                write_dataset(out, ds)
        assert (raw / f.name).read_bytes()[:2] == b"\x08\x00"
        assert is_dicom_folder(raw), raw
        vol = read_volume(raw)
        np.testing.assert_array_equal(vol.data, _ct_hu())
        np.testing.assert_allclose(vol.geometry.affine, p10.geometry.affine)
    # files that merely start with the same bytes are not taken for one: raw uint16 and
    # uint8 volumes (a reviewer's MetaImage .raw of [8, 0, 100, ...])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "blob.bin").write_bytes(b"\x08\x00" + b"\xff" * 200)
    assert not is_dicom_folder(tmp_path / "other")
    for k, data in enumerate(
        [
            np.array([8, 0, 100, 200, 300, 400] * 50, np.uint16).tobytes(),
            np.array([8, 0, 0, 0, 5, 6, 7, 9] * 50, np.uint8).tobytes(),
            np.array([8, 0, 4, 0, 8, 0, 4, 0] * 50, np.uint8).tobytes(),
        ]
    ):
        (tmp_path / f"raw{k}").mkdir()
        (tmp_path / f"raw{k}" / "labels.raw").write_bytes(data)
        assert not is_dicom_folder(tmp_path / f"raw{k}"), k


def test_a_damaged_slice_is_named_not_dropped(tmp_path):
    # GDCM leaves out a file it cannot parse: a damaged last slice gave a shorter
    # volume in silence, a damaged middle one "not evenly spaced" (a newcomer's trial)
    pytest.importorskip("SimpleITK")
    from _dicom import write_series

    write_series(tmp_path / "s", _ct_hu(), stored_offset=1024)
    (tmp_path / "s" / "notes.txt").write_text("not DICOM")  # other files are left alone
    victim = sorted((tmp_path / "s").glob("image_*"))[2]
    victim.write_bytes(np.random.default_rng(0).bytes(4000))  # garbage, no DICOM
    with pytest.raises(VolumeReadError, match=rf"{victim.name} could not be read as part"):
        read_volume(tmp_path / "s")
    raw = (tmp_path / "s" / "notes.txt").read_bytes()
    assert raw == b"not DICOM"


def test_a_dicomdir_or_a_cd_image_file_opens_its_series(tmp_path):
    # CD files have no suffix (IM000001); "open the DICOMDIR" is the first instinct
    pytest.importorskip("SimpleITK")
    from _dicom import write_series

    cd = tmp_path / "cd"
    write_series(cd / "DICOM" / "SE0", _ct_hu(), stored_offset=1024)
    member = next((cd / "DICOM" / "SE0").iterdir())
    (cd / "DICOMDIR").write_bytes(member.read_bytes()[:132] + b"\0" * 64)
    np.testing.assert_array_equal(read_volume(cd / "DICOMDIR").data, _ct_hu())
    np.testing.assert_array_equal(read_volume(member).data, _ct_hu())  # no suffix


def test_the_subfolder_search_says_where_it_stopped(tmp_path, monkeypatch):
    pytest.importorskip("SimpleITK")
    from _dicom import write_series

    import napari_topo.data.io as io_mod

    deep = tmp_path / "deep"
    write_series(deep.joinpath(*"abcdefgh"), _ct_hu(), stored_offset=1024)  # 8 levels
    with pytest.raises(VolumeReadError, match=r"searched 6 levels down\)"):
        read_volume(deep)
    wide = tmp_path / "wide"
    for k in range(12):
        (wide / f"a{k:02d}").mkdir(parents=True)
    write_series(wide / "z" / "SE", _ct_hu(), stored_offset=1024)
    monkeypatch.setattr(io_mod, "_DICOM_SEARCH_FOLDERS", 10)
    with pytest.raises(VolumeReadError, match="stopped after 10 folders"):
        read_volume(wide)
    monkeypatch.setattr(io_mod, "_DICOM_SEARCH_FOLDERS", 500)
    np.testing.assert_array_equal(read_volume(wide).data, _ct_hu())


def test_a_series_split_over_two_folders_is_refused_not_read_in_part(tmp_path):
    pytest.importorskip("SimpleITK")
    from _dicom import write_series

    uid = "1.2.826.0.1.3680043.8.498.404"
    write_series(tmp_path / "exp" / "SE0", _ct_hu(), stored_offset=1024, series_uid=uid)
    files = sorted((tmp_path / "exp" / "SE0").iterdir())
    (tmp_path / "exp" / "SE1").mkdir()
    for f in files[:3]:
        f.rename(tmp_path / "exp" / "SE1" / f.name)
    with pytest.raises(VolumeReadError, match=r"lies in 2 folders \(SE0, SE1\)"):
        read_volume(tmp_path / "exp")
    with pytest.raises(VolumeReadError, match="lies in 2 folders"):
        read_volume(tmp_path / "exp", key=uid)


def test_a_folder_without_dicom_files_is_named_as_such(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.txt").write_text("x")
    with pytest.raises(VolumeReadError, match="none of its first 64 files is a DICOM file"):
        read_volume(tmp_path / "plain")
    assert not is_dicom_folder(tmp_path / "plain")


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nhdr", ".mhd"])
def test_nrrd_and_metaimage_read_with_their_placement(tmp_path, suffix):
    sitk = pytest.importorskip("SimpleITK")
    arr = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    img = sitk.GetImageFromArray(arr)  # ITK index (x, y, z) = array (z, y, x) reversed
    img.SetSpacing((0.5, 0.6, 2.0))
    img.SetOrigin((10.0, -20.0, 30.0))  # LPS
    sitk.WriteImage(img, str(tmp_path / f"v{suffix}"))
    vol = read_volume(tmp_path / f"v{suffix}")
    np.testing.assert_array_equal(vol.data, arr)
    np.testing.assert_allclose(vol.spacing, (2.0, 0.6, 0.5))
    # voxel (z, y, x) = (1, 2, 3): LPS (10 + 1.5, -20 + 1.2, 30 + 2) -> RAS
    np.testing.assert_allclose(vol.geometry.world([1, 2, 3]), [32.0, 18.8, -11.5])
    with pytest.raises(VolumeReadError, match="reads it but writes"):
        write_volume(tmp_path / f"out{suffix}", arr)


def test_read_only_formats_without_simpleitk_say_what_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_sitk(name, *args, **kwargs):
        if name == "SimpleITK":
            raise ImportError("No module named 'SimpleITK'")
        return real_import(name, *args, **kwargs)

    (tmp_path / "v.nrrd").write_bytes(b"NRRD0004\n")
    monkeypatch.setattr(builtins, "__import__", no_sitk)
    with pytest.raises(VolumeReadError, match="needs the SimpleITK package: pip install"):
        read_volume(tmp_path / "v.nrrd")


def test_a_dicom_series_with_a_missing_slice_or_two_echoes_is_refused(tmp_path):
    # ITK stacks them with a mean spacing and only warns (a reviewer: a slice removed
    # read as 5 slices 3.125 mm apart; two echoes as 12 slices 0.23 mm apart)
    pytest.importorskip("SimpleITK")
    import pydicom
    from _dicom import write_series

    write_series(tmp_path / "gap", _ct_hu(), stored_offset=1024)
    files = sorted((tmp_path / "gap").iterdir())
    by_z = sorted(files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    by_z[2].unlink()
    with pytest.raises(VolumeReadError, match="not evenly spaced .*a slice missing"):
        read_volume(tmp_path / "gap")
    uid = "1.2.826.0.1.3680043.8.498.77"
    write_series(tmp_path / "echo", _ct_hu(), stored_offset=1024, series_uid=uid)
    write_series(tmp_path / "echo", _ct_hu(), stored_offset=1024, series_uid=uid, suffix="b")
    with pytest.raises(VolumeReadError, match="share one position"):
        read_volume(tmp_path / "echo")


def test_one_dicom_file_multi_frame_or_one_slice_keeps_its_placement(tmp_path):
    pytest.importorskip("SimpleITK")
    import pydicom
    from _dicom import DX, DY, write_series

    write_series(tmp_path / "s", _ct_hu(), stored_offset=1024)
    first = sorted((tmp_path / "s").iterdir())[0]
    ds = pydicom.dcmread(first)
    # a multi-frame file: the six slices as frames of one
    ds.NumberOfFrames = 6
    ds.PixelData = ((_ct_hu().astype(np.int32) + 1024).astype(np.uint16)).tobytes()
    (tmp_path / "mf").mkdir()
    ds.save_as(tmp_path / "mf" / "enhanced.dcm", enforce_file_format=True)
    vol = read_volume(tmp_path / "mf")
    assert vol.data.shape == _ct_hu().shape
    np.testing.assert_array_equal(vol.data, _ct_hu())
    # one sagittal slice: 3D (1, y, x) with its orientation, not an axial 2D image
    one = pydicom.dcmread(first)
    one.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    (tmp_path / "sag").mkdir()
    one.save_as(tmp_path / "sag" / "one.dcm", enforce_file_format=True)
    sag = read_volume(tmp_path / "sag")
    assert sag.data.shape == (1, *_ct_hu().shape[1:])
    # rows run along -S (world axis 0 of S, A, R), columns along +A (world axis 1)
    np.testing.assert_allclose(sag.geometry.affine[:3, 1], [-DY, 0, 0], atol=1e-9)
    np.testing.assert_allclose(sag.geometry.affine[:3, 2], [0, -DX, 0], atol=1e-9)


def test_only_telling_dicom_modalities_reach_the_input_policy(tmp_path):
    # a CT exported as a secondary capture (Modality OT or SC) is still judged by its
    # values; CT and MR say which it is
    pytest.importorskip("SimpleITK")
    import pydicom
    from _dicom import write_series

    write_series(tmp_path / "ot", _ct_hu(), stored_offset=1024)
    for f in (tmp_path / "ot").iterdir():
        ds = pydicom.dcmread(f)
        ds.Modality = "OT"
        ds.save_as(f, enforce_file_format=True)
    assert read_volume(tmp_path / "ot").modality is None


def test_nrrd_units_and_a_nrrd_without_a_voxel_size(tmp_path):
    pytest.importorskip("SimpleITK")
    header = (
        "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 3 4\nspace: left-posterior-superior\n"
        "space directions: (0.2,0,0) (0,0.2,0) (0,0,1)\n"
        'space units: "microns" "microns" "microns"\nencoding: raw\n\n'
    )
    (tmp_path / "um.nrrd").write_bytes(header.encode() + bytes(24))
    um = read_volume(tmp_path / "um.nrrd")
    assert um.unit == "um" and np.allclose(um.spacing, (1.0, 0.2, 0.2))
    plain = "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 3 4\nencoding: raw\n\n"
    (tmp_path / "plain.nrrd").write_bytes(plain.encode() + bytes(24))
    bare = read_volume(tmp_path / "plain.nrrd")
    assert bare.spacing is None and bare.geometry.known == "none"
    # a broken header: ITK's reason, not the name of its source file
    (tmp_path / "bad.nrrd").write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes 3 3 3\n\n")
    with pytest.raises(VolumeReadError, match="didn't see") as e:
        read_volume(tmp_path / "bad.nrrd")
    assert ".cxx" not in str(e.value)


def test_a_missing_folder_is_named_as_missing(tmp_path):
    with pytest.raises(VolumeReadError, match="no such file or folder"):
        read_volume(tmp_path / "CT_series")


def test_a_tiff_in_pixels_per_centimetre_reads_in_um(tmp_path):
    # bad-input probe: 0.3 um pixels stored per centimetre were reported as 3e-05 cm,
    # the unstated z step as 1 cm (33,000x the pixel size) and every length in cm
    import tifffile

    a = np.zeros((4, 6, 8), np.uint16)
    per_cm = 1.0 / 3e-5
    tifffile.imwrite(tmp_path / "cm.tif", a, resolution=(per_cm, per_cm),
                     resolutionunit="CENTIMETER", photometric="minisblack")  # fmt: skip
    vol = read_volume(tmp_path / "cm.tif")
    assert vol.spacing == pytest.approx((1.0, 0.3, 0.3)) and vol.assumed == "z"
    assert vol.geometry.unit == "um"
    tifffile.imwrite(
        tmp_path / "mm.tif",
        a,
        resolution=(20.0, 20.0),
        resolutionunit="CENTIMETER",
        photometric="minisblack",
    )  # 0.5 mm pixels
    vol = read_volume(tmp_path / "mm.tif")
    assert vol.spacing == pytest.approx((1.0, 0.5, 0.5)) and vol.geometry.unit == "mm"
    # ImageJ in cm: its z step is converted with y and x (a review found z left in cm)
    tifffile.imwrite(tmp_path / "ij.tif", a, imagej=True, resolution=(per_cm, per_cm),
                     metadata={"unit": "cm", "axes": "ZYX", "spacing": 5e-4})  # fmt: skip
    vol = read_volume(tmp_path / "ij.tif")
    assert vol.spacing == pytest.approx((5.0, 0.3, 0.3)) and vol.geometry.unit == "um"
    assert vol.assumed == ""


def test_a_nifti_with_zero_voxel_sizes_says_they_were_assumed(tmp_path, capfd):
    # bad-input probe: pixdim 0 was taken as 1 with no note (nibabel's own fix, and its
    # "setting 0 dims to 1" line leaked onto stderr); a NaN pixdim did get the note
    nib = pytest.importorskip("nibabel")
    a = np.zeros((6, 7, 8), np.float32)  # (x, y, z) as stored

    def save(name, pixdim):
        img = nib.Nifti1Image(a, None)
        img.header["pixdim"][1:4] = pixdim
        img.header.set_qform(None, code=0)
        img.header.set_sform(None, code=0)
        nib.save(img, tmp_path / name)
        return read_volume(tmp_path / name)

    vol = save("zero.nii.gz", [0.0, 0.0, 0.0])
    assert vol.spacing is None and vol.geometry.known == "none"
    vol = save("part.nii.gz", [0.0, 0.6, 2.0])  # x unstated
    assert vol.spacing == pytest.approx((2.0, 0.6, 1.0)) and vol.assumed == "x"
    vol = save("all.nii.gz", [0.5, 0.6, 2.0])
    assert vol.spacing == pytest.approx((2.0, 0.6, 0.5)) and vol.assumed == ""
    assert "pixdim" not in capfd.readouterr().err


def test_an_ome_tiff_names_its_outputs_without_ome_and_npz_is_claimed_by_the_reader(tmp_path):
    # bad-input probe: "x.ome.tif" gave "x.ome_mask.tif" and a layer "x.ome"; the reader's
    # manifest lacked *.npz, which segment reads
    from napari_topo._plugin import get_reader
    from napari_topo.data.io import volume_stem

    assert volume_stem(tmp_path / "scan.ome.tif") == "scan"
    assert volume_stem(tmp_path / "scan.OME.TIFF") == "scan"
    assert volume_stem(tmp_path / "scan.tif") == "scan"
    np.savez(tmp_path / "v.npz", vol=np.zeros((4, 5, 6), np.float32))
    assert get_reader(str(tmp_path / "v.npz")) is not None


def test_a_truncated_tiff_fails_in_one_line_without_library_logs(tmp_path, capfd):
    # bad-input probe: tifffile's "<TiffPages @8> invalid page offset" came before the
    # one-line error
    import tifffile

    tifffile.imwrite(tmp_path / "t.tif", np.ones((6, 64, 64), np.uint16))
    data = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeReadError, match="cannot read"):
        read_volume(tmp_path / "t.tif")
    assert capfd.readouterr().err == ""


def test_an_assumed_spacing_is_written_as_assumed_and_reads_back_so(tmp_path):
    # bad-input probe: a TIFF without a z step (z taken as 1) gave outputs whose headers
    # stated z = 1 as the file's own; written with spacing_assumed, each format that can
    # say so says it, and reading the output back assumes the same axes again
    nib = pytest.importorskip("nibabel")
    pytest.importorskip("tifffile")
    pytest.importorskip("zarr")
    from napari_topo.geometry import Geometry

    a = _asymmetric(np.uint8)
    part = Geometry.from_spacing((1.0, 0.5, 0.5), unit="um", known="spacing")
    for name in ("z.nii.gz", "z.tif", "z.zarr"):
        p = write_volume(tmp_path / name, a, geometry=part, spacing_assumed="z")
        vol = read_volume(p)
        assert vol.assumed == "z", name
        assert vol.spacing == pytest.approx((1.0, 0.5, 0.5)), name
        np.testing.assert_array_equal(np.asarray(vol.data), a)
    descrip = nib.load(tmp_path / "z.nii.gz").header["descrip"].tobytes().decode()
    assert "napari-topo: z spacing assumed 1, not stated by the input" in descrip
    # nothing stated at all: the NIfTI reads back as stating nothing, as its input did
    p = write_volume(tmp_path / "none.nii", a, geometry=Geometry.identity(3), spacing_assumed="zyx")
    vol = read_volume(p)
    assert vol.spacing is None and vol.geometry.known == "none" and vol.assumed == ""
    # a spacing the file stated is written as before, with no such note
    p = write_volume(tmp_path / "stated.nii.gz", a, spacing=(5.0, 0.5, 0.5), unit="um")
    assert "assumed" not in nib.load(p).header["descrip"].tobytes().decode()
    assert read_volume(p).assumed == ""
    with pytest.raises(ValueError, match="spacing_assumed"):
        write_volume(tmp_path / "bad.nii", a, geometry=part, spacing_assumed="q")
