"""`dora select` / ``dora.select(...)``: a pilot on the user's own held-out human pairs that says whether DoRA (or
another method) beats DPO on their data, before the full run.

Each candidate (DPO, DPO on the target rows, label reweighting, dQ₀/dP reweighting, KL-DRO, DoRA at a few λ,
rDPO; ``dora.select.candidates``) trains from the same start for the same number of steps with the same seed, in its
own folder; each is scored on the held-out pairs (preference accuracy and reward margin of the implicit reward);
paired bootstrap intervals against DPO and against the best give the verdict; the chosen recipe is written as a YAML
for `dora train --config`. docs/howto/select.md walks through it.
"""

from __future__ import annotations

import sys
import types

from dora.select.candidates import CANDIDATES, DEFAULT, parse_candidates
from dora.select.pilot import plan, run_plan
from dora.select.verdict import paired_interval, verdict

__all__ = ["CANDIDATES", "DEFAULT", "parse_candidates", "paired_interval", "plan", "run_plan", "select", "verdict"]


def select(model: str | None = None, dataset: str | None = None, *, config: str | None = None,
           output: str = "dora_select", candidates=None, steps: int = 50, heldout: str | None = None,
           heldout_fraction: float = 0.2, target_sources=("human",), confidence: float = 0.95,
           bootstrap: int = 2000, overwrite: bool = False, keep_heldout_duplicates: bool = False,
           schedule: str = "full", **keys) -> dict:  # fmt: skip
    """Run the pilot: ``model`` and ``dataset`` (or ``config``, a `dora train` recipe) plus any `dora train` key as
    ``keys``; ``steps`` per candidate; the held-out split from ``heldout`` (a file) or carved from the
    ``target_sources`` rows (``heldout_fraction`` of their prompts); training rows equal to a held-out row are left out
    unless ``keep_heldout_duplicates``; ``schedule="full"`` trains each pilot with the full run's learning-rate
    schedule for its first ``steps`` steps (``"pilot"``: a schedule of its own over ``steps``). Returns the report
    (``report.json``'s content)."""
    overrides = dict(keys)
    if model is not None:
        overrides["model_name_or_path"] = model
    if dataset is not None:
        overrides["dataset"] = dataset
    p = plan(config, overrides, output=output, candidates=candidates, steps=steps, heldout=heldout,
             heldout_fraction=heldout_fraction, target_sources=target_sources, confidence=confidence,
             bootstrap=bootstrap, overwrite=overwrite,
             keep_heldout_duplicates=keep_heldout_duplicates, schedule=schedule)  # fmt: skip
    return run_plan(p)


class _CallableModule(types.ModuleType):
    """``import dora.select`` makes ``dora.select`` this package (Python sets the submodule on its parent), which
    would hide the function ``dora.select``: calling the package calls the function, so both spellings work."""

    def __call__(self, *args, **kwargs):
        return select(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
