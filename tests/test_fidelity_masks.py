"""benchmarks/fidelity_masks.py: boundary voxels of a mask and where a reconstruction's error lies."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from fidelity_masks import boundary, error_report  # noqa: E402


def cube() -> np.ndarray:
    """One 6^3 volume holding a 2^3 cube of ones at [2:4]^3: ``(1, 6, 6, 6)`` bool."""
    m = np.zeros((1, 6, 6, 6), dtype=bool)
    m[0, 2:4, 2:4, 2:4] = True
    return m


def test_the_boundary_is_both_sides_of_the_surface_by_face_neighbours():
    edge = boundary(cube())
    # the 8 voxels of the cube, and the 4 outside voxels beyond each of its 6 faces
    assert edge.sum() == 8 + 6 * 4
    assert edge[0, 2:4, 2:4, 2:4].all()
    assert edge[0, 1, 2, 2] and not edge[0, 1, 1, 2]   # a face neighbour is in, an edge neighbour is not


def test_the_border_of_the_volume_is_not_a_surface():
    slab = np.zeros((1, 4, 4, 4), dtype=bool)
    slab[0, :2] = True                                 # touches the border on five sides
    edge = boundary(slab)
    assert edge.sum() == 2 * 16                        # only the two layers at the step from 1 to 0
    assert edge[0, 1:3].all()


def test_signals_of_a_batch_are_not_neighbours():
    full, empty = np.ones((1, 4, 4, 4), dtype=bool), np.zeros((1, 4, 4, 4), dtype=bool)
    assert not boundary(np.concatenate([full, empty])).any()


def test_error_report_of_one_misplaced_surface_voxel():
    truth = cube().astype(np.float64)
    recon = truth.copy()
    recon[0, 2, 2, 2] = 0.5                            # a surface voxel, halfway, thresholds to background
    r = error_report(recon, truth)
    assert r["psnr"] == pytest.approx(10 * np.log10(216 / 0.25))
    assert r["dice"] == pytest.approx(2 * 7 / (7 + 8))
    assert r["boundary_error_share"] == pytest.approx(1.0)
    assert r["boundary_voxel_share"] == pytest.approx(32 / 216)
    recon[0, 0, 0, 0] = 0.5                            # the same error away from the surface
    assert error_report(recon, truth)["boundary_error_share"] == pytest.approx(0.5)
