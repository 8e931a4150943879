"""PyTorch backend: a module plus a checkpoint, or a TorchScript file, loaded without running pickled code.

Two ways to name the network:

* **module + checkpoint.** `model` is a Hydra sub-config with `_target_` (use `_partial_: true` so the
  module is built lazily, on first use) or `model_class` is a dotted class path with `model_kwargs`;
  `checkpoint` holds its weights.
* **TorchScript.** `checkpoint` is a `torch.jit.save` archive and no module is given.

Checkpoints load safely: `.safetensors` through safetensors, everything else through
`torch.load(weights_only=True)`, which only rebuilds tensors and plain containers. A pickle holding any
other Python object (a whole pickled `nn.Module`, a custom class) is refused with `UnsafeCheckpointError`
rather than executed: re-save it as a state dict or as safetensors.

Example (conf/classifier/torch.yaml)::

    my_model:
      _target_: classifiers.torch_model.TorchClassifier
      model: {_target_: my_pkg.nets.EmotionNet, _partial_: true, width: 32}
      checkpoint: /data/emotion_net.safetensors
      labels: [angry, disgust, fear, happy, sad, surprise, neutral]
      preprocessing: {crop: face_box, size: 48, colour: grey, mean: 0.5, std: 0.5}
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import pickle
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import BackendClassifier, check_path, path_identity, resolve_path

log = logging.getLogger(__name__)

CHECKPOINT_FORMATS = ("auto", "safetensors", "state_dict", "torchscript")
#: Keys under which training scripts commonly nest the state dict.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "network", "net", "weights")


@contextmanager
def tf32(allowed: bool) -> Iterator[None]:
    """Set cuDNN's and cuBLAS's TF32 switches for one forward pass, restoring the caller's after.

    PyTorch lets cuDNN use TF32 by default, which on Hopper moves float32 outputs by ~1e-3 against CPU;
    the effects an audit measures can be that small, so the backends run true float32 unless told.
    """
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


class UnsafeCheckpointError(ValueError):
    """A checkpoint would need arbitrary Python objects unpickled; it is refused, not executed."""


def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a `code/` folder and `constants.pkl`."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def load_checkpoint(path: Path, owner: str = "TorchClassifier") -> Any:
    """Load a weights file without executing pickled code.

    Returns whatever the file holds (a state dict, or a dict with one nested): safetensors through
    `safetensors.torch.load_file`, other files through `torch.load(weights_only=True)` on CPU.

    Raises:
        UnsafeCheckpointError: the pickle needs Python objects other than tensors and containers.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeCheckpointError(
            f"{owner}: refusing to load {path}: it is a pickle that holds Python objects other than tensors "
            f"({first}). Loading it would run code from the file. Re-save the weights where the model is "
            "defined, with torch.save(model.state_dict(), 'weights.pt') or "
            "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors'), and point at that"
        ) from None


