"""Benchmark the batched torch mesh warp against a bare `grid_sample` and scikit-image (not a test).

Warps a batch of real faces (astronaut, Grace Hopper, LFW upscaled; aligned crops) to a target shape:
their symmetric shape plus a smooth displacement of `--amplitude` px, large enough that returning the
input image unwarped fails the accuracy check below by far.

Timing protocol, the same for every side:
* threads: `--threads T` (default: all cores). torch gets `torch.set_num_threads(T)`; OMP, MKL and
  OpenBLAS get T from their environment variables, set before numpy and torch load, so scikit-image,
  which runs in this same process, has the same T threads for its numpy/scipy calls (its own warp
  loop is single-threaded);
* one untimed warm-up call, then the best of `--repeats` timed calls (CUDA synchronised around each),
  divided by the number of images in a call. Other processes on the machine slow the many short
  multi-threaded steps of the warp more than one long `grid_sample`: compare ratios from one quiet
  run, not times across runs.

Sides:
* torch warp: `editors.warp.warp_images` on the whole batch (builds the backward map and samples it);
* bare grid_sample: `F.grid_sample` on the whole batch with the warp's own field precomputed;
* map + apply: `backward_map` then `apply_backward_map`, as the editors call it (for information);
* skimage: `PiecewiseAffineTransform` + `warp` on the same control points (mesh vertices, anchor ring,
  image border), one image after another. It is slow, so a call covers only `--skimage-images`
  images and its per-image time is extrapolated from them.

Checks (`--check` exits with status 1 if one fails): warp / bare grid_sample <= 3 per image (CPU);
mean |torch - skimage| inside the face < 2/255; and the same error of the unwarped input at least 5x
that threshold, so the accuracy check cannot pass vacuously.

    python benchmarks/bench_warp.py [--batch 32] [--size 512] [--threads T] [--repeats 10] [--check]
        [--skimage-images 2] [--amplitude 10] [--device cpu|cuda] [--faces faces.npz | --save-faces
        faces.npz] [--save before_torch_skimage.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for every side")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per side (best is kept)")
    parser.add_argument("--skimage-images", type=int, default=2, help="images per skimage call")
    parser.add_argument("--amplitude", type=float, default=10.0, help="smooth displacement on top (px)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--save", type=Path, default=None, help="write a before | torch | skimage PNG here")
    parser.add_argument("--faces", type=Path, default=None, help="load crops+landmarks from this .npz")
    parser.add_argument("--save-faces", type=Path, default=None, help="save detected crops+landmarks here")
    return parser.parse_args()


ARGS = _parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # before numpy and torch load their thread pools
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_name] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from editors.symmetry import symmetric_target  # noqa: E402
from editors.warp import anchor_ring, apply_backward_map, backward_map, warp_images  # noqa: E402
from engine.faces.mesh import IRIS_CENTRES, landmark_group  # noqa: E402

MAX_RATIO = 3.0  # warp / bare grid_sample, per image
MAX_ERROR = 2 / 255  # mean |torch - skimage| inside the face
MIN_IDENTITY_FACTOR = 5.0  # the unwarped input must miss MAX_ERROR by this factor at least


def smooth_target(landmarks: torch.Tensor, amplitude: float, size: int) -> torch.Tensor:
    """The symmetric shape plus a smooth displacement (a few cycles across the image) of `amplitude` px."""
    target = symmetric_target(landmarks, 1.0)
    phase = torch.rand(landmarks.shape[0], 4, generator=torch.Generator().manual_seed(0)) * 2 * np.pi
    x, y = landmarks[..., 0] / size, landmarks[..., 1] / size
    dx = amplitude * torch.sin(5 * y + phase[:, :1]) * torch.cos(3 * x + phase[:, 1:2])
    dy = amplitude * torch.cos(4 * x + phase[:, 2:3]) * torch.sin(5 * y + phase[:, 3:4])
    return torch.cat([target[..., :2] + torch.stack([dx, dy], dim=-1), target[..., 2:]], dim=-1)


def control_points(src: torch.Tensor, dst: torch.Tensor, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The torch warp's vertices (mesh vertices + anchor ring) plus fixed image-border points."""
    vertices = list(range(468)) + list(IRIS_CENTRES)
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


