"""Calibration data is checked, not trusted: every hostile file here is made by the test itself."""

from __future__ import annotations

import io
import re
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
import torch
from hydra_edge.frontend.module import from_module
from hydra_edge.models.hydra_vit import HydraViTConfig
from hydra_edge.passes.pipeline import lower_to_ir
from hydra_edge.quant import calibrate as cal
from hydra_edge.quant.calibrate import CalibrationError, CalibrationWarning, calibrate, load_calibration
from hydra_edge.quant.quantize import activation_qparams
from numpy.lib import format as npy_format
from cli_helpers import assert_clean_error, invoke
from model_zoo import calibration_inputs, export_model, make_model

CFG = HydraViTConfig(image_size=16, patch_size=4, embed_dim=24, depth=1, mlp_ratio=2.0)
SHAPE = (3, 16, 16)
SAMPLE_BYTES = 3 * 16 * 16 * 4


@pytest.fixture(scope="module")
def graph():
    return lower_to_ir(from_module(make_model(CFG), torch.zeros(1, *SHAPE)))


def header(shape, descr="<f4", fortran=False) -> bytes:
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buf.getvalue()


def npz_member(path, data: bytes, compression=zipfile.ZIP_STORED, name="x.npy"):
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr(name, data)
    return path


def inputs(n=8, seed=1):
    return calibration_inputs(CFG, n=n, seed=seed)


# --- the file --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, said", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_non_finite_sample_refused_with_its_index(graph, tmp_path, bad, said):
    x = inputs()
    x[5, 1, 2, 3] = bad
    x[7, 0, 0, 0] = bad
    np.savez(tmp_path / "c.npz", x=x)
    with pytest.raises(CalibrationError, match=rf"sample 5 holds {said} \(2 of 8 samples do\)"):
        load_calibration(tmp_path / "c.npz", graph)


def test_value_beyond_float32_refused(graph, tmp_path):
    x = inputs().astype(np.float64)
    x[2, 0, 0, 0] = 1e300
    np.savez(tmp_path / "c.npz", x=x)
    with pytest.raises(CalibrationError, match=r"sample 2 holds a value beyond float32's range"):
        load_calibration(tmp_path / "c.npz", graph)


def test_huge_header_shape_refused_before_reading(graph, tmp_path):
    """A 300-byte file claiming 10^12 samples: refused from its header, nothing allocated."""
    wrong = npz_member(tmp_path / "wrong.npz", header((10**12, 3, 64, 64)) + bytes(100))
    huge = npz_member(tmp_path / "huge.npz", header((10**12, *SHAPE)) + bytes(100))
    tracemalloc.start()
    try:
        with pytest.raises(CalibrationError, match=re.escape("expected (N, 3, 16, 16)")):
            load_calibration(wrong, graph)
        with pytest.raises(CalibrationError, match="truncated: the header declares 1000000000000 samples"):
            load_calibration(huge, graph)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_deflate_bomb_reads_only_the_first_samples(graph, tmp_path):
    """200 MB of zeros deflated into a few hundred KB: only the capped samples are decompressed."""
    total = 200 * 2**20 // SAMPLE_BYTES
    first = inputs(4).tobytes()
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("x.npy", "w", force_zip64=True) as m:
            m.write(header((total, *SHAPE)))
            m.write(first)
            zeros = bytes(SAMPLE_BYTES * 1024)
            left = total - 4
            while left:
                k = min(left, 1024)
                m.write(zeros[:k * SAMPLE_BYTES])
                left -= k
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.warns(CalibrationWarning, match=f"using the first 16 of {total} calibration samples"):
            x = load_calibration(path, graph, max_samples=16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert x.shape == (16, *SHAPE)
    np.testing.assert_array_equal(x[:4], inputs(4))
    assert not x[4:].any()
    assert peak < 8 * 16 * SAMPLE_BYTES + 2**20, peak  # a few copies of 16 samples, not 200 MB


def test_sample_cap_warns_and_keeps_the_first(graph, tmp_path):
    x = inputs(40)
    np.savez(tmp_path / "c.npz", x=x)
    with pytest.warns(CalibrationWarning, match="using the first 16 of 40 calibration samples"):
        got = load_calibration(tmp_path / "c.npz", graph, max_samples=16)
    np.testing.assert_array_equal(got, x[:16])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(load_calibration(tmp_path / "c.npz", graph), x)  # default cap 1024
        np.testing.assert_array_equal(load_calibration(tmp_path / "c.npz", graph, max_samples=None), x)
    with pytest.raises(CalibrationError, match="positive integer"):
        load_calibration(tmp_path / "c.npz", graph, max_samples=0)


def test_bytes_cap_bounds_an_uncapped_read(graph, tmp_path, monkeypatch):
    monkeypatch.setattr(cal, "MAX_CALIB_BYTES", 10 * SAMPLE_BYTES)
    np.savez(tmp_path / "c.npz", x=inputs(40))
    with pytest.warns(CalibrationWarning, match="first 10 of 40 .*the cap is 0 MiB"):
        assert len(load_calibration(tmp_path / "c.npz", graph, max_samples=None)) == 10


@pytest.mark.parametrize("descr, said", [("<i4", "must be float .* got int32"), ("|O", "plain float array, got dtype object"),
                                         ("|b1", "must be float .* got bool"), ("<c8", "must be float .* got complex64")])
def test_non_float_dtype_refused(graph, tmp_path, descr, said):
    path = npz_member(tmp_path / "c.npz", header((2, *SHAPE), descr=descr) + bytes(2 * 3 * 16 * 16 * 8))
    with pytest.raises(CalibrationError, match=said):
        load_calibration(path, graph)


def test_integers_saved_by_numpy_refused(graph, tmp_path):
    np.savez(tmp_path / "c.npz", x=(inputs() * 50).astype(np.int16))
    with pytest.raises(CalibrationError, match="must be float"):
        load_calibration(tmp_path / "c.npz", graph)


def test_formats_that_are_accepted(graph, tmp_path):
    x = inputs(6)
    np.savez_compressed(tmp_path / "z.npz", x=x)
    np.save(tmp_path / "bare.npy", x)
    np.savez(tmp_path / "named.npz", images=x)
    np.savez(tmp_path / "one.npz", x=x[:, None].astype(">f8"))  # (N, 1, C, H, W), big-endian float64
    np.savez(tmp_path / "fortran.npz", x=np.asfortranarray(x))
    for name in ("z.npz", "bare.npy", "named.npz", "one.npz", "fortran.npz"):
        got = load_calibration(tmp_path / name, graph)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, x, err_msg=name)


