"""The distributional-alignment benchmark (Meister, Guestrin, Hashimoto, "Benchmarking Distributional
Alignment of Large Language Models", arXiv 2411.05403, NAACL 2025): can a model match the distribution of
answers a demographic group gives to a multiple-choice question?

One module per stage: ``data`` (the benchmark's files -> items), ``prompts`` (items -> prompts, few-shot
neighbours), ``parsing`` (outputs -> distributions), ``runner`` (a local model), ``predictions``
(distributions produced elsewhere), ``scoring`` (TVD, pooling, baselines, the gap), ``report`` (tables).
"""

from dora.eval.distalign.data import (
    LETTERS,
    PAPER_GROUPS,
    Item,
    detect_format,
    load_benchmark,
    read_info,
    select_groups,
)
from dora.eval.distalign.parsing import letter_token_ids, logp_distribution, parse_sequence, parse_verbalized
from dora.eval.distalign.predictions import check_coverage, read_predictions
from dora.eval.distalign.prompts import STYLES, build_prompt, select_shots, similar_questions
from dora.eval.distalign.report import leaderboard_json, markdown
from dora.eval.distalign.runner import ModelRunner, evaluate, predict
from dora.eval.distalign.scoring import (
    FAILED,
    METHODS,
    STEERINGS,
    baselines,
    bootstrap_pooled,
    canonical,
    discretisation_floor,
    item_scores,
    pooled,
    score,
    score_predictions,
)

__all__ = [
    "LETTERS", "PAPER_GROUPS", "Item", "detect_format", "load_benchmark", "read_info", "select_groups",
    "letter_token_ids", "logp_distribution", "parse_sequence", "parse_verbalized", "read_predictions",
    "check_coverage",
    "STYLES", "build_prompt", "select_shots", "similar_questions", "leaderboard_json", "markdown",
    "ModelRunner", "evaluate", "predict", "FAILED", "METHODS", "STEERINGS", "baselines", "bootstrap_pooled",
    "canonical", "discretisation_floor", "item_scores", "pooled", "score", "score_predictions",
]  # fmt: skip
