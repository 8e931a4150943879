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


@pytest.fixture(scope="module")
def hostile_study(hostile_run):
    """The replication study on the same hostile folder (a small slice: dummy classifier, no audit)."""
    import os
    import subprocess
    import sys

    root = hostile_run.parent
    env = {**os.environ, "FACECF_WORK_CACHE": str(root / "study-cache"), "FACECF_OFFLINE": "1"}
    sweep = root / "study"
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "-m", "study=replicate", "dataset=folder", f"dataset.root={root / 'faces'}",
         "classifier=dummy", "audit.enabled=false", "report.plots=false", "runner.progress=off",
         f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, cwd=root, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return sweep / "replicate"


def test_study_gallery_filters_sorts_enlarges_and_stays_offline(hostile_study, tmp_path):
    from playwright.sync_api import sync_playwright

    requests, dialogs, errors = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.on("request", lambda r: requests.append(r.url))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((hostile_study / "gallery.html").as_uri())
        total = page.locator("#grid .card").count()
        assert total >= 5 * 2, "every face of the five property jobs"
        experiments = page.eval_on_selector_all("#experiment option", "os => os.map(o => o.value)")
        page.select_option("#experiment", experiments[1])
        assert 0 < page.locator("#grid .card").count() < total
        page.select_option("#experiment", "all")
        page.select_option("#sort", "most negative")
        deltas = [float(t.split(" · ")[-1].split(" ")[-1]) for t in page.locator("#grid .card .cap").all_inner_texts()]
        assert deltas == sorted(deltas)
        page.locator("#grid .card img").first.click()
        assert page.get_attribute("#big", "class") == "open"
        text = page.inner_text("body")
        page.screenshot(path=str(tmp_path / "gallery.png"))
        pwned = page.evaluate("() => window.__pwned")
        browser.close()
    assert (tmp_path / "gallery.png").stat().st_size > 10_000
    assert not errors, errors
    assert all(u.startswith(("file:", "data:")) for u in requests), f"network requests: {requests}"
    assert pwned is None and not dialogs
    assert "<script>window.__pwned=1;alert(1)<script>" in text


def test_replicate_html_opens_offline(hostile_study, tmp_path):
    requests, dialogs, pwned, text = _open(hostile_study / "replicate.html", tmp_path / "shot.png")
    assert "Replication: property × classifier" in text and "gallery.html" in text
    assert all(u.startswith(("file:", "data:")) for u in requests) and pwned is None and not dialogs
