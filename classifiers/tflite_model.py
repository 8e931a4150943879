"""TFLite backend through `ai-edge-litert` (optional extra: `pip install 'facecf[tflite]'`).

The interpreter runs on CPU; inputs preprocessed on the GPU are copied to the host after the crop and
resize, so only the small model inputs cross. Models saved with a fixed batch of 1 usually still accept
a resized batch dimension, which runs the whole batch in one C call; where resizing fails (or changes
the results' shape), the batch is run one image per call instead. Quantised (int8/uint8) inputs and
outputs are converted with the tensor's own scale and zero point.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import BackendClassifier, check_path, path_identity, resolve_path

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install ai-edge-litert (or the project's extra: pip install 'facecf[tflite]')"


def load_interpreter(path: Path, num_threads: int | None, owner: str = "TFLiteClassifier") -> Any:
    """An allocated `ai_edge_litert` interpreter for `path`, or a clear error if the wheel is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise ImportError(f"{owner} needs the optional TFLite runtime ({exc}); {INSTALL_HINT}") from None
    threads = num_threads if num_threads is not None else max(1, torch.get_num_threads())
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def _quantise(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return x.astype(np.float32, copy=False)
    scale, zero = detail["quantization"]
    if not scale:
        raise ValueError(
            f"TFLite input {detail['name']!r} is {np.dtype(dtype).name} without quantisation parameters"
        )
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _dequantise(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * (scale or 1.0)


class TFLiteRunner:
    """One interpreter, batched where the model allows it (see the module docstring)."""

    def __init__(self, interpreter: Any) -> None:
        self.interpreter = interpreter
        self.input = interpreter.get_input_details()[0]
        self.output = interpreter.get_output_details()[0]
        self.base_shape = [int(v) for v in self.input["shape"]]
        self.current_batch = self.base_shape[0]
        self.batched: bool | None = None  # unknown until a multi-image batch has been tried

    def _resize(self, n: int) -> None:
        if n != self.current_batch:
            self.interpreter.resize_tensor_input(self.input["index"], [n, *self.base_shape[1:]])
            self.interpreter.allocate_tensors()
            self.current_batch = n

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], _quantise(x, self.input))
        self.interpreter.invoke()
        return _dequantise(self.interpreter.get_tensor(self.output["index"]), self.output).copy()

    def run(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if n > 1 and self.batched is not False:
            try:
                self._resize(n)
                out = self._invoke(x)
                if out.shape[0] == n:
                    self.batched = True
                    return out
                raise ValueError(f"resized batch returned shape {out.shape}")
            except (RuntimeError, ValueError) as exc:
                log.info("tflite: batch dimension not resizable (%s); running one image per call", exc)
                self.batched = False
        self._resize(self.base_shape[0])
        return np.concatenate([self._invoke(x[i : i + 1]) for i in range(n)], axis=0)


class TFLiteClassifier(BackendClassifier):
    """A TFLite model as a classifier.

    Args:
        path: `.tflite` file, or `asset:NAME` from the engine's asset registry.
        labels: raw labels in output order, or a `classifiers.labels.LABEL_SETS` name.
        preprocessing: `Preprocessing` fields; TFLite vision models usually want layout "nhwc".
        activation: "softmax", "sigmoid" or "logits" (keep raw outputs).
        applied_in_model: the graph already ends with `activation` (common for TFLite: a Softmax op).
        normalise_sigmoid: divide sigmoid scores by their row sum so rows sum to 1.
        label_map: raw label -> name overrides.
        num_threads: interpreter threads; default: torch's intra-op thread count.
        name: the classifier's name in results.
        batch_size: largest batch the runner should try first.
    """

    needs_preprocessing = True

    def __init__(
        self,
        path: str | None = None,
        labels: Sequence[str] | str | None = None,
        preprocessing: dict[str, Any] | None = None,
        activation: str = "softmax",
        applied_in_model: bool = False,
        normalise_sigmoid: bool = False,
        label_map: dict[str, str] | None = None,
        num_threads: int | None = None,
        name: str = "tflite",
        batch_size: int = 64,
    ) -> None:
        owner = type(self).__name__
        if labels is None:
            raise ValueError(f"{owner}.labels is required: the model's labels in output order")
        super().__init__(
            owner,
            name,
            labels,
            label_map,
            preprocessing,
            activation,
            applied_in_model,
            normalise_sigmoid,
            batch_size,
        )
        if num_threads is not None and (isinstance(num_threads, bool) or num_threads < 1):
            raise ValueError(f"{owner}.num_threads must be a positive int or null, got {num_threads!r}")
        check_path(owner, "path", path)
        self.path = path
        self.num_threads = num_threads

    def _load(self) -> TFLiteRunner:
        if self.path is None:
            raise ValueError(f"{self._owner}.path is not set: point it at a .tflite file")
        path = resolve_path(self._owner, "path", self.path)
        runner = TFLiteRunner(load_interpreter(path, self.num_threads, self._owner))
        self._check_input(runner)
        log.info("classifier=%s loaded tflite=%s input=%s", self.name, path.name, runner.base_shape)
        return runner

    def _check_input(self, runner: TFLiteRunner) -> None:
        p = self.preprocessing
        shape = runner.base_shape
        want = [p.size, p.size, p.channels] if p.layout == "nhwc" else [p.channels, p.size, p.size]
        if len(shape) != 4 or shape[1:] != want:
            raise ValueError(
                f"{self.name}: the model's input shape is {shape} but preprocessing gives "
                f"[N, {', '.join(map(str, want))}] (size={p.size}, colour={p.colour}, layout={p.layout})"
            )

    def _forward(self, model: TFLiteRunner, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs.detach().float().cpu().numpy()
        with self._lock:  # an interpreter is not safe to share between threads
            out = model.run(np.ascontiguousarray(x))
        return torch.from_numpy(out.reshape(out.shape[0], -1))

    def _weights_identity(self) -> Any:
        return {"path": path_identity(self.path) if self.path else None}
