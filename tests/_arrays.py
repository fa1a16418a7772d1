"""Array-likes shared by the tests (not a test module)."""

from __future__ import annotations

import threading

import numpy as np


class RecordingArray:
    """Array-like (e.g. behind a dask array) that records the size of every read.

    Materialising it whole (``np.asarray``) fails the test: the code under test must
    read tiles or a strided sample only.
    """

    def __init__(self, data: np.ndarray):
        self._data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.reads: list[int] = []  # voxels per read
        self._lock = threading.Lock()

    def __getitem__(self, key):
        part = self._data[key]
        with self._lock:
            self.reads.append(int(np.size(part)))
        return part

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole volume was materialised")

    def __len__(self):
        return self.shape[0]
