"""Statistics of the counterfactual experiment: paired tests, corrections, effect sizes, label shifts,
dose-response, subgroups, power, and the observational (conditional-independence) mode.

Public API::

    from engine.stats import StatsConfig, analyse, observational
    result = analyse(measurements, StatsConfig(correction="fdr_bh"))
    result.headline, result.tests, result.to_json()

The vectorised building blocks (``wilcoxon_signed_rank``, ``paired_t``, ``sign_test``,
``permutation_test``, ``adjust_pvalues``, ``bootstrap_intervals``) work on (tests, pairs) matrices.
"""

from .analyse import analyse
from .config import StatsConfig, StatsResult
from .corrections import adjust_pvalues
from .effects import bootstrap_intervals, effect_sizes
from .headline import headline_table
from .observational import observational
from .paired import paired_t, permutation_test, sign_test, wilcoxon_signed_rank

__all__ = [
    "StatsConfig",
    "StatsResult",
    "adjust_pvalues",
    "analyse",
    "bootstrap_intervals",
    "effect_sizes",
    "headline_table",
    "observational",
    "paired_t",
    "permutation_test",
    "sign_test",
    "wilcoxon_signed_rank",
]