def extract_state_dict(obj: Any, key: str | None, owner: str = "TorchClassifier") -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint: `obj[key]`, `obj` itself, or one common nesting."""
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            keys = list(obj) if isinstance(obj, Mapping) else type(obj).__name__
            raise ValueError(f"{owner}.state_dict_key={key!r}: not in the checkpoint; it holds {keys}")
        obj = obj[key]
    elif isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        nested = [k for k in NESTED_KEYS if isinstance(obj.get(k), Mapping)]
        if not nested:
            raise ValueError(
                f"{owner}: the checkpoint is not a state dict; its keys are {list(obj)}; set state_dict_key"
            )
        obj = obj[nested[0]]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{owner}: the checkpoint entry is not a dict of tensors (got {type(obj).__name__})")
    state = dict(obj)
    # nn.DataParallel saves every name with a "module." prefix.
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _describe_factory(factory: Any) -> Any:
    """A stable, JSON-able description of a module factory, for the cache key."""
    if isinstance(factory, functools.partial):
        return {
            "factory": _describe_factory(factory.func),
            "args": list(factory.args),
            "kwargs": factory.keywords,
        }
    if isinstance(factory, Mapping):
        return dict(factory)
    if isinstance(factory, type) or callable(factory):
        return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"
    return repr(factory)


def module_digest(module: nn.Module) -> str:
    """sha256 of a module's parameter and buffer values (names included)."""
    h = hashlib.sha256()
    for key, value in module.state_dict().items():
        h.update(key.encode() + b"\0")
        h.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class TorchClassifier(BackendClassifier):
    """A PyTorch model as a classifier (see the module docstring for the two ways to name it).

    Args:
        labels: raw labels in output order, or a `classifiers.labels.LABEL_SETS` name ("fer2013").
        checkpoint: weights file (`.safetensors`, a `torch.save` state dict, or TorchScript), or
            `asset:NAME` from the engine's asset registry. Optional only when `model` is a ready
            `nn.Module` passed from Python.
        model: the network: an `nn.Module`, a callable returning one (Hydra `_partial_: true`), or a
            mapping with `_target_` (instantiated on first use).
        model_class: dotted path of an `nn.Module` class, built with `model_kwargs`; instead of `model`.
        model_kwargs: keyword arguments for `model_class`.
        checkpoint_format: "auto" (by suffix and content), "safetensors", "state_dict" or "torchscript".
        state_dict_key: where the state dict sits inside the checkpoint (for example "network").
        strict: require the state dict to match the module exactly.
        preprocessing: `Preprocessing` fields (crop, size, colour, mean, std, layout, box_scale).
        activation: "softmax", "sigmoid" or "logits" (keep raw outputs).
        applied_in_model: the network already ends with `activation`.
        normalise_sigmoid: divide sigmoid scores by their row sum so rows sum to 1.
        label_map: raw label -> name overrides.
        name: the classifier's name in results.
        batch_size: largest batch the runner should try first.
        allow_tf32: let CUDA use TF32 for float32 convolutions and matmuls (faster, ~1e-3 less exact).
        channels_last: run a convolutional network in NHWC memory order (oneDNN and cuDNN convolutions
            are faster in it: 1.3-2.4x for the zoo's CNNs on a CPU; outputs agree to ~1e-6).
    """

    needs_preprocessing = True

    def __init__(
        self,
        labels: Sequence[str] | str,
        preprocessing: dict[str, Any],
        checkpoint: str | None = None,
        model: Any = None,
        model_class: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        checkpoint_format: str = "auto",
        state_dict_key: str | None = None,
        strict: bool = True,
        activation: str = "softmax",
        applied_in_model: bool = False,
        normalise_sigmoid: bool = False,
        label_map: dict[str, str] | None = None,
        name: str = "torch",
        batch_size: int = 128,
        allow_tf32: bool = False,
        channels_last: bool = False,
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
        if checkpoint_format not in CHECKPOINT_FORMATS:
            raise ValueError(
                f"{owner}.checkpoint_format must be one of {CHECKPOINT_FORMATS}, got {checkpoint_format!r}"
            )
        if model is not None and model_class is not None:
            raise ValueError(f"{owner}: give either model or model_class, not both")
        if model_kwargs and model_class is None:
            raise ValueError(
                f"{owner}.model_kwargs needs model_class (with `model`, put the kwargs in its config)"
            )
        if checkpoint_format == "torchscript" and (model is not None or model_class is not None):
            raise ValueError(
                f"{owner}: a TorchScript checkpoint carries its own network; drop model/model_class"
            )
        if checkpoint is None and not isinstance(model, nn.Module) and not self._builds_own_model():
            raise ValueError(
                f"{owner}.checkpoint is required (a state dict, safetensors or TorchScript file)"
            )
        check_path(owner, "checkpoint", checkpoint)
        self.checkpoint = checkpoint
        self.checkpoint_format = checkpoint_format
        self.state_dict_key = state_dict_key
        self.strict = bool(strict)
        self.model_class = model_class
        self.model_kwargs = dict(model_kwargs or {})
        self.allow_tf32 = bool(allow_tf32)
        self.channels_last = bool(channels_last)
        self._model_spec = model

    def _builds_own_model(self) -> bool:
        """Subclasses that know their weights (a zoo model) return True."""
        return False

    # -- loading ---------------------------------------------------------------------------------
    def _format(self, path: Path) -> str:
        if self.checkpoint_format != "auto":
            return self.checkpoint_format
        if path.suffix == ".safetensors":
            return "safetensors"
        return "torchscript" if is_torchscript(path) else "state_dict"

    def _build_module(self, state: dict[str, torch.Tensor] | None) -> nn.Module:
        """The network to load `state` into; `state` lets subclasses size it from the weights."""
        spec = self._model_spec
        if isinstance(spec, nn.Module):
            return spec
        if self.model_class is not None:
            module_name, _, attr = self.model_class.rpartition(".")
            try:
                cls = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError, ValueError) as exc:
                raise ValueError(
                    f"{self._owner}.model_class={self.model_class!r} cannot be imported: {exc}"
                ) from None
            return cls(**self.model_kwargs)
        if isinstance(spec, Mapping):
            from hydra.utils import instantiate

            spec = instantiate(dict(spec))
            if isinstance(spec, nn.Module):
                return spec
        if callable(spec):
            built = spec()
            if isinstance(built, nn.Module):
                return built
            raise ValueError(f"{self._owner}.model built a {type(built).__name__}, not an nn.Module")
        raise ValueError(
            f"{self._owner}: the checkpoint is a state dict, so the network is needed too: set model "
            "(a _target_ sub-config with _partial_: true) or model_class"
        )

    def _load(self) -> nn.Module:
        path = resolve_path(self._owner, "checkpoint", self.checkpoint) if self.checkpoint else None
        if path is not None and self._format(path) == "torchscript":
            if self._model_spec is not None or self.model_class is not None:
                raise ValueError(f"{self._owner}: {path} is TorchScript; drop model/model_class")
            module = torch.jit.load(str(path), map_location="cpu")
        else:
            state = None
            if path is not None:
                raw = load_checkpoint(path, self._owner)
                state = extract_state_dict(raw, self.state_dict_key, self._owner)
            module = self._build_module(state)
            if state is not None:
                self._load_state(module, state)
        log.info("classifier=%s loaded checkpoint=%s device=%s", self.name, self.checkpoint, self._device)
        module = module.eval().to(self._device)
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def _load_state(self, module: nn.Module, state: dict[str, torch.Tensor]) -> None:
        try:
            missing, unexpected = module.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise ValueError(f"{self._owner}: the checkpoint does not fit the network: {exc}") from None
        # BatchNorm's num_batches_tracked counter is absent from many exported state dicts.
        missing = [m for m in missing if not m.endswith("num_batches_tracked")]
        if self.strict and (missing or unexpected):
            raise ValueError(
                f"{self._owner}: the checkpoint does not match the network: missing {missing[:8]}"
                f"{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                f"{'...' if len(unexpected) > 8 else ''} (strict=false loads what matches)"
            )

    def _move(self, model: nn.Module, device: torch.device) -> nn.Module:
        return model.to(device)

    def _forward(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs.to(self._device, torch.float32)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), tf32(self.allow_tf32):
            out = model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if hasattr(out, "logits"):
            out = out.logits
        return out

    # -- cache identity --------------------------------------------------------------------------
    def _weights_identity(self) -> Any:
        ident: dict[str, Any] = {
            "checkpoint": path_identity(self.checkpoint) if self.checkpoint else None,
            "state_dict_key": self.state_dict_key,
            "strict": self.strict,
            "allow_tf32": self.allow_tf32,
            "channels_last": self.channels_last,
        }
        if self.model_class is not None:
            ident["model_class"] = self.model_class
            ident["model_kwargs"] = self.model_kwargs
        elif isinstance(self._model_spec, nn.Module):
            # A module passed from Python: its own weights are part of its identity.
            ident["module"] = [type(self._model_spec).__qualname__, module_digest(self._model_spec)]
        elif self._model_spec is not None:
            ident["model"] = _describe_factory(self._model_spec)
        return ident
