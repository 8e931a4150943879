"""The small contracts between the engine and its plugins.

The engine never imports `editors` or `classifiers`; it only knows these types.
Plugins are wired in through Hydra `_target_` and must honour the conventions here:

* Images are float32 tensors `(N, 3, H, W)` with values in `[0, 1]`, RGB, on the runner's device.
* Landmarks are `(N, 478, 3)` float32 in **pixel units of the aligned crop**: x to the right,
  y down, z is MediaPipe's relative depth scaled like x (smaller z = closer to the camera).
* Masks are float32 `(N, 1, H, W)` in `[0, 1]`.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

#: Canonical emotion vocabulary. Every classifier maps its labels onto these names;
#: a label with no canonical counterpart keeps its own (lower-case) name.
CANONICAL_EMOTIONS: tuple[str, ...] = (
    "anger",
    "disgust",
    "fear",
    "happiness",
    "sadness",
    "surprise",
    "neutral",
    "contempt",
)

#: Common spellings found in model cards and datasets, mapped onto the canonical vocabulary.
EMOTION_SYNONYMS: dict[str, str] = {
    "angry": "anger",
    "anger": "anger",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "scared": "fear",
    "happy": "happiness",
    "happiness": "happiness",
    "joy": "happiness",
    "sad": "sadness",
    "sadness": "sadness",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
    "calm": "neutral",
    "contempt": "contempt",
}


def canonical_emotion(label: str) -> str:
    """Map a model's label onto the canonical vocabulary; unknown labels keep their own name."""
    key = label.strip().lower()
    return EMOTION_SYNONYMS.get(key, key)


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short, stable hex digest of a JSON-able object (dict order does not matter)."""
    payload = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def image_seed(seed: int, image_id: str, *extra: Any) -> int:
    """Per-image seed, so a batch gives the same result as one-by-one processing."""
    digest = hashlib.sha256(json.dumps([seed, image_id, *extra], default=str).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


#: Where a usable face's landmarks come from (`FaceAnalysis.reason`, a string in the analysis cache).
REDETECTED_ON_CROP, REDETECTED_WITH_MARGIN = "", "landmarks re-detected on the crop with a margin"
LANDMARKS_FROM_SOURCE = "landmarks transferred from the source photo"
TEMPLATE_LANDMARKS = "template landmarks (no detection)"


@dataclass
class FaceAnalysis:
    """Face analysis of one image, in its aligned crop's coordinates. `ok=False`: skipped, `reason` says why."""

    image_id: str
    ok: bool
    reason: str = ""
    landmarks: np.ndarray | None = None  # (478, 3) float32, crop pixels
    blendshapes: np.ndarray | None = None  # (52,) float32, MediaPipe order
    box: np.ndarray | None = None  # (4,) x0, y0, x1, y1 of the face in crop pixels
    pose: np.ndarray | None = None  # (3,) yaw, pitch, roll in degrees
    crop_from_source: np.ndarray | None = None  # (2, 3) affine: source pixel -> crop pixel

    @property
    def redetected(self) -> bool:  # found again on its own crop, as the audit's landmark judge reads it
        return self.ok and self.reason in (REDETECTED_ON_CROP, REDETECTED_WITH_MARGIN)

    @property
    def needs_margin(self) -> bool:  # found on its crop only when framed with `CROP_MARGIN`
        return self.ok and self.reason == REDETECTED_WITH_MARGIN


@dataclass
class FaceBatch:
    """A batch of aligned face crops with their analyses, ready for editors and classifiers."""

    ids: list[str]
    images: torch.Tensor  # (N, 3, H, W) float32 [0, 1]
    landmarks: torch.Tensor  # (N, 478, 3) float32, crop pixels
    blendshapes: torch.Tensor  # (N, 52) float32
    boxes: torch.Tensor  # (N, 4) float32
    face_mask: torch.Tensor  # (N, 1, H, W) float32, soft face-oval mask
    pose: torch.Tensor  # (N, 3) yaw, pitch, roll degrees
    metadata: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def select(self, index: Sequence[int]) -> FaceBatch:
        """Sub-batch with the given rows (used for one-by-one checks and OOM back-off)."""
        idx = torch.as_tensor(list(index), dtype=torch.long, device=self.images.device)
        meta = [self.metadata[i] for i in index] if self.metadata else []
        return FaceBatch(
            ids=[self.ids[i] for i in index],
            images=self.images.index_select(0, idx),
            landmarks=self.landmarks.index_select(0, idx),
            blendshapes=self.blendshapes.index_select(0, idx),
            boxes=self.boxes.index_select(0, idx),
            face_mask=self.face_mask.index_select(0, idx),
            pose=self.pose.index_select(0, idx),
            metadata=meta,
        )

    def generators(self, seed: int, *extra: Any) -> list[torch.Generator]:
        """One seeded CPU generator per image (draw on CPU, then move: identical on any device)."""
        return [torch.Generator().manual_seed(image_seed(seed, i, *extra)) for i in self.ids]


