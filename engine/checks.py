"""The audit stage of the pipeline: measure every sham and edit with independent judges.

For each image it re-detects the face (landmarks, blendshapes) on the sham and on every edit, runs
the age/gender estimator, measures symmetry when a measure is configured, and the pixel change
outside the edit mask. `engine.audit.audit_edits` then turns the paired measures into verdicts.
Judge outputs are cached by image content, so resumed runs do not re-measure.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from engine.audit import outside_mask_change, verdicts
from engine.cache import WorkCache, key_of
from engine.faces import FaceLandmarker
from engine.finished import callable_identity
from engine.identity import IdentityJudge, identity_distance
from engine.types import stable_hash

log = logging.getLogger(__name__)


class ManipulationChecks:
    """Collects judge measures chunk by chunk (`observe`), then builds the audit table (`table`).

    Args:
        cfg: `engine.audit.AuditConfig` thresholds.
        prop: the property the editor changes ("age", "gender", "symmetry", "semg", "none").
        direction: the intended direction ("older", "female", "more", ...) or None.
        cache: the work cache (judge outputs are keyed by image content).
        device: where perceptual metrics run.
        symmetry_measure: `f(landmarks (N, 478, 3)) -> (N,)` symmetry index, wired from config.
        perceptual: compute LPIPS/SSIM inside and outside the edit mask.
    """

    def __init__(self, cfg: Any, prop: str, direction: str | None, cache: WorkCache, device: torch.device,
                 symmetry_measure: Callable[[np.ndarray], np.ndarray] | None = None, perceptual: bool = True,
                 lpips_net: str = "alex",
                 image_symmetry_measure: Callable[[torch.Tensor, np.ndarray], np.ndarray] | None = None,
                 landmarker: FaceLandmarker | None = None, identity: bool = False) -> None:
        self.cfg = cfg
        self.prop = prop
        self.direction = direction
        self.cache = cache
        self.device = device
        self.symmetry_measure = symmetry_measure
        # Only symmetry edits need the image-space measure (it costs a mesh warp per image).
        self.image_symmetry_measure = image_symmetry_measure if prop == "symmetry" else None
        self.perceptual = perceptual
        self.lpips_net = lpips_net
        self._landmarker = landmarker  # shared with the face analyser when given (one model load)
        self._owns_landmarker = landmarker is None
        self._estimator: Any = None
        self._lpips: Any = None
        self._rows: list[dict[str, Any]] = []
        self._identity: IdentityJudge | None = IdentityJudge() if identity else None
        judges = "age_v1+gender_v1" + ("+dlib_face_recognition" if identity else "")
        self._fp = stable_hash({"landmarker": "face_landmarker", "judge": judges, "v": 1}, 32)

    # -- judges (lazy: an audit-free run never loads them) ---------------------------------------
    @property
    def landmarker(self) -> FaceLandmarker:
        if self._landmarker is None:
            self._landmarker = FaceLandmarker()
        return self._landmarker

    @property
    def estimator(self) -> Any:
        if self._estimator is None:
            from engine.judges import AgeGenderEstimator

            self._estimator = AgeGenderEstimator()
        return self._estimator

    def _measure(self, images: torch.Tensor, hashes: list[str],
                 judge_landmarks: list[np.ndarray] | None = None) -> list[dict[str, Any]]:
        """Per image: re-detected landmarks and blendshapes, judged age and p_male (cached).

        The age/gender judge aligns its face chip on `judge_landmarks` when given (the sham's), so
        edit and reference are cut identically and detector jitter (about 3 years of judged age per
        pixel of landmark noise) does not enter the paired difference.
        """
        tag = "ref" if judge_landmarks is None else "paired"
        keys = [key_of("judge", h, self._fp, tag, None if judge_landmarks is None else
                       np.round(judge_landmarks[i][:, :2], 2).tobytes().hex()[:64])
                for i, h in enumerate(hashes)]
        out: list[dict[str, Any] | None] = []
        for k in keys:
            got = self.cache.get_arrays("judge", k)
            out.append(None if got is None else {n: got[n] for n in got})
        todo = [i for i, o in enumerate(out) if o is None]
        self.cache.count("judge", hit=True, n=len(hashes) - len(todo))
        if todo:
            rgb = images[todo].permute(0, 2, 3, 1).cpu().numpy()
            dets = [self.landmarker.detect(im) for im in rgb]
            align = [judge_landmarks[i] if judge_landmarks is not None else
                     (dets[j]["landmarks"] if dets[j] is not None else None) for j, i in enumerate(todo)]
            usable = [j for j, a in enumerate(align) if a is not None and np.isfinite(a).all()]
            ages = np.full(len(todo), np.nan)
            p_male = np.full(len(todo), np.nan)
            descriptors = np.full((len(todo), 128), np.nan)
            if usable:
                lms = np.stack([align[j] for j in usable])
                imgs = images[[todo[j] for j in usable]].float().div(255.0)
                est = self.estimator.estimate(imgs.cpu(), lms)
                ages[usable] = est["age"]
                p_male[usable] = est["p_male"]
                if self._identity is not None:
                    descriptors[usable] = self._identity.descriptors(imgs.cpu(), lms)
            for j, i in enumerate(todo):
                d = dets[j]
                entry = {
                    "found": np.array(d is not None),
                    "landmarks": d["landmarks"] if d else np.full((478, 3), np.nan, np.float32),
                    "blendshapes": d["blendshapes"] if d else np.full(52, np.nan, np.float32),
                    "age": np.array(ages[j]),
                    "p_male": np.array(p_male[j]),
                }
                if self._identity is not None:
                    entry["identity"] = descriptors[j]
                self.cache.put_arrays("judge", keys[i], **entry)
                out[i] = entry
            self.cache.count("judge", hit=False, n=len(todo))
        return out  # type: ignore[return-value]

    def _perceptual(self, ref: torch.Tensor, edit: torch.Tensor, mask: torch.Tensor) -> dict[str, np.ndarray]:
        from engine.perceptual import LPIPS, ssim_in_out

        a = ref.to(self.device).float().div(255.0)
        b = edit.to(self.device).float().div(255.0)
        m = mask.to(self.device).float()
        res: dict[str, np.ndarray] = {}
        s_in, s_out = ssim_in_out(a, b, m)
        res["ssim_in"], res["ssim_out"] = np.asarray(s_in), np.asarray(s_out)
        if self.lpips_net:
            if self._lpips is None:
                self._lpips = LPIPS(net=self.lpips_net).to(self.device)
            l_in, l_out = self._lpips.in_out(a, b, m)
            res["lpips_in"], res["lpips_out"] = np.asarray(l_in), np.asarray(l_out)
        return res

    # -- pipeline hook (engine.pipeline.AuditHook) ------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What the rows depend on. Thresholds are not in it: they apply in `table`, after replay."""
        return {
            "judges": self._fp,
            "prop": self.prop,
            "perceptual": self.perceptual,
            "lpips_net": self.lpips_net if self.perceptual else None,
            "identity": self._identity is not None,
            "symmetry_measure": callable_identity(self.symmetry_measure),
            "image_symmetry_measure": callable_identity(self.image_symmetry_measure),
        }

    def restore(self, rows: list[dict[str, Any]]) -> None:
        self._rows.extend(rows)

    def observe(self, chunk: Any) -> list[dict[str, Any]]:
        start = len(self._rows)
        self._observe(chunk)
        return self._rows[start:]

    def _observe(self, chunk: Any) -> None:
        sham = next(c for c in chunk.conditions if c.name == "sham")
        ref = self._measure(sham.images, sham.hashes)
        ids = [r.image_id for r in chunk.records]
        for cond in chunk.conditions:
            if cond.name != "edit":
                continue
            edit = self._measure(cond.images, cond.hashes, judge_landmarks=[r["landmarks"] for r in ref])
            mask = cond.mask if cond.mask is not None else torch.zeros_like(cond.images[:, :1], dtype=torch.float32)
            out_change = outside_mask_change(sham.images.float() / 255.0, cond.images.float() / 255.0, mask)
            extra = self._perceptual(sham.images, cond.images, mask) if self.perceptual else {}
            sym_ref = sym_edit = None
            if self.symmetry_measure is not None:
                sym_ref = np.asarray(self.symmetry_measure(np.stack([r["landmarks"] for r in ref])))
                sym_edit = np.asarray(self.symmetry_measure(np.stack([e["landmarks"] for e in edit])))
            img_ref = img_edit = None
            if self.image_symmetry_measure is not None:
                img_ref = self.image_symmetry_measure(sham.images.float().div(255.0),
                                                      np.stack([r["landmarks"] for r in ref]))
                img_edit = self.image_symmetry_measure(cond.images.float().div(255.0),
                                                       np.stack([e["landmarks"] for e in edit]))
            for i, image_id in enumerate(ids):
                row = {
                    "image_id": image_id,
                    "strength": cond.strength,
                    "face_found": bool(edit[i]["found"]),
                    "age_ref": float(ref[i]["age"]),
                    "age_edit": float(edit[i]["age"]),
                    "p_male_ref": float(ref[i]["p_male"]),
                    "p_male_edit": float(edit[i]["p_male"]),
                    "blendshape_change": _mean_abs_change(edit[i]["blendshapes"], ref[i]["blendshapes"]),
                    "outside_change": float(out_change[i]),
                    **({"identity_distance": float(identity_distance(edit[i]["identity"], ref[i]["identity"]))}
                       if self._identity is not None else {}),
                    **{k: float(v[i]) for k, v in extra.items()},
                }
                if sym_ref is not None:
                    row["symmetry_ref"] = float(sym_ref[i])
                    row["symmetry_edit"] = float(sym_edit[i])  # type: ignore[index]
                if img_ref is not None:
                    row["image_asymmetry_ref"] = float(img_ref[i])
                    row["image_asymmetry_edit"] = float(img_edit[i])  # type: ignore[index]
                row.update({f"edit_{k}": v for k, v in (cond.metadata[i] or {}).items()
                            if isinstance(v, (int, float, str, bool))})
                self._rows.append(row)

    def table(self) -> pd.DataFrame:
        """One row per image x edit strength with measures, deltas and the verdict."""
        if not self._rows:
            return pd.DataFrame()
        df = pd.DataFrame(self._rows)
        # A dose-response edit at strength s is expected to move its property by about s times
        # the full-strength change, so the minimum target change scales with strength.
        # A per-face direction (e.g. gender target "opposite" read from metadata) is judged per face,
        # from the target the editor reports in its metadata.
        per_face = self.direction == "opposite" and "edit_target" in df
        keys = ["strength", "edit_target"] if per_face else ["strength"]
        parts = []
        for key, g in df.groupby(keys, sort=True):
            s = key[0] if isinstance(key, tuple) else key
            direction = key[1] if per_face else self.direction
            scaled = dataclasses.replace(
                self.cfg,
                min_age_change=self.cfg.min_age_change * s,
                min_p_target_change=self.cfg.min_p_target_change * s,
                min_symmetry_change=max(1e-6, self.cfg.min_symmetry_change * s),
            )
            parts.append(verdicts(g, self.prop, direction, scaled))
        return _property_specific(pd.concat(parts).sort_index(), self.prop)

    def close(self) -> None:
        if self._landmarker is not None and self._owns_landmarker:
            self._landmarker.close()


def _mean_abs_change(after: np.ndarray, before: np.ndarray) -> float:
    """Mean |after - before| over the scores both have; NaN (no warning) when a face was not found."""
    diff = np.abs(np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64))
    return float(diff[~np.isnan(diff)].mean()) if not np.isnan(diff).all() else float("nan")


