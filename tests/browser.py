"""A headless Chromium for page tests: the system's, installed with apt-get when missing and allowed.

Playwright drives it through `executable_path` (Playwright's own browser download is never used:
tests never download). Where no browser can be had, the tests skip and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome")
#: Chromium's own background traffic would otherwise try the network at every start.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


def _find() -> str | None:
    return next((p for p in map(shutil.which, NAMES) if p), None)


def chromium_path() -> str:
    """The browser's path; installs Debian's chromium if root and apt-get are there; else skips."""
    found = _find()
    if found:
        return found
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
            subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired):
            pass
        found = _find()
        if found:
            return found
    pytest.skip("no Chromium: none of chromium, chromium-browser, google-chrome is on PATH, and apt-get could not "
                "install one (not root, no apt-get, or no package mirror)")
    raise AssertionError("unreachable")
