"""The report, written after the run from one `RunOutputs`: tables, stats.json, report.md, plots, gallery.

* `outputs`: every file of a paired run; `observational`: the observational mode's report;
* `markdown`: report.md; `gallery`: the HTML gallery (images read back from the work cache);
* `plots`: forest, significance heatmap, dose-response; `provenance`: config, git and versions;
* `aggregate`: `python -m engine.report.aggregate SWEEP_DIR` stacks a multirun's tables.
"""

from engine.report.config import ReportConfig

__all__ = ["ReportConfig"]
