"""emmafuse.metrics on synthetic images: known values, presets, edge cases, input checks.

Everything here is CPU-only, seeded and independent of ../shared. Cross-checks against
scipy / scikit-image / scikit-learn / OpenCV run only where those dev tools are installed.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from emmafuse import metrics as M
from emmafuse.metrics import METRICS, evaluate

ROOT = Path(__file__).resolve().parents[2]


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _smooth_image(shape: tuple[int, int] = (64, 80), seed: int = 0) -> np.ndarray:
    """Integer gray levels with structure (blobs + noise), like a small photo."""
    rng = _rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    img = 120 + 60 * np.sin(x / 7.0) * np.cos(y / 9.0) + rng.normal(0, 12, shape)
    return np.clip(np.round(img), 0, 255)


@pytest.fixture(scope="module")
def triple() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = _smooth_image(seed=1)
    b = _smooth_image(seed=2)[:, ::-1].copy()
    f = np.round((a + b) / 2)
    return f, a, b


# --------------------------------------------------------------------------- API shape
def test_evaluate_returns_all_twelve_in_order(triple):
    f, a, b = triple
    for preset in ("reference", "fixed"):
        out = evaluate(f, a, b, preset=preset)
        assert list(out) == ["EN", "SD", "SF", "AG", "MI", "MSE", "CC", "PSNR", "SCD", "VIF", "Qabf", "SSIM"]
        assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())


def test_metric_selection(triple):
    f, a, b = triple
    assert list(evaluate(f, a, b, metrics="ssim, en")) == ["EN", "SSIM"]  # report order
    assert list(evaluate(f, a, b, metrics=["Qabf"])) == ["Qabf"]
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(f, a, b, metrics="EN,FOO")
    with pytest.raises(ValueError, match="unknown preset"):
        evaluate(f, a, b, preset="matlab")  # type: ignore[arg-type]


def test_single_functions_match_evaluate(triple):
    f, a, b = triple
    for preset in ("reference", "fixed"):
        all_ = evaluate(f, a, b, preset=preset)
        assert M.en(f, preset=preset) == all_["EN"]
        assert M.sd(f, preset=preset) == all_["SD"]
        assert M.vif(f, a, b, preset=preset) == all_["VIF"]
        assert M.ssim(f, a, b, preset=preset) == all_["SSIM"]
        assert M.qabf(f, a, b, preset=preset) == all_["Qabf"]


def test_helper_thread_gives_identical_numbers():
    a = _smooth_image((260, 270), seed=11)  # >= 256x256: VIF goes to the helper thread
    b = _smooth_image((260, 270), seed=12)
    f = np.round(0.6 * a + 0.4 * b)
    for preset in ("reference", "fixed"):
        assert evaluate(f, a, b, preset=preset, threads=2) == evaluate(f, a, b, preset=preset, threads=1)


def test_integer_and_float_inputs_agree(triple):
    f, a, b = triple
    u8 = [x.astype(np.uint8) for x in triple]
    assert evaluate(*u8) == evaluate(f, a, b)


# --------------------------------------------------------------------------- known values
def test_en_known_values():
    assert M.en(np.arange(256).reshape(16, 16)) == pytest.approx(8.0, abs=1e-12)  # uniform histogram
    assert M.en(np.full((8, 8), 17.0)) == 0.0
    half = np.zeros((4, 4))
    half[:2] = 200
    assert M.en(half) == pytest.approx(1.0, abs=1e-12)


def test_sd_sf_ag_on_a_ramp():
    k = 3.0
    ramp = np.tile(np.arange(20) * k, (10, 1))  # constant slope k along x
    for preset in ("reference", "fixed"):
        assert M.sf(ramp, preset=preset) == pytest.approx(k, rel=1e-6)
        assert M.ag(ramp, preset=preset) == pytest.approx(k / math.sqrt(2), rel=1e-6)
    two = np.zeros((4, 4))
    two[:, 2:] = 255
    assert M.sd(two, preset="fixed") == pytest.approx(127.5, abs=1e-12)


def test_cc_scd_mse_psnr_known_values():
    a = _smooth_image((48, 48), seed=3)
    f = 2 * a + 3  # perfectly correlated with A
    b = -a  # perfectly anti-correlated with F
    assert M.cc(f, a, b, preset="fixed") == pytest.approx(0.0, abs=1e-12)
    a = np.clip(_smooth_image((48, 48), seed=4), 1, 254)
    f, b = a + 1, a + 2  # errors 1 and 1 -> MSE 1
    assert M.mse(f, a, b, preset="fixed") == pytest.approx(1.0, abs=1e-12)
    assert M.psnr(f, a, b, preset="fixed") == pytest.approx(20 * math.log10(255), abs=1e-9)
    # reference: the peak is max(F), not 255
    assert M.psnr(f, a, b, preset="reference") == pytest.approx(20 * math.log10(f.max()), rel=1e-6)


def test_identical_images_give_the_maxima():
    x = _smooth_image((64, 64), seed=5)
    fixed = evaluate(x, x, x, preset="fixed")
    assert fixed["SSIM"] == 1.0
    assert fixed["CC"] == pytest.approx(1.0, abs=1e-12)
    assert fixed["MSE"] == 0.0
    assert fixed["PSNR"] == math.inf
    assert fixed["SCD"] == 0.0  # F - B is constant: zero-variance terms count 0
    assert fixed["MI"] == pytest.approx(2 * fixed["EN"], rel=1e-12)  # MI(F, F) = H(F), in bits
    assert fixed["VIF"] == pytest.approx(2.0, abs=1e-6)
    q_best = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))
    assert fixed["Qabf"] == pytest.approx(q_best, rel=1e-12)
    ref = evaluate(x, x, x, preset="reference")
    assert ref["SSIM"] == pytest.approx(2.0, abs=1e-6)  # a sum of two SSIMs
    assert ref["MI"] == pytest.approx(fixed["MI"] * math.log(2), rel=1e-12)  # nats
    # The reference's Qabf quirk (ratio := g_F where g_A == g_F) scores above the true maximum.
    assert ref["Qabf"] > q_best


def test_presets_differ_only_where_documented(triple):
    f, a, b = triple
    ref = evaluate(f, a, b, preset="reference")
    fix = evaluate(f, a, b, preset="fixed")
    for name in ("EN", "SD", "SF", "AG", "MSE", "CC", "SCD", "VIF"):
        assert fix[name] == pytest.approx(ref[name], rel=1e-5), name  # float32 vs float64 only
    assert fix["MI"] == pytest.approx(ref["MI"] / math.log(2), rel=1e-12)
    assert fix["SSIM"] != pytest.approx(ref["SSIM"] / 2, rel=1e-3)  # data_range 255 vs 2
    assert 0 < fix["SSIM"] < 1 and 0 < ref["SSIM"] < 2
    assert fix["PSNR"] > ref["PSNR"]  # peak 255 >= max(F)


def test_en_out_of_range_policy():
    img = np.zeros((4, 4))
    img[:2] = 256.0  # uint8(256) wraps to 0 in the reference
    assert M.en(img, preset="reference") == 0.0
    assert M.en(img, preset="fixed") == pytest.approx(1.0)  # clipped to 255 first


# --------------------------------------------------------------------------- edge cases
def _no_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("preset", ["reference", "fixed"])
def test_constant_images_have_defined_values(preset):
    c = np.full((48, 48), 100.0)
    x = _smooth_image((48, 48), seed=6)
    out = _no_warnings(evaluate, c, c, c, preset=preset)
    assert out["EN"] == out["SD"] == out["SF"] == out["AG"] == out["MI"] == 0.0
    assert out["CC"] == out["SCD"] == 0.0  # zero variance: "uncorrelated", not NaN
    assert out["MSE"] == 0.0 and out["PSNR"] == math.inf
    assert out["VIF"] == 2.0  # sources without detail: each VIFp term 1.0
    # Sobel pads with zeros, so a constant image still has edges on its border (as in the reference)
    assert 0.97 < out["Qabf"] < 0.98
    zero = np.zeros((48, 48))
    assert _no_warnings(M.qabf, x, zero, zero, preset=preset) == 1.0  # no source edges at all: nothing to lose
    assert out["SSIM"] == pytest.approx(2.0 if preset == "reference" else 1.0)
    # constant fused image from textured sources
    out = _no_warnings(evaluate, c, x, x, preset=preset)
    assert out["VIF"] == 0.0 and out["CC"] == 0.0 and out["Qabf"] < 0.5  # border edges only
    assert all(math.isfinite(v) for v in out.values())
    # all-black fused image: the reference's peak max(F) = 0 gives -inf, documented
    expected_psnr = -math.inf if preset == "reference" else 10 * math.log10(255**2 / np.mean((x - 0) ** 2))
    assert _no_warnings(M.psnr, zero, x, x, preset=preset) == pytest.approx(expected_psnr)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_raise(bad):
    x = _smooth_image((48, 48))
    y = x.copy()
    y[3, 4] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        evaluate(y, x, x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        M.en(y)


def test_shape_and_type_checks():
    x = _smooth_image((48, 48))
    with pytest.raises(ValueError, match="same shape"):
        evaluate(x, x, x[:, :-1])
    with pytest.raises(ValueError, match="2-D"):
        evaluate(np.stack([x, x], -1), x, x)  # (H, W, 1|3|4) are converted to gray (issue 17), 2 is not
    assert evaluate(np.stack([x, x, x], -1), x, x) == evaluate(x, x, x)
    with pytest.raises(ValueError, match="empty"):
        M.en(np.zeros((0, 5)))
    with pytest.raises(ValueError, match="real-valued"):
        M.en(x > 5)
    with pytest.raises(ValueError, match="0..255 scale"):
        M.sd(x * 1e5)


def test_small_images():
    tiny = _smooth_image((30, 30))
    with pytest.raises(ValueError, match="VIF needs images of at least 41x41"):
        evaluate(tiny, tiny, tiny)
    out = evaluate(tiny, tiny, tiny, metrics=[m for m in METRICS if m != "VIF"])
    assert "VIF" not in out and len(out) == 11
    edge = _smooth_image((41, 60))
    assert math.isfinite(M.vif(edge, edge[::-1], edge))
    with pytest.raises(ValueError, match="41x41"):
        M.vif(edge[:40], edge[:40], edge[:40])
    with pytest.raises(ValueError, match="SSIM needs images of at least 7x7"):
        M.ssim(tiny[:6], tiny[:6], tiny[:6])
    with pytest.raises(ValueError, match="SF needs"):
        M.sf(np.zeros((1, 9)))
    one = np.full((1, 1), 3.0)
    assert evaluate(one, one, one, metrics="EN,SD,MI,MSE,CC,PSNR,SCD,Qabf")["EN"] == 0.0


# --------------------------------------------------------------------------- internals
def test_ssim_fast_path_equals_scipy_emulation():
    from emmafuse.metrics.structural import _box_mean_float32_valid, uniform_filter_like_scipy

    rng = _rng(7)
    for lo, hi in ((0, 256), (-255, 256), (-1024, 1025)):
        x = rng.integers(lo, hi, (3, 40, 57)).astype(np.float32)
        stack = np.concatenate([x, x * x, x[:1] * x[1:]])
        fast = _box_mean_float32_valid(stack, 7)
        slow = uniform_filter_like_scipy(stack, 7)[..., 3:-3, 3:-3]
        assert fast.dtype == np.float32
        np.testing.assert_array_equal(fast, slow)


def test_ssim_reference_non_integer_inputs_use_exact_replay(triple):
    f, a, b = triple
    # non-integer values take the running-sum replay; result must still be close to integer-path SSIM
    v = M.ssim(f + 0.25, a, b)
    assert math.isfinite(v) and abs(v - M.ssim(f, a, b)) < 0.2


def test_gray_levels_and_mi_bits():
    from emmafuse.metrics.mutual_info import mutual_information

    rng = _rng(8)
    x = rng.integers(0, 8, (64, 64))
    assert mutual_information(x, x, base=2) == pytest.approx(M.en(x.astype(float)), rel=1e-12)
    y = rng.integers(0, 8, (64, 64))
    assert 0 <= mutual_information(x, y) < 0.05  # independent
    assert mutual_information(x, 1000 * x + 5) == pytest.approx(mutual_information(x, x))  # labels only


# --------------------------------------------------------------------------- cross-checks (dev tools)
def test_filters_match_scipy():
    signal = pytest.importorskip("scipy.signal")
    ndimage = pytest.importorskip("scipy.ndimage")
    from emmafuse.metrics._common import filter_valid, gaussian_taps
    from emmafuse.metrics.edges import sobel
    from emmafuse.metrics.structural import uniform_filter_like_scipy

    rng = _rng(9)
    x = rng.integers(0, 256, (50, 70)).astype(np.float64)
    for n in (17, 9, 5, 3):
        sd = n / 5.0
        m = (n - 1) / 2
        yy, xx = np.ogrid[-m : m + 1, -m : m + 1]
        h = np.exp(-(xx * xx + yy * yy) / (2 * sd * sd))
        win = h / h.sum()
        ref = signal.convolve2d(x, np.rot90(win, 2), mode="valid")
        np.testing.assert_allclose(filter_valid(x, gaussian_taps(n)), ref, rtol=1e-12, atol=1e-9)
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    sx, sy = sobel(x.astype(np.float32))
    np.testing.assert_array_equal(sx, signal.convolve2d(x.astype(np.float32), h3, mode="same"))
    np.testing.assert_array_equal(sy, signal.convolve2d(x.astype(np.float32), h1, mode="same"))
    for v in (x.astype(np.float32), (x / 7).astype(np.float32), rng.normal(0, 100, (30, 41)).astype(np.float32)):
        np.testing.assert_array_equal(uniform_filter_like_scipy(v, 7), ndimage.uniform_filter(v, 7))


def test_ssim_and_mi_match_skimage_sklearn(triple):
    skm = pytest.importorskip("skimage.metrics")
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    f, a, b = (x.astype(np.float32) for x in triple)
    ref_ssim = skm.structural_similarity(f, a, data_range=2) + skm.structural_similarity(f, b, data_range=2)
    assert M.ssim(f, a, b) == ref_ssim
    fix = (
        skm.structural_similarity(f.astype(float), a.astype(float), data_range=255)
        + skm.structural_similarity(f.astype(float), b.astype(float), data_range=255)
    ) / 2
    assert M.ssim(f, a, b, preset="fixed") == pytest.approx(fix, rel=1e-9)
    mis = sklearn_metrics.mutual_info_score
    ref_mi = mis(f.ravel(), a.ravel()) + mis(f.ravel(), b.ravel())
    assert M.mi(f, a, b) == pytest.approx(ref_mi, rel=1e-12)


def test_mi_out_of_range_levels_match_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = _rng(10)
    f = rng.integers(-40, 300, (50, 60)).astype(float)  # outside 0..255: the general label path
    a = np.clip(f + rng.normal(0, 20, f.shape), -10, 280).round()
    b = rng.integers(0, 256, f.shape).astype(float)
    mis = sklearn_metrics.mutual_info_score
    expected = mis(f.ravel(), a.ravel()) + mis(f.ravel(), b.ravel())
    assert M.mi(f, a, b) == pytest.approx(expected, rel=1e-12)
    # fixed: levels clipped to 0..255, bits
    fc, ac, bc = (np.clip(x, 0, 255) for x in (f, a, b))
    expected_bits = (mis(fc.ravel(), ac.ravel()) + mis(fc.ravel(), bc.ravel())) / math.log(2)
    assert M.mi(f, a, b, preset="fixed") == pytest.approx(expected_bits, rel=1e-12)


def test_naive_benchmark_implementation_agrees(triple):
    import importlib.util

    spec = importlib.util.spec_from_file_location("naive_metrics", ROOT / "benchmarks" / "naive_metrics.py")
    assert spec is not None and spec.loader is not None
    naive_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(naive_module)  # a file, not a package: no sys.path change
    evaluate_naive = naive_module.evaluate_naive
    f, a, b = triple
    ours = evaluate(f, a, b)
    naive = evaluate_naive(f, a, b)
    for name in METRICS:
        assert ours[name] == pytest.approx(naive[name], rel=1e-9, abs=1e-12), name


# --------------------------------------------------------------------------- the registry
def test_one_record_per_metric_and_the_tables_are_views_of_it():
    from emmafuse.metrics import HIGHER_IS_BETTER, MIN_SIZE, PAPER_METRICS, REGISTRY, Metric

    assert tuple(REGISTRY) == METRICS
    assert all(isinstance(m, Metric) and m.name == name for name, m in REGISTRY.items())
    assert HIGHER_IS_BETTER == {name: m.higher_is_better for name, m in REGISTRY.items()}
    assert [n for n, better in HIGHER_IS_BETTER.items() if not better] == ["MSE"]
    assert MIN_SIZE == {"EN": 1, "SD": 1, "SF": 2, "AG": 2, "MI": 1, "MSE": 1, "CC": 1, "PSNR": 1, "SCD": 1, "VIF": 41, "Qabf": 1, "SSIM": 7}
    assert all(m.size_reason for m in REGISTRY.values() if m.min_size > 1)  # the error says why
    assert PAPER_METRICS == ("EN", "SD", "AG", "MI", "VIF", "Qabf") and set(PAPER_METRICS) <= set(METRICS)
    with pytest.raises(TypeError):
        REGISTRY["X"] = REGISTRY["EN"]  # type: ignore[index]  # read-only


def test_every_metric_is_its_records_function_and_checks_its_size(triple):
    from emmafuse.errors import InputError
    from emmafuse.metrics import REGISTRY

    f, a, b = triple
    scores = evaluate(f, a, b, threads=1)
    for name, record in REGISTRY.items():
        public = getattr(M, name.lower())
        args = (f,) if name in ("EN", "SD", "SF", "AG") else (f, a, b)
        assert public(*args) == scores[name] == record.score("reference", *args), name
    small = f[:6, :6]
    with pytest.raises(InputError, match=r"SSIM needs images of at least 7x7 pixels \(one complete 7x7 window\)"):
        M.ssim(small, a[:6, :6], b[:6, :6])


def test_validation_scores_the_papers_metrics():
    from emmafuse.metrics import PAPER_METRICS
    from emmafuse.train.quick_metrics import VALIDATION_METRICS

    assert VALIDATION_METRICS == PAPER_METRICS


def test_metric_errors_are_emmafuse_errors_naming_the_argument():
    from emmafuse.errors import EmmafuseError

    with pytest.raises(EmmafuseError) as info:
        evaluate(np.zeros((8, 8)), np.zeros((8, 8)), np.zeros((8, 8)), metrics="EN,nope")
    assert info.value.parameter == "metrics"
    with pytest.raises(EmmafuseError) as info:
        evaluate(np.zeros((8, 8)), np.full((8, 8), np.nan), np.zeros((8, 8)))
    assert info.value.parameter == "a"
