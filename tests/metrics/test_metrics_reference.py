"""Parity of the "reference" preset with the de-facto evaluator's numbers (1e-6 relative).

The expected values and images live in ../shared/reference/metrics (see its README); the
test skips cleanly when ../shared is absent (a user's fresh clone).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emmafuse.metrics import METRICS, evaluate

REF_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "metrics"
RTOL = 1e-6


def _expected() -> dict[str, dict[str, float]]:
    path = REF_DIR / "expected.json"
    if not path.is_file():
        pytest.skip(f"needs {path} (the project's shared reference data), which is absent")
    return json.loads(path.read_text())


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("L"), dtype=np.float64)


@pytest.fixture(scope="module")
def scores() -> dict[str, tuple[dict[str, float], dict[str, float]]]:
    out = {}
    for case, expected in _expected().items():
        a, b, f = (_read(REF_DIR / f"{case}_{kind}.png") for kind in ("ir", "vi", "fused"))
        out[case] = (evaluate(f, a, b, preset="reference"), expected)
    return out


def test_all_cases_and_metrics_present(scores):
    assert len(scores) >= 4
    for got, expected in scores.values():
        assert set(expected) == set(METRICS) == set(got)


@pytest.mark.parametrize("metric", METRICS)
def test_reference_parity(scores, metric):
    bad = []
    for case, (got, expected) in scores.items():
        if got[metric] != pytest.approx(expected[metric], rel=RTOL):
            bad.append(f"{case}: got {got[metric]!r}, expected {expected[metric]!r}")
    assert not bad, "; ".join(bad)


def test_fixed_preset_stays_close_where_only_precision_differs(scores):
    """The fixed preset changes units/definitions only for MI, SSIM, PSNR and Qabf."""
    for case, (_, expected) in scores.items():
        a, b, f = (_read(REF_DIR / f"{case}_{kind}.png") for kind in ("ir", "vi", "fused"))
        fixed = evaluate(f, a, b, preset="fixed", metrics="EN,SD,SF,AG,MSE,CC,SCD,VIF,MI")
        for m in ("EN", "SD", "SF", "AG", "MSE", "CC", "SCD", "VIF"):
            assert fixed[m] == pytest.approx(expected[m], rel=1e-5), (case, m)
        assert fixed["MI"] == pytest.approx(expected["MI"] / np.log(2), rel=1e-9)  # bits
