"""Fusing real pairs from ../shared (skipped when absent): file reading, odd sizes, colour slots."""

from __future__ import annotations

from pathlib import Path

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


def _spread(path) -> int:
    """Max |R - G| of an image file (0 for a gray file)."""
    from PIL import Image

    arr = np.asarray(Image.open(path)).astype(int)
    return int(np.abs(arr[..., 0] - arr[..., 1]).max()) if arr.ndim == 3 else 0


def test_cli_keeps_pet_colour_in_either_order(random_weights, tmp_path):
    """Issue 11: the MRI is gray stored as RGB; its zero chroma must not replace the PET colour."""
    from emmafuse.cli import main

    folder = shared_path("data", "test", "MRI_PET")
    pet, mri = folder / "PET" / "11.png", folder / "MRI" / "11.png"
    assert _spread(pet) > 150 and read_image(mri).ndim == 3 and _spread(mri) == 0
    for name, first, second in (("pet_first", pet, mri), ("mri_first", mri, pet)):
        out = tmp_path / f"{name}.png"
        assert main(["fuse", str(first), str(second), "-o", str(out), "--weights", str(random_weights), "--device", "cpu"]) == 0
        assert _spread(out) > 100, name  # before the fix: 1 with the PET first


def test_cli_folder_mode_keeps_spect_colour(random_weights, tmp_path):
    from emmafuse.cli import main

    folder = shared_path("data", "test", "MRI_SPECT")
    modality = next(p.name for p in folder.iterdir() if p.name != "MRI")
    name = sorted(p.name for p in (folder / modality).iterdir())[0]
    ird, visd = tmp_path / modality, tmp_path / "MRI"
    ird.mkdir(), visd.mkdir()
    (ird / name).symlink_to(folder / modality / name)  # links, never copies of the data
    (visd / name).symlink_to(folder / "MRI" / name)
    out = tmp_path / "out"
    argv = ["fuse", "--ir-dir", str(ird), "--vis-dir", str(visd), "-o", str(out), "-q", "--weights", str(random_weights)]
    assert main([*argv, "--device", "cpu"]) == 0
    assert _spread(out / f"{Path(name).stem}.png") > 50
