"""The report layer: figures (:mod:`.figures`) and markdown pieces (:mod:`.markdown`).

Both are pure: DataFrames in, matplotlib Figures or strings out. The DVC stage
:mod:`groklab.stages.report` reads the tables and writes the files.
"""

from groklab.report.figures import accuracy_curves, final_accuracy, leakage, steps_to_99
from groklab.report.markdown import (
    comparison_table,
    fmt_mean_ci,
    fmt_steps,
    markdown_table,
    published_steps,
)

__all__ = [
    "accuracy_curves", "comparison_table", "final_accuracy", "fmt_mean_ci", "fmt_steps",
    "leakage", "markdown_table", "published_steps", "steps_to_99",
]
