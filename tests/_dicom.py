"""A tiny DICOM CT series written with pydicom, shared by the tests (not a test module):
the benchmark's converter (test_bench_real) and the reader (test_io)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHAPE = (6, 12, 10)  # (z, y, x): non-square so a transposed axis shows
DZ, DY, DX = 2.5, 0.7, 0.6
ORIGIN = (-40.0, -30.0, 10.0)  # LPS of the first slice's first voxel


def write_series(
    folder: Path,
    vol: np.ndarray,
    *,
    stored_offset: int,
    iop=(1, 0, 0, 0, 1, 0),
    series_uid: str | None = None,
    suffix: str = "",
):
    """``vol`` (z, y, x, HU) as one file per slice in ``folder``: stored as uint16 with
    RescaleIntercept ``-stored_offset``, file names and instance numbers scrambled,
    slice k at ``ORIGIN + DZ * k * normal`` (LPS)."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    n = vol.shape[0]
    names = [f"image_{series_uid[-4:]}_{i}{suffix}" for i in range(n)]
    # file names and instance numbers in scrambled order: only the position sorts them
    perm = [3, 0, 5, 1, 4, 2]
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
        ds.InstanceNumber = n - perm[k]
        ds.ImagePositionPatient = [float(v) for v in np.asarray(ORIGIN) + DZ * k * normal]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.PixelSpacing = [DY, DX]
        ds.SliceThickness = 9.9  # wrong on purpose: the positions give the spacing
        ds.Rows, ds.Columns = vol.shape[1:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = 1
        ds.RescaleIntercept = -stored_offset
        ds.PixelData = (vol[k].astype(np.int32) + stored_offset).astype(np.uint16).tobytes()
        pydicom.dcmwrite(folder / names[perm[k]], ds, enforce_file_format=True)
