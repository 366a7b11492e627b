"""What a report section is and what it gets: the loaded tables, params, the published numbers
and where its figures go. Pure apart from holding data: loading files is the stage's job
(:mod:`groklab.stages.report`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from groklab.cells import studies
from groklab.config import ConfigError, RunConfig
from groklab.metrics import Analysis


@dataclass
class StudyTables:
    """What the report reads for one study; ``notes`` say what was missing."""

    cells: pd.DataFrame
    runs: pd.DataFrame | None
    histories: pd.DataFrame | None
    comparisons: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    across_tasks: pd.DataFrame | None = None  # each value against the default, all tasks


@dataclass
class Context:
    """Inputs of every section builder; builders add their figures to ``figures``."""

    params: dict[str, Any]
    studies: dict[str, StudyTables | None]
    references: dict[str, dict[str, Any]]  # file stem under references/ -> its JSON
    tables_dir: Path
    link: str = "figures"  # the figures folder relative to the report, for image links
    models_dir: Path | None = None  # cells' folders (measures.csv); None: not available
    figures: dict[str, Figure] = field(default_factory=dict)

    @property
    def analysis(self) -> Analysis:
        return Analysis.from_params(self.params)

    def figure(self, name: str, figure: Figure, alt: str) -> str:
        """Keep ``figure`` as ``<name>.png`` and return its markdown image link."""
        self.figures[name] = figure
        return f"![{alt}]({self.link}/{name}.png)"

    def budget(self, study: str) -> int:
        """Updates per run of ``study``: from its runs table, else the shared setting."""
        tables = self.studies.get(study)
        if tables is not None and tables.runs is not None and "budget" in tables.runs:
            return int(tables.runs["budget"].max())
        return int(self.params["train"]["steps"])

    def skipped(self, study: str) -> str:
        return (f"_Skipped: `{Path(self.tables_dir) / f'{study}_cells.csv'}` does not exist "
                f"(run the `{study}` stages and `evaluate` first)._")

    def reference(self, name: str) -> dict[str, Any] | None:
        """``references/<name>.json``, or None when it is not there."""
        return self.references.get(name)


Body = Callable[[Context, StudyTables], list[str]]


@dataclass(frozen=True)
class Section:
    """One section of the report: the study whose tables it needs (None: it reads
    ``ctx.studies`` itself), its title, and the builders of its intro and body."""

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


def describe_config(cfg: RunConfig, seeds: list[int]) -> str:
    """One line with the settings that define a run: data, model, optimiser, budget, seeds."""
    d, m, o, t = cfg.data, cfg.model, cfg.optim, cfg.train
    model = {"transformer": f"{m.layers} layers, width {m.width}, {m.heads} heads",
             "mlp": f"{m.mlp_layers} hidden layers of {m.mlp_hidden}",
             "lstm": f"hidden size {m.lstm_hidden}",
             "bit_mlp": f"one ReLU hidden layer of {m.bit_mlp_hidden} on the bit vector",
             }.get(m.arch, m.arch)
    model += f", dropout {m.dropout:g}" if m.dropout else ""
    opt = f"{o.name}: {o.kind}, lr {o.lr:g}, " + (
        f"momentum {o.momentum:g}{' (Nesterov)' if o.nesterov else ''}" if o.kind == "sgd"
        else f"betas ({o.betas[0]:g}, {o.betas[1]:g})")
    opt += f", weight decay {o.weight_decay:g}, {o.warmup}-update linear warm-up"
    batch = ("full batch" if t.batch_size is None
             else f"batch {t.batch_size} sampled with replacement")
    if d.task == "parity":
        data = (f"parity of {d.parity_bits} bits plus {d.concealed_bits} concealed random bits, "
                f"{d.parity_examples} distinct examples, training fraction {d.train_fraction:g}")
    else:
        data = (f"p = {d.p}, " + (f"K = {d.operands} operands, " if d.task == "multi_add" else "")
                + f"training fraction {d.train_fraction:g} ({d.encoding} encoding)")
    return (f"{data}; {m.arch} ({model}); {opt}; {batch}; {t.steps} updates, validation every "
            f"{t.eval_every}; seeds {', '.join(map(str, seeds))}.")


def flat_settings(d: dict[str, Any], prefix: str = "") -> str:
    """``{"data": {"p": 23}}`` -> ``data.p = 23`` (for stating a study's settings)."""
    return ", ".join(flat_settings(v, f"{prefix}{k}.") if isinstance(v, dict)
                     else f"`{prefix}{k} = {v}`" for k, v in d.items())


def study_settings(params: dict[str, Any], study: str) -> str:
    """What a study varied and what it held fixed, from params (the first cell's settings)."""
    try:
        s = studies(params)[study]
        rows = s.rows(params)
        first, _ = rows[0]
        cfg = s.config(params, first.task, first.value)
    except (ConfigError, KeyError, IndexError) as exc:
        return f"_The settings of `studies.{study}` could not be read from params ({exc})._"
    values = ", ".join(f"`{c.value}`" for c, _ in rows if c.task == first.task)
    text = (f"**Varied:** `{s.factor}` ∈ {{{values}}} (`studies.{study}.values`) on "
            f"{', '.join(f'`{t}`' for t in s.tasks)}. **Held fixed:** every other setting at "
            "the base run's" + (f", except this study's `settings`: {flat_settings(s.settings)}"
                                if s.settings else "") + ".")
    borrowed = sorted({src.stage for c, src in rows if src != c})
    if borrowed:
        text += (f" The default value `{s.default_value(params)}` is the base run itself, "
                 f"read from {', '.join(f'`{b}`' for b in borrowed)} (trained once).")
    if isinstance(cfg, RunConfig):
        text += f" The first cell (`{first.name}`) runs with " + describe_config(
            cfg, params["seeds"])
    return text
