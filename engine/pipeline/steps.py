"""The pipeline's cached steps: each looks its output up by key, or computes and stores it.

A step's key is a hash of its inputs' content and of the component that produces the output, so a
changed config misses exactly the entries it affects. `CachedStep.lookup_or_compute` is the one
pattern every stage follows: fetch every key, compute only the misses (in one batch), store them,
count hits and computations for `run_stats.json`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from engine.cache import WorkCache, key_of, pixels_hash
from engine.data import ImageLoadError, ImageRecord
from engine.pipeline.backoff import BatchBackoff
from engine.pipeline.record import DECODER_VERSION, file_digest, from_json_array, through_json, to_json_array
from engine.types import Classifier, Editor, FaceAnalysis, FaceBatch

V = TypeVar("V")


class StageClock:
    """Seconds of work per stage (summed over chunks; stages overlap, so these add up to more than the wall time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds


class CachedStep(Generic[V]):
    """Look up or compute one kind of work entry.

    Subclasses say how an entry is read (`fetch`) and written (`store`) in the work cache.
    """

    kind = "step"

    def __init__(self, cache: WorkCache) -> None:
        self.cache = cache

    def fetch(self, key: str) -> V | None:
        raise NotImplementedError

    def store(self, key: str, value: V) -> None:
        raise NotImplementedError

    def lookup_or_compute(self, keys: Sequence[str], compute: Callable[[list[int]], Sequence[V]]) -> list[V]:
        """Values for `keys`: cached ones fetched, the rest from `compute(missing positions)`."""
        got: list[V | None] = [self.fetch(k) for k in keys]
        todo = [i for i, g in enumerate(got) if g is None]
        self.cache.count(self.kind, hit=True, n=len(keys) - len(todo))
        if todo:
            for i, value in zip(todo, compute(todo), strict=True):
                self.store(keys[i], value)
                got[i] = value
            self.cache.count(self.kind, hit=False, n=len(todo))
        return got  # type: ignore[return-value]


class LoadStep:
    """Load: the hash of a record's decoded pixels, decoding only when the file's bytes are new.

    Keys stay those of the pixels (a re-encoded copy of an image shares its work); the file's bytes
    only index them, so a re-run of a file dataset decodes nothing it already decoded.
    """

    def __init__(self, cache: WorkCache) -> None:
        self.cache = cache

    @staticmethod
    def decode(rec: ImageRecord) -> tuple[np.ndarray | None, str]:
        """(RGB uint8, "") or (None, the reason it cannot be used)."""
        try:
            return rec.load(), ""
        except ImageLoadError as exc:
            return None, str(exc)
        except Exception as exc:  # noqa: BLE001 - a user's loader must not end the run
            return None, f"{type(exc).__name__}: {exc}"

    def pixels(self, rec: ImageRecord) -> tuple[str | None, np.ndarray | None, str]:
        """(pixel hash, decoded pixels when they had to be decoded, failure reason)."""
        source_key = None
        if rec.file is not None and (digest := file_digest(rec.file)) is not None:
            source_key = key_of("source", digest, DECODER_VERSION)
            got = self.cache.get_arrays("source", source_key)
            if got is not None:
                return str(got["pixels"]), None, ""
        rgb, failure = self.decode(rec)
        if rgb is None:
            return None, None, failure
        pixels = pixels_hash(rgb)
        if source_key is not None:
            self.cache.put_arrays("source", source_key, pixels=np.array(pixels))
        return pixels, rgb, ""


class AnalyseStep(CachedStep[tuple[FaceAnalysis, Any]]):
    """Analyse: face analyses and aligned crops, keyed by the pixels and the analyser's fingerprint.

    One face per image, or with a multi-face analyser every face of it: then the image's entry holds
    how many faces it has, and face k has its own entry (and crop) under `face_key(key, k)`. Either
    way `faces` returns (face key, analysis) pairs, and each face's key is its analysis key downstream.
    """

    kind = "analysis"

    def __init__(self, cache: WorkCache, analyzer: Any, fingerprint: str) -> None:
        super().__init__(cache)
        self.analyzer = analyzer
        self.fingerprint = fingerprint
        self.multi = getattr(analyzer, "multi", False) is True

    def key(self, pixels: str) -> str:
        return key_of("analysis", pixels, self.fingerprint)

    @staticmethod
    def face_key(key: str, k: int) -> str:
        return key_of("face", key, k)

    def _fetch_one(self, key: str, image_id: str) -> FaceAnalysis | None:
        got = self.cache.get_arrays("analysis", key)
        if got is None:
            return None
        if not bool(got["ok"]):
            return FaceAnalysis(image_id, ok=False, reason=str(got["reason"]))
        return FaceAnalysis(image_id, ok=True, reason=str(got["reason"]), landmarks=got["landmarks"],
                            blendshapes=got["blendshapes"], box=got["box"], pose=got["pose"],
                            crop_from_source=got["crop_from_source"])

    def _store_one(self, key: str, fa: FaceAnalysis, crop: np.ndarray | None) -> None:
        if fa.ok:
            assert crop is not None
            self.cache.put_image("crop", key, crop)  # image first: the array entry marks it complete
            self.cache.put_arrays("analysis", key, ok=np.array(True), reason=np.array(fa.reason),
                                  landmarks=fa.landmarks, blendshapes=fa.blendshapes, box=fa.box, pose=fa.pose,
                                  crop_from_source=fa.crop_from_source)
        else:
            self.cache.put_arrays("analysis", key, ok=np.array(False), reason=np.array(fa.reason))

    def faces(self, key: str, image_id: str) -> list[tuple[str, FaceAnalysis]] | None:
        """The cached analyses of the image's faces, or None when the image was not analysed."""
        if not self.multi:
            fa = self._fetch_one(key, image_id)
            return None if fa is None else [(key, fa)]
        index = self.cache.get_arrays("analysis", key)
        if index is None:
            return None
        if int(index["n_faces"]) == 0:
            return [(key, FaceAnalysis(image_id, ok=False, reason="no face detected"))]
        out = []
        for k in range(int(index["n_faces"])):
            fk = self.face_key(key, k)
            fa = self._fetch_one(fk, f"{image_id}#{k}")
            if fa is None:
                return None
            out.append((fk, fa))
        return out

    def compute(self, key: str, image_id: str, rgb: np.ndarray) -> list[tuple[str, FaceAnalysis, np.ndarray | None]]:
        """Analyse the image now and store every face (the image's index entry last: it marks completion)."""
        self.cache.count(self.kind, hit=False)
        if not self.multi:
            fa, crop = self.analyzer.analyse(image_id, rgb)
            self._store_one(key, fa, crop)
            return [(key, fa, crop)]
        out = []
        for k, (fa, crop) in enumerate(self.analyzer.analyse_all(image_id, rgb)):
            fk = self.face_key(key, k)
            fa.image_id = f"{image_id}#{k}"
            self._store_one(fk, fa, crop)
            out.append((fk, fa, crop))
        self.cache.put_arrays("analysis", key, n_faces=np.array(len(out)))
        if not out:  # an image with no face is one skipped record, under its own id
            return [(key, FaceAnalysis(image_id, ok=False, reason="no face detected"), None)]
        return out


class EditStep(CachedStep[tuple[np.ndarray, np.ndarray, dict[str, Any]]]):
    """Edit: (image uint8 (H, W, 3), mask uint8 (H, W), metadata) per face and strength.

    Keyed by the analysis key, the editor's fingerprint, the strength, the seed, and the record's id
    and metadata: editors draw per-image noise seeded by the image id and may read the record's
    metadata (a per-face gender target), so both are part of an edit's identity.
    """

    kind = "edit"

    def __init__(self, cache: WorkCache, editor: Editor, fingerprint: str, seed: int,
                 backoff: BatchBackoff | None = None) -> None:
        super().__init__(cache)
        self.editor = editor
        self.fingerprint = fingerprint
        self.seed = seed
        self.backoff = backoff or BatchBackoff()

    def key(self, analysis_key: str, tag: str, strength: float) -> str:
        return key_of("edit", analysis_key, self.fingerprint, strength, self.seed, tag)

    def fetch(self, key: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
        image = self.cache.get_image("edit", key)
        meta = self.cache.get_arrays("editmeta", key) if image is not None else None
        return None if meta is None else (image, meta["mask"], from_json_array(meta["json"]))  # type: ignore[return-value]

    def store(self, key: str, value: tuple[np.ndarray, np.ndarray, dict[str, Any]]) -> None:
        image, mask, meta = value
        self.cache.put_image("edit", key, image)
        self.cache.put_arrays("editmeta", key, mask=mask, json=to_json_array(meta))

    def run(self, batch: FaceBatch, keys: Sequence[str], strength: float) -> list[tuple[np.ndarray, np.ndarray, dict]]:
        def compute(todo: list[int]) -> list[tuple[np.ndarray, np.ndarray, dict]]:
            # On CUDA out-of-memory the faces are edited in halves (batch equals one-by-one).
            return self.backoff.run(edit, todo, len(todo), ("edit", id(self.editor)), f"editor={self.editor.name}")

        def edit(todo: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray, dict]]:
            sub = batch.select(list(todo))
            res = self.editor.sham(sub, self.seed) if strength == 0 else self.editor.edit(sub, strength, self.seed)
            images = to_uint8(res.images)
            # Masks are stored at 8 bits: enough to tell inside from outside, small on disk.
            masks = res.mask.detach().clamp(0, 1).mul(255).round().to(torch.uint8)[:, 0].cpu().numpy()
            metas = res.metadata or [{} for _ in todo]
            return [(images[j], masks[j], through_json(dict(metas[j]))) for j in range(len(todo))]

        return self.lookup_or_compute(keys, compute)


class ClassifyStep(CachedStep[np.ndarray]):
    """Classify: one classifier's output row per image, keyed by pixels, classifier and face box."""

    kind = "pred"

    def __init__(self, cache: WorkCache, runner: Any, classifier: Classifier, fingerprint: str) -> None:
        super().__init__(cache)
        self.runner = runner
        self.classifier = classifier
        self.fingerprint = fingerprint

    def fetch(self, key: str) -> np.ndarray | None:
        got = self.cache.get_arrays("pred", key)
        return None if got is None else got["p"]

    def store(self, key: str, value: np.ndarray) -> None:
        self.cache.put_arrays("pred", key, p=value)

    def run(self, images: torch.Tensor, hashes: Sequence[str], boxes: torch.Tensor) -> np.ndarray:
        box_np = boxes.cpu().numpy()
        keys = [key_of("pred", h, self.fingerprint, b.round(3).tolist()) for h, b in zip(hashes, box_np)]

        def compute(todo: list[int]) -> np.ndarray:
            idx = torch.as_tensor(todo, device=images.device)
            return self.runner.predict(self.classifier, images.index_select(0, idx), boxes.index_select(0, idx))

        return np.stack(self.lookup_or_compute(keys, compute))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Quantise (N, 3, H, W) [0, 1] to uint8 (N, H, W, 3): what is cached is what classifiers see."""
    x = images.detach().clamp(0, 1).mul(255.0).round_().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def timed(clock: StageClock, stage: str, fn: Callable[..., V], *args: Any) -> V:
    t0 = time.perf_counter()
    try:
        return fn(*args)
    finally:
        clock.add(stage, time.perf_counter() - t0)
