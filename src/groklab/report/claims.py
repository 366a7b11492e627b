"""What seeds 002-004 report for the settings our studies vary, quoted with their source.

These papers print no tables for these studies (their numbers are in figures or prose), so
the report compares our tables with these statements. Text in quotation marks is verbatim
(square brackets: our insertions); the rest paraphrases the source.
"""

from __future__ import annotations

SEED_002 = "seed 002 (Liang, Mao & Gao, 'Final Project — Grokking Phenomenon')"
SEED_003 = "seed 003 ('Exploring Grokking: Experimental and Mechanistic Investigations', " \
    "arXiv:2412.10898, a generated summary)"
SEED_004 = "seed 004 (Miller, Gleeson et al., sharpness of grokking)"

# Does each architecture grok, per seed 003 (seed 002 shows MLP/LSTM curves without numbers).
ARCH_GROKS = {"transformer": True, "mlp": False, "lstm": False}
ARCH_QUOTES = (
    (SEED_003, "\"Transformer architecture exhibits grokking, unlike MLP and LSTM in this "
               "study.\""),
    (SEED_003, "\"MLP models did not reach 100% training accuracy even after 20,000 steps.\""),
)

OPTIMIZER_QUOTES = (
    (SEED_003, "\"Experiments with different optimizers (Figure 8) show AdamW with weight decay "
               "achieves better generalization compared to Adam and variations with noise.\""),
    (SEED_002, "\"we found that various types of regularization methods will improve the "
               "performance of the model.\""),
    (SEED_002, "p = 41: \"for a given training budget of 3×10^4, our model can Grokking after "
               "overfitting for the binary operation of modular addition ... but still at a "
               "low accuracy for modular division.\""),
)

# Training fraction -> what was published for it.
FRACTION_CLAIMS = {
    0.05: f"{SEED_002}, Fig. 9: p = 113, fraction 0.05 — \"Grokking doesn't happen\"",
    0.3: f"{SEED_003}: at 30% (simplified encoding) validation accuracy reached 100% around "
         "9.1k steps, after training accuracy reached 100% at 200 steps",
    0.45: f"{SEED_003}: at 45% and 60%, \"generalization occurring around 6000 epochs\"",
    0.5: f"{SEED_003}: \"Grokking is most prominent when around 50% of the training data is used\"",
    0.6: f"{SEED_003}: at 45% and 60%, \"generalization occurring around 6000 epochs\"",
}

BATCH_QUOTES = (
    (SEED_002, "p = 41, batch 64 and 128, 3×10^4 updates: \"increasing the training batch "
               "size leads to greater volatility in the model prediction results.\""),
)

MULTIVARIATE_QUOTES = (
    (SEED_002, "K = 3, p = 41, training fraction 0.8, batch 32: \"our model did not perform "
               "well on both the training and test sets\"; it suggests a deeper network."),
)

SHARPNESS_QUOTE = (SEED_004, "\"In experimental settings we found that both [sharpness "
                              "measures] appeared to decrease with relative grokking gap.\"")
CONCEALMENT_QUOTES = (
    (SEED_004, "\"adding spurious dimensions ... to input examples reliably increases the "
               "relative grokking gap.\""),
    SHARPNESS_QUOTE,
)
LINEAR_TEACHER_QUOTES = (
    (SEED_004, "λ is moved toward 1 to increase the relative grokking gap (its Figure 1); the "
               "log-log linear trends are in its Appendix B, with coefficients printed only "
               "inside the figures."),
    SHARPNESS_QUOTE,
)


def quotes(items: tuple[tuple[str, str], ...]) -> list[str]:
    """Markdown bullets: the statement and where it comes from."""
    return [f"- {text} — {source}" for source, text in items]
