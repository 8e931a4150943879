"""Is an editor's `expression_moved` the edit or the judge's noise? Read the blendshapes more steadily.

The audit's expression check is MediaPipe's 52 blendshapes, read once on the sham and once on the edit
(`FaceDetectionJudge`); its threshold is the 99th percentile of that reading's noise under nuisance
transforms (`engine.calibrate`). If the edits fail it because one reading jitters, a steadier reading
(the mean over several framings of the crop: as it is, moved by 1 px, scaled by ±1.5 %) would shrink
the edits' change as much as the noise. If the edit changes what MediaPipe reads, the noise shrinks
and the edit's change stays. For each experiment this measures, with one view and with all views:

* the noise: mean |Δ blendshape| between each face and each of `engine.calibrate.CROP_TRANSFORMS` of it
  (p50 and p99 over all pairs);
* the edit: mean |Δ blendshape| between the face (the sham of every built-in editor) and its edit at
  strength 1 (median over faces), and the share of edits above the noise's p99.

    python scripts/expression_noise.py [age_shift asymmetry ...] [--split tuning] [--write-docs]

The blendshape model reads the 146 landmark positions MediaPipe finds, not the pixels, so "expression"
here is the geometry of the features as MediaPipe re-detects them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "EDITORS.md"
BEGIN, END = "<!-- expression-noise:begin -->", "<!-- expression-noise:end -->"
BATCH = 8


def framings() -> list[Callable[[np.ndarray], np.ndarray]]:
    """The views a steadier reading averages: the crop, moved 1 px down-right, scaled up and down 1.5 %."""
    from engine.calibrate import scale_crop, warp_crop

    return [lambda x: x, lambda x: warp_crop(x, np.float32([[1, 0, 1], [0, 1, 1]])),
            lambda x: scale_crop(x, 1.015), lambda x: scale_crop(x, 0.985)]


def read(detect: Callable[[np.ndarray], np.ndarray | None], image: np.ndarray,
         views: Sequence[Callable[[np.ndarray], np.ndarray]]) -> np.ndarray | None:
    """Mean blendshapes over `views` of `image`; None when any view finds no face."""
    readings = []
    for view in views:
        blendshapes = detect(view(image))
        if blendshapes is None:
            return None
        readings.append(blendshapes)
    return np.mean(readings, axis=0)


def summarise(experiment: str, views: int, noise: list[float], edits: list[float]) -> dict:
    """One row: the noise's p50 and p99, the edits' median and the share above p99, over the edits whose
    face was found again (NaN: not found, which the audit reports as face_not_found instead)."""
    noise_arr, edit_arr = np.asarray(noise, float), np.asarray(edits, float)
    edit_arr = edit_arr[np.isfinite(edit_arr)]
    p99 = float(np.percentile(noise_arr, 99))
    return {"experiment": experiment, "views": views, "noise_pairs": len(noise_arr),
            "noise_p50": float(np.median(noise_arr)), "noise_p99": p99, "edits": len(edit_arr),
            "edit_median": float(np.median(edit_arr)), "over_p99": float(np.mean(edit_arr > p99))}


def measure(experiment: str, split: str, view_counts: Sequence[int]) -> list[dict]:
    """Rows of the table for one experiment: one per number of views."""
    import torch

    from engine.calibrate import CROP_TRANSFORMS
    from engine.config import compose_config
    from engine.faces.landmarker import FaceLandmarker
    from engine.pipeline import make_face_batch
    from engine.spec import RunSpec

    spec = RunSpec.from_config(compose_config([f"experiment={experiment}", f"dataset.split={split}",
                                               "classifier=dummy"]))
    faces = [(rec, fa, crop) for rec in spec.dataset
             for fa, crop in spec.faces.analyse_all(rec.image_id, rec.load()) if fa.ok]
    spec.faces.close()
    landmarker = FaceLandmarker()

    def detect(image: np.ndarray) -> np.ndarray | None:
        det = landmarker.detect_crop(image)
        return None if det is None else det["blendshapes"]

    def u8(t: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray((t.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy())

    all_views = framings()
    noise = {k: [] for k in view_counts}
    edits = {k: [] for k in view_counts}
    for start in range(0, len(faces), BATCH):
        chunk = faces[start : start + BATCH]
        batch = make_face_batch(*(list(part) for part in zip(*chunk, strict=True)))
        edited = spec.editor.edit(batch, 1.0, spec.seed).images
        for i in range(len(chunk)):
            face, edit = u8(batch.images[i]), u8(edited[i])
            for k in view_counts:
                ref = read(detect, face, all_views[:k])
                if ref is None:
                    continue
                after = read(detect, edit, all_views[:k])
                edits[k].append(np.nan if after is None else float(np.abs(after - ref).mean()))
                for transform in CROP_TRANSFORMS.values():
                    moved = read(detect, transform(face), all_views[:k])
                    if moved is not None:
                        noise[k].append(float(np.abs(moved - ref).mean()))
    landmarker.close()
    return [summarise(experiment, k, noise[k], edits[k]) for k in view_counts]


def markdown(table: pd.DataFrame, split: str, experiments: Sequence[str]) -> str:
    from engine.report.provenance import short_commit

    git = short_commit()
    lines = [f"Measured by `python scripts/expression_noise.py {' '.join(experiments)} --split {split} --write-docs` "
             f"on {time.strftime('%Y-%m-%d')} (git {git}, demo `{split}` half). Mean |Δ| of the 52 blendshapes.",
             "",
             "| experiment | views | noise p50 | noise p99 | edit median | edits above noise p99 |",
             "|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['experiment']} | {r['views']} | {r['noise_p50']:.4f} | {r['noise_p99']:.4f} | "
                     f"{r['edit_median']:.4f} | {r['over_p99']:.0%} ({r['edits']} faces) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("experiments", nargs="*", default=["age_shift", "asymmetry"])
    p.add_argument("--split", default="tuning", choices=("tuning", "evaluation", "all"))
    p.add_argument("--write-docs", action="store_true", help="write the table into docs/EDITORS.md")
    args = p.parse_args(argv)
    rows = []
    for experiment in args.experiments:
        rows += measure(experiment, args.split, (1, len(framings())))
        print(f"{experiment}: done", flush=True)
    text = markdown(pd.DataFrame(rows), args.split, args.experiments)
    print(text)
    if args.write_docs:
        from engine.report.files import write_between_markers

        write_between_markers(DOCS, BEGIN, END, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
