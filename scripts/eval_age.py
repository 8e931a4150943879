"""Manipulation check of the offline age editor on the demo set, with the independent age/gender judge.

For every face of the chosen demo half (every face of a multi-face photo is its own record, as in the
engine), the sham (strength 0) and the edits are cut exactly as the engine does it (`FaceAnalyzer` crop,
`make_face_batch`), quantised to uint8, re-detected by the Face Landmarker (landmarks and blendshapes)
and judged by the dlib-models age and gender networks on chips cut at the sham's landmarks, as the
audit does. Reported per group (sharp faces: portraits and multi-face photos; blurry LFW faces; all):
the median change of estimated age (edit - sham) with a paired Wilcoxon test, the median |change of
p(male)|, the mean absolute blendshape change with the blendshapes that moved most, and the share of
faces that pass the audit's judged checks at the calibrated thresholds. The judge never feeds back
into the editor.

Usage:
    python scripts/eval_age.py [--split tuning] [--crop-size 384] [--strengths 0.5 1] [--direction older]
        [--limit N] [--batch 16] [--save-dir /tmp/age_eval] [--override key=value ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wilcoxon

from editors.age import AgeEditor
from engine.audit.age_gender import AgeGenderEstimator
from engine.data import DemoDataset
from engine.faces import FaceAnalyzer, FaceLandmarker
from engine.pipeline import make_face_batch


def analyse_demo(crop_size: int, limit: int | None, cache: Path | None, split: str = "tuning") -> tuple[list, list, list]:
    """Records, analyses and crops of every demo face of `split`, cut as the engine cuts them.

    Every face of a multi-face photo becomes its own record `<image id>#<k>`, as in the engine; faces
    the landmarker does not find again on their own crop (the audit could not judge them) are left out.
    The result is cached in `cache`.
    """
    import pickle

    if cache is not None and cache.exists():
        with cache.open("rb") as fh:
            plain, analyses, crops = pickle.load(fh)
        return [_PlainRecord(i, m) for i, m in plain], analyses, crops
    analyzer = FaceAnalyzer(crop_size=crop_size, multi=True)
    records, analyses, crops = [], [], []
    for rec in DemoDataset(limit=limit, split=split).records:
        for k, (fa, crop) in enumerate(analyzer.analyse_all(rec.image_id, rec.load())):
            if fa.redetected and not fa.needs_margin and crop is not None:
                records.append(_PlainRecord(f"{rec.image_id}#{k}", dict(rec.metadata)))
                analyses.append(fa)
                crops.append(crop)
    analyzer.close()
    if cache is not None:
        with cache.open("wb") as fh:
            pickle.dump(([(r.image_id, r.metadata) for r in records], analyses, crops), fh)
    return records, analyses, crops


class _PlainRecord:
    """The two record fields `make_face_batch` reads (picklable, unlike records with loaders)."""

    def __init__(self, image_id: str, metadata: dict) -> None:
        self.image_id, self.metadata = image_id, metadata


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return images.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def judge(
    rgb: np.ndarray, landmarker: FaceLandmarker, estimator: AgeGenderEstimator, align: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Re-detect and judge uint8 crops `(N, H, W, 3)`; NaN where no face is found.

    As in the audit, the age and gender chips are cut at `align (N, 478, 3)` (the sham's re-detected
    landmarks) when given, so an edit is judged on the same chip as its sham; else at each image's own.
    """
    n = len(rgb)
    age, p_male = np.full(n, np.nan), np.full(n, np.nan)
    blend = np.full((n, 52), np.nan)
    landmarks = np.full((n, 478, 3), np.nan)
    dets = [landmarker.detect(np.ascontiguousarray(im)) for im in rgb]
    found = [i for i, d in enumerate(dets) if d is not None]
    if found:
        landmarks[found] = np.stack([dets[i]["landmarks"] for i in found])
        blend[found] = np.stack([dets[i]["blendshapes"] for i in found])
    chips = landmarks if align is None else align
    usable = [i for i in found if np.isfinite(chips[i]).all()]
    if usable:
        imgs = torch.from_numpy(rgb[usable]).permute(0, 3, 1, 2).float() / 255.0
        est = estimator.estimate(imgs, chips[usable])
        age[usable], p_male[usable] = est["est_age"], est["est_p_male"]
    return {"age": age, "p_male": p_male, "blend": blend, "landmarks": landmarks}


