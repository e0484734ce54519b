"""Fusing real pairs from ../shared (skipped when absent): file reading, odd sizes, colour slots."""

from __future__ import annotations

import numpy as np

from conftest import shared_path
from emmafuse.image_io import read_image


def _first_pair(set_name: str, a: str, b: str):
    folder = shared_path("data", "test", set_name)
    name = sorted(p.name for p in (folder / a).iterdir())[0]
    return read_image(folder / a / name), read_image(folder / b / name)


def test_roadscene_colour_visible_odd_size(fuser):
    ir, vis = _first_pair("RoadScene", "ir", "vi")
    assert ir.ndim == 2 and vis.shape[-1] == 3
    out = fuser.fuse(ir, vis, output_range="minmax")
    assert out.shape == vis.shape and out.dtype == np.uint8
    assert out.std() > 5  # not a flat image


def test_medical_colour_pet_in_the_first_slot(fuser):
    pet, mri = _first_pair("MRI_PET", "PET", "MRI")
    out = fuser.fuse(pet, mri[..., 0] if mri.ndim == 3 else mri)
    assert out.shape == pet.shape and out.dtype == np.uint8
    # the colour of the PET image survives: the output's channels differ where PET is coloured
    coloured = np.ptp(pet.astype(int), axis=-1) > 40
    assert coloured.any()
    assert np.ptp(out.astype(int), axis=-1)[coloured].mean() > 20
