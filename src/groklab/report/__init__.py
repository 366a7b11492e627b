"""The report layer: pure functions from the evaluated tables to figures and markdown.

- :mod:`.figures`, :mod:`.trends`, :mod:`.sharpness`: matplotlib Figures (accuracy curves,
  bars, metric-vs-factor lines, sharpness against relative gap with the log-log fit);
- :mod:`.markdown`, :mod:`.studies`, :mod:`.curriculum`, :mod:`.claims`: tables, readings,
  the papers' numbers and statements;
- :mod:`.sections` (with :mod:`.paper_sections`, :mod:`.factor_sections`,
  :mod:`.sharpness_sections`): one builder per report section, in report order.

The DVC stage :mod:`groklab.stages.report` reads the tables and writes the files.
"""

from groklab.report.figures import accuracy_curves, final_accuracy, leakage, steps_to_99
from groklab.report.markdown import (
    comparison_table,
    fmt_mean_ci,
    fmt_steps,
    markdown_table,
    published_steps,
)
from groklab.report.sharpness import LogLogFit, loglog_fit, sharpness_panels, sharpness_vs_gap
from groklab.report.trends import metric_vs_factor

__all__ = [
    "LogLogFit", "accuracy_curves", "comparison_table", "final_accuracy", "fmt_mean_ci",
    "fmt_steps", "leakage", "loglog_fit", "markdown_table", "metric_vs_factor",
    "published_steps", "sharpness_panels", "sharpness_vs_gap", "steps_to_99",
]
