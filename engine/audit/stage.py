"""The audit stage of the pipeline: every judge measures the sham and each edit of a chunk.

Per chunk the reference (the sham) is read once by every judge, each edit is read with the
reference's landmarks as alignment (so the chips of reference and edit are cut identically), and
every judge compares the two into audit columns. Readings are cached by image content (plus the
alignment, for aligned judges), so a resumed run re-reads nothing. Under an occluding policy (see
`AuditPolicy.occluding`) the edit's re-detected landmarks are replaced by the reference's before any
judge after the landmark judge reads them: the cover moves no skin, and the landmarker may not find the
face under it; those judges' readings are then keyed by that alignment too. The stage returns plain rows;
`engine.audit.verdicts` decides validity later, from the rows, so a threshold change re-judges a
finished run without measuring anything again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from engine.audit.thresholds import AuditThresholds
from engine.audit.verdicts import META_PREFIX, verdicts
from engine.cache import WorkCache, key_of
from engine.types import AuditPolicy, Judge, JudgedPair, JudgeView, stable_hash

log = logging.getLogger(__name__)

#: Metadata values that go into audit rows (arrays and nested objects stay in edits.csv only).
_SCALARS = (int, float, str, bool)


@dataclass(frozen=True)
class AuditedCondition:
    """One condition of a chunk as the audit needs it: pixels, their hashes, strength, mask, metadata.

    `known` holds readings already made of exactly these pixels, by judge name (the face analysis
    re-detects every crop with the landmark judge's own landmarker, so a sham that is the crop itself
    need not be re-detected).
    """

    strength: float
    images: torch.Tensor  # (N, 3, H, W) uint8
    hashes: Sequence[str]
    mask: torch.Tensor  # (N, 1, H, W) float
    metadata: Sequence[dict[str, Any]]
    known: dict[str, dict[str, np.ndarray]] | None = None


def _align_tag(align: np.ndarray) -> str:
    return np.round(align[:, :2], 2).tobytes().hex()[:64] if np.isfinite(align).all() else "none"


class AuditStage:
    """Measures chunks with `judges` (`observe`); builds the verdict table afterwards (`table`).

    Args:
        judges: in order; the first must read "landmarks" (the others read its readings).
        policy: the editor's audit policy (its extra judges are appended to `judges`).
        thresholds: used by `table` only.
        cache: the work cache (readings are keyed by image content).
    """

    def __init__(self, judges: Sequence[Judge], policy: AuditPolicy, thresholds: AuditThresholds,
                 cache: WorkCache) -> None:
        self.judges = [*judges, *policy.judges]
        self.policy = policy
        self.thresholds = thresholds
        self.cache = cache
        self._fps = {j.name: stable_hash(j.fingerprint(), 32) for j in self.judges}
        # A judge reads what the judges before it read (the re-detected landmarks above all), so its
        # cached readings are keyed by their fingerprints too: a new landmark judge must not meet
        # symmetry indices computed from the old one's landmarks.
        self._read_keys = {j.name: stable_hash([self._fps[u.name] for u in self.judges[: k + 1]], 32)
                           for k, j in enumerate(self.judges)}

    def fingerprint(self) -> dict[str, Any]:
        """What the rows depend on: the judges, in order, and how edits are read. Thresholds are not in it
        (see `table`)."""
        # v3: rows made before the reading keys named the judges upstream may hold stale readings.
        fp: dict[str, Any] = {"judges": [[j.name, self._fps[j.name]] for j in self.judges], "v": 3}
        if self.policy.occluding:  # only then: the other policies keep their cached rows
            fp["occluding"] = True
        return fp

    def _read(self, images: torch.Tensor, hashes: Sequence[str], align: np.ndarray | None,
              known: dict[str, dict[str, np.ndarray]] | None = None, occluded: bool = False) -> JudgeView:
        """Every judge's readings of `images`: known ones, cached ones, and the rest computed.

        `occluded`: the images are occluding edits; once a judge has read "landmarks", they are replaced
        by `align` (the reference's) for every later judge, whose readings are keyed by it.
        """
        n = len(hashes)
        view = JudgeView(images, {}, np.full((n, 478, 3), np.nan) if align is None else align)
        on_reference = False  # later judges read the reference's landmarks (occluded edits)
        for judge in self.judges:
            if occluded and not on_reference and "landmarks" in view.readings:
                view.readings["landmarks"] = np.asarray(view.align, dtype=np.float32).copy()
                on_reference = True
            if type(judge).read is Judge.read:
                continue  # compares pairs only: nothing to read or cache
            if known and judge.name in known:
                view.readings.update(known[judge.name])
                continue
            if align is None and judge.aligned:
                # The reference is cut on its own re-detected landmarks.
                view.align = view.readings.get("landmarks", view.align)
            keyed = judge.aligned or on_reference
            keys = [key_of("judge", judge.name, self._read_keys[judge.name], h,
                           _align_tag(view.align[i]) if keyed else None,
                           *(("reference landmarks",) if on_reference and not judge.aligned else ()))
                    for i, h in enumerate(hashes)]
            got = [self.cache.get_arrays("judge", k) for k in keys]
            todo = [i for i, g in enumerate(got) if g is None]
            self.cache.count("judge", hit=True, n=n - len(todo))
            if todo:
                index = torch.as_tensor(todo, device=images.device)
                sub = JudgeView(images.index_select(0, index), {k: v[todo] for k, v in view.readings.items()},
                                view.align[todo])
                fresh = judge.read(sub)
                for j, i in enumerate(todo):
                    got[i] = {name: np.asarray(values[j]) for name, values in fresh.items()}
                    self.cache.put_arrays("judge", keys[i], **got[i])
                self.cache.count("judge", hit=False, n=len(todo))
            for name in got[0] if got else ():
                view.readings[name] = np.stack([g[name] for g in got])
        return view

    def observe(self, ref: AuditedCondition, edits: Sequence[AuditedCondition], ids: Sequence[str]) -> list[dict]:
        """Audit rows (one per image and edit) for one chunk's reference and edits."""
        reference = self._read(ref.images, ref.hashes, None, ref.known)
        align = reference.readings.get("landmarks", reference.align)
        rows: list[dict[str, Any]] = []
        for cond in edits:
            view = self._read(cond.images, cond.hashes, align, occluded=self.policy.occluding)
            pair = JudgedPair(reference, view, cond.mask)
            columns: dict[str, np.ndarray] = {}
            for judge in self.judges:
                columns.update(judge.compare(pair))
            for i, image_id in enumerate(ids):
                row: dict[str, Any] = {"image_id": image_id, "strength": cond.strength}
                row.update({k: _plain(v[i]) for k, v in columns.items()})
                row.update({f"{META_PREFIX}{k}": v for k, v in (cond.metadata[i] or {}).items()
                            if isinstance(v, _SCALARS)})
                rows.append(row)
        return rows

    def table(self, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
        """One row per image x edit strength with every measure, the checks and the verdict."""
        if not rows:
            return pd.DataFrame()
        return verdicts(pd.DataFrame(list(rows)), self.policy, self.thresholds)

    def close(self) -> None:
        for judge in self.judges:
            close = getattr(judge, "close", None)
            if close is not None:
                close()


def _plain(value: Any) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.generic):
        return float(value)
    return value


@dataclass(frozen=True)
class AuditOptions:
    """The audit stage's wiring (`conf/audit/default.yaml`); thresholds are a group of their own.

    Args:
        enabled: run the manipulation checks.
        perceptual: SSIM and LPIPS inside and outside the edit mask.
        lpips_net: LPIPS backbone: "alex", "vgg", or None for SSIM only.
        identity: the dlib face-descriptor identity judge ("auto" is the same as True: it needs only
            its registry asset).
    """

    enabled: bool = True
    perceptual: bool = True
    lpips_net: str | None = "alex"
    identity: bool | str = True

    def __post_init__(self) -> None:
        if self.lpips_net not in (None, "alex", "vgg"):
            raise ValueError(f"lpips_net={self.lpips_net!r}: allowed: alex, vgg, null")
        if self.identity not in (True, False, "auto"):
            raise ValueError(f"identity={self.identity!r}: allowed: true, false (auto = true)")

    def judges(self, device: torch.device, landmarker: Any = None) -> list[Judge]:
        """The audit's own judges, in column order (an editor's policy may add more)."""
        from engine.audit.age_gender import AgeGenderJudge
        from engine.audit.identity import IdentityJudge
        from engine.audit.landmarks import FaceDetectionJudge, SymmetryJudge
        from engine.audit.pixels import OutsideChangeJudge, PerceptualJudge

        judges: list[Judge] = [FaceDetectionJudge(landmarker), AgeGenderJudge(), OutsideChangeJudge()]
        if self.identity:
            judges.append(IdentityJudge(device))
        if self.perceptual:
            judges.append(PerceptualJudge(self.lpips_net, device))
        judges.append(SymmetryJudge())
        return judges
