"""Acceptance check of the gender editor against the independent age/gender judge, on the demo set.

For every face the landmarker finds: sham (strength 0) and edit (strength 1 by default) toward each target,
both quantised to uint8 as the engine caches them, faces re-detected on each image (as the engine's audit
does), then judged by `engine.judges.AgeGenderEstimator`. Reports, per target and for sharp portraits and
blurry LFW faces separately:

* the paired change of p(target) (edit - sham), median and one-sided Wilcoxon p, on the faces the judge
  calls the other sex at the sham and on all faces;
* the median |change of the judged age|;
* the mean absolute blendshape change of the re-detected faces (mean over the 52 blendshapes, then faces).

The editor never sees the judge: it is only run here, after editing.

    python scripts/eval_gender.py --out /tmp/gender_eval [--strength 1.0] [--set stubble=0.3 ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from editors.gender import GenderEditor  # noqa: E402
from engine.audit.age_gender import AgeGenderEstimator  # noqa: E402
from engine.data import DemoDataset  # noqa: E402
from engine.faces import FaceAnalyzer, FaceLandmarker  # noqa: E402
from engine.pipeline import make_face_batch  # noqa: E402

log = logging.getLogger("eval_gender")


def analyse_demo(crop_size: int, limit: int | None, cache: Path | None) -> tuple[list, list, list]:
    """Records, analyses and aligned crops of every demo face the landmarker finds (cached in `cache`)."""
    import pickle

    if cache is not None and cache.is_file():
        with cache.open("rb") as fh:
            return pickle.load(fh)
    analyzer = FaceAnalyzer(crop_size=crop_size)
    records, analyses, crops = [], [], []
    for rec in DemoDataset(limit=limit):
        analysis, crop = analyzer.analyse(rec.image_id, rec.load())
        if analysis.ok:
            rec_light = type(rec)(rec.image_id, rec.source, None, metadata=dict(rec.metadata))
            records.append(rec_light)
            analyses.append(analysis)
            crops.append(crop)
    analyzer.close()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with cache.open("wb") as fh:
            pickle.dump((records, analyses, crops), fh)
    return records, analyses, crops


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return images.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def judge(rgb: np.ndarray, landmarker: FaceLandmarker, estimator: AgeGenderEstimator) -> pd.DataFrame:
    """Re-detect every uint8 image and judge it with its own landmarks (NaN where no face is found)."""
    rows, found, lms = [], [], []
    for i, im in enumerate(rgb):
        det = landmarker.detect(im)
        rows.append(
            {"found": det is not None, "blendshapes": det["blendshapes"] if det else np.full(52, np.nan)}
        )
        if det is not None:
            found.append(i)
            lms.append(det["landmarks"])
    df = pd.DataFrame(rows)
    df["age"], df["p_male"] = np.nan, np.nan
    if found:
        images = torch.from_numpy(rgb[found]).permute(0, 3, 1, 2).float().div(255.0)
        est = estimator.estimate(images, np.stack(lms))
        df.loc[found, "age"] = est["est_age"]
        df.loc[found, "p_male"] = est["est_p_male"]
    return df


def run(args: argparse.Namespace) -> pd.DataFrame:
    torch.manual_seed(0)
    records, analyses, crops = analyse_demo(args.crop_size, args.limit, args.cache)
    log.info("faces=%d", len(records))
    knobs = dict(kv.split("=", 1) for kv in args.set)
    landmarker, estimator = FaceLandmarker(), AgeGenderEstimator()
    frames = []
    for target in args.targets:
        editor = GenderEditor(target=target, **{k: float(v) for k, v in knobs.items()})
        for start in range(0, len(records), args.chunk):
            idx = range(start, min(start + args.chunk, len(records)))
            batch = make_face_batch(
                [records[i] for i in idx],
                [analyses[i] for i in idx],
                [crops[i] for i in idx],
                torch.device("cpu"),
            )
            sham = to_uint8(editor.sham(batch, args.seed).images)
            edit = to_uint8(editor.edit(batch, args.strength, args.seed).images)
            ref, out = judge(sham, landmarker, estimator), judge(edit, landmarker, estimator)
            for j, i in enumerate(idx):
                frames.append({
                    "image_id": records[i].image_id, "origin": records[i].metadata.get("origin", ""),
                    "target": target, "strength": args.strength,
                    "found_sham": bool(ref.found[j]), "found_edit": bool(out.found[j]),
                    "p_male_sham": ref.p_male[j], "p_male_edit": out.p_male[j],
                    "age_sham": ref.age[j], "age_edit": out.age[j],
                    "blendshape_change": float(np.mean(np.abs(out.blendshapes[j] - ref.blendshapes[j]))),
                })  # fmt: skip
            if args.save_png is not None and start == 0:
                save_side_by_side(args.save_png / f"{target}_first_chunk.png", sham, edit)
            log.info("target=%s done=%d/%d", target, idx.stop, len(records))
    landmarker.close()
    df = pd.DataFrame(frames)
    is_female = df.target == "female"
    df["p_target_sham"] = np.where(is_female, 1 - df.p_male_sham, df.p_male_sham)
    df["p_target_edit"] = np.where(is_female, 1 - df.p_male_edit, df.p_male_edit)
    df["delta_p_target"] = df.p_target_edit - df.p_target_sham
    df["delta_age"] = df.age_edit - df.age_sham
    return df


def summarise(df: pd.DataFrame) -> list[dict]:
    """One row per target x subset x origin with n, medians and the Wilcoxon p."""
    from scipy.stats import wilcoxon

    out = []
    ok = df[df.found_sham & df.found_edit]
    for target, by_target in ok.groupby("target"):
        subsets = {"judged_other_sex": by_target[by_target.p_target_sham < 0.5], "all_faces": by_target}
        for subset, part in subsets.items():
            for origin in ("all", "portrait", "lfw"):
                sel = part if origin == "all" else part[part.origin == origin]
                if sel.empty:
                    continue
                delta = sel.delta_p_target.to_numpy()
                nonzero = delta[np.abs(delta) > 0]
                p = (
                    float(wilcoxon(nonzero, alternative="greater").pvalue)
                    if len(nonzero) >= 1
                    else float("nan")
                )
                out.append({
                    "target": target, "subset": subset, "origin": origin, "n": len(sel),
                    "median_delta_p_target": float(np.median(delta)), "wilcoxon_p": p,
                    "median_abs_delta_age": float(np.median(np.abs(sel.delta_age))),
                    "mean_blendshape_change": float(sel.blendshape_change.mean()),
                })  # fmt: skip
    return out


def save_side_by_side(path: Path, sham: np.ndarray, edit: np.ndarray, n: int = 6) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [np.concatenate([sham[i], edit[i]], axis=1) for i in range(min(n, len(sham)))]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for per_face.csv and summary.json")
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--targets", nargs="+", default=["female", "male"], choices=["female", "male"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop-size", type=int, default=384)
    parser.add_argument("--limit", type=int, default=None, help="first N demo images only")
    parser.add_argument("--chunk", type=int, default=16, help="faces edited at once")
    parser.add_argument("--cache", type=Path, default=None, help="pickle of the face analyses to reuse")
    parser.add_argument("--save-png", type=Path, default=None, help="folder for sham | edit sheets")
    parser.add_argument("--set", nargs="*", default=[], help="editor knob overrides, key=value")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    df = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / "per_face.csv", index=False)
    summary = summarise(df)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(pd.DataFrame(summary).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
