"""Every config group and experiment composes and instantiates; bad configs fail in one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import conf
from engine.config import precheck, register_experiments
from engine.spec import RunSpec
from engine.types import ConfigError

CONF = Path(conf.__file__).parent
NEEDS_PATH = {"folder": "dataset.root", "manifest": "dataset.path", "fer2013": "dataset.path"}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["dataset", "faces", "editor", "classifier", "stats", "runner", "report", "audit",
                                   "audit/thresholds"])
def test_every_group_option_composes_and_instantiates(compose, group, tmp_path):
    import pandas as pd

    man = tmp_path / "m.csv"
    pd.DataFrame({"path": ["a.png"], "emotion": [3], "pixels": ["0 " * 2304]}).to_csv(man, index=False)
    for name in _options(group):
        extra = []
        if group == "dataset" and name in NEEDS_PATH:
            extra = [f"{NEEDS_PATH[name]}={tmp_path if name == 'folder' else man}"]
        if group == "runner" and name == "cuda":
            import torch

            if not torch.cuda.is_available():
                continue
        cfg = compose(f"{group}={name}", *extra)
        spec = RunSpec.from_config(cfg)
        assert spec.editor is not None and spec.policy.property == spec.editor.property


def test_every_experiment_composes_and_instantiates(compose, tmp_path):
    import pandas as pd

    manifest = tmp_path / "faces.csv"
    pd.DataFrame({"path": ["a.png"], "label": ["happy"], "age": [30], "gender": ["f"], "semg": ["no"]}).to_csv(
        manifest, index=False)
    names = register_experiments()
    assert {"symmetry", "asymmetry", "semg", "age_shift", "gender_swap", "placebo", "observe_properties",
            "observe_demo"} <= set(names)
    for name in names:
        extra = [f"dataset.path={manifest}"] if name == "observe_properties" else []
        cfg = compose(f"experiment={name}", *extra)
        assert cfg.experiment_name == name
        assert RunSpec.from_config(cfg).experiment == name


@pytest.mark.parametrize(
    "override,expected",
    [
        ("editor.mdoe=shape", r"editor.mdoe: unknown key.*mode"),
        ("+editor.mdoe=shape", r"editor.mdoe: unknown key.*did you mean 'mode'"),
        ("editor=symetry", r"editor=symetry: unknown editor \(did you mean 'symmetry'\?\); available: .*placebo"),
        ("strength=2", r"strength=2.*out of range.*\[0, 1\]"),
        ("strengths=[0,0.5,1.5]", r"strengths=1.5.*out of range"),
        ("+editor.strength=1", r"editor.strength: strengths are engine keys now; use strength="),
        ("audit.thresholds.min_age_change=-1", r"audit.thresholds: min_age_change=-1"),
        ("audit.identity=maybe", r"audit.*identity"),
        ("faces.crop_size=10", r"faces.*crop_size"),
        ("runner.amp=fp8", r"runner.*amp.*fp8"),
        ("stats.alpha=1.5", r"stats.*alpha"),
        ("seed=abc", r"seed"),
        ("experiment=agee_shift", r"experiment=agee_shift: unknown experiment"),
    ],
)
def test_bad_config_fails_with_one_clear_line(override, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        precheck(["experiment=symmetry", override])
    assert "\n" not in str(info.value)


def test_cli_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "engine", "experiment=symmetry", "strength=2"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "strength=2" in lines[0] and "[0, 1]" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists(), "a bad config must not start a run"


def test_a_refused_run_leaves_the_existing_run_untouched(tmp_path):
    """Hydra wrote `.hydra/*.yaml` into the folder before the app refused it (issue 11, item 4)."""
    import json

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "run_state.json").write_text(json.dumps({"status": "finished", "fingerprint": {"editor": "other"}}))
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run_dir / ".hydra" / name).write_text(f"the earlier run's {name}\n")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    for extra, message in (([], "resume=true"), (["resume=true"], "another config")):
        proc = subprocess.run([sys.executable, "-m", "engine", "experiment=placebo", "dataset.limit=1",
                               f"hydra.run.dir={run_dir}", *extra], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path):
    """An unwritable run folder gave a traceback (issue 11, item 5)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = subprocess.run([sys.executable, "-m", "engine", "experiment=placebo", "dataset.limit=1",
                           f"hydra.run.dir={blocker / 'run'}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: output folder") and "Traceback" not in proc.stderr


def test_the_readme_prints_the_errors_the_engine_gives():
    """The README's examples of a refused config are the engine's own lines (they had gone stale when
    the symmetry editor gained keys)."""
    import re
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    examples = re.findall(r"^\$ python -m engine (.+)\n(error: .+)$", readme, flags=re.M)
    assert len(examples) >= 3
    for command, printed in examples:
        with pytest.raises(ConfigError) as info:
            precheck(shlex.split(command))
        assert f"error: {info.value}" == printed, command