def test_fortran_order_beyond_the_cap_refused(graph, tmp_path):
    np.savez(tmp_path / "f.npz", x=np.asfortranarray(inputs(8)))
    with pytest.raises(CalibrationError, match="Fortran order"):
        load_calibration(tmp_path / "f.npz", graph, max_samples=4)


def test_other_bad_files(graph, tmp_path):
    x = inputs(4)
    truncated = npz_member(tmp_path / "t.npz", header((4, *SHAPE)) + x.tobytes()[:-10])
    with pytest.raises(CalibrationError, match="truncated"):
        load_calibration(truncated, graph)
    bz = npz_member(tmp_path / "bz.npz", header((4, *SHAPE)) + x.tobytes(), zipfile.ZIP_BZIP2)
    with pytest.raises(CalibrationError, match="compression method 12"):
        load_calibration(bz, graph)
    big_header = b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little") + b"{"
    with pytest.raises(CalibrationError, match="header of 2147483648 bytes"):
        load_calibration(npz_member(tmp_path / "h.npz", big_header), graph)
    with pytest.raises(CalibrationError, match="not a .npy array"):
        load_calibration(npz_member(tmp_path / "n.npz", b"hello world"), graph)
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(CalibrationError, match="not an .npz file"):
        load_calibration(tmp_path / "text.npz", graph)
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(CalibrationError, match="expected an array named 'x' \\(found a, b\\)"):
        load_calibration(tmp_path / "two.npz", graph)
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, *SHAPE), np.float32))
    with pytest.raises(CalibrationError, match="empty"):
        load_calibration(tmp_path / "empty.npz", graph)
    np.savez(tmp_path / "zeros.npz", x=np.zeros((4, *SHAPE), np.float32))
    with pytest.raises(CalibrationError, match="every calibration value is 0"):
        load_calibration(tmp_path / "zeros.npz", graph)
    with pytest.raises(CalibrationError, match="not found"):
        load_calibration(tmp_path / "missing.npz", graph)


