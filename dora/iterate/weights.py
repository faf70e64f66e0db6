"""Step (4) of a round: DoRA weights for the grown pool.

``classifier``: the labelled-mode source classifier (``dora.classifier.annotate``), refit on the whole pool
with ``target_sources`` as the target class; policy-written rows are one more non-target source, and a
response's weight depends on its text only. ``density``: the trusted-sample density ratio that needs no
source labels (``dora.classifier.annotate_density_ratio``): the classifier learns a trusted sample of the
target distribution against the pool, whose source column it never reads. The trusted sample is ``trusted``
(rows drawn apart from the pool), or else the pool's ``target_sources`` rows, taken as a subset of the pool.
``none``: every weight 1 (iterative DPO). A callable ``fn(rows, output_dir) -> (rows with dora_weight,
report)`` plugs in any other estimator.
"""

from __future__ import annotations

from datasets import Dataset

from dora.classifier import annotate, annotate_density_ratio

__all__ = ["fit_weights"]


def fit_weights(
    rows: list[dict],
    mode,
    *,
    target_sources: list[str],
    classifier: dict,
    seed: int,
    output_dir: str | None,
    trusted: list[dict] | None = None,
) -> tuple[list[dict], dict]:
    """(rows with a ``dora_weight`` column, report) for the pool ``rows``."""
    if callable(mode):
        return mode(rows, output_dir)
    if mode == "none":
        return [dict(r, dora_weight=1.0) for r in rows], {}
    if mode == "classifier":
        kwargs = {"backend": "tfidf", **classifier}
        annotated, report = annotate(
            Dataset.from_list(rows), target_sources=list(target_sources), seed=seed, output_dir=output_dir, **kwargs
        )
        return annotated.to_list(), report
    if mode == "density":
        cols = ("prompt", "chosen", "rejected")
        strip = lambda rs: Dataset.from_list([{k: r[k] for k in cols} for r in rs])  # noqa: E731
        in_pool = trusted is None
        if in_pool:
            trusted = [r for r in rows if r["source"] in target_sources]
        annotated, report = annotate_density_ratio(
            strip(rows), strip(trusted), trusted_in_pool=in_pool, seed=seed, output_dir=output_dir,
            names=("pool", "trusted"), **classifier,
        )  # fmt: skip
        weights = annotated["dora_weight"]
        return [dict(r, dora_weight=float(w)) for r, w in zip(rows, weights)], report
    raise ValueError(f"weights must be 'classifier', 'density', 'none' or a callable, got {mode!r}")
