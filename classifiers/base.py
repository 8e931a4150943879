"""What the configured backends (torch, Hugging Face, ONNX, TFLite) share.

`BackendClassifier` (labels, declared `Preprocessing`, `activation`, lazy loading, device, cache
fingerprint), how a declared `activation` turns raw outputs into scores, and the model-file paths
and digests of the content-addressed cache.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from engine.types import Classifier

from .labels import resolve_labels
from .preprocess import OUTPUT_KINDS, Preprocessing, activate, normalise_sigmoid

ACTIVATIONS = OUTPUT_KINDS  # "softmax", "sigmoid", "logits" (= leave the raw outputs as they are)


# --- outputs ---------------------------------------------------------------------------------------


def check_activation(owner: str, activation: str, normalise: bool) -> None:
    """Loud checks for the `activation` / `normalise_sigmoid` pair of a backend's config."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"{owner}.activation must be one of {ACTIVATIONS}, got {activation!r}")
    if normalise and activation != "sigmoid":
        raise ValueError(
            f"{owner}.normalise_sigmoid=true needs activation=sigmoid, got activation={activation!r}"
        )


def output_kind_for(activation: str, normalise: bool) -> str:
    """The `Classifier.output_kind` a backend reports: normalised sigmoids are a distribution."""
    return "softmax" if activation == "sigmoid" and normalise else activation


def finish_outputs(
    raw: torch.Tensor, activation: str, applied_in_model: bool, normalise: bool
) -> torch.Tensor:
    """Turn a model's `(N, K)` raw outputs into the scores a backend returns (float32).

    Args:
        raw: the network's outputs.
        activation: "softmax", "sigmoid" or "logits" (scores are the raw outputs).
        applied_in_model: the network already ends with `activation` (for example a TFLite graph
            ending in Softmax), so it is not applied twice.
        normalise: for sigmoid outputs, divide each row by its sum (`normalise_sigmoid`).
    """
    scores = raw.float() if applied_in_model else activate(raw, activation)
    if normalise:
        scores = normalise_sigmoid(scores)
    return scores


def check_width(owner: str, outputs: torch.Tensor, labels: Sequence[str]) -> None:
    """Fail loudly when a model's output width does not match its labels."""
    if outputs.ndim != 2 or outputs.shape[1] != len(labels):
        raise ValueError(
            f"{owner}: the model returns shape {tuple(outputs.shape)} but {len(labels)} labels are configured "
            f"({list(labels)}); fix {owner}.labels"
        )


# --- file identity, for cache keys -----------------------------------------------------------------

_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file or of every file in a folder (relative names included), memoised by mtime."""
    p = Path(path)
    stat = p.stat()
    memo = (str(p.resolve()), stat.st_mtime_ns, stat.st_size)
    if memo in _DIGESTS:
        return _DIGESTS[memo]
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


ASSET_PREFIX = "asset:"


def resolve_path(owner: str, key: str, value: str) -> Path:
    """A model file named in config: a local path, or `asset:NAME` from the engine's asset registry."""
    if value.startswith(ASSET_PREFIX):
        from engine.assets import asset_path

        return asset_path(value[len(ASSET_PREFIX) :])
    path = Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{owner}.{key}={value!r}: no such file or folder")
    return path


def check_path(owner: str, key: str, value: str | None, required: bool = True) -> None:
    """Cheap start-up check of a configured path, without loading anything."""
    if value is None:
        return
    if value.startswith(ASSET_PREFIX):
        from engine.assets import get_asset

        get_asset(value[len(ASSET_PREFIX) :])  # raises with a "did you mean" for an unknown name
        return
    if required and not Path(value).expanduser().exists():
        raise ValueError(f"{owner}.{key}={value!r}: no such file or folder")


def path_identity(value: str) -> str:
    """What identifies a configured model file in a cache key: the asset pin or the file's digest."""
    if value.startswith(ASSET_PREFIX):
        from engine.assets import get_asset

        return get_asset(value[len(ASSET_PREFIX) :]).sha256
    return file_digest(Path(value).expanduser())


# --- the base of the configured backends ------------------------------------------------------------


