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

This module reads that file without dlib (`read_dlib_face_resnet`) and runs it as `DlibFaceResNet`.

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
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ASSET = "dlib_face_recognition"
CONVERSION_VERSION = "1"
CHIP_SIZE = 150
DESCRIPTOR_SIZE = 128
#: Forward order of the residual blocks: (output channels, first conv stride) -- alevel4 .. alevel0.
BLOCKS: tuple[tuple[int, int], ...] = (
    ((32, 1),) * 3
    + ((64, 2),) + ((64, 1),) * 3
    + ((128, 2),) + ((128, 1),) * 2
    + ((256, 2),) + ((256, 1),) * 2
    + ((256, 2),)
)

# --- dlib's serialisation primitives -----------------------------------------------------------------

_FLOAT_INF, _FLOAT_NINF, _FLOAT_NAN = 32000, 32001, 32002


class _Reader:
    """Sequential reader of dlib's serialisation format over the bytes of one file."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.pos = 0
        self.name = name

    def fail(self, expected: str, found: str = "", at: int | None = None) -> ValueError:
        at = self.pos if at is None else at
        msg = f"{self.name}: not a dlib face recognition ResNet file: at byte offset {at} expected {expected}"
        return ValueError(msg + (f", found {found}" if found else ""))

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(what, f"end of file after {len(self.data) - self.pos} of {n} bytes")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def integer(self, what: str, signed: bool = True, nbytes: int = 8) -> int:
        start = self.pos
        ctrl = self.take(1, what)[0]
        size = ctrl & 0x0F
        if ctrl & 0x70 or size == 0 or size > nbytes or (ctrl & 0x80 and not signed):
            raise self.fail(f"{what} (a dlib integer of at most {nbytes} bytes)", f"control byte 0x{ctrl:02x}", start)
        value = int.from_bytes(self.take(size, what), "little")
        return -value if ctrl & 0x80 else value

    def int_equal(self, what: str, allowed: tuple[int, ...], signed: bool = True, nbytes: int = 8) -> int:
        start = self.pos
        value = self.integer(what, signed, nbytes)
        if value not in allowed:
            raise self.fail(f"{what} in {list(allowed)}", str(value), start)
        return value

    def real(self, what: str) -> float:
        start = self.pos
        mantissa = self.integer(what + " (float mantissa)", signed=True, nbytes=8)
        exponent = self.integer(what + " (float exponent)", signed=True, nbytes=2)
        if exponent == _FLOAT_INF:
            return math.inf
        if exponent == _FLOAT_NINF:
            return -math.inf
        if exponent == _FLOAT_NAN:
            return math.nan
        if exponent > _FLOAT_NAN:
            raise self.fail(f"{what} (a dlib float)", f"exponent {exponent}", start)
        return math.ldexp(mantissa, exponent)

    def boolean(self, what: str) -> bool:
        start = self.pos
        ch = self.take(1, what)
        if ch not in (b"0", b"1"):
            raise self.fail(f"{what} (bool '0' or '1')", repr(ch), start)
        return ch == b"1"

    def string(self, what: str, limit: int = 256) -> str:
        start = self.pos
        n = self.integer(what + " (string length)", signed=False)
        if n > limit:
            raise self.fail(f"{what} (a string of at most {limit} bytes)", f"length {n}", start)
        raw = self.take(n, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"{what} (an ASCII string)", repr(raw[:40]), start) from None

    def version(self, what: str, allowed: tuple[str, ...]) -> str:
        start = self.pos
        try:
            s = self.string(f"{what} version string")
        except ValueError:
            self.pos = start
            raise self.fail(f"{what} version string {' or '.join(map(repr, allowed))}") from None
        if s not in allowed:
            raise self.fail(f"{what} version string {' or '.join(map(repr, allowed))}", repr(s), start)
        return s

    def _dims(self, what: str) -> tuple[int, int, int, int]:
        dims = tuple(self.integer(f"{what} dimension {d}") for d in ("num_samples", "k", "nr", "nc"))
        if any(d < 0 for d in dims):
            raise self.fail(f"{what} (non-negative dimensions)", str(dims))
        return dims  # type: ignore[return-value]

    def tensor(self, what: str) -> np.ndarray:
        """A `resizable_tensor`: (num_samples, k, nr, nc) float32."""
        self.int_equal(f"{what} tensor version", (2,))
        dims = self._dims(what)
        count = int(np.prod(dims, dtype=np.int64))
        raw = self.take(4 * count, f"{what} tensor data ({dims}, {4 * count} bytes)")
        return np.frombuffer(raw, dtype="<f4").reshape(dims).astype(np.float32)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        """An `alias_tensor`: its shape only."""
        self.int_equal(f"{what} alias_tensor version", (1,))
        return self._dims(what)

    def empty_tensor(self, what: str) -> None:
        start = self.pos
        t = self.tensor(what)
        if t.size:
            raise self.fail(f"{what} to be an empty tensor", f"shape {t.shape}", start)


# --- the architecture, outermost layer first ---------------------------------------------------------


@dataclass
class _Spec:
    kind: str  # con affine relu max_pool avg_pool add_prev fc tag skip
    name: str = ""
    args: tuple[int, ...] = ()  # con: (filters, nr, nc, stride, padding); pools: (nr, nc, stride, padding)


def _architecture() -> list[_Spec]:
    """`anet_type` as dlib nests it, from the loss's subnetwork (the fc) down to the conv on the input."""
    specs = [_Spec("fc", "fc", (DESCRIPTOR_SIZE,)), _Spec("avg_pool", "pool", (0, 0, 1, 0))]
    for i in reversed(range(len(BLOCKS))):
        n, stride = BLOCKS[i]
        p = f"blocks.{i}"
        specs += [_Spec("relu"), _Spec("add_prev", p, (2 if stride == 2 else 1,))]
        if stride == 2:
            specs += [_Spec("avg_pool", p + ".shortcut", (2, 2, 2, 0)), _Spec("skip", "", (1,)), _Spec("tag", "", (2,))]
        specs += [
            _Spec("affine", p + ".affine2"),
            _Spec("con", p + ".conv2", (n, 3, 3, 1, 1)),
            _Spec("relu"),
            _Spec("affine", p + ".affine1"),
            _Spec("con", p + ".conv1", (n, 3, 3, stride, 0 if stride != 1 else 1)),
            _Spec("tag", "", (1,)),
        ]
    specs += [
        _Spec("max_pool", "stem.pool", (3, 3, 2, 0)),
        _Spec("relu"),
        _Spec("affine", "stem.affine"),
        _Spec("con", "stem.conv", (32, 7, 7, 2, 0)),
    ]
    return specs


