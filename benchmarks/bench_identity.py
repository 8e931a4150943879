"""Benchmark dlib's face descriptor against its torch port, `engine.dlib_resnet`, on CPU (not a test).

Both sides get the same list of real 150 px chips (the two demo portraits and LFW faces, cut by
`engine.audit.identity.face_chips`, plus their mirror images, cycled to --batch) and are timed the same way: one
warm-up call, then --repeat timed calls of the whole batch, best of N, per-chip time = best / batch.

* dlib: `dlib.face_recognition_model_v1(...).compute_face_descriptor(list_of_chips)` (dlib-bin; it
  runs the network in batches of 16 internally).
* torch: `load_dlib_face_resnet()` (affine folded into the convs, channels_last, inference_mode) on
  the whole batch at once.

Threads: dlib-bin links no BLAS and its CPU DNN code runs on the calling thread only -- it ignores
torch's setting and has no thread option; the benchmark measures and prints its CPU time / wall time,
which is ~1.0. torch uses --threads intra-op threads (`torch.set_num_threads`); the default 1 gives
both sides one core. Another process may share the CPU: repeat, and report the best.

    python benchmarks/bench_identity.py [--batch 32] [--repeat 5] [--threads 1] [--check]

--check exits 1 unless torch is >= 10x faster per chip and max |torch - dlib| <= 1e-4.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.assets import asset_path  # noqa: E402
from engine.audit.dlib_resnet import ASSET, load_dlib_face_resnet  # noqa: E402

MIN_RATIO = 10.0
MAX_DIFF = 1e-4


def real_chips(n: int, n_lfw: int) -> np.ndarray:
    """`(n, 150, 150, 3)` uint8 chips of real faces and their mirror images, cycled to n."""
    from engine.audit.identity import face_chips
    from engine.data import DemoDataset
    from engine.faces import FaceAnalyzer
    from engine.pipeline import analyse_faces

    analyzer = FaceAnalyzer()
    faces = analyse_faces(DemoDataset(n_lfw=n_lfw), analyzer)
    analyzer.close()
    chips = face_chips(faces.images, faces.landmarks.numpy()).round().byte().permute(0, 2, 3, 1).numpy()
    chips = np.concatenate([chips, chips[:, :, ::-1]])
    return np.ascontiguousarray(chips[np.arange(n) % len(chips)])


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """(best wall seconds, CPU seconds / wall seconds of that call, last result) after one warm-up call."""
    out = fn()
    best, load = float("inf"), 0.0
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, load = wall, cpu / wall
    return best, load, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32, help="chips per call (default 32)")
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per side after 1 warm-up; best counts")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (dlib-bin always uses 1)")
    ap.add_argument("--lfw", type=int, default=14, help="LFW faces besides the two portraits (default 14)")
    ap.add_argument("--check", action="store_true", help=f"exit 1 unless ratio >= {MIN_RATIO} and diff <= {MAX_DIFF}")
    args = ap.parse_args(argv)

    import dlib

    torch.set_num_threads(args.threads)
    chips = real_chips(args.batch, args.lfw)
    chip_list = list(chips)
    x = torch.from_numpy(chips).permute(0, 3, 1, 2)  # (N, 3, 150, 150) uint8, a view: no copy

    model = dlib.face_recognition_model_v1(str(asset_path(ASSET)))
    net = load_dlib_face_resnet(device="cpu")

    def run_dlib() -> np.ndarray:
        return np.asarray([np.asarray(d) for d in model.compute_face_descriptor(chip_list)])

    def run_torch() -> np.ndarray:
        with torch.inference_mode():
            return net(x).numpy()

    t_dlib, load_dlib, ref = best_of(run_dlib, args.repeat)
    t_torch, load_torch, got = best_of(run_torch, args.repeat)
    diff = float(np.abs(np.asarray(got, np.float64) - ref).max())
    per_dlib, per_torch = t_dlib / args.batch * 1e3, t_torch / args.batch * 1e3
    ratio = per_dlib / per_torch

    print(f"{args.batch} real 150 px chips, 1 warm-up + best of {args.repeat}, CPU, torch {torch.__version__}"
          f" (threads={torch.get_num_threads()}), dlib {dlib.__version__} (dlib-bin, own single thread)")
    print(f"dlib  compute_face_descriptor  {per_dlib:8.2f} ms/chip   (cpu/wall {load_dlib:.2f})")
    print(f"torch DlibFaceResNet batch {args.batch:<3d} {per_torch:8.2f} ms/chip   (cpu/wall {load_torch:.2f})")
    print(f"speed-up {ratio:.1f}x   max |torch - dlib| = {diff:.2e}")
    if args.check:
        ok = ratio >= MIN_RATIO and diff <= MAX_DIFF
        print(f"check: ratio >= {MIN_RATIO:g} and diff <= {MAX_DIFF:g}: {'ok' if ok else 'FAILED'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
