"""dlib's face recognition ResNet as a batched PyTorch network, read from dlib's own `.dat` file.

`dlib_face_recognition_resnet_model_v1.dat` is a `dlib::serialize`d network of the type
`anet_type` in dlib's `examples/dnn_face_recognition_ex.cpp`::

    loss_metric<fc_no_bias<128, avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>

    alevel4 = ares<32> x3;  alevel3 = ares_down<64>, ares<64> x3;  alevel2 = ares_down<128>, ares<128> x2
    alevel1 = ares_down<256>, ares<256> x2;  alevel0 = ares_down<256>       (in forward order)
    ares<N>      = relu(add_prev1(block<N,stride 1>(tag1(x))))
    ares_down<N> = relu(add_prev2(avg_pool<2,2,2,2>(skip1(tag2(block<N,stride 2>(tag1(x))))))
    block<N,s>   = affine(con<N,3,3,1,1>(relu(affine(con<N,3,3,s,s>(x)))))

`engine.audit.dlib_format` reads that file without dlib (`read_dlib_face_resnet`); this module runs
it as `DlibFaceResNet`.

**The file format**, as dlib writes it (`dlib/serialize.h`, `dlib/dnn/{core,layers,input,loss}.h`,
`dlib/cuda/tensor.h`):

* integers: a control byte (low 4 bits: the number of little-endian bytes that follow, 1..8; bit 7:
  negative, for signed types), then the magnitude. Zero is ``01 00``.
* floats / doubles: two integers, the int64 mantissa then the int16 exponent, value
  ``mantissa * 2**exponent`` (exponent 32000/32001/32002: +inf/-inf/nan).
* bool: the ASCII byte ``'1'`` or ``'0'``; string: its length as an integer, then the bytes.
* tensor: int version 2, four int64 (num_samples, k, nr, nc), then the floats as raw little-endian
  IEEE float32 (row-major n, k, r, c). An `alias_tensor` (a view of a layer's params): version 1 and the
  four dimensions only.
* the network serialises *nested*: `add_loss_layer` writes its version, the loss's details, then its
  subnetwork; every `add_layer` writes its version, **then its whole subnetwork**, then its own layer
  details and bookkeeping (three bools and the x_grad, cached_output, params_grad tensors, all empty
  in this file); `add_tag_layer` / `add_skip_layer` write a version and their subnetwork only. The file
  therefore holds all the wrappers' version numbers from the output down to the input, the input
  layer (`input_rgb_image_sized`: the channel means and the 150x150 size), and then the layers'
  details from the input back up to the output.

Layer details: `con_4` (params = filters (num_filters, k, nr, nc) then biases (num_filters,), num_filters,
nr, nc, strides, paddings, the two alias tensors, four learning-rate/decay multipliers); `affine_`
(params = gamma then beta, per channel in CONV mode, and the mode); `relu_`; `max_pool_2` /
`avg_pool_2` (window, stride, padding); `add_prev_`; `fc_2` (num_outputs, num_inputs, params = a
(num_inputs, num_outputs) matrix, bias mode 1 = no bias, four multipliers); `loss_metric_2` (margin,
distance threshold). The reader also accepts the later spellings dlib writes (`con_5`/`con_6` with
`use_bias`/`use_relu`, `affine_2`/`relu_2` with `disabled`, `fc_3`, `bn_con2` converted to affine the way
dlib does), and checks every version string, shape and hyper-parameter against the architecture
above; anything else raises a `ValueError` naming the byte offset and what was expected.

**Semantics reproduced**: input ``(rgb - (122.782, 117.001, 104.298)) / 256`` in RGB order; dlib's
default paddings (``stride != 1 ? 0 : size/2``: the 7x7/2 and 3x3/2 convolutions and all pools use
padding 0, the 3x3/1 convolutions padding 1); `affine` in CONV mode is ``gamma[c] * x + beta[c]``;
`add_prev` of two tensors of different shapes adds them in their common (top-left) region and keeps the
larger size with the missing entries zero (`dlib::cpu::add`) -- at 150 px the shortcut of the first
256-channel down block is 4x4 against the block's 3x3, the last one 2x2 against 1x1, and the 32->64,
64->128, 128->256 shortcuts are zero-extended in channels; the final `fc` has no bias and its output is
the descriptor as is (`loss_metric::to_label` does not normalise).

The torch network folds each `affine` (and the conv bias) into the preceding convolution, and the input
normalisation into the unpadded 7x7 stem convolution, when it is built (exact up to float rounding;
``fuse=False`` keeps every step apart, as dlib runs it), and runs channels_last on CPU. On this
project's 2-core CPU it matches dlib's descriptors to ~5e-7 and runs ~20x faster per chip on one
thread (see benchmarks/bench_identity.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.audit.dlib_format import (
    ASSET,
    BLOCKS,
    CHIP_SIZE,
    CONVERSION_VERSION,
    DESCRIPTOR_SIZE,
    DlibNetwork,
    read_dlib_face_resnet,
)

__all__ = ["ASSET", "DlibFaceResNet", "DlibNetwork", "load_dlib_arrays", "load_dlib_face_resnet",
           "read_dlib_face_resnet"]


# --- torch ---------------------------------------------------------------------------------------


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's `add_prev`: sum over the common region, zero-extended to the larger of each dimension."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(x, y) for x, y in zip(a.shape[1:], b.shape[1:]))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class _ConvAffine(nn.Module):
    """dlib `affine(con(x))`: one conv with the affine folded in, or both kept apart (``fuse=False``)."""

    def __init__(self, arrays: dict[str, np.ndarray], conv: str, affine: str, stride: int, padding: int,
                 fuse: bool) -> None:
        super().__init__()
        w = torch.from_numpy(arrays[conv + ".weight"])
        b = torch.from_numpy(arrays[conv + ".bias"])
        gamma = torch.from_numpy(arrays[affine + ".gamma"])
        beta = torch.from_numpy(arrays[affine + ".beta"])
        self.stride, self.padding, self.fuse = stride, padding, fuse
        if fuse:  # gamma * (W*x + b) + beta == (gamma W)*x + (gamma b + beta)
            w64, b64 = w.double() * gamma.double().view(-1, 1, 1, 1), b.double() * gamma.double() + beta.double()
            self.weight = nn.Parameter(w64.float(), requires_grad=False)
            self.bias = nn.Parameter(b64.float(), requires_grad=False)
        else:
            self.weight = nn.Parameter(w.clone(), requires_grad=False)
            self.bias = nn.Parameter(b.clone(), requires_grad=False)
            self.register_buffer("gamma", gamma.clone().view(1, -1, 1, 1))
            self.register_buffer("beta", beta.clone().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        return y if self.fuse else y * self.gamma + self.beta


class _Block(nn.Module):
    """`ares` / `ares_down`: relu(block(x) + shortcut(x)), dlib's add_prev semantics."""

    def __init__(self, arrays: dict[str, np.ndarray], prefix: str, stride: int, fuse: bool) -> None:
        super().__init__()
        self.down = stride == 2
        self.conv1 = _ConvAffine(arrays, prefix + ".conv1", prefix + ".affine1", stride, 0 if self.down else 1, fuse)
        self.conv2 = _ConvAffine(arrays, prefix + ".conv2", prefix + ".affine2", 1, 1, fuse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x), inplace=True))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        y = y.add_(shortcut) if y.shape == shortcut.shape else _add_prev(y, shortcut)
        return F.relu(y, inplace=True)


