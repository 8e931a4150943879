"""Hydra plumbing: the experiment registry, composition, and checks that fail in one line.

Schemas are typed by the constructors themselves: every component config (`_target_` plus keys) is
checked against the signature and type hints of the class it names (`check_component`), and
engine-owned groups against their dataclasses (`check_keys`); `engine.spec.RunSpec` puts the checks
together. A misspelled key, a wrong type, an unknown option or an out-of-range value stops the run
before any work starts, with one line naming the key, the value and what is allowed.

The studies live in the top-level `experiments/` folder, which the design fixes, flat (one YAML per
study). A Hydra search path cannot serve them as the `experiment` group, since a search-path root
must hold the group as a sub-folder, so `register_experiments` stores them in Hydra's ConfigStore.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import os
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from engine.types import ConfigError

log = logging.getLogger(__name__)

EXPERIMENTS_ENV = "FACECF_EXPERIMENTS"
ROOT_KEYS = ("experiment_name", "seed", "resume", "dry_run", "objective", "strength", "strengths", "dataset", "editor", "classifiers",
             "faces", "runner", "stats", "report", "audit", "observe", "cache", "hydra")


def experiment_dirs() -> list[Path]:
    """The bundled `experiments/` folder plus any folders in $FACECF_EXPERIMENTS (os.pathsep-separated)."""
    import experiments

    dirs = [Path(experiments.__file__).parent]
    for extra in os.environ.get(EXPERIMENTS_ENV, "").split(os.pathsep):
        if extra:
            dirs.append(Path(extra).expanduser())
    return dirs


def register_experiments() -> list[str]:
    """Put every experiment YAML into Hydra's ConfigStore under the group `experiment`.

    The design keeps studies in a top-level `experiments/` folder, outside `conf/`; registering them
    makes `experiment=NAME` work from any working directory after installation.
    """
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    names = []
    for d in experiment_dirs():
        for f in sorted(d.glob("*.yaml")):
            cs.store(group="experiment", name=f.stem, node=OmegaConf.load(f), package="_global_")
            names.append(f.stem)
    return names


# -- type checking against constructor signatures -------------------------------------------------
def _import_target(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"_target_ '{path}' cannot be imported: {exc}") from None


def _signature_params(target: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    fn = target.__init__ if inspect.isclass(target) else target
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable hints just skip the type check
        hints = {}
    params = {n: p for n, p in sig.parameters.items() if n != "self"}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    params = {n: p for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return params, hints, var_kw


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, ListConfig)):
            return False
        inner = args[0] if args and args[-1] is not Ellipsis else (args[0] if args else Any)
        return all(_type_ok(v, inner) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, (dict, DictConfig))
    return True  # anything more exotic is the constructor's own business


def _type_name(hint: Any) -> str:
    return re.sub(r"\btyping\.|collections\.abc\.", "", str(hint)).replace("NoneType", "None").replace(
        "<class '", "").replace("'>", "")


def suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_keys(path: str, node: dict[str, Any], target: Any, skip: Sequence[str] = ()) -> None:
    """Check every key of `node` against `target`'s signature and type hints."""
    params, hints, var_kw = _signature_params(target)
    for key, value in node.items():
        if key.startswith("_") or key in skip:
            continue
        if key not in params:
            if var_kw:
                continue
            known = sorted([*params, *skip])
            allowed = ", ".join(known) or "(none)"
            raise ConfigError(f"{path}.{key}: unknown key{suggest(key, known)}; allowed keys: {allowed}")
        hint = hints.get(key, inspect.Parameter.empty)
        if not _type_ok(value, hint):
            raise ConfigError(f"{path}.{key}={value!r}: expected {_type_name(hint)}")
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in node]
    if missing:
        raise ConfigError(f"{path}: missing required key(s): {', '.join(missing)}")


def check_component(path: str, node: DictConfig, skip: Sequence[str] = ()) -> Any:
    """Validate and instantiate one `_target_` component (construction must be cheap: lazy weights)."""
    from hydra.utils import instantiate
    from omegaconf.errors import MissingMandatoryValue

    if "_target_" not in node:
        raise ConfigError(f"{path}: has no _target_ (the class to build)")
    target = _import_target(str(node._target_))
    missing = [str(k) for k in node if OmegaConf.is_missing(node, k)]
    if missing:
        raise ConfigError(f"{path}.{missing[0]}: required value missing; set it, e.g. {path}.{missing[0]}=...")
    try:
        plain = OmegaConf.to_container(node, resolve=True)
    except MissingMandatoryValue as exc:
        raise ConfigError(f"{path}: {exc}".splitlines()[0]) from None
    assert isinstance(plain, dict)
    check_keys(path, plain, target, skip)
    clean = OmegaConf.create({k: v for k, v in plain.items() if k not in skip})
    try:
        return instantiate(clean, _convert_="all")
    except Exception as exc:  # noqa: BLE001 - becomes one readable line
        cause = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise ConfigError(f"{path}: {cause}") from None


