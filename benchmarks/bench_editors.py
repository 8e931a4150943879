"""Editor throughput at 512x512, batch 32, and the ratio to the mesh warp alone (not a test).

    python benchmarks/bench_editors.py [--batch 32] [--size 512] [--repeats 2] [--device cpu] [--check]

The warp is the floor every geometric editor pays once; the target is that each editor's extra work
stays under 3x the warp time (ratio = editor time / warp time <= 4). Every side (the warp too) is
timed the same way: one untimed warm-up call, then the best of `--repeats`, in this process with the
same threads. `--check` exits 1 when an editor misses the ratio or cannot be built.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from hydra.utils import instantiate

from editors.symmetry import symmetric_target
from editors.warp import warp_images
from engine.data import DemoDataset
from engine.faces import FaceAnalyzer
from engine.pipeline import make_face_batch

EDITORS = {
    "symmetry/shape": {"_target_": "editors.symmetry.SymmetryEditor", "mode": "shape"},
    "symmetry/texture": {"_target_": "editors.symmetry.SymmetryEditor", "mode": "texture"},
    "symmetry/both": {"_target_": "editors.symmetry.SymmetryEditor", "mode": "both"},
    "asymmetry": {"_target_": "editors.symmetry.AsymmetryEditor"},
    "semg/fridlund": {"_target_": "editors.electrodes.ElectrodeEditor"},
    "semg/kuramoto": {"_target_": "editors.electrodes.ElectrodeEditor", "scheme": "kuramoto"},
    "age/older": {"_target_": "editors.age.AgeEditor"},
    "age/younger": {"_target_": "editors.age.AgeEditor", "direction": "younger"},
    "gender/male": {"_target_": "editors.gender.GenderEditor", "target": "male"},
    "gender/female": {"_target_": "editors.gender.GenderEditor", "target": "female"},
}


def face_batch(n: int, size: int, device: torch.device):
    """`n` demo faces as the engine would feed them (aligned crops, landmarks), repeated if needed."""
    analyzer = FaceAnalyzer(crop_size=size)
    recs, analyses, crops = [], [], []
    for rec in DemoDataset():
        fa, crop = analyzer.analyse(rec.image_id, rec.load())
        if fa.ok:
            recs.append(rec)
            analyses.append(fa)
            crops.append(crop)
        if len(recs) == n:
            break
    analyzer.close()
    return make_face_batch(recs, analyses, crops, device)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: lazy weights, caches, allocator
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", nargs="*", help="editor names to run (default: all)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    missed: list[str] = []
    device = torch.device(args.device)
    batch = face_batch(args.batch, args.size, device)
    src = batch.landmarks[..., :2]
    dst = symmetric_target(batch.landmarks, 1.0)[..., :2]
    t_warp = timed(lambda: warp_images(batch.images, src, dst), args.repeats)
    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch} size={args.size}")
    print(f"{'editor':18s} {'img/s':>8s} {'s/batch':>8s} {'x warp':>7s}")
    print(f"{'warp (floor)':18s} {args.batch / t_warp:8.1f} {t_warp:8.3f} {1.0:7.2f}")
    rows = []
    for name, cfg in EDITORS.items():
        if args.only and name not in args.only:
            continue
        try:
            editor = instantiate(cfg)
        except Exception as exc:  # noqa: BLE001 - an editor missing here should not stop the others
            print(f"{name:18s} unavailable: {exc}")
            missed.append(f"{name}: unavailable")
            continue
        t = timed(lambda editor=editor: editor.edit(batch, 1.0, seed=0), args.repeats)
        rows.append((name, t))
        print(f"{name:18s} {args.batch / t:8.1f} {t:8.3f} {t / t_warp:7.2f}")
    ratios = np.array([t / t_warp for _, t in rows])
    if len(ratios):
        print(f"\noverhead beyond the warp (editor/warp - 1): median {np.median(ratios) - 1:.2f}x, "
              f"max {ratios.max() - 1:.2f}x (target < 3x)")
    missed += [f"{name}: {t / t_warp:.2f}x the warp > 4x" for name, t in rows if t / t_warp > 4.0]
    print(f"timing: one untimed warm-up call, then the best of {args.repeats}, {torch.get_num_threads()} threads")
    for line in missed:
        print(f"MISSED {line}")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
