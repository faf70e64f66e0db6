"""A prediction before training: from what ``dora classify`` measured, the regime the data is in.

DoRA's objective is KL-DRO over the weighted losses, λ log mean exp(h̃·ℓ/λ). Which half does the work depends on
the weights alone:

- weights nearly equal (effective sample size ≥ ``LITTLE_ESS`` of the rows): h̃ ≈ 1 and DoRA ≈ KL-DRO;
- weights concentrated (effective sample size < ``CONCENTRATED_ESS`` of the rows): the objective rests on
  that share of the rows and DoRA acts mostly as reweighting (as "Reweight", with KL-DRO's hedge on top), on
  that share of each batch;
- in between: both matter, and the tilt exp(h̃·ℓ/λ) leans hardest on rows of high weight and high loss.

The demo's measured worlds (docs/results.md) are the evidence for the sentences' cautions.

The target rows are few when fewer than ``FEW_TARGET_ROWS`` (labelled: rows whose source is a target; without
labels: the trusted rows): whatever the weights, the signal about the target comes from so few rows that a gain
over DPO is noisy, and training on them alone is the baseline to beat. Thresholds: docs/classifier.md.
"""

from __future__ import annotations

__all__ = ["predict_regime", "LITTLE_ESS", "CONCENTRATED_ESS", "FEW_TARGET_ROWS", "POOR_ECE"]

LITTLE_ESS = 0.8  # ESS/N = 1 / (1 + CV²): at 0.8 the weights' coefficient of variation is 0.5
CONCENTRATED_ESS = 0.5  # below half the rows (CV > 1): most rows weigh little against a few
FEW_TARGET_ROWS = 200  # below this, a target-only baseline and any gain are both noisy
POOR_ECE = 0.1  # above this the weights' scale is off (a calibrated classifier gives weights of mean 1)


def predict_regime(report: dict) -> dict:
    """``{"regime", "sentence", "few_target_rows", "target_rows", "weight_shares"}`` from a classify report
    (``annotate`` or ``annotate_density_ratio``): ``regime`` is "little" (DoRA ≈ KL-DRO), "concentrated" (DoRA
    acts mostly as reweighting) or "mixed"; ``weight_shares`` the share of the total weight each row source
    carries (labelled mode)."""
    ess = float(report["ess_fraction"])
    if ess >= LITTLE_ESS:
        regime = "little"
        text = f"the weights change little (effective sample size {100 * ess:.0f}% of rows): expect DoRA ≈ KL-DRO"
    elif ess < CONCENTRATED_ESS:
        regime = "concentrated"
        text = (
            f"the weights concentrate on {100 * ess:.0f}% of rows (effective sample size): DoRA acts mostly as "
            f"reweighting, and a batch of B rows carries about {100 * ess:.0f}% of B effective rows, fewer target "
            "rows per step than training on the target rows alone (which beat DoRA in the demo's worlds of this "
            "regime: docs/results.md); measure both with `dora select` first"
        )
    else:
        regime = "mixed"
        text = (
            f"the weights reweight moderately (effective sample size {100 * ess:.0f}% of rows): DoRA both "
            "reweights and hedges (KL-DRO); its tilt exp(h·ℓ/λ) leans hardest on rows of high weight and high "
            "loss, so label errors in rows that read as target can put it below both Reweight and KL-DRO (the "
            "demo's larger-number world: docs/results.md); measure it with `dora select` first"
        )
    shares = _weight_shares(report)
    targets = report.get("target_sources") or []
    if shares and targets:
        share = sum(v for s, v in shares.items() if s in targets)
        rows = sum(report["rows_by_source"].get(s, 0) for s in targets) / report["n_rows"]
        text += f"; the target rows carry {100 * share:.0f}% of the weight ({100 * rows:.0f}% of rows)"
    target_rows = _target_rows(report)
    few = target_rows is not None and target_rows < FEW_TARGET_ROWS
    if few:
        text += (
            f". The target rows are few ({target_rows}): a gain over DPO will be noisy; compare with DPO on the "
            "target rows alone"
        )
    if report.get("ece", 0.0) > POOR_ECE:
        text += f". The classifier is poorly calibrated (ECE {report['ece']:.3f}): the weights' scale is uncertain"
    return {
        "regime": regime,
        "sentence": text[0].upper() + text[1:] + ".",
        "few_target_rows": few,
        "target_rows": target_rows,
        "weight_shares": shares,
    }


def _weight_shares(report: dict) -> dict[str, float]:
    """The share of the total weight each row source carries (labelled mode; empty without source labels)."""
    means, rows = report.get("mean_weight_by_source"), report.get("rows_by_source")
    if not means or not rows:
        return {}
    total = sum(means[s] * rows[s] for s in means)
    return {s: (means[s] * rows[s] / total if total > 0 else 0.0) for s in means}


def _target_rows(report: dict) -> int | None:
    """Rows whose source is a target (labelled), or the trusted rows (no labels)."""
    if report.get("mode") == "no_labels":
        return int(report["n_trusted_rows"])
    targets = report.get("target_sources") or []
    if "rows_by_source" not in report:
        return None
    return int(sum(n for s, n in report["rows_by_source"].items() if s in targets))