# -- turning Hydra's composition errors into one line --------------------------------------------
def explain_hydra_error(exc: BaseException, overrides: Sequence[str]) -> str:
    msg = str(exc).strip()
    m = re.search(r"Could not find '([\w/]+)/([^']+)'", msg)
    if m:
        group, name = m.group(1), m.group(2)
        options = re.findall(r"^\t(\S+)$", msg, flags=re.M)
        return f"{group}={name}: unknown {group}{suggest(name, options)}; available: {', '.join(options)}"
    m = re.search(r"Could not override '([^']+)'", msg) or re.search(r"Key '([^']+)' is not in struct", msg)
    if m:
        full = m.group(1)
        return f"{full}: unknown key; {_allowed_for(full, overrides)}"
    m = re.search(r"Could not append to config. An item is already at '([^']+)'", msg)
    if m:
        return f"+{m.group(1)}: key already exists; set it without '+'"
    first = msg.splitlines()[0] if msg else type(exc).__name__
    return first


def _allowed_for(full_key: str, overrides: Sequence[str]) -> str:
    """List the keys allowed beside `full_key`, composing the config without the bad override."""
    parent, _, leaf = full_key.rpartition(".")
    keep = [o for o in overrides if not o.lstrip("+~").startswith(full_key)]
    try:
        cfg = compose_config(keep)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        keys = [str(k) for k in node.keys() if not str(k).startswith("_")] if isinstance(node, DictConfig) else []
        keys = [k for k in keys if k != "hydra"]
        return f"allowed keys{' in ' + parent if parent else ''}: {', '.join(keys)}{suggest(leaf, keys)}"
    except Exception:  # noqa: BLE001
        return "check the spelling against the config (python -m engine --cfg job)"


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """Compose the root config with `overrides`, as the app would (for checks and tests)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register_experiments()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def first_of_sweeps(overrides: Sequence[str]) -> list[str]:
    """Replace each sweep override (a,b,c / range / glob) by its first value, for a quick pre-check."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    out = []
    for o in parsed:
        if o.is_sweep_override():
            try:
                first = next(iter(o.sweep_string_iterator()), None)
            except Exception:  # noqa: BLE001 - glob() needs Hydra's loader; Hydra checks those itself
                first = None
            if first is None:
                continue
            out.append(f"{o.get_key_element()}={first}")
        else:
            out.append(o.input_line or "")
    return out


def precheck(argv: Sequence[str]) -> None:
    """Compose and validate before Hydra starts, so a bad config costs one line and no work.

    Raises:
        ConfigError: with the one-line explanation.
    """
    overrides = [a for a in argv if not a.startswith("-")]
    overrides = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        overrides = first_of_sweeps(overrides)
        cfg = compose_config(overrides)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - Hydra and OmegaConf raise many kinds
        raise ConfigError(explain_hydra_error(exc, overrides)) from None
    from engine.spec import RunSpec

    RunSpec.from_config(cfg)
    if not any(a in ("-m", "--multirun") for a in argv):
        _check_run_folder(argv, cfg)


def _check_run_folder(argv: Sequence[str], cfg: DictConfig) -> None:
    """Refuse a named run folder that holds another run before Hydra starts: Hydra writes the job's
    `.hydra/` config files as it starts, so a refusal inside the app would already have replaced the
    existing run's record of its own config."""
    from pathlib import Path

    from engine.app import guard_output, result_fingerprint

    named = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    if named and "${" not in named[-1] and not cfg.get("dry_run", False):  # a dry run writes no results
        folder = Path(named[-1]).expanduser()
        guard_output(folder, bool(cfg.get("resume", False)), result_fingerprint(cfg))
    else:
        folder = Path("outputs")  # the default run folders live under it (conf/hydra/output)
    _writable(folder)


def _writable(folder: Path) -> None:
    """One line, before any work, when the run folder cannot be made or written (read-only, a file)."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(f"output folder {folder} cannot be written ({exc.strerror or exc}); choose a writable "
                          "hydra.run.dir") from None
