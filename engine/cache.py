"""Content-addressed work cache: face analyses, edited images and predictions.

Keys are hashes of content (image pixels) plus the fingerprint of the component that produced the
entry, so a changed config invalidates exactly what it affects. Every write goes to a temporary
file in the same folder and is renamed into place: a crash (even SIGKILL) never leaves a half-written
entry under a valid name. Counters record hits and computations per kind, so a resumed run can
prove it recomputed nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import struct
import threading
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.types import stable_hash

WORK_CACHE_ENV = "FACECF_WORK_CACHE"


def pixels_hash(rgb: np.ndarray) -> str:
    """Hash of decoded pixels (plus shape), so re-encoded copies of an image share a key."""
    h = hashlib.sha256()
    h.update(str(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()[:32]


#: Array entries: a small container that reads about six times faster than .npz (a re-run of a
#: finished experiment is mostly these reads). Layout: magic, header length (u32 LE), JSON header
#: {name: [dtype, shape, offset, nbytes]} with the payload's codec and CRC32, then the payload.
ARRAYS_EXT = "arr"
_MAGIC = b"FCFA1\n"
_COMPRESS_ABOVE = 4096  # bytes; masks and landmarks shrink a lot, a probability row is not worth it


def encode_arrays(arrays: dict[str, Any]) -> bytes:
    """Serialise named arrays (numeric, bool or fixed-width unicode; no objects) to bytes."""
    header: dict[str, Any] = {}
    parts: list[bytes] = []
    offset = 0
    for name, value in arrays.items():
        a = np.asarray(value)  # tobytes() is C order whatever the strides; 0-d stays 0-d
        if a.dtype.hasobject:
            raise TypeError(f"cache entry {name!r}: object arrays cannot be cached")
        raw = a.tobytes()
        header[name] = [a.dtype.str, list(a.shape), offset, len(raw)]
        parts.append(raw)
        offset += len(raw)
    payload = b"".join(parts)
    codec = "zlib" if len(payload) > _COMPRESS_ABOVE else "raw"
    body = zlib.compress(payload, 1) if codec == "zlib" else payload
    meta = json.dumps({"arrays": header, "codec": codec, "crc32": zlib.crc32(payload)}).encode()
    return _MAGIC + struct.pack("<I", len(meta)) + meta + body


def decode_arrays(data: bytes) -> dict[str, np.ndarray] | None:
    """Inverse of `encode_arrays`; None for anything truncated, corrupt or of another format."""
    try:
        if not data.startswith(_MAGIC):
            return None
        start = len(_MAGIC) + 4
        (n,) = struct.unpack("<I", data[len(_MAGIC) : start])
        meta = json.loads(data[start : start + n])
        body = data[start + n :]
        payload = zlib.decompress(body) if meta["codec"] == "zlib" else body
        if zlib.crc32(payload) != meta["crc32"]:
            return None
        out = {}
        for name, (dtype, dims, offset, nbytes) in meta["arrays"].items():
            shape = tuple(dims)
            dt = np.dtype(dtype)
            if dt.itemsize == 0 or nbytes != dt.itemsize * int(np.prod(shape, dtype=np.int64)):
                out[name] = np.zeros(shape, dtype=dt)  # empty arrays and empty strings
                if nbytes:
                    return None
                continue
            out[name] = np.frombuffer(payload, dtype=dt, count=nbytes // dt.itemsize, offset=offset).reshape(shape)
        return out
    except (ValueError, KeyError, TypeError, struct.error, zlib.error, json.JSONDecodeError):
        return None


def key_of(*parts: Any) -> str:
    return stable_hash(list(parts), length=32)


log = logging.getLogger(__name__)


class WorkCache:
    """A folder of small files addressed by key: `<root>/<kind>/<k[:2]>/<k>.<ext>`.

    Args:
        root: cache folder; default `$FACECF_WORK_CACHE` or `<engine cache root>/work`.
        enabled: with False, nothing is read or written (every entry is computed).
    """

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True) -> None:
        if root is None:
            env = os.environ.get(WORK_CACHE_ENV)
            if env:
                root = env
            else:
                from engine.assets import cache_root

                root = cache_root() / "work"
        self.root = Path(root).expanduser()
        self.enabled = enabled
        self.hits: Counter[str] = Counter()
        self.computed: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._writable = True

    def _path(self, kind: str, key: str, ext: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.{ext}"

    def _write_atomic(self, path: Path, data: bytes) -> None:
        # The rename makes a write all-or-nothing for a process that dies at any point (SIGKILL
        # included). No fsync: after a machine crash a torn entry fails its CRC or PNG decode and
        # reads as missing, so syncing every small file (a few ms each) would buy nothing.
        # A cache that cannot be written (disk full, read-only, not a folder) costs speed, not the run:
        # the first failure is said once, and new work is then only computed, never stored.
        if not self._writable:
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            with self._lock:
                if self._writable:
                    self._writable = False
                    log.warning("work cache %s cannot be written (%s): the run goes on, computing what it "
                                "does not find and storing nothing new", self.root, exc.strerror or exc)

    def count(self, kind: str, hit: bool, n: int = 1) -> None:
        with self._lock:
            (self.hits if hit else self.computed)[kind] += n

    # -- arrays -------------------------------------------------------------------------------
    def get_arrays(self, kind: str, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under `key`, or None when absent or unreadable (then it is recomputed)."""
        if not self.enabled:
            return None
        try:
            data = self._path(kind, key, ARRAYS_EXT).read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            return None
        return decode_arrays(data)

    def put_arrays(self, kind: str, key: str, **arrays: np.ndarray) -> None:
        if not self.enabled:
            return
        self._write_atomic(self._path(kind, key, ARRAYS_EXT), encode_arrays(arrays))

    # -- images -------------------------------------------------------------------------------
    def get_image(self, kind: str, key: str) -> np.ndarray | None:
        if not self.enabled:
            return None
        path = self._path(kind, key, "png")
        try:
            with Image.open(path) as im:
                im.load()
                return np.asarray(im.convert("RGB"))
        except FileNotFoundError:
            return None
        except OSError:
            return None

    def put_image(self, kind: str, key: str, rgb: np.ndarray) -> None:
        if not self.enabled:
            return
        buf = io.BytesIO()
        # Lossless and fast: the cached image is exactly what the classifiers saw.
        Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
        self._write_atomic(self._path(kind, key, "png"), buf.getvalue())

    def summary(self) -> dict[str, dict[str, int]]:
        kinds = sorted(set(self.hits) | set(self.computed))
        return {k: {"cached": int(self.hits[k]), "computed": int(self.computed[k])} for k in kinds}