def best_time(call, repeats: int, device: torch.device) -> float:
    """Seconds of the fastest of `repeats` timed calls, after one untimed warm-up call."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    call()
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        call()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def demo_faces(count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The demo set's first `count` faces as the pipeline aligns them: uint8 crops and landmarks."""
    from engine.data import DemoDataset
    from engine.faces import FaceAnalyzer
    from engine.pipeline import analyse_faces

    analyzer = FaceAnalyzer(crop_size=size)
    batch = analyse_faces(DemoDataset(), analyzer, count=count)
    analyzer.close()
    crops = (batch.images * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return crops, batch.landmarks.numpy()


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    if args.faces is not None:  # for machines without mediapipe
        stored = np.load(args.faces)
        crops, landmarks = stored["crops"][: args.batch], stored["landmarks"][: args.batch]
        args.size = crops.shape[1]
    else:
        crops, landmarks = demo_faces(args.batch, args.size)
    if args.save_faces is not None:
        np.savez_compressed(args.save_faces, crops=crops, landmarks=landmarks)
    n, size = len(crops), args.size
    src = torch.from_numpy(landmarks)
    dst = smooth_target(src, args.amplitude, size)
    shift = (dst - src)[..., :2].norm(dim=-1)
    print(f"faces={n} size={size} displacement: mean={shift.mean():.2f}px max={shift.max():.2f}px")

    device = torch.device(args.device)
    images = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255).contiguous().to(device)
    src_d, dst_d = src.to(device), dst.to(device)
    warped = warp_images(images, src_d, dst_d)
    coords = backward_map(src_d, dst_d, (size, size))
    grid = coords * torch.tensor([2.0 / size, 2.0 / size], device=device) - 1.0  # the warp's own field

    def bare() -> torch.Tensor:
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    assert torch.equal(bare(), warped) and torch.equal(apply_backward_map(images, coords), warped)
    t_warp = best_time(lambda: warp_images(images, src_d, dst_d), args.repeats, device) / n
    t_bare = best_time(bare, args.repeats, device) / n
    t_map = (
        best_time(
            lambda: apply_backward_map(images, backward_map(src_d, dst_d, (size, size))), args.repeats, device
        )
        / n
    )

    count = min(args.skimage_images, n)
    floats = [crops[i].astype(np.float32) / 255 for i in range(count)]
    points = [control_points(src[i], dst[i], size) for i in range(count)]
    references: list[np.ndarray] = []

    def skimage_call() -> None:
        references[:] = [skimage_warp(floats[i], *points[i]) for i in range(count)]

    t_skimage = best_time(skimage_call, args.repeats, torch.device("cpu")) / count

    warped_np = warped.permute(0, 2, 3, 1).cpu().numpy()
    errors, identity_errors = [], []
    for i, reference in enumerate(references):
        inside = face_mask(dst[i].numpy(), size)
        errors.append(np.abs(warped_np[i] - reference)[inside].mean())
        identity_errors.append(np.abs(floats[i] - reference)[inside].mean())
    error, identity_error = float(np.mean(errors)), float(np.mean(identity_errors))
    ratio = t_warp / t_bare
    where = (
        f"{device.type}, {args.threads} threads"
        if device.type == "cpu"
        else torch.cuda.get_device_name(device)
    )

    print(f"\ntiming: {where}; 1 untimed warm-up call, best of {args.repeats} calls, per image")
    print(f"| {'side':<44} | {'ms/image':>9} | {'images per call':<32} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 34}|")
    rows = [
        ("torch warp (warp_images)", t_warp, f"{n}"),
        ("bare grid_sample, field precomputed", t_bare, f"{n}"),
        ("backward_map + apply_backward_map", t_map, f"{n}"),
        ("skimage PiecewiseAffineTransform + warp", t_skimage, f"{count} (per image: extrapolated)"),
    ]
    for name, seconds, calls in rows:
        print(f"| {name:<44} | {1e3 * seconds:>9.2f} | {calls:<32} |")
    ratio_ok = ratio <= MAX_RATIO or device.type != "cpu"
    accuracy_ok = error < MAX_ERROR
    identity_ok = identity_error >= MIN_IDENTITY_FACTOR * MAX_ERROR
    print(
        f"\nwarp / bare grid_sample: {ratio:.2f}x (target <= {MAX_RATIO:g}x on CPU) {'ok' if ratio_ok else 'MISSED'}"
    )
    print(f"skimage / warp: {t_skimage / t_warp:.0f}x faster")
    print(
        f"mean |torch - skimage| inside the face: {255 * error:.3f}/255 (target < {255 * MAX_ERROR:g}/255) "
        f"{'ok' if accuracy_ok else 'MISSED'}"
    )
    print(
        f"mean |unwarped input - skimage| inside the face: {255 * identity_error:.2f}/255 "
        f"(must be >= {MIN_IDENTITY_FACTOR * 255 * MAX_ERROR:g}/255 so no warp fails) {'ok' if identity_ok else 'MISSED'}"
    )
    if args.save is not None:
        from PIL import Image

        row = np.concatenate([floats[0], warped_np[0], references[0]], axis=1)
        Image.fromarray(np.round(np.clip(row, 0, 1) * 255).astype(np.uint8)).save(args.save)
        print(f"saved {args.save}: original | torch | skimage")
    return 0 if (ratio_ok and accuracy_ok and identity_ok) or not args.check else 1


if __name__ == "__main__":
    sys.exit(main(ARGS))