class DlibFaceResNet(nn.Module):
    """dlib's face recognition ResNet: `(N, 3, 150, 150)` RGB chips (0..255, uint8 or float) -> `(N, 128)`.

    Build it with `load_dlib_face_resnet`, or from `read_dlib_face_resnet(path).arrays`.
    """

    def __init__(self, arrays: dict[str, np.ndarray], fuse: bool = True) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(np.asarray(arrays["input.mean"], np.float32)).view(1, 3, 1, 1))
        self.stem = _ConvAffine(arrays, "stem.conv", "stem.affine", 2, 0, fuse)
        self.fold_input = fuse
        if fuse:  # the 7x7 conv has no padding, so (x - mean) / 256 folds into its weights and bias
            w = self.stem.weight.double()
            self.stem.bias.data = (self.stem.bias.double() - (w * self.mean.double()).sum((1, 2, 3)) / 256).float()
            self.stem.weight.data = (w / 256).float()
        self.blocks = nn.ModuleList(_Block(arrays, f"blocks.{i}", s, fuse) for i, (_, s) in enumerate(BLOCKS))
        self.fc = nn.Linear(256, DESCRIPTOR_SIZE, bias=False)
        self.fc.weight = nn.Parameter(torch.from_numpy(np.asarray(arrays["fc.weight"], np.float32)).clone(),
                                      requires_grad=False)
        self.eval()

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        if chips.ndim != 4 or chips.shape[1] != 3 or tuple(chips.shape[2:]) != (CHIP_SIZE, CHIP_SIZE):
            raise ValueError(f"expected (N, 3, {CHIP_SIZE}, {CHIP_SIZE}) RGB chips, got {tuple(chips.shape)}")
        x = chips.to(self.mean.device, torch.float32)
        if not self.fold_input:
            x = (x - self.mean) / 256.0
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with _exact_float32(x.device):
            x = F.max_pool2d(F.relu(self.stem(x), inplace=True), 3, 2)
            for block in self.blocks:
                x = block(x)
            return self.fc(x.mean(dim=(2, 3)))

    @torch.inference_mode()
    def descriptors(self, chips: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """`(N, 128)` float32 descriptors of `(N, 150, 150, 3)` RGB uint8 chips (as `IdentityJudge.chips`
        cuts them, and as dlib's `compute_face_descriptor` takes them); ``(N, 3, 150, 150)`` also works."""
        t = torch.as_tensor(np.asarray(chips)) if isinstance(chips, np.ndarray) else chips
        if t.ndim == 4 and t.shape[-1] == 3 and t.shape[1] != 3:
            t = t.permute(0, 3, 1, 2)
        out = [self(t[i : i + batch_size]).cpu() for i in range(0, len(t), batch_size)]
        if not out:
            return np.zeros((0, DESCRIPTOR_SIZE), np.float32)
        return torch.cat(out).numpy()


@contextmanager
def _exact_float32(device: torch.device) -> Iterator[None]:
    """No TF32 on CUDA while the network runs: dlib computes in full float32."""
    if device.type != "cuda":
        yield
        return
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


# --- conversion cache ----------------------------------------------------------------------------------


def convert_dlib_to_safetensors(src: Path, out: Path) -> None:
    """`derived_path` build step: the `.dat` -> safetensors (unfused arrays, torch layout)."""
    from safetensors.numpy import save_file

    net = read_dlib_face_resnet(src)
    meta = {"source": ASSET, "format": "np", "meta": json.dumps(net.meta), "layers": json.dumps(net.layers)}
    save_file({k: np.ascontiguousarray(v) for k, v in net.arrays.items()}, str(out), metadata=meta)


def load_dlib_arrays(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The network's arrays: from `path` (a `.dat`, parsed) or from the cached safetensors conversion."""
    if path is not None:
        return read_dlib_face_resnet(path).arrays
    from safetensors.numpy import load_file

    from engine.assets import derived_path

    return load_file(str(derived_path(ASSET, ".safetensors", convert_dlib_to_safetensors, version=CONVERSION_VERSION)))


def load_dlib_face_resnet(path: str | Path | None = None, device: str | torch.device = "cpu",
                          fuse: bool = True) -> DlibFaceResNet:
    """`DlibFaceResNet` in eval mode on `device`; the pinned asset (converted once, cached) by default."""
    model = DlibFaceResNet(load_dlib_arrays(path), fuse=fuse).to(device)
    if torch.device(device).type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model.eval()
