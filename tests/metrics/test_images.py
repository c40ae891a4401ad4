"""Metrics against scikit-image, TensorFlow and the reference values in shared/reference/metrics.md."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from gpudoc.errors import EnvironmentMissing
from gpudoc.metrics import MetricInputError, RangeWarning, image_metrics, to_y
from gpudoc.metrics import images as images_module


def pair(seed: int, shape: tuple[int, ...], noise: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 256, shape).astype(np.uint8)
    pred = np.clip(target + rng.normal(0, noise, shape), 0, 255).astype(np.uint8)
    return pred, target


def test_reference_values() -> None:
    x = np.zeros((8, 8), np.uint8)
    y = x.copy()
    y[0, 0] = 255
    m = image_metrics(y, x, data_range=255)
    assert m["mse"].pooled == pytest.approx(1016.015625) and m["psnr"].pooled == pytest.approx(18.0618, abs=1e-4)
    unit = image_metrics(y / 255, x / 255, data_range=1)
    assert unit["mse"].pooled == pytest.approx(0.015625) and unit["psnr"].pooled == pytest.approx(18.0618, abs=1e-4)
    assert image_metrics(y / 255, x / 255, data_range=255)["psnr"].pooled == pytest.approx(66.1926, abs=1e-4)
    a = np.full((16, 16), 100, np.uint8)
    b = a + 10
    at255 = image_metrics(b, a, data_range=255)
    assert (at255["mae"].pooled, at255["mse"].pooled) == (10, 100)
    assert at255["psnr"].pooled == pytest.approx(28.1308, abs=1e-4)
    at1 = image_metrics(b / 255, a / 255, data_range=1)
    assert at1["mae"].pooled == pytest.approx(0.039216, abs=1e-6) and at1["mse"].pooled < at1["mae"].pooled
    assert image_metrics(np.array([[0, 1], [2, 3.0]]), np.array([[3, 2], [1, 0.0]]), data_range=3)["psnr"].pooled \
        == pytest.approx(2.5527, abs=1e-4)


def test_mean_of_per_image_psnr_differs_from_pooled() -> None:
    first = np.zeros((8, 8))
    first_pred = first.copy()
    first_pred[0, 0] = 1.0
    second = np.zeros((8, 8))
    second_pred = np.full((8, 8), 0.01)
    m = image_metrics(np.stack([first_pred, second_pred]), np.stack([first, second]), data_range=1)
    assert m["psnr"].per_image == pytest.approx((18.0618, 40.0), abs=1e-4)
    assert m["psnr"].mean == pytest.approx(29.0309, abs=1e-4) and m["psnr"].pooled == pytest.approx(21.0444, abs=1e-4)


@pytest.mark.parametrize("engine", ["numba", "numpy"])
@pytest.mark.parametrize("shape", [(48, 40), (48, 40, 3)])
def test_against_scikit_image(shape: tuple[int, ...], engine: str) -> None:
    pred, target = pair(1, shape)
    channel_axis = -1 if len(shape) == 3 else None
    m = image_metrics(pred, target, data_range=255, engine=engine)
    assert m["mse"].pooled == pytest.approx(mean_squared_error(target, pred), abs=1e-6)
    assert m["psnr"].pooled == pytest.approx(peak_signal_noise_ratio(target, pred, data_range=255), abs=1e-6)
    wang = structural_similarity(target, pred, data_range=255, channel_axis=channel_axis, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False)
    assert m["ssim"].pooled == pytest.approx(wang, abs=1e-6)
    default = structural_similarity(target, pred, data_range=255, channel_axis=channel_axis)
    assert image_metrics(pred, target, data_range=255, ssim_preset="skimage", engine=engine)["ssim"].pooled \
        == pytest.approx(default, abs=1e-6)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "bool", "float16", "float32", ">f8", "float64"])
def test_the_compiled_kernel_equals_the_blas_path_for_every_dtype_and_layout(dtype: str) -> None:
    pred, target = pair(11, (3, 172, 169, 3), noise=30)
    if dtype == "bool":
        pred, target = pred > 127, target > 127
    elif dtype.startswith(("float", ">")):
        pred, target = pred.astype(dtype) / 255, target.astype(dtype) / 255
    else:
        pred, target = pred.astype(dtype), target.astype(dtype)
    data_range = 255.0 if dtype in ("uint8", "uint16", "int32") else 1.0
    for options in ({}, {"ssim_preset": "skimage", "crop_border": 3}, {"y_channel": True, "ms_ssim": True}):
        compiled = image_metrics(pred, target, data_range=data_range, engine="numba", **options)
        blas = image_metrics(pred, target, data_range=data_range, engine="numpy", **options)
        assert compiled.keys() == blas.keys()
        for name, metric in blas.items():
            assert compiled[name].per_image == pytest.approx(metric.per_image, rel=1e-12, abs=1e-13), (name, options)
    channels_first = image_metrics(pred.transpose(0, 3, 1, 2)[:, :2], target.transpose(0, 3, 1, 2)[:, :2],
                                   data_range=data_range, channels_first=True, engine="numba")
    assert channels_first["ssim"].per_image == pytest.approx(
        image_metrics(pred[..., :2], target[..., :2], data_range=data_range, engine="numpy")["ssim"].per_image,
        abs=1e-13)


def test_engines_report_the_image_with_nan_and_numba_is_required_only_when_asked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pred, target = pair(12, (4, 16, 16))
    bad = pred.astype(float)
    bad[2, 5, 5] = np.inf
    with pytest.raises(MetricInputError, match=r"NaN or infinity \(image 2\)"):
        image_metrics(bad, target, data_range=255, engine="numba")
    with pytest.raises(MetricInputError, match="NaN or infinity"):
        image_metrics(bad, target, data_range=255, engine="numpy")
    with pytest.raises(MetricInputError, match="engine 'cuda' not one of auto, numba, numpy"):
        image_metrics(pred, target, data_range=255, engine="cuda")
    monkeypatch.setattr(images_module, "_compiled", lambda: None)
    with pytest.raises(EnvironmentMissing, match=r"gpudoc\[fast\]"):
        image_metrics(pred, target, data_range=255, engine="numba")
    assert image_metrics(pred, target, data_range=255)["ssim"].per_image == pytest.approx(
        image_metrics(pred, target, data_range=255, engine="numpy")["ssim"].per_image, abs=0)


def test_against_tensorflow_psnr_and_a_batch() -> None:
    pred, target = pair(2, (4, 32, 32, 3))
    m = image_metrics(pred, target, data_range=255)
    tf_psnr = tf.image.psnr(tf.constant(pred), tf.constant(target), max_val=255).numpy()
    assert m["psnr"].per_image == pytest.approx(tuple(tf_psnr.tolist()), abs=1e-4)
    singles = [image_metrics(pred[i], target[i], data_range=255)["ssim"].pooled for i in range(4)]
    assert m["ssim"].per_image == pytest.approx(tuple(singles), abs=1e-12)


def test_uint8_inputs_do_not_wrap_around() -> None:
    pred = np.array([[10]], np.uint8)
    target = np.array([[250]], np.uint8)
    assert image_metrics(np.tile(pred, (8, 8)), np.tile(target, (8, 8)), data_range=255)["mae"].pooled == 240


def test_y_channel_and_crop_border() -> None:
    rgb = np.zeros((1, 2, 2, 3))
    rgb[..., 0] = 1.0
    assert to_y(rgb, 1.0)[0, 0, 0, 0] == pytest.approx((16 + 65.481) / 255)
    pred, target = pair(3, (20, 20, 3))
    cropped = image_metrics(pred, target, data_range=255, crop_border=4, y_channel=True)
    y_pred, y_target = to_y(pred[None].astype(float), 255)[0, 4:-4, 4:-4, 0], to_y(target[None].astype(float), 255)[
        0, 4:-4, 4:-4, 0]
    assert cropped["mse"].pooled == pytest.approx(float(np.mean((y_pred - y_target) ** 2)))


def test_range_is_required_or_inferred_with_a_warning_and_bad_inputs_fail() -> None:
    pred, target = pair(4, (16, 16))
    with pytest.warns(RangeWarning, match="inferred 255"):
        image_metrics(pred, target, data_range=None)
    with pytest.raises(MetricInputError, match="differ in shape"):
        image_metrics(pred, target[:8], data_range=255)
    with pytest.raises(MetricInputError, match="NaN"):
        image_metrics(np.full((8, 8), np.nan), np.zeros((8, 8)), data_range=1)
    with pytest.raises(MetricInputError, match="cannot infer"):
        image_metrics(np.full((8, 8), -3.0), np.full((8, 8), 300.0), data_range=None)


def test_ms_ssim_against_tensorflow() -> None:
    pred, target = pair(5, (2, 181, 200, 3), noise=30)
    m = image_metrics(pred, target, data_range=255, ms_ssim=True)
    ref = tf.image.ssim_multiscale(tf.constant(pred, tf.float64), tf.constant(target, tf.float64), max_val=255.0)
    # TensorFlow builds its Gaussian window in float32, which moves its values by ~1e-6.
    assert m["ms_ssim"].per_image == pytest.approx(tuple(ref.numpy().tolist()), abs=1e-5)
    ssim_ref = tf.image.ssim(tf.constant(pred, tf.float64), tf.constant(target, tf.float64), max_val=255.0)
    assert m["ssim"].per_image == pytest.approx(tuple(ssim_ref.numpy().tolist()), abs=5e-6)
    with pytest.raises(MetricInputError, match="MS-SSIM needs images of at least 161x161"):
        image_metrics(pred[:, :160], target[:, :160], data_range=255, ms_ssim=True)


def reference_ms_ssim(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """MS-SSIM of two float64 planes assembled from scikit-image's full SSIM maps: the
    contrast-structure map is the SSIM map divided by the luminance term (from scipy's Gaussian
    filter with scikit-image's settings); 2x2 average pooling, an odd edge repeated."""
    from scipy import ndimage

    c1 = (0.01 * data_range) ** 2
    terms = []
    for scale in range(5):
        if scale:
            x, y = (np.pad(a, [(0, a.shape[0] % 2), (0, a.shape[1] % 2)], mode="symmetric") for a in (x, y))
            x, y = (a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean(axis=(1, 3)) for a in (x, y))
        _, full = structural_similarity(x, y, data_range=data_range, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, full=True)
        mx, my = (ndimage.gaussian_filter(a, 1.5, truncate=3.5, mode="reflect") for a in (x, y))
        cs = full / ((2 * mx * my + c1) / (mx * mx + my * my + c1))
        term = (full if scale == 4 else cs)[5:-5, 5:-5].mean()
        terms.append(max(term, 0.0) ** (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)[scale])
    return float(np.prod(terms))


def test_ms_ssim_against_a_scikit_image_reference() -> None:
    pred, target = pair(10, (2, 181, 197, 3), noise=25)
    m = image_metrics(pred, target, data_range=255, ms_ssim=True)
    expected = [np.mean([reference_ms_ssim(pred[i, ..., c].astype(float), target[i, ..., c].astype(float), 255)
                         for c in range(3)]) for i in range(2)]
    assert m["ms_ssim"].per_image == pytest.approx(tuple(expected), abs=1e-6)


def test_against_torchmetrics_psnr_and_its_ssim_map() -> None:
    torch = pytest.importorskip("torch")
    functional = pytest.importorskip("torchmetrics.functional.image")
    pred, target = pair(6, (3, 40, 48, 3))
    tp = torch.from_numpy(pred).permute(0, 3, 1, 2).double()
    tt = torch.from_numpy(target).permute(0, 3, 1, 2).double()
    m = image_metrics(pred, target, data_range=255)
    psnr = functional.peak_signal_noise_ratio(tp, tt, data_range=255.0, reduction="none", dim=(1, 2, 3))
    assert m["psnr"].per_image == pytest.approx(tuple(psnr.tolist()), abs=1e-6)
    # torchmetrics averages its reflect-padded map over the whole image; over the pixels whose
    # window lies inside the image (what scikit-image and TF average) it is the same SSIM.
    _, full = functional.structural_similarity_index_measure(tp, tt, data_range=255.0, return_full_image=True,
                                                             reduction="none")
    inside = full[..., 5:-5, 5:-5].mean(dim=(1, 2, 3))
    assert m["ssim"].per_image == pytest.approx(tuple(inside.tolist()), abs=1e-6)


def test_torch_tensors_are_computed_on_their_device_with_the_same_values() -> None:
    torch = pytest.importorskip("torch")
    pred, target = pair(7, (2, 176, 180, 3))
    ref = image_metrics(pred, target, data_range=255, ms_ssim=True)
    nchw = image_metrics(torch.from_numpy(pred).permute(0, 3, 1, 2), torch.from_numpy(target).permute(0, 3, 1, 2),
                         data_range=255, ms_ssim=True)
    nhwc = image_metrics(torch.from_numpy(pred), torch.from_numpy(target), data_range=255, ms_ssim=True,
                         channels_first=False)
    for name, metric in ref.items():
        assert nchw[name].per_image == pytest.approx(metric.per_image, abs=1e-12), name
        assert nhwc[name].per_image == pytest.approx(metric.per_image, abs=1e-12), name
    skimage_preset = image_metrics(pred, target, data_range=255, ssim_preset="skimage", y_channel=True)
    on_torch = image_metrics(torch.from_numpy(pred), torch.from_numpy(target), data_range=255,
                             ssim_preset="skimage", y_channel=True, channels_first=False)
    assert on_torch["ssim"].mean == pytest.approx(skimage_preset["ssim"].mean, abs=1e-12)


def test_tensorflow_tensors_are_computed_in_tensorflow_with_the_same_values() -> None:
    pred, target = pair(8, (2, 170, 165, 3))
    ref = image_metrics(pred, target, data_range=255, ms_ssim=True, y_channel=True)
    from_tf = image_metrics(tf.constant(pred), tf.constant(target), data_range=255, ms_ssim=True, y_channel=True)
    for name, metric in ref.items():
        assert from_tf[name].per_image == pytest.approx(metric.per_image, abs=1e-12), name
    with pytest.warns(RangeWarning, match="inferred 255"):
        image_metrics(tf.constant(pred), tf.constant(target), data_range=None)
    ref = image_metrics(pred, target, data_range=255)
    chw = image_metrics(pred.transpose(0, 3, 1, 2), target.transpose(0, 3, 1, 2), data_range=255, channels_first=True)
    assert chw["psnr"].per_image == ref["psnr"].per_image


def test_large_batches_in_chunks_equal_one_image_at_a_time() -> None:
    pred, target = pair(9, (5, 300, 300))
    batch = image_metrics(pred, target, data_range=255)
    singles = [image_metrics(pred[i], target[i], data_range=255) for i in range(5)]
    assert batch["ssim"].per_image == pytest.approx(tuple(s["ssim"].pooled for s in singles), abs=1e-12)
    assert batch["mse"].pooled == pytest.approx(np.mean((pred.astype(float) - target) ** 2))
