"""Skin and image primitives for the age editor: colour spaces, filters, shading and soft region masks.

Everything is batched tensor arithmetic on the images' device. Filters that depend on the face size take
one parameter per image and run image by image, so a row's result never depends on the other rows of
the batch (batch equals one-by-one).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Rec. 709 luminance weights (of linear RGB).
LUMA = (0.2126, 0.7152, 0.0722)


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """Decode sRGB values in [0, 1] to linear light."""
    rgb = rgb.clamp(0.0, 1.0)
    return torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(lin: torch.Tensor) -> torch.Tensor:
    """Encode linear light in [0, 1] to sRGB."""
    lin = lin.clamp(0.0, 1.0)
    return torch.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin.clamp(min=1e-12) ** (1 / 2.4) - 0.055)


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """`(N, 1, H, W)` weighted sum of the channels of `(N, 3, H, W)`."""
    w = torch.tensor(LUMA, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb * w).sum(dim=1, keepdim=True)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Separable Gaussian blur of `(N, C, H, W)` with one sigma (pixels) per image, reflect padding.

    A sigma below 0.05 px leaves that image unchanged. Each image's kernel ends at its own 3 sigma (and
    at the image size), and each image is blurred alone: a grouped operation over a whole batch would
    vectorise across its images and sum in another order, so an image's result would otherwise depend
    on its batch (and an edit on it).
    """
    n = images.shape[0]
    sigmas = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1).expand(n).tolist()  # one host read
    return torch.cat([_blur_one(images[i : i + 1], s) for i, s in enumerate(sigmas)]) if n else images.clone()


def blur_matrix(n: int, sigma: float, radius: int) -> torch.Tensor:
    """`(n, n)` float32 matrix `B` with `B @ x` the 1-D Gaussian blur of a length-`n` signal `x`.

    The kernel (`2 radius + 1` taps, normalised) with reflect padding folded in: a tap that falls
    before the first sample reads the sample as far inside (no edge repeat), as `F.pad(mode="reflect")`.
    Built on the CPU (a scatter-add on a GPU sums in no fixed order).
    """
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    index = torch.arange(n)[:, None] + torch.arange(-radius, radius + 1)[None]
    index = index.abs()
    index = torch.where(index > n - 1, 2 * (n - 1) - index, index)
    return torch.zeros(n, n).scatter_add_(1, index, kernel.expand(n, -1).contiguous())


#: Rows of the output per block of the banded products in `_blur_one`.
_BLUR_BLOCK = 64


