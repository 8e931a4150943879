"""Reader of dlib's serialised face recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`).

See `engine.audit.dlib_resnet` for the network and the file format; this module turns the file into
named float32 arrays in torch layout, checking every version string, shape and hyper-parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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


