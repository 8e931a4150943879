"""report.html and the gallery in headless Chromium: they render, request nothing, and run no injected script."""

from __future__ import annotations

import pytest
from browser import ARGS, chromium_path
from PIL import Image

HOSTILE = ("<script>window.__pwned=1;alert(1)<script>", "<img src=x onerror=window.__pwned=2>")


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A run on a folder whose face photos carry script in their file names."""
    from hydra.core.global_hydra import GlobalHydra

    from engine.app import run
    from engine.config import compose_config
    from engine.data import DemoDataset

    root = tmp_path_factory.mktemp("hostile")
    photos = root / "faces"
    photos.mkdir()
    demo = [r for r in DemoDataset(photos=False)][:2]
    for name, rec in zip(HOSTILE, demo):
        Image.fromarray(rec.load()).save(photos / f"{name}.png")
    cfg = compose_config(["experiment=symmetry", "dataset=folder", f"dataset.root={photos}", "classifier=dummy",
                          "runner.device=cpu", "runner.progress=off", "report.plots=true"])
    GlobalHydra.instance().clear()
    out = root / "run"
    run(cfg, out=out)
    return out


def _open(path, shot):
    from playwright.sync_api import sync_playwright

    requests, dialogs = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1400})
        page.on("request", lambda r: requests.append(r.url))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        pwned = page.evaluate("() => window.__pwned")
        text = page.inner_text("body")
        page.screenshot(path=str(shot), full_page=False)
        browser.close()
    return requests, dialogs, pwned, text


@pytest.mark.parametrize("page_name", ["report.html", "gallery/index.html"])
def test_page_renders_offline_and_runs_no_injected_script(hostile_run, page_name, tmp_path):
    shot = tmp_path / "shot.png"
    requests, dialogs, pwned, text = _open(hostile_run / page_name, shot)
    assert shot.stat().st_size > 10_000, "the screenshot shows a rendered page"
    assert all(u.startswith(("file:", "data:")) for u in requests), f"network requests: {requests}"
    assert pwned is None and not dialogs, "a file name's script ran"
    if page_name.startswith("gallery"):
        assert "<script>window.__pwned=1;alert(1)<script>" in text, "the hostile name is shown as text"
    else:
        assert "emotion-output shifts significant" in text
