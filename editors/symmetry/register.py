"""Registering the face's mirror image to the face by optical flow, before the texture blend.

The mesh mirror map lands each pixel on the same place of its partner triangle, but the mesh itself
sits a pixel or a few off the real features, most on blurry faces. Blending two copies that are a few
pixels apart draws every edge twice: a grey smear above a moustache, a doubled nostril or lip line.
The residual is found here by dense optical flow from the face to its (mesh-made) mirror image,
computed on the detail of both (their local means taken out, so the mirrored lighting does not pull
on it), smoothed and capped at a small fraction of the inter-ocular distance: it corrects where the
mesh is off, it never moves a feature by as much as a real asymmetry. The blend then averages feature
with feature, and the face's shape stays where it was, as texture mode promises.

OpenCV's Farnebäck flow runs on the CPU, one face at a time (a face's result never depends on its
batch); maps are moved to and from the images' device around it.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from editors.skin import gaussian_blur, luminance
from editors.warp import identity_coords

#: Sigma (IOD) of the local mean taken out of both images before the flow: the lighting scale.
DETAIL_SIGMA = 0.08
#: Farnebäck's averaging window (IOD): about a feature's width, so a nostril is matched as a whole.
WINDOW = 0.12
#: Sigma (IOD) of the Gaussian that smooths the flow: the mesh's error varies slowly over the face.
FLOW_SMOOTHING = 0.04


def _detail_u8(grey: torch.Tensor, sigma: float) -> np.ndarray:
    """One `(1, 1, H, W)` luminance image's detail (minus its local mean), as uint8 about 128."""
    detail = grey - gaussian_blur(grey, sigma)
    scale = detail.abs().quantile(0.99).clamp(min=1e-3)
    return ((detail / scale * 60.0 + 128.0).clamp(0, 255)).round().to(torch.uint8)[0, 0].cpu().numpy()


def registration_flow(
    images: torch.Tensor, mirrored: torch.Tensor, weight: torch.Tensor, iod: torch.Tensor, max_shift: float
) -> torch.Tensor:
    """`(N, H, W, 2)` displacement (pixels) that moves each mirror image onto its face.

    `mirrored(x + flow(x))` matches `images(x)`. The flow is smoothed over `FLOW_SMOOTHING` IOD, faded
    out where `weight (N, 1, H, W)` (the blend's share) is 0, and capped at `max_shift` IOD in length.
    """
    n, _, height, width = images.shape
    grey, grey_mirror = luminance(images.float()), luminance(mirrored.float())
    flows = []
    for i in range(n):
        unit = float(iod[i])
        face = _detail_u8(grey[i : i + 1], DETAIL_SIGMA * unit)
        other = _detail_u8(grey_mirror[i : i + 1], DETAIL_SIGMA * unit)
        window = max(5, int(round(WINDOW * unit)) | 1)
        flow = cv2.calcOpticalFlowFarneback(face, other, None, pyr_scale=0.5, levels=3, winsize=window,
                                            iterations=4, poly_n=5, poly_sigma=1.1, flags=0)
        flows.append(torch.from_numpy(flow).permute(2, 0, 1))
    flow = torch.stack(flows).to(images.device, torch.float32)
    # Smooth where the blend acts (a weighted mean), so the flow of the background never leaks in.
    mass = (weight > 0).float()
    sigma = FLOW_SMOOTHING * iod.to(images.device)
    flow = gaussian_blur(flow * mass, sigma) / gaussian_blur(mass, sigma).clamp(min=1e-3) * mass
    cap = (max_shift * iod.to(images.device))[:, None, None, None]
    length = flow.norm(dim=1, keepdim=True)
    flow = flow * torch.where(length > cap, cap / length.clamp(min=1e-6), torch.ones_like(length))
    return flow.permute(0, 2, 3, 1)


def registered_coords(flow: torch.Tensor) -> torch.Tensor:
    """The backward map `x -> x + flow(x)`, `(N, H, W, 2)`, to compose before the mirror map."""
    n, height, width, _ = flow.shape
    return identity_coords(n, (height, width), flow.device) + flow

