"""Hugging Face transformers backend: `AutoModelForImageClassification` from a local folder or a hub id.

Labels come from the model's `config.id2label` (in id order), mapped onto the canonical vocabulary
like every backend's. Preprocessing is derived from the model's `AutoImageProcessor` (input size,
rescale factor, mean and std) and expressed as a `Preprocessing`, so it runs batched on the runner's
device instead of image by image through PIL; any field given in `preprocessing` overrides the derived
one (typically `box_scale`, the face crop's margin, which the processor cannot know).

Hub ids are read from the local Hugging Face cache. The engine runs offline when `HF_HUB_OFFLINE=1`
or `FACECF_OFFLINE=1`; a hub id that is not cached then fails at once with a message that says how
to point `model` at a local folder instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .base import BackendClassifier, file_digest
from .preprocess import Preprocessing
from .torch_model import tf32

log = logging.getLogger(__name__)

TRUE = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in TRUE or os.environ.get("FACECF_OFFLINE", "") == "1"


def _size_of(value: Any) -> int | None:
    """Square input side from a processor's `size`/`crop_size` (a dict or a SizeDict)."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    get = value.get if isinstance(value, Mapping) else (lambda k, d=None: getattr(value, k, d))
    height, width = get("height", None), get("width", None)
    if height and width:
        if height != width:
            raise ValueError(
                f"the image processor wants {height}x{width}; set preprocessing.size to a square side"
            )
        return int(height)
    short = get("shortest_edge", None)
    return int(short) if short else None


def preprocessing_from_processor(processor: Any) -> dict[str, Any]:
    """`Preprocessing` fields equivalent to an image processor's rescale + normalise, for RGB crops.

    The processor computes `(pixel * rescale_factor - mean) / std` on 0..255 pixels; the engine's
    crops are `pixel / 255`, so mean and std are divided by `255 * rescale_factor`.
    """
    size = None
    if getattr(processor, "do_center_crop", False):
        size = _size_of(getattr(processor, "crop_size", None))
    size = size or _size_of(getattr(processor, "size", None))
    fields: dict[str, Any] = {"colour": "rgb", "layout": "nchw"}
    if size:
        fields["size"] = size
    scale = 255.0 * float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0
    if getattr(processor, "do_normalize", False):
        mean = [float(m) / scale for m in processor.image_mean]
        std = [float(s) / scale for s in processor.image_std]
    else:
        mean, std = [0.0] * 3, [1.0 / scale] * 3
    fields["mean"], fields["std"] = mean, std
    return fields