def _banded_product(matrix: torch.Tensor, x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """`matrix` (banded, half-width `radius`) applied along `dim` (-2: rows, -1: columns) of `x`.

    Block by block of `_BLUR_BLOCK` outputs, each against only the inputs its band reaches, so the
    work grows with the kernel, not with the image side.
    """
    n, blocks = matrix.shape[0], []
    for start in range(0, n, _BLUR_BLOCK):
        stop = min(n, start + _BLUR_BLOCK)
        lo, hi = max(0, start - radius), min(n, stop + radius)
        block = matrix[start:stop, lo:hi]
        blocks.append(block @ x[..., lo:hi, :] if dim == -2 else x[..., lo:hi] @ block.T)
    return torch.cat(blocks, dim)


def _blur_one(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """`gaussian_blur` of one image `(1, C, H, W)`.

    As banded matrix products (`blur_matrix`, `_banded_product`) rather than a depthwise convolution:
    the same sums to within float rounding (about 1e-7), five to eight times faster on a CPU, where a
    depthwise convolution with a long kernel is poorly optimised.
    """
    _, _, h, w = image.shape
    if sigma < 0.05:
        return image.clone()
    radius = int(min(max(1, math.ceil(3.0 * sigma)), min(h, w) - 1))
    rows = blur_matrix(h, sigma, radius).to(image.device, image.dtype)
    cols = rows if w == h else blur_matrix(w, sigma, radius).to(image.device, image.dtype)
    return _banded_product(rows, _banded_product(cols, image, radius, -1), radius, -2)


def guided_smooth(
    guide: torch.Tensor, source: torch.Tensor, sigma: torch.Tensor | float, eps: float
) -> torch.Tensor:
    """Edge-preserving smoothing of `source (N, C, H, W)` guided by `guide (N, 1, H, W)`.

    A guided filter (He et al. 2010) with Gaussian instead of box windows: flat regions of the guide are
    averaged over `sigma` pixels, while edges whose local variance exceeds `eps` pass through.
    """
    c = source.shape[1]
    stack = torch.cat([guide, source, guide * guide, guide * source], dim=1)
    means = gaussian_blur(stack, sigma)
    mean_g, mean_s = means[:, :1], means[:, 1 : 1 + c]
    var_g = means[:, 1 + c : 2 + c] - mean_g * mean_g
    cov = means[:, 2 + c :] - mean_g * mean_s
    a = cov / (var_g + eps)
    b = mean_s - a * mean_g
    coeffs = gaussian_blur(torch.cat([a, b], dim=1), sigma)
    return coeffs[:, :c] * guide + coeffs[:, c:]


#: Blur ladder (crop pixels) searched by `detail_scale`.
DETAIL_LADDER = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


def last_axis_sums(x: torch.Tensor) -> torch.Tensor:
    """`x (N, ..., M)` summed over its last axis, one image at a time, accumulated in float64.

    A float32 reduction splits its work by the batch's shape and by the threads free to run it, so the
    same image summed in another batch, or while another pipeline stage runs, can differ in the last
    bit, and an edit would depend on both (the cache, the goldens and the overlap test require that it
    does not). Each image alone, in float64, then rounded back: the order no longer shows.
    """
    return torch.stack([row.double().sum(-1) for row in x]).to(x.dtype)


def image_sums(x: torch.Tensor) -> torch.Tensor:
    """`(N, C, H, W)` summed over each image's pixels, `(N, C, 1, 1)`, batch- and thread-invariant
    (`last_axis_sums`)."""
    n, c = x.shape[:2]
    return last_axis_sums(x.reshape(n, c, -1)).view(n, c, 1, 1)


def image_means(x: torch.Tensor) -> torch.Tensor:
    """`(N, C, 1, 1)` mean over each image's pixels, as `image_sums`."""
    return image_sums(x) / float(x.shape[-2] * x.shape[-1])


def masked_mean(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel mean `(N, C, 1, 1)` of `images` weighted by `mask`, as `image_sums`."""
    return image_sums(images * mask) / image_sums(mask).clamp(min=1e-6)


def detail_scale(
    lum: torch.Tensor, region: torch.Tensor, face_width: torch.Tensor, threshold: float = 0.05
) -> torch.Tensor:
    """Per image, the finest structure the photo resolves inside `region`, in pixels of the crop.

    The smallest Gaussian blur that removes at least `threshold` of the image's detail energy (the
    energy below 6 % of the face width), interpolated on `DETAIL_LADDER`: about 1-2 px for sharp
    portraits, 4-5 px for faces upscaled from 25 px. Pixel noise and quantisation carry too little
    energy to count, unlike in gradient-based sharpness measures.
    """
    n = lum.shape[0]
    reference = (
        last_axis_sums(((lum - gaussian_blur(lum, 0.06 * face_width)) ** 2 * region).flatten(1)).clamp(min=1e-12)
    )
    fractions = (
        torch.stack(
            [
                last_axis_sums(((lum - gaussian_blur(lum, torch.full((n,), s, device=lum.device))) ** 2 * region).flatten(1))
                for s in DETAIL_LADDER
            ],
            dim=1,
        )
        / reference[:, None]
    )
    ladder = torch.tensor(DETAIL_LADDER, device=lum.device)
    above = fractions >= threshold
    k = torch.where(
        above.any(dim=1),
        above.float().argmax(dim=1),
        torch.full((n,), len(DETAIL_LADDER) - 1, device=lum.device),
    )
    k_prev = (k - 1).clamp(min=0)
    f0, f1 = fractions.gather(1, k_prev[:, None])[:, 0], fractions.gather(1, k[:, None])[:, 0]
    s0, s1 = ladder[k_prev].log(), ladder[k].log()
    t = ((threshold - f0) / (f1 - f0).clamp(min=1e-9)).clamp(0.0, 1.0)
    return torch.where(k > 0, (s0 + t * (s1 - s0)).exp(), ladder[0])


def shading_from_height(
    height: torch.Tensor,
    elevation_deg: float,
    diffuse: float,
    occlusion: torch.Tensor | float,
    occlusion_sigma: torch.Tensor | float,
) -> torch.Tensor:
    """Multiplicative shading `(N, 1, H, W)` of a relief `height` (pixels, toward the viewer) on skin.

    A key light from above at `elevation_deg` (90 = frontal) carries a fraction `diffuse` of the light
    and shades by the Lambertian ratio against the flat surface; the rest is ambient light, dimmed in
    cavities (relief below its blur over `occlusion_sigma` pixels) by `occlusion` (log units per pixel
    of depth, a number or `(N, 1, 1, 1)`). Zero relief gives exactly 1; nothing goes black.
    """
    hx = torch.zeros_like(height)
    hy = torch.zeros_like(height)
    hx[..., 1:-1] = 0.5 * (height[..., 2:] - height[..., :-2])
    hy[..., 1:-1, :] = 0.5 * (height[..., 2:, :] - height[..., :-2, :])
    tilt = math.tan(math.radians(90.0 - elevation_deg))
    lambert = (1.0 + hy * tilt) / torch.sqrt(1.0 + hx * hx + hy * hy)
    cavity = (gaussian_blur(height, occlusion_sigma) - height).clamp(min=0.0)
    return diffuse * lambert.clamp(min=0.0) + (1.0 - diffuse) * torch.exp(-occlusion * cavity)


def polygon_masks(polygons: torch.Tensor, size: tuple[int, int], cell: int = 2) -> torch.Tensor:
    """Hard masks `(N, 1, H, W)` of closed polygons `(N, M, 2)` (even-odd rule).

    Rasterised on a grid of `cell`-pixel cells and upsampled: these masks are feathered afterwards,
    so the coarse grid loses nothing.
    """
    height, width = size
    grid = (max(1, height // cell), max(1, width // cell))
    return F.interpolate(polygon_grid_masks(polygons, size, grid), size=size, mode="bilinear", align_corners=False)


def polygon_grid_masks(polygons: torch.Tensor, size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """Hard inside/outside masks `(N, 1, gh, gw)` of closed polygons `(N, M, 2)` on a coarse grid.

    Even-odd rule at the cell centres, one scanline per grid row: the x positions where the polygon's
    edges cross the row are sorted, and a cell centre is inside when an odd number of crossings lie
    to its left (`searchsorted`). That is O(rows x edges) work plus a binary search per cell, instead
    of testing every cell against every edge.
    """
    (height, width), (gh, gw) = size, grid
    device = polygons.device
    ys = (torch.arange(gh, device=device, dtype=torch.float32) + 0.5) * (height / gh)
    xs = (torch.arange(gw, device=device, dtype=torch.float32) + 0.5) * (width / gw)
    a = polygons[..., :2].float()
    b = torch.roll(a, shifts=-1, dims=1)
    ay, by = a[..., 1, None], b[..., 1, None]  # (N, M, 1)
    straddles = (ay > ys) != (by > ys)  # (N, M, gh)
    dy = torch.where((by - ay).abs() < 1e-9, torch.full_like(by, 1e-9), by - ay)
    cross = a[..., 0, None] + (ys - ay) * (b[..., 0, None] - a[..., 0, None]) / dy
    cross = torch.where(straddles, cross, torch.full_like(cross, float("inf")))
    rows = cross.permute(0, 2, 1).sort(dim=-1).values.contiguous()  # (N, gh, M)
    n = rows.shape[0]
    left = torch.searchsorted(rows.view(n * gh, -1), xs.expand(n * gh, gw).contiguous(), right=True)
    return (left % 2).float().view(n, 1, gh, gw)


def feathered(masks: torch.Tensor, sigma: torch.Tensor, grow: torch.Tensor | None = None) -> torch.Tensor:
    """Soft version of hard masks: optionally grown by `grow` px (per image), then blurred by `sigma`."""
    if grow is not None:
        masks = (gaussian_blur(masks, grow) > 0.15).float()
    return gaussian_blur(masks, sigma).clamp(0.0, 1.0)
