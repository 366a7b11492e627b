"""Report sections of the experiment and of the two papers with tables: augmentation, curriculum.

Each builder takes the :class:`~groklab.report.context.Context` and the study's tables and
returns the section body (markdown lines); figures go to ``ctx.figures``.
"""

from __future__ import annotations

from groklab.cells import EXPERIMENT, Cell, cell_config, experiment_source
from groklab.params import KNOBS
from groklab.report import curriculum as cur
from groklab.report import figures as fg
from groklab.report import markdown as md
from groklab.report.context import Context, StudyTables, censoring_and_fits, describe_config
from groklab.report.studies import factor_reading, study_table


def experiment_intro(ctx: Context) -> list[str]:
    knobs = {k: ctx.params[k] for k in KNOBS}
    lines = ["The `experiment` stages run every task in `tasks` with the current knobs: "
             + ", ".join(f"{k} = `{v}`" for k, v in knobs.items()) + "."]
    task = ctx.params["tasks"][0]
    source = experiment_source(ctx.params, task)
    if source is not None:
        lines += ["", "These are the paper defaults, so each task's experiment is its base run "
                  f"(`{source.stage}`, …), trained once and read here."]
    else:
        cfg = cell_config(ctx.params, Cell(EXPERIMENT, task))
        lines += ["", f"Resolved settings: {describe_config(cfg, ctx.params['seeds'])}"]
    return lines


def experiment_body(ctx: Context, study: StudyTables) -> list[str]:
    cells, budget = study.cells, ctx.budget("experiment")
    knobs = {k: ctx.params[k] for k in KNOBS}
    n_all = int((cells["n_censored"] == 0).sum())
    lines = [
        md.experiment_table(cells), "",
        f"{n_all} of {len(cells)} tasks reached 99% validation accuracy in every seed. "
        "Steps to 99%: mean ± half-width of the 95% interval over seeds; seeds that never "
        f"reached 99% are counted at the budget ({budget} updates) and the cell shows "
        "`≥ mean (k/n grokked)`, a lower bound. Relative gap τ_val/τ_train − 1 and relative "
        "sharpness s_val/s_train come from the erf fits of seeds where both fits succeeded "
        "(`fits ok`).",
    ]
    if study.runs is not None:
        lines += ["", f"Fit failures: {md.fit_failures(study.runs)}"]
    lines += [f"\n_{note}_" for note in study.notes]
    if study.histories is not None:
        fig = fg.accuracy_curves(study.histories, study.runs, hue=None, col="task",
                                 title="Experiment: accuracy vs updates ("
                                 + ", ".join(map(str, knobs.values())) + ")")
        lines += ["", ctx.figure("experiment_curves", fig, "Experiment accuracy curves")]
    return lines


def augmentation_intro(ctx: Context) -> list[str]:
    return ["Every task of `studies.augmentation.tasks` trained with every augmentation of "
            "`studies.augmentation.augs`; every other factor is the paper default "
            "(curriculum none, transformer, adamw)."]


def augmentation_body(ctx: Context, study: StudyTables) -> list[str]:
    cells, budget = study.cells, ctx.budget("augmentation")
    reference = ctx.references.get("augmentation")
    published = md.published_steps(reference) if reference else None
    lines = ["### Steps to 99% validation accuracy", "", md.steps_pivot(cells), "",
             md.censoring_note(cells, budget=budget), "",
             ctx.figure("augmentation_steps_to_99", fg.steps_to_99(cells, budget=budget),
                        "Steps to 99% per task and augmentation")]
    if study.histories is not None:
        fig = fg.accuracy_curves(study.histories, study.runs, hue="aug", col="task",
                                 title="Augmentation study: accuracy vs updates")
        lines += ["", ctx.figure("augmentation_curves", fig, "Accuracy curves per augmentation")]
    lines += [f"\n_{note}_" for note in study.notes]

    lines += ["", "### Comparison with the published numbers", ""]
    if reference is None:
        lines.append("_The published runs file was not found; no comparison._")
    else:
        lines += [
            f"Published runs: {reference.get('source', 'reference runs')}. They list "
            "`step_val_acc_99` only for seeds that reached 99% — seeds that did not were "
            "dropped — so their means are over the listed seeds only, while ours count such "
            f"seeds at the budget. The reference ran {md.REFERENCE_BUDGET} updates; ours ran "
            f"{budget}.", "",
            "Paper Table 1 is the table printed in the paper. " + md.table1_check(published),
            "",
            md.comparison_table(cells, published), "",
            "Notes on the reference runs:", "",
            *[f"- {note}" for note in reference.get("notes", [])],
        ]

    lines += ["", "### Final accuracy and leakage", "", md.leakage_table(cells), "",
              ctx.figure("augmentation_final_accuracy", fg.final_accuracy(cells),
                         "Final train and validation accuracy"),
              "", ctx.figure("augmentation_leakage", fg.leakage(cells),
                             "Validation accuracy vs reachable pairs"),
              "", "### Reading", "", md.reading(cells, published, budget=budget), "",
              md.leakage_reading(cells)]
    if published is not None:
        lines += ["", md.published_dropped(published)]
    return lines


