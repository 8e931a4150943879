"""Tests that compare against a pinned model asset skip without it, except under `make test`.

`make test` pulls every asset first and sets FACECF_REQUIRE_ASSETS=1: there a missing asset fails
the test, so an independent check (LPIPS against the lpips package, the judges against their
references) can never silently not run in CI.
"""

from __future__ import annotations

import os

import pytest

from engine.assets import AssetError, asset_path


def asset_or_skip(name: str) -> str:
    """The cached asset's path; skip without it (fail under FACECF_REQUIRE_ASSETS=1)."""
    try:
        return str(asset_path(name, offline=True))
    except AssetError as exc:
        if os.environ.get("FACECF_REQUIRE_ASSETS") == "1":
            pytest.fail(f"asset {name} is not cached, and this run requires every asset: {exc}")
        pytest.skip(f"asset {name} not cached: {exc}")
