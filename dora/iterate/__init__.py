"""Iterative DoRA: rounds of generate -> judge -> re-weight -> train, anchored to the target distribution.

``iterate(config, pool=..., judge=...)`` runs or resumes the rounds; ``dora iterate --config recipe.yaml``
is the same from a YAML recipe (docs/howto/iterate.md).
"""

from dora.iterate.config import IterateConfig, load_iterate_recipe
from dora.iterate.generate import sample_responses, sample_responses_distributed, shard_indices, unshard
from dora.iterate.judge import RewardModelJudge, load_judge, make_pairs
from dora.iterate.loop import iterate, validate_pool

__all__ = [
    "IterateConfig",
    "load_iterate_recipe",
    "iterate",
    "validate_pool",
    "sample_responses",
    "sample_responses_distributed",
    "shard_indices",
    "unshard",
    "RewardModelJudge",
    "load_judge",
    "make_pairs",
]