CURRICULUM_COLUMNS = ("steps to 99%", "grokked", "final train acc", "final val acc",
                      "final train loss", "final val loss", "relative gap", "fits ok")


def curriculum_body(ctx: Context, study: StudyTables) -> list[str]:
    cells, budget = study.cells, ctx.budget("curriculum")
    paper = ctx.references.get("curriculum")
    c = ctx.params.get("curricula") or {}
    lines = [
        f"Pacing (`curricula`): the pool starts at the easiest {c.get('start', '?')} of the "
        f"training split and grows to all of it over the first {c.get('ramp', '?')} of "
        f"training; `step` grows it by {c.get('step_size', '?')} once training accuracy on the "
        f"pool reaches {c.get('step_threshold', '?')}. `random` grows the pool at `linear`'s "
        "pace in random order (no difficulty); `anti` takes the hardest first; `none` is the "
        "baseline.", "",
        "### Steps to 99% validation accuracy", "",
        md.steps_pivot(cells, col="curriculum"), "",
        ctx.figure("curriculum_steps_to_99",
                   fg.steps_to_99(cells, hue="curriculum", budget=budget,
                                  title="Curriculum study: updates to 99% validation accuracy"),
                   "Steps to 99% per task and schedule"),
        "", "### Final accuracy and loss", "", study_table(cells, "curriculum",
                                                          CURRICULUM_COLUMNS),
        *censoring_and_fits(study, budget), "",
        ctx.figure("curriculum_final_accuracy", fg.final_accuracy(cells, hue="curriculum"),
                   "Final train and validation accuracy per schedule"),
    ]
    if study.histories is not None:
        fig = fg.accuracy_curves(study.histories, study.runs, hue="curriculum", col="task",
                                 title="Curriculum study: accuracy vs updates")
        lines += ["", ctx.figure("curriculum_curves", fig, "Accuracy curves per schedule")]

    lines += ["", "### Ablation (the paper's Table 4) rebuilt from our runs", "",
              "The paper's *full method* is a difficulty curriculum; we read it as the `linear` "
              "schedule and also show the `sqrt` and `step` pacings. *Without difficulty "
              "parameter* is `random` (same pool sizes, random order) and *without curriculum "
              "learning* is `none`. Cells: final validation accuracy / final validation loss, "
              "means over seeds (intervals in the table above). Table 4 does not say which "
              "task it reports, so its numbers stand beside every task.", ""]
    if paper is None:
        lines.append("_`references/curriculum_paper_tables.json` was not found; the paper's "
                     "numbers are not shown._")
    lines += [cur.ablation_table(cells, paper)]
    if paper is not None:
        lines += ["", "### Beside the paper's Tables 1–3", "",
                  "Tables 1 and 2 are the paper's *baseline* (no curriculum); we compare them "
                  "with our `none` schedule. Table 3 is its *curriculum* result; we compare it "
                  "with `linear`.", "", cur.baseline_table(cells, paper), "",
                  cur.curriculum_table(cells, paper), "",
                  f"Source: {paper.get('source', 'seed 001').rstrip('.')}. "
                  f"{paper.get('settings', '')}"]
    lines += ["", "### Reading", "", factor_reading(cells, "curriculum", budget=budget)]
    ablation = cur.ablation_reading(cells)
    if ablation:
        lines += ["", "Table 4's order (full method < without difficulty < without curriculum, "
                  "by loss) in our final validation losses:", "", ablation]
    if paper is not None:
        lines += ["", "Where the paper's numbers contradict each other:", "",
                  *[f"- {item}" for item in cur.paper_inconsistencies(paper)]]
    return lines