# --- the ranges ------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 7, 1000, 200_003])
@pytest.mark.parametrize("percentile", [90.0, 99.0, 99.9, 99.99, 100.0])
def test_tails_give_numpys_percentiles(count, percentile):
    values = np.random.default_rng(count).standard_t(2, count)
    tails = cal._Tails(count, percentile)
    for chunk in np.array_split(values, max(1, count // 997)):
        tails.add(chunk)
    lo, hi = tails.percentiles(percentile)
    assert lo == pytest.approx(np.percentile(values, 100 - percentile), rel=1e-12, abs=1e-12)
    assert hi == pytest.approx(np.percentile(values, percentile), rel=1e-12, abs=1e-12)


def test_percentile_100_is_min_max_and_bad_percentiles_refused(graph):
    x = inputs()
    plain = calibrate(graph, x)
    assert calibrate(graph, x, percentile=100) == plain
    clipped = calibrate(graph, x, percentile=99.0)
    for name, r in plain.items():
        assert r.lo <= clipped[name].lo <= clipped[name].hi <= r.hi
    for bad in (50, 100.5, True):
        with pytest.raises(CalibrationError, match="between 90 and 100"):
            calibrate(graph, x, percentile=bad)


def test_percentile_memory_is_bounded(graph, monkeypatch):
    monkeypatch.setattr(cal, "MAX_TAIL_VALUES", 1000)
    with pytest.raises(CalibrationError, match="keeps .* values .*--calib-samples"):
        calibrate(graph, inputs(), percentile=90)


def test_outlier_sample_warned_and_percentile_gives_a_sane_scale(graph):
    x = inputs(32)
    clean = activation_qparams(calibrate(graph, x)["x"]).scalar_scale
    x[3] *= 1e30
    with pytest.warns(CalibrationWarning, match=r"calibration input 'x': .* dominated by sample 3: .* remove it, "
                                                r"or clip ranges with --calib-percentile 95") as record:
        ranges = calibrate(graph, x)
    assert len([w for w in record if issubclass(w.category, CalibrationWarning)]) == 1  # one line, not one a tensor
    assert activation_qparams(ranges["x"]).scalar_scale > 1e27  # min/max: the outlier takes every step
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        clipped = calibrate(graph, x, percentile=95)
    scale = activation_qparams(clipped["x"]).scalar_scale
    assert 0.2 * clean < scale <= clean  # 95% of a standard normal: about half the min/max range
    for name, r in clipped.items():
        assert abs(r.lo) < 1e6 and abs(r.hi) < 1e6, name


def test_outlier_value_with_too_high_a_percentile_still_warned(graph):
    x = inputs(32)
    x[3, 0, 0, 0] = 1e30  # one pixel: clipped at the input by 99.99, but attention spreads it over the sample
    with pytest.warns(CalibrationWarning, match="at percentile 99.99, .* dominated by sample 3.*--calib-percentile 95"):
        calibrate(graph, x, percentile=99.99)


def test_no_outlier_warning_on_ordinary_data(graph):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        calibrate(graph, inputs(32))
        calibrate(graph, inputs(1))  # too few samples to judge: nothing said
        calibrate(graph, inputs(32), check_outliers=False)


def test_no_outlier_warning_on_the_bundled_calibration_set(example_pt2):
    from hydra_edge.driver import load_model

    g = lower_to_ir(load_model(example_pt2))
    x = load_calibration(example_pt2.parent / "calib_cifar10.npz", g)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        calibrate(g, x[:24])


# --- the command line ------------------------------------------------------------------------------


def test_cli_lines(tmp_path):
    pt2 = export_model(CFG, tmp_path)
    x = inputs(12)
    np.savez(tmp_path / "ok.npz", x=x)
    result = invoke("compile", pt2, "--calib", tmp_path / "ok.npz", "--calib-samples", 8,
                    "--calib-percentile", 99.9, "-o", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert f"warning: {tmp_path / 'ok.npz'}: array 'x': using the first 8 of 12 calibration samples" in result.output
    bad = x.copy()
    bad[9] = np.nan
    np.savez(tmp_path / "nan.npz", x=bad)
    assert_clean_error(invoke("compile", pt2, "--calib", tmp_path / "nan.npz", "-o", tmp_path / "c"),
                       "calibration sample 9 holds NaN")
    result = invoke("compile", pt2, "--calib", tmp_path / "ok.npz", "--calib-percentile", 50, "-o", tmp_path / "d")
    assert result.exit_code == 2 and "--calib-percentile" in result.output


def test_test_vectors_of_an_outlier_saturate(tmp_path):
    """Percentile ranges leave the outlier sample far outside: its test vector saturates, the build is made."""
    from hydra_edge.driver import TEST_VECTORS

    pt2 = export_model(CFG, tmp_path)
    x = inputs(8)
    x[0] *= 1e30
    np.savez(tmp_path / "c.npz", x=x)
    result = invoke("compile", pt2, "--calib", tmp_path / "c.npz", "--calib-percentile", 90, "-o", tmp_path / "b")
    assert result.exit_code == 0, result.output
    vectors = np.load(tmp_path / "b" / TEST_VECTORS)
    assert set(np.unique(vectors[0])) <= {-128, 127}
