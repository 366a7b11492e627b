"""The report's sections, in order: which tables each needs and the function that writes it.

A section whose study has no tables is rendered as its header and a one-line note, so
reproducing only some studies never fails the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from groklab.report import factor_sections as fs
from groklab.report import paper_sections as ps
from groklab.report import sharpness_sections as ss
from groklab.report.context import Context, StudyTables, study_settings

Body = Callable[[Context, StudyTables], list[str]]


@dataclass(frozen=True)
class Section:
    """``study``: the tables it needs (None: it reads ``ctx.studies`` itself)."""

    study: str | None
    title: str
    body: Body
    intro: Callable[[Context], list[str]] | None = None  # default: the study's settings

    def render(self, ctx: Context) -> str:
        intro = self.intro(ctx) if self.intro else [study_settings(ctx.params, str(self.study))]
        lines = [f"## {self.title}", "", *intro, ""]
        tables = ctx.studies.get(self.study) if self.study else None
        if self.study and tables is None:
            return "\n".join([*lines, ctx.skipped(self.study)])
        return "\n".join([*lines, *self.body(ctx, tables)])  # type: ignore[arg-type]


SECTIONS: tuple[Section, ...] = (
    Section("experiment", "Experiment", ps.experiment_body, ps.experiment_intro),
    Section("augmentation", "Augmentation study", ps.augmentation_body, ps.augmentation_intro),
    Section("curriculum", "Curriculum study", ps.curriculum_body),
    Section("architecture", "Architecture study", fs.architecture_body),
    Section("optimizer", "Optimizer study", fs.optimizer_body),
    Section("data_fraction", "Data-fraction study", fs.data_fraction_body),
    Section("batch_size", "Batch-size study", fs.batch_size_body),
    Section("multivariate", "Multivariate study", fs.multivariate_body),
    Section("concealment", "Concealment study", ss.concealment_body),
    Section("linear_teacher", "Linear student-teacher study", ss.linear_teacher_body,
            ss.linear_teacher_intro),
    Section(None, "Sharpness across all modular-arithmetic runs", ss.modular_body,
            ss.modular_intro),
)


def render_sections(ctx: Context, sections: tuple[Section, ...] = SECTIONS) -> list[str]:
    """Each section's markdown, in order; figures are collected in ``ctx.figures``."""
    return [section.render(ctx) for section in sections]
