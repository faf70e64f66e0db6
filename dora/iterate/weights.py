"""Step (4) of a round: DoRA weights for the grown pool.

``classifier``: the labelled-mode source classifier (``dora.classifier.annotate``), refit on the whole pool
with ``target_sources`` as the target class; policy-written rows are one more non-target source, and a
response's weight depends on its text only. ``density``: the trusted-sample density ratio that needs no
source labels (``dora.classifier.density``, where installed). ``none``: every weight 1 (iterative DPO).
A callable ``fn(rows, output_dir) -> (rows with dora_weight, report)`` plugs in any other estimator.
"""

from __future__ import annotations

import importlib

__all__ = ["fit_weights"]


def fit_weights(
    rows: list[dict], mode, *, target_sources: list[str], classifier: dict, seed: int, output_dir: str | None
) -> tuple[list[dict], dict]:
    """(rows with a ``dora_weight`` column, report) for the pool ``rows``."""
    if callable(mode):
        return mode(rows, output_dir)
    if mode == "none":
        return [dict(r, dora_weight=1.0) for r in rows], {}
    if mode == "classifier":
        from datasets import Dataset

        from dora.classifier import annotate

        kwargs = {"backend": "tfidf", **classifier}
        annotated, report = annotate(
            Dataset.from_list(rows), target_sources=list(target_sources), seed=seed, output_dir=output_dir, **kwargs
        )
        return annotated.to_list(), report
    if mode == "density":
        try:
            density = importlib.import_module("dora.classifier.density")
        except ImportError as e:
            raise ValueError("weights 'density' needs dora.classifier.density, not in this install") from e
        from datasets import Dataset

        annotated, report = density.annotate_density(
            Dataset.from_list(rows),
            trusted_sources=list(target_sources),
            seed=seed,
            output_dir=output_dir,
            **classifier,
        )
        return annotated.to_list(), report
    raise ValueError(f"weights must be 'classifier', 'density', 'none' or a callable, got {mode!r}")