@dataclass
class DlibNetwork:
    """What the reader found: arrays in torch layout, plus the file's scalar settings and layer list."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)  # one line per layer, input first


def _read_con(r: _Reader, spec: _Spec, in_channels: int, net: DlibNetwork) -> int:
    filters, nr, nc, stride, padding = spec.args
    what = f"con layer {spec.name}"
    version = r.version(what, ("con_4", "con_5", "con_6"))
    start = r.pos
    params = r.tensor(what + " params")
    got = (
        r.integer(what + " num_filters"),
        r.integer(what + " nr"),
        r.integer(what + " nc"),
        r.integer(what + " stride_y", nbytes=4),
        r.integer(what + " stride_x", nbytes=4),
        r.integer(what + " padding_y", nbytes=4),
        r.integer(what + " padding_x", nbytes=4),
    )
    expected = (filters, nr, nc, stride, stride, padding, padding)
    if got != expected:
        raise r.fail(f"{what} (num_filters, nr, nc, strides, paddings) = {expected}", str(got), start)
    fshape = r.alias(what + " filters")
    bshape = r.alias(what + " biases")
    if fshape != (filters, in_channels, nr, nc) or bshape not in ((1, filters, 1, 1), (0, 0, 0, 0)):
        raise r.fail(f"{what} filters {(filters, in_channels, nr, nc)} and biases (1, {filters}, 1, 1)",
                     f"{fshape} and {bshape}", start)
    for m in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
        r.real(f"{what} {m}_multiplier")
    use_bias = r.boolean(what + " use_bias") if version in ("con_5", "con_6") else True
    if version == "con_6" and r.boolean(what + " use_relu"):
        raise r.fail(f"{what} use_relu '0' (a relu fused into the conv is not expected here)", "'1'", r.pos - 1)
    nfilt = int(np.prod(fshape))
    nbias = filters if (use_bias and bshape != (0, 0, 0, 0)) else 0
    if params.size != nfilt + nbias:
        raise r.fail(f"{what} params of {nfilt + nbias} floats", f"{params.size}", start)
    flat = params.reshape(-1)
    net.arrays[spec.name + ".weight"] = flat[:nfilt].reshape(fshape).copy()  # (out, in, kh, kw): torch's layout
    net.arrays[spec.name + ".bias"] = flat[nfilt:].copy() if nbias else np.zeros(filters, np.float32)
    net.layers.append(f"{spec.name}: {version} {filters}x{in_channels}x{nr}x{nc} stride {stride} pad {padding}")
    return filters


def _read_affine(r: _Reader, spec: _Spec, channels: int, net: DlibNetwork) -> None:
    what = f"affine layer {spec.name}"
    version = r.version(what, ("affine_", "affine_2", "bn_con2"))
    start = r.pos
    params = r.tensor(what + " params")
    gshape, bshape = r.alias(what + " gamma"), r.alias(what + " beta")
    if gshape != (1, channels, 1, 1) or bshape != gshape:
        raise r.fail(f"{what} gamma/beta of shape (1, {channels}, 1, 1) (CONV mode)", f"{gshape}/{bshape}", start)
    if params.size != 2 * channels:
        raise r.fail(f"{what} params of {2 * channels} floats", str(params.size), start)
    gamma, beta = params.reshape(-1)[:channels].copy(), params.reshape(-1)[channels:].copy()
    disabled = False
    if version == "bn_con2":  # a batch-norm layer: dlib builds the affine from its running statistics
        for t in ("means", "invstds"):
            r.tensor(f"{what} {t}")
        mean = r.tensor(what + " running_means").reshape(-1)
        var = r.tensor(what + " running_variances").reshape(-1)
        if mean.size != channels or var.size != channels:
            raise r.fail(f"{what} running statistics of {channels} channels", f"{mean.size}/{var.size}", start)
        r.integer(what + " num_updates", signed=False)
        r.integer(what + " running_stats_window_size", signed=False)
        for m in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
            r.real(f"{what} {m}_multiplier")
        eps = np.float32(r.real(what + " eps"))
        gamma = (gamma / np.sqrt(var + eps)).astype(np.float32)
        beta = (beta - gamma * mean).astype(np.float32)
    else:
        r.int_equal(what + " mode (0 = CONV_MODE)", (0,), nbytes=4)
        if version == "affine_2":
            disabled = r.boolean(what + " disabled")
    if disabled:  # dlib folded it into the conv before saving: identity
        gamma, beta = np.ones(channels, np.float32), np.zeros(channels, np.float32)
    net.arrays[spec.name + ".gamma"] = gamma
    net.arrays[spec.name + ".beta"] = beta
    net.layers.append(f"{spec.name}: {version} {channels} channels{' (disabled)' if disabled else ''}")


def _read_pool(r: _Reader, spec: _Spec, net: DlibNetwork) -> None:
    nr, nc, stride, padding = spec.args
    kind = spec.kind
    what = f"{kind} layer {spec.name}"
    version = r.version(what, (f"{kind}_2",))
    start = r.pos
    got = (
        r.integer(what + " nr"),
        r.integer(what + " nc"),
        r.integer(what + " stride_y", nbytes=4),
        r.integer(what + " stride_x", nbytes=4),
        r.integer(what + " padding_y", nbytes=4),
        r.integer(what + " padding_x", nbytes=4),
    )
    expected = (nr, nc, stride, stride, padding, padding)
    if got != expected:
        raise r.fail(f"{what} (nr, nc, strides, paddings) = {expected}", str(got), start)
    net.layers.append(f"{spec.name}: {version} {nr}x{nc} stride {stride} pad {padding}" + (" (global)" if nr == 0 else ""))


def _read_fc(r: _Reader, spec: _Spec, in_features: int, net: DlibNetwork) -> None:
    (outputs,) = spec.args
    what = f"fc layer {spec.name}"
    version = r.version(what, ("fc_2", "fc_3"))
    start = r.pos
    got = (r.integer(what + " num_outputs", signed=False), r.integer(what + " num_inputs", signed=False))
    if got != (outputs, in_features):
        raise r.fail(f"{what} (num_outputs, num_inputs) = {(outputs, in_features)}", str(got), start)
    params = r.tensor(what + " params")
    wshape, _ = r.alias(what + " weights"), r.alias(what + " biases")
    if wshape != (in_features, outputs, 1, 1) or params.size != in_features * outputs:
        raise r.fail(f"{what} weights ({in_features}, {outputs}) and no bias", f"{wshape}, {params.size} floats", start)
    r.int_equal(what + " bias mode (1 = FC_NO_BIAS)", (1,), nbytes=4)
    for m in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
        r.real(f"{what} {m}_multiplier")
    if version == "fc_3":
        r.boolean(what + " use_bias")
    # dlib computes x @ W with W (num_inputs, num_outputs); torch's Linear stores W^T.
    net.arrays[spec.name + ".weight"] = params.reshape(in_features, outputs).T.copy()
    net.layers.append(f"{spec.name}: {version} {in_features} -> {outputs}, no bias")


def read_dlib_face_resnet(path: str | Path) -> DlibNetwork:
    """Parse `dlib_face_recognition_resnet_model_v1.dat` into named float32 arrays (torch layout).

    Names: ``stem.conv.{weight,bias}``, ``stem.affine.{gamma,beta}``, ``blocks.{i}.conv{1,2}.{weight,bias}``,
    ``blocks.{i}.affine{1,2}.{gamma,beta}`` (i = 0..13 in forward order), ``fc.weight`` (128, 256) and
    ``input.mean`` (3,) RGB. Raises `ValueError` (with the byte offset) if the file is anything else.
    """
    path = Path(path)
    r = _Reader(path.read_bytes(), str(path))
    net = DlibNetwork(arrays={})
    specs = _architecture()

    # Outside in: the loss layer, then every wrapper's version down to the input layer.
    r.int_equal("add_loss_layer version", (1,))
    loss = r.version("loss layer", ("loss_metric_", "loss_metric_2"))
    if loss == "loss_metric_2":
        net.meta["margin"] = r.real("loss_metric margin")
        net.meta["distance_threshold"] = r.real("loss_metric dist_thresh")
    versions: list[int] = []
    for i, spec in enumerate(specs):
        where = f"layer {i} ({spec.kind} {spec.name})".replace(" )", ")")
        if spec.kind in ("tag", "skip"):
            versions.append(r.int_equal(f"add_{spec.kind}_layer version for {where}", (1,)))
        elif i == len(specs) - 1:  # add_layer specialised for a layer sitting on the input layer
            versions.append(r.int_equal(f"add_layer version for {where} on the input", (2, 3)))
        else:
            versions.append(r.int_equal(f"add_layer version for {where}", (1, 2)))

    r.version("input layer", ("input_rgb_image_sized",))
    mean = [r.real(f"input_rgb_image_sized avg_{c}") for c in ("red", "green", "blue")]
    size = (r.integer("input nr", signed=False), r.integer("input nc", signed=False))
    if size != (CHIP_SIZE, CHIP_SIZE):
        raise r.fail(f"input size ({CHIP_SIZE}, {CHIP_SIZE})", str(size))
    net.arrays["input.mean"] = np.asarray(mean, np.float32)
    net.layers.append(f"input: input_rgb_image_sized {size[0]}x{size[1]} mean {mean}")

    # Inside out: each layer's details and add_layer bookkeeping.
    channels = 3
    for i in reversed(range(len(specs))):
        spec = specs[i]
        if spec.kind in ("tag", "skip"):
            net.layers.append(f"{spec.kind}{spec.args[0]}")
            continue
        if spec.kind == "con":
            channels = _read_con(r, spec, channels, net)
        elif spec.kind == "affine":
            _read_affine(r, spec, channels, net)
        elif spec.kind == "relu":
            version = r.version("relu layer", ("relu_", "relu_2"))
            if version == "relu_2" and r.boolean("relu disabled"):
                raise r.fail("an enabled relu layer (dlib's fused relu is not expected here)", "disabled", r.pos - 1)
            net.layers.append("relu")
        elif spec.kind in ("max_pool", "avg_pool"):
            _read_pool(r, spec, net)
        elif spec.kind == "add_prev":
            r.version(f"add_prev{spec.args[0]} layer", ("add_prev_",))
            net.layers.append(f"{spec.name}: add_prev{spec.args[0]}")
            channels = BLOCKS[int(spec.name.split(".")[1])][0]
        elif spec.kind == "fc":
            _read_fc(r, spec, channels, net)
        what = f"add_layer {i} ({spec.kind} {spec.name})"
        for flag in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
            r.boolean(f"{what} {flag}")
        r.tensor(f"{what} x_grad")
        r.tensor(f"{what} cached_output")
        if i == len(specs) - 1:
            r.tensor(f"{what} grad_final")
            if versions[i] == 3:
                r.integer(f"{what} sample_expansion_factor", signed=False, nbytes=4)
        elif versions[i] == 2:
            r.tensor(f"{what} params_grad")
    if r.pos != len(r.data):
        raise r.fail("the end of the file", f"{len(r.data) - r.pos} trailing bytes")
    net.meta["layers"] = len(net.layers)
    return net


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