def _drop_reason(df: pd.DataFrame, rows: pd.Series, reason: str) -> None:
    df.loc[rows, "reasons"] = df.loc[rows, "reasons"].map(
        lambda r: ";".join(x for x in str(r).split(";") if x and x != reason))


def _add_reason(df: pd.DataFrame, rows: pd.Series, reason: str) -> None:
    df.loc[rows, "reasons"] = df.loc[rows, "reasons"].map(lambda r: ";".join([x for x in str(r).split(";") if x]
                                                                              + [reason]))


def _property_specific(df: pd.DataFrame, prop: str) -> pd.DataFrame:
    """Checks that depend on what the editor does.

    * Electrodes and texture mirroring cover or replace skin, so re-detected blendshapes may move
      without the expression changing: they are exempt from the expression check (reported anyway).
    * Electrodes: every requested site must be drawn, inside the face (a count check on the
      editor's own placement report).
    """
    df = df.copy()
    mode = df["edit_mode"].astype(str) if "edit_mode" in df else pd.Series("", index=df.index)
    exempt = (prop == "semg") | mode.isin(["texture", "both"])
    if exempt.any() and "check_expression" in df:
        df.loc[exempt, "check_expression"] = True
        _drop_reason(df, exempt, "expression_moved")
    if prop == "semg" and "edit_sites_requested" in df and "edit_sites_drawn" in df:
        requested = df["edit_sites_requested"].astype(float)
        inside = df.get("edit_sites_inside_face", df["edit_sites_drawn"]).astype(float)
        drawn_ok = (df["edit_sites_drawn"].astype(float) >= requested) & (inside >= requested)
        drawn_ok |= df["strength"] == 0
        df["check_target"] = drawn_ok
        _add_reason(df, ~drawn_ok, "sites_missing")
    df["valid"] = df["reasons"].fillna("") == ""
    return df