@dataclass
class EditResult:
    """What an editor returns for one batch."""

    images: torch.Tensor  # (N, 3, H, W) float32 [0, 1]
    mask: torch.Tensor  # (N, 1, H, W) float32: where the edit is allowed to change pixels
    metadata: list[dict[str, Any]] = field(default_factory=list)  # per image: measured change etc.
    landmarks: torch.Tensor | None = None  # (N, 478, 3) target landmarks after a geometric edit


@dataclass(frozen=True)
class TargetCheck:
    """The judged change that shows an edit moved its property.

    Attributes:
        deltas: audit columns holding the change (edit minus reference) of a judge's reading, e.g.
            "delta_est_age". With several, the most favourable one counts: a property with more
            than one facet (shape and shading) has moved when any facet moved far enough.
        threshold: the `AuditThresholds` field with the smallest change accepted at strength 1
            (it scales with strength in a dose-response).
        sign: +1 the delta must rise, -1 it must fall, 0 either way.
        sign_key: an edit-metadata key whose per-face value picks the sign from `signs` (an editor
            that pushes each face its own way, e.g. toward the other sex), or None.
        signs: (metadata value, sign) pairs for `sign_key`.
    """

    deltas: tuple[str, ...]
    threshold: str
    sign: int = 1
    sign_key: str | None = None
    signs: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if not self.deltas:
            raise ValueError("TargetCheck.deltas is empty: name the audit columns that show the change")
        if self.sign not in (-1, 0, 1):
            raise ValueError(f"TargetCheck.sign={self.sign!r}: allowed: -1, 0, 1")


@dataclass(frozen=True)
class ReportedTarget:
    """The editor itself reports, in each face's edit metadata, whether its target was reached.

    For edits no independent judge can measure, such as drawing every requested electrode.

    Attributes:
        reached: edit metadata of one face -> whether the target was reached.
        reason: the audit reason written where it was not, e.g. "sites_missing".
    """

    reached: Callable[[Mapping[str, Any]], bool]
    reason: str


@dataclass(frozen=True)
class AuditPolicy:
    """What an editor tells the audit: what it changes, how to see that it did, and what else applies.

    Every judged property that is not the target must stay (age and gender for a symmetry edit).

    Attributes:
        property: the property's name, for reports ("age", "none").
        direction: the intended direction ("older", ...) or None.
        target: how the change is seen: a `TargetCheck` on judged readings, a `ReportedTarget`, or
            None for an editor that must change nothing (a placebo).
        expression_kept: whether the re-detected expression (blendshapes) must stay. False for edits
            that cover or replace skin, under which the detector's blendshapes move although the
            expression does not (electrodes, mirrored texture); the change is still reported.
        judges: extra judges the check needs beyond the audit's own (for example a measure of
            texture asymmetry); they run on the reference and on every edit.
        occluding: the edit covers part of the face (electrodes, a mask, glasses) and moves no skin.
            The audit then judges what applies to a covered face: every reading of the edit is taken
            on the reference's landmarks (a face the landmarker cannot re-find under the cover is not
            a failed edit); the judged non-target checks (age, p(male)) and the expression check are
            not applied, since those judges would read the cover rather than the face beneath (their
            readings are still reported); identity (the edit as drawn, on the reference's landmarks),
            the change outside the mask and the target are checked as for any edit.
        also_kept: readings beyond age and p(male) that must not move either, by their audit
            column (`engine.audit.verdicts.OPTIONAL_KEPT` names the ones with a threshold), e.g.
            "delta_symmetry_index_rel" for a control edit that must leave symmetry alone.
    """

    property: str
    direction: str | None = None
    target: TargetCheck | ReportedTarget | None = None
    expression_kept: bool = True
    judges: tuple[Judge, ...] = ()
    occluding: bool = False
    also_kept: tuple[str, ...] = ()


