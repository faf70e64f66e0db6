"""`dora demo --quick` runs every stage (world, tiny model, SFT, classifier, six methods, evaluation) and writes
the table, the JSON and the plot."""

from __future__ import annotations

import json

from dora.cli import main
from dora.demo import METHODS


def test_quick_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--output", str(out)]) == 0
    table = (out / "results.md").read_text()
    for name in ["SFT", *METHODS]:
        assert f"| {name} |" in table, name
    result = json.loads((out / "results.json").read_text())
    seed0 = result["per_seed"][0]
    assert set(seed0["weights"]) == {"human", "chatty", "terse_bot"}
    assert seed0["classifier"]["roc_auc"] > 0.6  # the sources differ in style, so they can be told apart
    for name in METHODS:
        assert 0.0 <= seed0[name]["preference_accuracy"] <= 1.0
    assert (out / "results.png").stat().st_size > 1000