def summarise(ref: dict, edit: dict, rows: np.ndarray) -> dict[str, float]:
    ok = rows & np.isfinite(ref["age"]) & np.isfinite(edit["age"])
    d_age = edit["age"][ok] - ref["age"][ok]
    d_male = np.abs(edit["p_male"][ok] - ref["p_male"][ok])
    d_blend = np.abs(edit["blend"][ok] - ref["blend"][ok]).mean(axis=1)
    out = {
        "n": int(ok.sum()),
        "median_d_age": float(np.median(d_age)) if len(d_age) else float("nan"),
        "mean_d_age": float(np.mean(d_age)) if len(d_age) else float("nan"),
        "frac_older": float(np.mean(d_age > 0)) if len(d_age) else float("nan"),
        "median_abs_d_pmale": float(np.median(d_male)) if len(d_male) else float("nan"),
        "mean_d_pmale": float(np.mean(edit["p_male"][ok] - ref["p_male"][ok]))
        if len(d_male)
        else float("nan"),
        "frac_abs_d_pmale_over_0.5": float(np.mean(d_male > 0.5)) if len(d_male) else float("nan"),
        "mean_abs_d_blend": float(np.mean(d_blend)) if len(d_blend) else float("nan"),
    }
    # The audit's verdict on the three judged checks (calibrated thresholds), over every face of the
    # group: a face whose sham or edit is not found counts as not valid, as in the audit.
    lim = calibrated_thresholds()
    with np.errstate(invalid="ignore"):
        valid = (
            (edit["age"] - ref["age"] >= lim["min_age_change"])
            & (np.abs(edit["p_male"] - ref["p_male"]) <= lim["max_p_male_change_nontarget"])
            & (np.abs(edit["blend"] - ref["blend"]).mean(axis=1) <= lim["max_blendshape_change"])
        )
    out["valid_share"] = float(valid[rows].mean()) if rows.any() else float("nan")
    if len(d_age) >= 6 and np.any(d_age != 0):
        out["wilcoxon_p"] = float(wilcoxon(d_age).pvalue)
    if len(d_age):
        from engine.faces import blendshape_names

        per = np.abs(edit["blend"][ok] - ref["blend"][ok]).mean(axis=0)
        top = np.argsort(per)[::-1][:5]
        out["top_blendshapes"] = {blendshape_names()[k]: round(float(per[k]), 3) for k in top}
    return out


def calibrated_thresholds() -> dict[str, float]:
    """The audit's default (calibrated) thresholds, read from the config."""
    import yaml

    path = Path(__file__).resolve().parents[1] / "conf" / "audit" / "thresholds" / "calibrated.yaml"
    return yaml.safe_load(path.read_text())


def parse_override(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crop-size", type=int, default=384)
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--direction", default="older")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--split", default="tuning", choices=("tuning", "evaluation", "all"),
                    help="demo half (tune on the tuning half only)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-dir", type=Path, default=None, help="side-by-side PNGs (sham | edits)")
    ap.add_argument("--analysis-cache", type=Path, default=None, help="pickle of the demo analyses")
    ap.add_argument("--override", nargs="*", default=[], help="editor knobs, e.g. fold_depth=1.5")
    ap.add_argument("--json", type=Path, default=None, help="write the summary here")
    args = ap.parse_args()
    torch.manual_seed(0)

    records, analyses, crops = analyse_demo(args.crop_size, args.limit, args.analysis_cache, args.split)
    editor = AgeEditor(direction=args.direction, **dict(parse_override(o) for o in args.override))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    outputs: dict[float, list[np.ndarray]] = {s: [] for s in [0.0, *args.strengths]}
    t0 = time.perf_counter()
    for start in range(0, len(records), args.batch):
        sl = slice(start, start + args.batch)
        batch = make_face_batch(records[sl], analyses[sl], crops[sl], device)
        for s in outputs:
            outputs[s].append(to_uint8(editor.edit(batch, s, args.seed).images))
    edit_seconds = time.perf_counter() - t0
    rgb = {s: np.concatenate(v) for s, v in outputs.items()}

    landmarker, estimator = FaceLandmarker(), AgeGenderEstimator()
    sham = judge(rgb[0.0], landmarker, estimator)
    measures = {s: sham if s == 0.0 else judge(im, landmarker, estimator, sham["landmarks"]) for s, im in rgb.items()}
    lfw = np.array([r.image_id.startswith("lfw_") for r in records])
    groups = {"sharp": ~lfw, "lfw": lfw, "all": np.ones(len(records), bool)}
    summary = {
        "crop_size": args.crop_size,
        "direction": args.direction,
        "n_faces": len(records),
        "edit_seconds": round(edit_seconds, 2),
        "overrides": args.override,
        "results": {},
    }
    for s in args.strengths:
        summary["results"][str(s)] = {
            g: summarise(measures[0.0], measures[s], rows) for g, rows in groups.items()
        }
    summary["per_sharp_face"] = {
        records[i].image_id: {str(s): round(float(measures[s]["age"][i]), 2) for s in measures}
        for i in np.flatnonzero(groups["sharp"])
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    if args.save_dir:
        from PIL import Image

        args.save_dir.mkdir(parents=True, exist_ok=True)
        for i, rec in enumerate(records):
            row = np.concatenate([rgb[s][i] for s in sorted(rgb)], axis=1)
            Image.fromarray(row).save(args.save_dir / f"{rec.image_id}.png")
    landmarker.close()


if __name__ == "__main__":
    main()
