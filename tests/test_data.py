"""Bad and unusual image files are decoded or skipped with a reason; nothing stops the run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from engine.data import (
    DemoDataset,
    ImageFolderDataset,
    ImageLoadError,
    ManifestDataset,
    load_image_file,
)


@pytest.fixture()
def odd_images(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    d = tmp_path / "imgs"
    (d / "happy").mkdir(parents=True)
    (d / "sad").mkdir()
    Image.fromarray(rgb).save(d / "happy" / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(d / "happy" / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full((40, 60), 128, np.uint8)])).save(d / "sad" / "rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(d / "sad" / "deep16.png")
    # EXIF orientation 6: the stored pixels are rotated; a viewer shows them turned 90 degrees.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(d / "sad" / "rotated.jpg", exif=exif.tobytes())
    (d / "sad" / "corrupt.jpg").write_bytes(b"this is not a jpeg at all")
    (d / "sad" / "empty.png").write_bytes(b"")
    full = d / "happy" / "truncated.jpg"
    Image.fromarray(rgb).save(full, quality=95)
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 2])
    return d, rgb


def test_unusual_formats_decode_to_rgb_uint8(odd_images):
    d, rgb = odd_images
    grey = load_image_file(d / "happy" / "grey.png")
    assert grey.shape == (40, 60, 3) and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey[..., 0], rgb[..., 0])
    deep = load_image_file(d / "sad" / "deep16.png")
    assert deep.dtype == np.uint8 and np.abs(deep[..., 0].astype(int) - rgb[..., 0]).max() <= 1
    rgba = load_image_file(d / "sad" / "rgba.png")
    # alpha 128 over white: halfway between the colour and 255
    expected = (rgb.astype(float) * 128 + 255 * 127) / 255
    assert np.abs(rgba.astype(float) - expected).max() <= 2
    rotated = load_image_file(d / "sad" / "rotated.jpg")
    assert rotated.shape == (60, 40, 3), "EXIF orientation must be applied"


@pytest.mark.parametrize("name,reason", [("corrupt.jpg", "not a recognised image"), ("empty.png", "empty file")])
def test_unreadable_files_raise_with_reason(odd_images, name, reason):
    d, _ = odd_images
    with pytest.raises(ImageLoadError, match=reason):
        load_image_file(d / "sad" / name)


def test_truncated_jpeg_is_an_error_not_a_half_image(odd_images):
    d, _ = odd_images
    with pytest.raises(ImageLoadError, match="truncated|unreadable"):
        load_image_file(d / "happy" / "truncated.jpg")


def test_folder_labels_and_ids(odd_images):
    d, _ = odd_images
    ds = ImageFolderDataset(str(d))
    by_id = {r.image_id: r for r in ds}
    assert by_id["happy/rgb"].label == "happy"
    assert by_id["sad/rotated"].label == "sad"
    assert len(ds) == 8


def test_manifest_keeps_metadata_and_resolves_relative_paths(odd_images, tmp_path):
    d, _ = odd_images
    table = pd.DataFrame({"path": ["happy/rgb.png", "sad/rgba.png"], "label": ["happy", "sad"],
                          "subject": ["s1", "s2"], "age": [30, 70], "semg": ["no", "yes"]})
    man = d / "manifest.csv"
    table.to_csv(man, index=False)
    ds = ManifestDataset(str(man))
    assert [r.label for r in ds] == ["happy", "sad"]
    assert ds[1].metadata == {"age": 70, "semg": "yes"}
    assert ds[0].load().shape == (40, 60, 3)
    with pytest.raises(ValueError, match="path_column"):
        list(ManifestDataset(str(man), path_column="file"))


def test_demo_dataset_is_built_from_installed_packages():
    ds = DemoDataset(limit=3, photos=False)
    assert [r.image_id for r in ds] == ["astronaut", "grace_hopper", "lfw_000"]
    assert ds[0].load().shape == (512, 512, 3)
    lfw = ds[2].load()
    assert lfw.shape == (128, 128, 3) and lfw.dtype == np.uint8
    assert len(DemoDataset(photos=False)) == 102
    photos = DemoDataset(n_lfw=0, portraits=False)
    assert [r.image_id for r in photos][:2] == ["photo_table", "photo_aligned"] and len(photos) == 6
    assert photos[0].load().shape == (886, 1280, 3) and photos[4].load().shape == (350, 566, 3)  # RGBA: composited
    with pytest.raises(ValueError, match="n_lfw"):
        DemoDataset(n_lfw=101)


def test_files_that_share_a_name_keep_their_extension_in_the_id(tmp_path, run_experiment):
    """`a.jpg` beside `a.png` gave one id twice and aborted the run (issue 11, item 2)."""
    from PIL import Image

    from engine.data import DemoDataset, ImageFolderDataset

    root = tmp_path / "images"
    root.mkdir()
    faces = [rec.load() for rec in DemoDataset(limit=4, photos=False)][2:]
    Image.fromarray(faces[0]).save(root / "a.jpg", quality=95)
    Image.fromarray(faces[1]).save(root / "a.png")
    Image.fromarray(faces[1]).save(root / "b.png")
    ids = [r.image_id for r in ImageFolderDataset(str(root), labels_from_subfolders=False)]
    assert ids == ["a.jpg", "a.png", "b"]
    summary, out = run_experiment("experiment=placebo", "dataset=folder", f"dataset.root={root}",
                                  "dataset.labels_from_subfolders=false", "audit.enabled=false", out_name="dup")
    import pandas as pd

    got = set(pd.read_parquet(out / "measurements.parquet")["image_id"].str.split("#").str[0])
    skipped = set(pd.read_csv(out / "skipped.csv")["image_id"].astype(str).str.split("#").str[0])
    assert got | skipped == {"a.jpg", "a.png", "b"}


def test_a_malformed_manifest_is_one_line_before_any_work(tmp_path):
    """Duplicate or empty ids and a latin-1 manifest gave tracebacks mid-run (issue 11, item 2)."""
    from engine.data import ManifestDataset
    from engine.types import ConfigError

    def manifest(text: str, encoding: str = "utf-8") -> str:
        path = tmp_path / "m.csv"
        path.write_bytes(text.encode(encoding))
        return str(path)

    with pytest.raises(ConfigError, match=r"1 ids repeat in 'id' \(x\)") as info:
        list(ManifestDataset(manifest("id,path\nx,a.png\nx,b.png\ny,c.png\n")))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"empty 'id' on line\(s\) 3"):
        list(ManifestDataset(manifest("id,path\nx,a.png\n,b.png\n")))
    with pytest.raises(ConfigError, match=r"ids repeat in paths \(sub/a.png\)"):
        list(ManifestDataset(manifest("path\nsub/a.png\nsub/a.png\n")))
    ids = [r.image_id for r in ManifestDataset(manifest("path\na.jpg\na.png\nb.png\n"))]
    assert ids == ["a.jpg", "a.png", "b"]
    latin = manifest("path,name\na.png,Jos\u00e9\n", encoding="latin-1")
    with pytest.raises(ConfigError, match=r"not utf-8 text .*dataset.encoding=latin-1"):
        list(ManifestDataset(latin))
    rec = next(iter(ManifestDataset(latin, encoding="latin-1")))
    assert rec.metadata["name"] == "Jos\u00e9"


def test_a_file_name_that_is_not_utf8_is_analysed_not_fatal(tmp_path, run_experiment):
    """A non-UTF-8 file name made pyarrow raise at the end of the run (issue 11, item 2)."""
    import os

    from PIL import Image

    from engine.data import DemoDataset

    root = tmp_path / "images"
    root.mkdir()
    face = next(iter(DemoDataset(limit=3, photos=False))).load()
    name = os.fsdecode(b"caf\xe9.png")  # latin-1 bytes: not UTF-8
    Image.fromarray(face).save(os.path.join(str(root), name))
    Image.fromarray(face).save(root / "plain.png")
    _, out = run_experiment("experiment=placebo", "dataset=folder", f"dataset.root={root}",
                            "dataset.labels_from_subfolders=false", "audit.enabled=false", out_name="names")
    import pandas as pd

    ids = set(pd.read_parquet(out / "measurements.parquet")["image_id"].str.split("#").str[0])
    assert ids == {"caf\\xe9", "plain"}


def test_images_over_the_pixel_cap_are_refused_from_the_header_or_decoded_reduced(tmp_path, monkeypatch):
    """A 328 KB 16-bit PNG of 13,000 x 13,000 took 5.5 GB to load (issue 11, item 3)."""
    from PIL import Image

    from engine.data.records import ImageLoadError, load_image_file

    monkeypatch.setenv("FACECF_MAX_PIXELS", str(1_000_000))
    big_png = tmp_path / "big.png"
    Image.new("I;16", (1200, 1000), 30000).save(big_png)  # 1.2 MP > 1 MP
    with pytest.raises(ImageLoadError, match=r"too large: 1200x1000 px .* over the 1 MP cap"):
        load_image_file(big_png)
    big_jpg = tmp_path / "big.jpg"
    Image.new("RGB", (2000, 1500), (200, 120, 60)).save(big_jpg, quality=90)  # 3 MP: decoded at half size
    arr = load_image_file(big_jpg)
    assert arr.shape == (750, 1000, 3) and abs(int(arr[10, 10, 0]) - 200) <= 3
    monkeypatch.delenv("FACECF_MAX_PIXELS")
    grey16 = load_image_file(big_png)  # under the default cap: 16-bit to 8-bit in integers
    assert grey16.dtype == np.uint8 and grey16[0, 0, 0] == round(30000 * 255 / 65535)


def test_a_symlink_loop_is_a_skipped_row_not_a_hang_or_a_silent_drop(tmp_path, run_experiment):
    """Symlink loops were silently dropped (issue 11, item 6)."""
    import os

    from PIL import Image

    from engine.data import DemoDataset, ImageFolderDataset

    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    face = next(iter(DemoDataset(limit=3, photos=False))).load()
    Image.fromarray(face).save(root / "sub" / "a.png")
    os.symlink(root, root / "sub" / "back")  # sub/back -> images: a loop
    records = list(ImageFolderDataset(str(root), labels_from_subfolders=False))
    assert [r.image_id for r in records] == ["sub/a", "sub/back/"]
    _, out = run_experiment("experiment=placebo", "dataset=folder", f"dataset.root={root}",
                            "dataset.labels_from_subfolders=false", "audit.enabled=false", out_name="loop")
    import pandas as pd

    skipped = pd.read_csv(out / "skipped.csv")
    row = skipped[skipped["image_id"] == "sub/back/"].iloc[0]
    assert "symbolic link loop" in row["reason"]