class BackendClassifier(Classifier):
    """What every configured model backend shares; subclasses load and run one model format.

    Subclasses implement `_load()` (build the model on `self.device`, return it) and `_forward(model,
    inputs)` (raw `(N, K)` outputs), and may override `_move(model, device)` and `_weights_identity()`.
    Weights load lazily on the first `preprocess`/`predict`, so instantiating is cheap.

    Args:
        owner: the class name used in error messages ("TorchClassifier").
        name: the classifier's name in results.
        labels: raw labels in output order, a `LABEL_SETS` name, or None where the model file names
            its outputs (the subclass then sets them in `_load_labels`).
        label_map: raw label -> name overrides.
        preprocessing: a `Preprocessing` or its fields; None where the subclass derives it.
        activation: "softmax", "sigmoid" or "logits" (keep raw outputs).
        applied_in_model: the network already ends with `activation`.
        normalise_sigmoid: divide sigmoid scores by their row sum (`output_kind` is then "softmax").
        batch_size: largest batch the runner should try first.

    A backend whose model file cannot say how to prepare its input sets `needs_preprocessing`, so a
    missing `preprocessing` fails when the config is built rather than at the first prediction.
    """

    needs_preprocessing: bool = False

    def __init__(
        self,
        owner: str,
        name: str,
        labels: Sequence[Any] | str | None,
        label_map: Mapping[str, str] | None,
        preprocessing: Preprocessing | Mapping[str, Any] | None,
        activation: str,
        applied_in_model: bool,
        normalise_sigmoid: bool,
        batch_size: int,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"{owner}.batch_size must be a positive int, got {batch_size!r}")
        check_activation(owner, activation, normalise_sigmoid)
        self._owner = owner
        self.name = name
        self.batch_size = batch_size
        self.activation = activation
        self.applied_in_model = bool(applied_in_model)
        self.normalise_sigmoid = bool(normalise_sigmoid)
        self.output_kind = output_kind_for(activation, self.normalise_sigmoid)
        self.label_map = dict(label_map) if label_map else None
        self._labels: tuple[str, ...] | None = None
        self._raw_labels: tuple[str, ...] | None = None
        if labels is not None:
            self._labels, self._raw_labels = resolve_labels(labels, self.label_map, owner)
        if preprocessing is None and self.needs_preprocessing:
            raise ValueError(
                f"{owner}.preprocessing is required (crop, size, colour, mean, std, layout, box_scale)"
            )
        self._preprocessing = None if preprocessing is None else Preprocessing.from_config(preprocessing)
        self._device = torch.device("cpu")
        self._model: Any = None
        self._lock = threading.Lock()

    # -- labels and preprocessing, possibly read from the model's own files ---------------------
    @property
    def labels(self) -> tuple[str, ...]:  # type: ignore[override]
        if self._labels is None:
            self._labels, self._raw_labels = resolve_labels(self._load_labels(), self.label_map, self._owner)
        return self._labels

    @property
    def raw_labels(self) -> tuple[str, ...]:
        self.labels  # noqa: B018 - resolves them
        assert self._raw_labels is not None
        return self._raw_labels

    def _load_labels(self) -> Sequence[str]:
        raise ValueError(f"{self._owner}.labels is required: the model's labels in output order")

    @property
    def preprocessing(self) -> Preprocessing:
        if self._preprocessing is None:
            self._preprocessing = self._load_preprocessing()
        return self._preprocessing

    def _load_preprocessing(self) -> Preprocessing:
        raise ValueError(
            f"{self._owner}.preprocessing is required (crop, size, colour, mean, std, layout, box_scale)"
        )

    # -- lazy model and device ------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def model(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def to(self, device: torch.device | str) -> BackendClassifier:
        device = torch.device(device)
        if self._model is not None and device != self._device:
            self._model = self._move(self._model, device)
        self._device = device
        return self

    def _move(self, model: Any, device: torch.device) -> Any:
        return model

    def _load(self) -> Any:
        raise NotImplementedError

    def _forward(self, model: Any, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- the Classifier contract ----------------------------------------------------------------
    def preprocess(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        self.model  # noqa: B018 - load before timing-sensitive work, and fail early
        return self.preprocessing.apply(images, boxes)

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """Scores `(N, len(labels))` in `labels` order for preprocessed inputs."""
        raw = torch.as_tensor(self._forward(self.model, inputs))
        check_width(self.name, raw, self.labels)
        return finish_outputs(raw, self.activation, self.applied_in_model, self.normalise_sigmoid)

    def _weights_identity(self) -> Any:
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        # batch_size, name and device do not change the outputs, so they stay out of the cache key.
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "weights": self._weights_identity(),
            "labels": list(self.labels),
            "raw_labels": list(self.raw_labels),
            "preprocessing": self.preprocessing.to_dict(),
            "activation": self.activation,
            "applied_in_model": self.applied_in_model,
            "normalise_sigmoid": self.normalise_sigmoid,
        }
