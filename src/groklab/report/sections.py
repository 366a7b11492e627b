"""The report's sections, discovered: every module of this package that defines ``SECTIONS``
(a tuple of :class:`~groklab.report.context.Section`) contributes them, so adding a study's
report is adding one module. The report orders them as params.yaml does: the experiment,
then the studies in their declared order, then sections that pool several studies.

A section whose study has no tables is rendered as its header and a one-line note, so
reproducing only some studies never fails the report.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import groklab.report
from groklab.cells import EXPERIMENT
from groklab.report.context import Context, Section


def discover() -> tuple[Section, ...]:
    """The ``SECTIONS`` of every module of :mod:`groklab.report`, by module name."""
    found: list[Section] = []
    for info in sorted(pkgutil.iter_modules(groklab.report.__path__), key=lambda m: m.name):
        if info.name == __name__.rsplit(".", 1)[-1]:
            continue
        found += getattr(importlib.import_module(f"groklab.report.{info.name}"), "SECTIONS", ())
    return tuple(found)


SECTIONS: tuple[Section, ...] = discover()


def ordered(params: dict[str, Any], sections: tuple[Section, ...] = SECTIONS
            ) -> list[Section]:
    """The experiment's section, each declared study's, then those of no single study; a
    section of a study params.yaml does not declare is left out."""
    declared = list(params["studies"])
    rank = {EXPERIMENT: -1, **{name: i for i, name in enumerate(declared)}}
    kept = [s for s in sections if s.study is None or s.study in rank]
    return sorted(kept, key=lambda s: rank.get(s.study, len(declared)) if s.study else
                  len(declared))


def render_sections(ctx: Context) -> list[str]:
    """Each section's markdown, in order; figures are collected in ``ctx.figures``."""
    return [section.render(ctx) for section in ordered(ctx.params)]
