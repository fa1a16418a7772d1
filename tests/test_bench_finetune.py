"""benchmarks/bench_finetune.py: the slices a benchmark user "corrects" in a stack."""

from __future__ import annotations

import numpy as np
import pytest
from _scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/bench_finetune.py")


def test_corrected_slices_are_spread_over_the_slices_holding_vessel(bench):
    gt = np.zeros((25, 8, 8), bool)
    gt[2:23, 3, 3] = True  # vessel on slices 2..22
    assert bench.corrected_slices(gt, 1) == [12]
    assert bench.corrected_slices(gt, 2) == [7, 17]
    assert bench.corrected_slices(gt, 99) == list(range(2, 23))
    gt[[0, 24]] = True  # the stack's first and last slices are never the corrected ones
    assert bench.corrected_slices(gt, 30) == list(range(2, 23))


def test_stack_slices_must_be_at_least_one(bench, tmp_path):
    with pytest.raises(SystemExit):
        bench.main(["--skip-tubes", "--results", str(tmp_path), "--stack-slices", "0"])
