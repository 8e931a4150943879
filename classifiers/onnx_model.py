"""ONNX backend through onnxruntime, on CUDA when the CUDA execution provider is installed.

Labels come from config, or else from the model's metadata (`labels`: a JSON list or a comma-separated
string, as `torch.onnx.export` users often write into `metadata_props`). A model exported with a
fixed batch size runs in chunks of that size (the last chunk padded), so a batch-1 export still works.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .base import BackendClassifier, check_path, path_identity, resolve_path

log = logging.getLogger(__name__)

LABEL_METADATA_KEYS = ("labels", "classes", "class_names")


def providers_for(device: torch.device, requested: Sequence[str] | None = None) -> list[Any]:
    """Execution providers: the requested list, else CUDA (on the device's index) when asked and present."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ValueError(f"ONNX providers {missing} are not installed; available: {available}")
        return list(requested)
    if device.type == "cuda":
        if "CUDAExecutionProvider" in available:
            return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        log.warning(
            "onnx: runner device is %s but onnxruntime has no CUDAExecutionProvider "
            "(install onnxruntime-gpu); running on CPU",
            device,
        )
    return ["CPUExecutionProvider"]


def labels_from_metadata(session: Any) -> list[str] | None:
    meta = session.get_modelmeta().custom_metadata_map
    for key in LABEL_METADATA_KEYS:
        if key in meta:
            text = meta[key].strip()
            if text.startswith("["):
                return [str(x) for x in json.loads(text)]
            return [x.strip() for x in text.split(",") if x.strip()]
    return None


class ONNXClassifier(BackendClassifier):
    """An ONNX model as a classifier.

    Args:
        path: `.onnx` file, or `asset:NAME` from the engine's asset registry.
        preprocessing: `Preprocessing` fields (crop, size, colour, mean, std, layout, box_scale).
        labels: raw labels in output order, a `classifiers.labels.LABEL_SETS` name, or None to read
            them from the model's metadata.
        activation: "softmax", "sigmoid" or "logits" (keep raw outputs).
        applied_in_model: the graph already ends with `activation`.
        normalise_sigmoid: divide sigmoid scores by their row sum so rows sum to 1.
        label_map: raw label -> name overrides.
        input_name: the graph input to feed; default the first.
        output_name: the graph output to read; default the first.
        providers: onnxruntime execution providers; default CUDA when the runner is on CUDA, else CPU.
        threads: intra-op threads (0: onnxruntime's default).
        name: the classifier's name in results.
        batch_size: largest batch the runner should try first.
    """

    needs_preprocessing = True

    def __init__(
        self,
        path: str | None = None,
        preprocessing: dict[str, Any] | None = None,
        labels: Sequence[str] | str | None = None,
        activation: str = "softmax",
        applied_in_model: bool = False,
        normalise_sigmoid: bool = False,
        label_map: dict[str, str] | None = None,
        input_name: str | None = None,
        output_name: str | None = None,
        providers: list[str] | None = None,
        threads: int = 0,
        name: str = "onnx",
        batch_size: int = 128,
    ) -> None:
        owner = type(self).__name__
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
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"{owner}.threads must be an int >= 0, got {threads!r}")
        check_path(owner, "path", path)
        self.path = path
        self.input_name = input_name
        self.output_name = output_name
        self.providers = list(providers) if providers else None
        self.threads = threads
        self._session_device: torch.device | None = None

    # -- loading -----------------------------------------------------------------------------------
    def _load(self) -> Any:
        import onnxruntime as ort

        if self.path is None:
            raise ValueError(f"{self._owner}.path is not set: point it at an .onnx file")
        path = resolve_path(self._owner, "path", self.path)
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        # No busy-waiting between calls: the engine's other stages run at the same time.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(
            str(path), options, providers=providers_for(self._device, self.providers)
        )
        self._session_device = self._device
        self._check_io(session)
        log.info("classifier=%s loaded onnx=%s providers=%s", self.name, path.name, session.get_providers())
        return session

    def _move(self, model: Any, device: torch.device) -> Any:
        # A session is bound to its providers: a move between CPU and CUDA rebuilds it on next use.
        return None if self._session_device is None or device.type != self._session_device.type else model

    def _check_io(self, session: Any) -> None:
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        if self.input_name is not None and self.input_name not in inputs:
            raise ValueError(
                f"{self.name}.input_name={self.input_name!r}: the model's inputs are {list(inputs)}"
            )
        if self.output_name is not None and self.output_name not in outputs:
            raise ValueError(
                f"{self.name}.output_name={self.output_name!r}: the model's outputs are {outputs}"
            )
        node = inputs[self.input_name] if self.input_name else session.get_inputs()[0]
        shape = list(node.shape)
        p = self.preprocessing
        want = [p.size, p.size, p.channels] if p.layout == "nhwc" else [p.channels, p.size, p.size]
        fixed = [(i, s) for i, s in enumerate(shape[1:]) if isinstance(s, int)]
        if len(shape) != 4 or any(want[i] != s for i, s in fixed):
            raise ValueError(
                f"{self.name}: the model's input {node.name!r} has shape {shape} but preprocessing gives "
                f"[N, {', '.join(map(str, want))}] (size={p.size}, colour={p.colour}, layout={p.layout})"
            )

    def _load_labels(self) -> Sequence[str]:
        found = labels_from_metadata(self.model)
        if not found:
            raise ValueError(
                f"{self._owner}.labels is required: the model's metadata has none of {LABEL_METADATA_KEYS}"
            )
        return found

    # -- running -----------------------------------------------------------------------------------
    def _forward(self, model: Any, inputs: torch.Tensor) -> torch.Tensor:
        node = (
            model.get_inputs()[0]
            if self.input_name is None
            else next(i for i in model.get_inputs() if i.name == self.input_name)
        )
        out_name = self.output_name or model.get_outputs()[0].name
        x = np.ascontiguousarray(inputs.detach().float().cpu().numpy())
        fixed_batch = node.shape[0] if isinstance(node.shape[0], int) else None
        if fixed_batch is None or fixed_batch == x.shape[0]:
            out = model.run([out_name], {node.name: x})[0]
        else:
            parts = []
            for i in range(0, x.shape[0], fixed_batch):
                chunk = x[i : i + fixed_batch]
                n = chunk.shape[0]
                if n < fixed_batch:  # pad the last chunk to the model's fixed batch
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed_batch - n, axis=0)])
                parts.append(model.run([out_name], {node.name: chunk})[0][:n])
            out = np.concatenate(parts, axis=0)
        return torch.from_numpy(np.asarray(out, dtype=np.float32).reshape(out.shape[0], -1))

    def _weights_identity(self) -> Any:
        return {
            "path": path_identity(self.path) if self.path else None,
            "input": self.input_name,
            "output": self.output_name,
        }