class HFClassifier(BackendClassifier):
    """A transformers image-classification model as a classifier.

    Args:
        model: a local folder (saved with `save_pretrained`) or a hub id ("org/name").
        revision: hub revision (branch, tag or commit) for a hub id.
        labels: override the raw labels (otherwise `config.id2label`), or a `LABEL_SETS` name.
        preprocessing: `Preprocessing` fields that override those derived from the image processor.
        activation: applied to the model's logits: "softmax", "sigmoid" (multi-label heads) or
            "logits" (keep raw outputs).
        normalise_sigmoid: divide sigmoid scores by their row sum so rows sum to 1.
        label_map: raw label -> name overrides.
        name: the classifier's name in results.
        batch_size: largest batch the runner should try first.
        allow_tf32: let CUDA use TF32 for float32 convolutions and matmuls (faster, ~1e-3 less exact).
    """

    def __init__(
        self,
        model: str,
        revision: str | None = None,
        labels: Sequence[str] | str | None = None,
        preprocessing: dict[str, Any] | None = None,
        activation: str = "softmax",
        normalise_sigmoid: bool = False,
        label_map: dict[str, str] | None = None,
        name: str = "hf",
        batch_size: int = 64,
        allow_tf32: bool = False,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(model, str) or not model:
            raise ValueError(f"{owner}.model must be a local folder or a hub id, got {model!r}")
        super().__init__(
            owner, name, labels, label_map, None, activation, False, normalise_sigmoid, batch_size
        )
        if preprocessing is not None:
            unknown = set(preprocessing) - set(Preprocessing.__dataclass_fields__)
            if unknown:
                raise ValueError(
                    f"{owner}.preprocessing has no field(s) {sorted(unknown)}; allowed: "
                    f"{sorted(Preprocessing.__dataclass_fields__)}"
                )
        self.model_id = model
        self.revision = revision
        self.preprocessing_overrides = dict(preprocessing or {})
        self.allow_tf32 = bool(allow_tf32)
        self._config: Any = None

    # -- where the files are -----------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return Path(self.model_id).expanduser().is_dir()

    def _source(self) -> str:
        return str(Path(self.model_id).expanduser()) if self.is_local else self.model_id

    def _from_pretrained(self, factory: Any, **kwargs: Any) -> Any:
        """`factory.from_pretrained` with offline handling and one readable error."""
        local_only = self.is_local or hub_offline()
        try:
            return factory.from_pretrained(
                self._source(), revision=self.revision, local_files_only=local_only, **kwargs
            )
        except (OSError, ValueError) as exc:
            if self.is_local:
                raise ValueError(
                    f"{self.name}: cannot load the Hugging Face model in {self.model_id}: {exc}"
                ) from None
            why = (
                "the engine is offline (HF_HUB_OFFLINE/FACECF_OFFLINE) and it is not in the local Hugging Face cache"
                if local_only
                else "the hub cannot be reached and it is not in the local Hugging Face cache"
            )
            raise ValueError(
                f"{self.name}: cannot load Hugging Face model {self.model_id!r}: it is not a local folder and {why} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Download it once where "
                f"there is internet, e.g. `hf download {self.model_id} --local-dir DIR` (or save_pretrained), "
                "then set model=DIR"
            ) from None

    @property
    def config(self) -> Any:
        if self._config is None:
            from transformers import AutoConfig

            self._config = self._from_pretrained(AutoConfig)
        return self._config

    # -- labels and preprocessing from the model's files -------------------------------------------
    def _load_labels(self) -> Sequence[str]:
        id2label = getattr(self.config, "id2label", None) or {}
        if not id2label:
            raise ValueError(f"{self.name}: the model config has no id2label; set labels")
        ids = sorted(int(k) for k in id2label)
        if ids != list(range(len(ids))):
            raise ValueError(f"{self.name}: config.id2label ids {ids} are not 0..{len(ids) - 1}")
        return [str(id2label[i] if i in id2label else id2label[str(i)]) for i in ids]

    def _load_preprocessing(self) -> Preprocessing:
        from transformers import AutoImageProcessor

        fields: dict[str, Any] = {"crop": "face_box", "box_scale": 1.2}
        try:
            fields.update(preprocessing_from_processor(self._from_pretrained(AutoImageProcessor)))
        except ValueError as exc:
            if "size" not in self.preprocessing_overrides:
                raise ValueError(
                    f"{self.name}: no usable image processor ({exc}); set preprocessing "
                    "(size, mean, std) for this model"
                ) from None
            log.warning(
                "classifier=%s no image processor (%s); using preprocessing from config only", self.name, exc
            )
        fields.update(self.preprocessing_overrides)
        if "size" not in fields:
            raise ValueError(f"{self.name}: the image processor gives no input size; set preprocessing.size")
        return Preprocessing.from_config(fields)

    # -- model --------------------------------------------------------------------------------------
    def _load(self) -> Any:
        from transformers import AutoModelForImageClassification

        model = self._from_pretrained(AutoModelForImageClassification, dtype=torch.float32)
        log.info("classifier=%s loaded hf=%s device=%s", self.name, self.model_id, self._device)
        return model.eval().to(self._device)

    def _move(self, model: Any, device: torch.device) -> Any:
        return model.to(device)

    def _forward(self, model: Any, inputs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), tf32(self.allow_tf32):
            return model(pixel_values=inputs.to(self._device, torch.float32)).logits

    def _weights_identity(self) -> Any:
        if self.is_local:
            return {"folder_sha256": file_digest(Path(self.model_id).expanduser())}
        return {
            "hub": self.model_id,
            "revision": self.revision,
            "commit": getattr(self.config, "_commit_hash", None),
        }
