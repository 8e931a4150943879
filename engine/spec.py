"""The run spec: one frozen, validated description of a run, built once from the Hydra config.

`RunSpec.from_config(cfg)` checks every group (component keys against their constructors' signatures
and type hints, engine groups against their dataclasses, values against their ranges), builds the
components (cheaply: weights load lazily), and raises `ConfigError` with one readable line on the
first problem, before any work starts. Every stage after that takes the spec, or the part of it it
needs; nothing downstream reads the raw config again. `RunOutputs` is what the run hands the report.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from engine.audit import AuditOptions, AuditThresholds
from engine.config import ROOT_KEYS, check_component, check_keys, suggest
from engine.data import Dataset
from engine.observe import ObserveConfig
from engine.pipeline.record import ImageResult
from engine.pipeline.runner import BatchRunner
from engine.report.config import ReportConfig
from engine.stats import StatsConfig
from engine.types import AuditPolicy, Classifier, ConfigError, Editor, TargetCheck

#: Keys the editor group had before strengths became engine keys; named in the error, so old
#: commands get a pointer instead of "unknown key".
MOVED_EDITOR_KEYS = ("strength", "strengths")


@dataclass(frozen=True)
class CacheSpec:
    """Where work is cached. `enabled=False` gives the run a private cache that is deleted after it."""

    dir: str | None = None
    enabled: bool = True


def parse_strengths(strength: Any, strengths: Any) -> tuple[float, ...]:
    """The strengths to run: `strengths` (a dose-response) or else `(strength,)`; all in [0, 1]."""
    chosen = strengths if strengths is not None else strength
    key = "strengths" if strengths is not None else "strength"
    values = list(chosen) if isinstance(chosen, (list, tuple)) or OmegaConf.is_list(chosen) else [chosen]
    if not values:
        raise ConfigError(f"{key}=[]: give at least one strength in [0, 1]")
    out = []
    for s in values:
        if isinstance(s, bool) or not isinstance(s, (int, float)):
            raise ConfigError(f"{key}: {s!r} is not a number; strengths lie in [0, 1]")
        if not 0.0 <= float(s) <= 1.0:
            raise ConfigError(f"{key}={s}: out of range; strengths lie in [0, 1] (0 = sham, 1 = full edit)")
        out.append(float(s))
    return tuple(sorted(set(out)))


def _plain(cfg: DictConfig, key: str) -> dict[str, Any]:
    node = OmegaConf.to_container(cfg[key], resolve=True)
    if not isinstance(node, dict):
        raise ConfigError(f"{key}: expected a mapping of keys, got {node!r}")
    return node


def _typed(group: str, node: dict[str, Any], cls: type) -> Any:
    check_keys(group, node, cls)
    try:
        return cls(**node)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{group}: {exc}") from None


def check_policy(policy: Any, editor: Editor) -> AuditPolicy:
    """The editor's audit policy, checked against the thresholds it names."""
    if not isinstance(policy, AuditPolicy):
        raise ConfigError(f"editor {editor.name}: audit_policy() returned {type(policy).__name__}, not AuditPolicy")
    target = policy.target
    if isinstance(target, TargetCheck):
        names = [f.name for f in fields(AuditThresholds)]
        if target.threshold not in names:
            raise ConfigError(f"editor {editor.name}: audit policy names threshold {target.threshold!r}"
                              f"{suggest(target.threshold, names)}; thresholds: {', '.join(names)}")
    return policy


@dataclass(frozen=True)
class RunSpec:
    """Everything a run needs, validated. Components are built; weights load on first use."""

    experiment: str
    seed: int
    resume: bool
    dataset: Dataset
    faces: Any  # a face analyser: `engine.faces.FaceAnalyzer` or a stand-in with the same methods
    editor: Editor
    policy: AuditPolicy
    strengths: tuple[float, ...]
    classifiers: Mapping[str, Classifier]
    runner: BatchRunner
    audit: AuditOptions
    thresholds: AuditThresholds
    stats: StatsConfig
    report: ReportConfig
    observe: ObserveConfig
    cache: CacheSpec
    config: Mapping[str, Any]  # the resolved config, for provenance stamps

    @property
    def paired(self) -> bool:
        """Counterfactual (sham and edits) rather than observational (originals only)."""
        return not self.observe.enabled

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RunSpec:
        """Validate the composed config and build the run's components.

        Raises:
            ConfigError: one line naming the key, the value and what is allowed.
        """
        for key in cfg:
            if key not in ROOT_KEYS:
                raise ConfigError(f"{key}: unknown top-level key{suggest(str(key), ROOT_KEYS)}; allowed: "
                                  f"{', '.join(k for k in ROOT_KEYS if k != 'hydra')}")
        seed = cfg.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"seed={seed!r}: expected an integer")
        for moved in MOVED_EDITOR_KEYS:
            if moved in cfg.editor:
                raise ConfigError(f"editor.{moved}: strengths are engine keys now; use {moved}=... "
                                  f"(e.g. strengths=[0,0.5,1])")
        strengths = parse_strengths(cfg.get("strength", 1.0), cfg.get("strengths"))
        editor = check_component("editor", cfg.editor)
        if not isinstance(editor, Editor):
            raise ConfigError(f"editor: {type(editor).__name__} is not an engine.types.Editor")
        if not cfg.classifiers:
            raise ConfigError("classifiers: no classifier selected; choose one with classifier=NAME")
        classifiers = {str(n): check_component(f"classifiers.{n}", c) for n, c in cfg.classifiers.items()}
        for name, clf in classifiers.items():
            if not isinstance(clf, Classifier):
                raise ConfigError(f"classifiers.{name}: {type(clf).__name__} is not an engine.types.Classifier")
        dataset = check_component("dataset", cfg.dataset)
        faces = check_component("faces", cfg.faces)
        if getattr(faces, "multi", None) == "auto":  # the dataset knows whether its photos hold several faces
            faces.multi = bool(getattr(dataset, "multi_face", False))
        audit_node = _plain(cfg, "audit")
        thresholds = _typed("audit.thresholds", dict(audit_node.pop("thresholds", {}) or {}), AuditThresholds)
        cache_node = _plain(cfg, "cache")
        return cls(
            experiment=str(cfg.experiment_name),
            seed=int(seed),
            resume=bool(cfg.resume),
            dataset=dataset,
            faces=faces,
            editor=editor,
            policy=check_policy(editor.audit_policy(), editor),
            strengths=strengths,
            classifiers=types.MappingProxyType(classifiers),
            runner=_typed("runner", _plain(cfg, "runner"), BatchRunner),
            audit=_typed("audit", audit_node, AuditOptions),
            thresholds=thresholds,
            stats=_typed("stats", _plain(cfg, "stats"), StatsConfig),
            report=_typed("report", _plain(cfg, "report"), ReportConfig),
            observe=_typed("observe", _plain(cfg, "observe"), ObserveConfig),
            cache=_typed("cache", cache_node, CacheSpec),
            config=types.MappingProxyType(OmegaConf.to_container(cfg, resolve=True)),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class RunOutputs:
    """What a run measured, as the report reads it (after the run; images come from the work cache)."""

    spec: RunSpec
    out: Path
    n_records: int
    results: list[ImageResult]  # every analysed image, in dataset order
    skipped: pd.DataFrame
    measurements: pd.DataFrame
    edits: pd.DataFrame
    audit: pd.DataFrame
    stats: Any  # StatsResult (paired) or the observational result; None without a face
    annotations: pd.DataFrame  # observational mode: judged properties of the originals
    timings: dict[str, float]
    cache: dict[str, dict[str, int]]
    runner: dict[str, Any]
