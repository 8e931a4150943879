"""Benchmark the batched torch mesh warp against scikit-image's piecewise-affine warp (not a test).

Warps a batch of real faces (astronaut, Grace Hopper, LFW upscaled; aligned 512 px crops) to their
symmetric target shape, once with `editors.warp.warp_images` and once per image with
`skimage.transform.PiecewiseAffineTransform` + `skimage.transform.warp` on the same control points
(the mesh vertices, the anchor ring and the image border, all in one process). skimage is slow, so it
runs on a few images and its per-image time is extrapolated; the output says so.

    python benchmarks/bench_warp.py [--batch 32] [--size 512] [--skimage-images 2] [--device cpu|cuda]
        [--threads N] [--save-faces faces.npz | --faces faces.npz] [--save before_torch_skimage.png]

Targets: torch >= 20x faster per image on CPU; mean |torch - skimage| inside the face < 2/255.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from editors.mesh import IRIS_CENTRES, demo_face_crops, landmark_group  # noqa: E402
from editors.symmetry import symmetric_target  # noqa: E402
from editors.warp import anchor_ring, warp_images  # noqa: E402


def control_points(src: torch.Tensor, dst: torch.Tensor, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The torch warp's vertices (mesh vertices + anchor ring) plus fixed image-border points."""
    vertices = [i for i in range(468)] + list(IRIS_CENTRES)
    ring = anchor_ring(src[None])[0, :, :2]
    edge = np.linspace(0, size, 9)
    border = np.array(
        [(x, y) for x in edge for y in edge if x in (0, size) or y in (0, size)], dtype=np.float32
    )
    src_pts = np.concatenate([src[vertices, :2].numpy(), ring.numpy(), border])
    dst_pts = np.concatenate([dst[vertices, :2].numpy(), ring.numpy(), border])
    return src_pts, dst_pts


def skimage_warp(image: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    from skimage.transform import PiecewiseAffineTransform, warp

    # skimage puts pixel centres on integers; our landmarks put them at +0.5.
    if hasattr(PiecewiseAffineTransform, "from_estimate"):  # scikit-image >= 0.26
        tform = PiecewiseAffineTransform.from_estimate(dst_pts - 0.5, src_pts - 0.5)  # output -> input
    else:
        tform = PiecewiseAffineTransform()
        tform = tform if tform.estimate(dst_pts - 0.5, src_pts - 0.5) else None
    if not tform:
        raise RuntimeError(f"skimage PiecewiseAffineTransform estimation failed: {tform}")
    return warp(image, tform, order=1, mode="edge")


def face_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    from skimage.draw import polygon

    oval = landmarks[list(landmark_group("face_oval")), :2] - 0.5
    mask = np.zeros((size, size), dtype=bool)
    rows, cols = polygon(oval[:, 1], oval[:, 0], shape=mask.shape)
    mask[rows, cols] = True
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--skimage-images", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--save", type=Path, default=None, help="write a before | torch | skimage PNG here")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--faces", type=Path, default=None, help="load crops+landmarks from this .npz")
    parser.add_argument("--save-faces", type=Path, default=None, help="save detected crops+landmarks here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.faces is not None:  # for machines without mediapipe
        stored = np.load(args.faces)
        crops, landmarks = stored["crops"][: args.batch], stored["landmarks"][: args.batch]
        args.size = crops.shape[1]
    else:
        crops, landmarks = demo_face_crops(args.batch, args.size)
    if args.save_faces is not None:
        np.savez_compressed(args.save_faces, crops=crops, landmarks=landmarks)
    src = torch.from_numpy(landmarks)
    dst = symmetric_target(src, 1.0)
    shift = (dst - src)[..., :2].norm(dim=-1)
    print(
        f"faces={len(crops)} size={args.size} displacement: mean={shift.mean():.2f}px max={shift.max():.2f}px"
    )

    device = torch.device(args.device)
    images = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255).to(device)
    warp_images(images[:2], src[:2].to(device), dst[:2].to(device))  # warm-up
    times = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        warped = warp_images(images, src.to(device), dst.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    torch_per_image = min(times) / len(crops)
    threads = (
        f"{torch.get_num_threads()} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    )
    print(f"torch  ({device.type}, {threads}): {1e3 * torch_per_image:.1f} ms/image (best of {args.repeats})")

    if device.type == "cuda":
        on_cpu = warp_images(images.cpu(), src, dst)
        again = warp_images(images, src.to(device), dst.to(device))
        print(
            f"cuda vs cpu: max |diff| = {(warped.cpu() - on_cpu).abs().max():.2e}; "
            f"cuda run-to-run identical: {torch.equal(warped, again)}"
        )
    warped_np = warped.permute(0, 2, 3, 1).cpu().numpy()
    diffs, sk_times, sk_first = [], [], None
    for i in range(min(args.skimage_images, len(crops))):
        src_pts, dst_pts = control_points(src[i], dst[i], args.size)
        start = time.perf_counter()
        reference = skimage_warp(crops[i].astype(np.float32) / 255, src_pts, dst_pts)
        sk_times.append(time.perf_counter() - start)
        inside = face_mask(dst[i].numpy(), args.size)
        diffs.append(np.abs(warped_np[i] - reference)[inside].mean())
        sk_first = reference if sk_first is None else sk_first
    sk_per_image = float(np.mean(sk_times))
    print(
        f"skimage PiecewiseAffineTransform+warp (1 thread): {1e3 * sk_per_image:.0f} ms/image, "
        f"timed on {len(sk_times)} of {len(crops)} images and extrapolated per image"
    )
    print(
        f"speed ratio skimage/torch per image: {sk_per_image / torch_per_image:.1f}x (target >= 20x on CPU)"
    )
    mean_diff = float(np.mean(diffs))
    print(
        f"mean |torch - skimage| inside the face: {mean_diff:.5f} = {255 * mean_diff:.3f}/255 (target < 2/255)"
    )
    if args.save is not None:
        from PIL import Image

        row = np.concatenate([crops[0] / 255, warped_np[0], sk_first], axis=1)
        Image.fromarray(np.round(row * 255).astype(np.uint8)).save(args.save)
        print(f"saved {args.save}: original | torch | skimage")


if __name__ == "__main__":
    main()