class Editor(ABC):
    """Changes one facial property of a batch of faces.

    Contract:
      * `edit(batch, strength, seed)` with `strength` in [0, 1]; strength 0 is the sham: the
        same pipeline (resampling, blending, encoding) with no change of the property.
      * Deterministic given `seed`, and batch results equal one-by-one results.
      * Runs on CPU or CUDA on whatever device `batch` lives on; no Python loops over pixels.
      * `audit_policy()` tells the audit how to judge the edits (see `AuditPolicy`); the engine
        reads it and never looks at the property's name.
    """

    #: Name of the property this editor changes ("age", "symmetry", ...; "none" for a placebo).
    property: ClassVar[str] = "none"
    #: The intended direction of the change ("older", "more", ...), or None where it has none.
    direction: str | None = None
    #: True when the pipeline at strength 0 gives back its input once quantised to 8 bits, as the
    #: engine stores every edit (every change scales with strength; resampling at zero displacement
    #: is exact to ~1e-5, far inside half a grey level). The sham is then the input itself and the
    #: pipeline is not run for it. tests/test_editor_contract.py holds every editor that says so to it.
    sham_is_input: ClassVar[bool] = False

    @abstractmethod
    def edit(self, batch: FaceBatch, strength: float, seed: int) -> EditResult:
        """Edit every face in `batch` by `strength` in [0, 1]."""

    def sham(self, batch: FaceBatch, seed: int = 0) -> EditResult:
        """The same pipeline with no change: the default reference condition."""
        if self.sham_is_input:
            mask = torch.zeros_like(batch.images[:, :1])
            return EditResult(batch.images.clone(), mask, [{"strength": 0.0, "sham": "input"} for _ in batch.ids],
                              batch.landmarks.clone())
        return self.edit(batch, 0.0, seed)

    def audit_policy(self) -> AuditPolicy:
        """How the audit judges this editor's edits; the default checks that nothing moved."""
        return AuditPolicy(self.property, self.direction)

    def control_of(self) -> tuple[str, str | None] | None:
        """For a matched control (an edit as large as a property's, changing no property): the
        (property, direction) it controls for, so studies can pair the two; None otherwise."""
        return None

    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines the output, for content-addressed caching."""
        params = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        # A class-level `version` marks output changes that no config value shows (cached edits
        # made by the older code must not be reused).
        version = getattr(type(self), "version", None)
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}", **params,
                **({"version": version} if version is not None else {})}

    # `property` is shadowed by the class attribute above, hence builtins.property.
    @builtins.property
    def name(self) -> str:
        return type(self).__name__


class Classifier(ABC):
    """Scores emotion for a batch of face crops.

    Contract:
      * `labels` are in the canonical vocabulary (see `canonical_emotion`).
      * `preprocess(images, boxes)` does the model's own crop, resize, colour and normalisation
        on the tensors' device; `predict(inputs)` returns `(N, K)` outputs aligned with `labels`.
      * `output_kind` is "softmax" (rows sum to 1), "sigmoid" (independent scores in [0, 1]),
        "logits", or "scores" (not class evidence, e.g. blendshapes: no top-1 label is taken).
      * The runner decides device and batch size and calls `to(device)`.
    """

    name: str = "classifier"
    labels: tuple[str, ...] = ()
    output_kind: str = "softmax"
    #: Largest batch the runner should try first; it backs off on CUDA OOM.
    batch_size: int = 128

    def to(self, device: torch.device | str) -> Classifier:
        """Move weights to `device`; plugins without torch weights may ignore this."""
        return self

    @abstractmethod
    def preprocess(self, images: torch.Tensor, boxes: torch.Tensor) -> Any:
        """Turn `(N, 3, H, W)` RGB crops plus face boxes into model inputs.

        Crops come as uint8 in 0..255 (what the pipeline caches and the runner passes) or float in
        [0, 1]. `classifiers.preprocess.Preprocessing` takes both and crops before it converts to
        float, which is what keeps preprocessing cheap.
        """

    @abstractmethod
    def predict(self, inputs: Any) -> torch.Tensor:
        """Return `(N, len(labels))` outputs for preprocessed inputs."""

    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines the output, for content-addressed caching."""
        params = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}", **params}


@dataclass
class JudgeView:
    """One condition of a chunk as the audit's judges see it.

    Attributes:
        images: (N, 3, H, W) uint8 crops on the audit's device.
        readings: what the judges before this one read from these images, by name (for example
            "landmarks" (N, 478, 3) and "found" (N,) from the landmark judge); NaN rows where a
            face was not found.
        align: (N, 478, 3) landmarks to cut face chips on: the reference's own for the reference,
            and the reference's for every edit, so detector jitter does not enter the difference.
    """

    images: torch.Tensor
    readings: dict[str, np.ndarray]
    align: np.ndarray


@dataclass
class JudgedPair:
    """A reference (the sham, normally) and one edit of the same faces, after every `read`."""

    ref: JudgeView
    edit: JudgeView
    mask: torch.Tensor  # (N, 1, H, W) float in [0, 1]: where the edit was allowed to act


class Judge(ABC):
    """An independent measurement for the edit audit (manipulation checks).

    Contract:
      * `read(view)` measures each image on its own and returns per-image arrays by reading name;
        the audit caches them by image content (and by `view.align` when `aligned`), so an image is
        read once however many edits it is compared with.
      * `compare(pair)` turns the reference's and an edit's readings (and the pixels, if needed)
        into audit columns, one value per face: `<reading>_ref`, `<reading>_edit`, `delta_<reading>`
        (or `delta_<reading>_rel` for a change relative to the reference), or a pair measure.
      * A judge never sees the editor; policies name its columns.
    """

    name: ClassVar[str] = "judge"
    #: True when `read` depends on `view.align` (face chips cut on given landmarks).
    aligned: ClassVar[bool] = False

    def read(self, view: JudgeView) -> dict[str, np.ndarray]:
        """Per-image readings; the default reads nothing (a judge that only compares pairs)."""
        return {}

    @abstractmethod
    def compare(self, pair: JudgedPair) -> dict[str, np.ndarray]:
        """Audit columns for each face of the pair."""

    def fingerprint(self) -> dict[str, Any]:
        """Everything its readings depend on (class, settings, model checksums)."""
        params = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}", **params}


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key, the value and what is allowed."""
