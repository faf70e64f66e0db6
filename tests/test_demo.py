"""`dora demo --quick` runs every stage (world, tiny model, SFT, classifier, six methods, evaluation) and writes
the table, the JSON and the plot."""

from __future__ import annotations

import json

import pytest

from dora.cli import main
from dora.demo import METHODS


def test_quick_demo_runs_every_stage(tmp_path):
    """The default world, DPO, DoRA and the three baselines: the table, the per-seed numbers, DoRA's
    comparisons and the harm line, the JSON and the plot (the other methods differ only in their config)."""
    out = tmp_path / "demo"
    methods = ["DPO", "DoRA", "Human-only", "Label reweight", "Oracle"]
    argv = ["demo", "--quick", "--n-train", "200", "--epochs", "1", "--methods", ",".join(methods)]
    argv += ["--output", str(out)]
    assert main(argv) == 0
    table = (out / "results.md").read_text()
    for name in ["SFT", *methods]:
        assert f"| {name} |" in table, name
    assert "| seed | DPO | DoRA | Human-only | Label reweight | Oracle |" in table
    assert "| DoRA − | preference accuracy, per seed (points) |" in table
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["bias"] == "larger" and result["config"]["n_sft"] == 2000  # the default: larger-number
    seed0 = result["per_seed"][0]
    assert set(seed0["weights"]) == {"human", "chatty", "terse_bot"}
    assert seed0["classifier"]["roc_auc"] > 0.6  # the sources differ in style, so they can be told apart
    for name in methods:
        assert 0.0 <= seed0[name]["preference_accuracy"] <= 1.0
    assert (out / "results.png").stat().st_size > 1000
    assert set(METHODS) >= set(methods) and len(METHODS) == 10


def test_paired_differences_against_a_written_out_t_interval():
    """Per-seed differences from DPO, their mean, and mean ± t_{0.975, n-1} · sd / sqrt(n) (t from a table)."""
    import math

    from dora.demo import paired_differences

    acc = {"DPO": [0.57, 0.565, 0.632], "DoRA": [0.552, 0.522, 0.69]}
    per_seed = [{m: {"preference_accuracy": acc[m][i], "reward_margin": 0.01 * i, "task_accuracy": 0.5}
                 for m in acc} for i in range(3)]  # fmt: skip
    got = paired_differences(per_seed, ["DPO", "DoRA"])["DoRA"]["preference_accuracy"]
    d = [acc["DoRA"][i] - acc["DPO"][i] for i in range(3)]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # Student t, 2 degrees of freedom, 97.5th percentile
    assert all(abs(a - b) < 1e-12 for a, b in zip(got["per_seed"], d, strict=True))
    assert abs(got["mean"] - mean) < 1e-12
    assert abs(got["ci"][0] - (mean - half)) < 1e-9 and abs(got["ci"][1] - (mean + half)) < 1e-9


def test_sweep_keeps_no_labels_and_its_trusted_size(tmp_path):
    out = tmp_path / "sweep"
    argv = ["demo", "--quick", "--sweep", "0.8", "--no-labels", "--methods", "DPO", "--n-train", "120",
            "--epochs", "1", "--trusted-size", "40", "--output", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "| 80% | DoRA (no labels) |" in (out / "sweep.md").read_text()
    report = json.loads((out / "share0.8" / "seed0" / "classifier_no_labels" / "report.json").read_text())
    assert report["n_trusted_rows"] == 40


def test_no_labels_table_gives_the_share_of_the_gain_kept():
    from dora.demo.report import no_labels_table

    def seed(dpo, dora, nl):
        share = {"estimate": 0.22, "interval": [0.2, 0.24], "truth": 0.2}
        return {"DPO": {"preference_accuracy": dpo}, "DoRA": {"preference_accuracy": dora},
                "DoRA (no labels)": {"preference_accuracy": nl},
                "classifier_no_labels": {"target_share": 0.21, "target_share_interval": [0.19, 0.23],
                                         "subset_share": share}}  # fmt: skip

    # gains over DPO: DoRA (0.10 + 0.06) / 2 = 8 points, no labels (0.07 + 0.05) / 2 = 6 points: 75% kept
    table = no_labels_table([seed(0.50, 0.60, 0.57), seed(0.55, 0.61, 0.60)])
    assert "| 0 | 50.0 | 60.0 | 57.0 | 0.210 [0.190, 0.230] | 0.220 [0.200, 0.240] | 0.200 |" in table
    assert "DoRA's mean gain over DPO: +8.0 points; DoRA (no labels): +6.0 points; 75% of it kept." in table
    table = no_labels_table([seed(0.50, 0.49, 0.52)])
    assert "+2.0 points; the share of the gain kept is undefined (DoRA did not beat DPO)." in table


def test_baseline_rows():
    """Human-only keeps the human rows; Label reweight gives them 1/α and the rest 1; the Oracle sets every
    label right (the same prompts and responses); the mixture's own methods see the rows unchanged."""
    from dora.demo.stages import rows_for_method
    from dora.worlds import get_world, make_world, parse_answer

    rows = make_world(get_world("shared-phrase", n_train=200, seed=1))["train"]
    human = [r for r in rows if r["source"] == "human"]
    assert rows_for_method("Human-only", rows) == human and len(human) == 40
    weighted = rows_for_method("Label reweight", rows)
    assert [r["dora_weight"] for r in weighted] == [5.0 if r["source"] == "human" else 1.0 for r in rows]
    oracle = rows_for_method("Oracle", rows)
    assert any(not r["label_correct"] for r in rows)  # there is something to set right
    for before, after in zip(rows, oracle, strict=True):
        assert after["prompt"] == before["prompt"] and {after["chosen"], after["rejected"]} == {
            before["chosen"], before["rejected"]}
        assert parse_answer(after["chosen"]) == before["answer"] != parse_answer(after["rejected"])
    assert rows_for_method("DoRA", rows) is rows


def test_harm_and_recovery_against_a_hand_computation():
    """Harm = mean(Oracle − DPO), share = mean(DoRA − DPO) / harm; the bootstrap interval brackets them, and a
    resample whose harm is <= 0 is dropped and counted."""
    from dora.demo.report import bootstrap_over_seeds, comparison_table, harm_and_recovery

    acc = {"DPO": [0.50, 0.52, 0.54, 0.50], "DoRA": [0.53, 0.53, 0.57, 0.53], "Oracle": [0.56, 0.58, 0.56, 0.50],
           "Human-only": [0.55, 0.50, 0.55, 0.50]}  # fmt: skip
    per_seed = [{m: {"preference_accuracy": v[i]} for m, v in acc.items()} for i in range(4)]
    h = harm_and_recovery(per_seed)
    harm = (0.06 + 0.06 + 0.02 + 0.0) / 4
    gain = (0.03 + 0.01 + 0.03 + 0.03) / 4
    assert h["harm"] == pytest.approx(harm) and h["share"] == pytest.approx(gain / harm)
    assert h["harm_ci"][0] <= harm <= h["harm_ci"][1] and h["share_ci"][0] <= gain / harm <= h["share_ci"][1]
    # resamples made only of the last seed (harm 0) have no share: (1/4)^4 of them, about 39 of 10 000
    assert 5 < h["dropped"] < 100
    values, dropped = bootstrap_over_seeds(per_seed, lambda rows: len(rows), n_boot=50)
    assert values == [4] * 50 and dropped == 0
    table = comparison_table(per_seed)
    assert f"| DPO | +3.0, +1.0, +3.0, +3.0 | {100 * gain:+.1f} [" in table
    assert "| Human-only | -2.0, +3.0, +2.0, +3.0 | +1.5 [" in table
    assert f"Oracle − DPO: +{100 * harm:.1f} points" in table
    assert f"recovers, (DoRA − DPO) / (Oracle − DPO): {100 * gain / harm:.0f}% [" in table


def test_world_flag_and_overrides():
    """--world picks the named world, a flag given on the command line overrides its knob, one left out keeps
    the world's value; a knob out of range is a one-line error naming the flag."""
    import argparse

    from dora.demo.cli import add_arguments, budget, world_config
    from dora.worlds import get_world

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert world_config(p.parse_args([])) == get_world("larger-number")
    # the training budget is the world's: larger-number 150 steps at lr 1e-3, the earlier worlds 50 at lr 2e-4
    assert budget(p.parse_args([])) == {"seeds": 3, "n_test": 400, "n_train": 800, "sft_epochs": 6, "epochs": 6,
                                        "lr": 1e-3}  # fmt: skip
    assert budget(p.parse_args(["--world", "classic"]))["lr"] == 2e-4
    assert budget(p.parse_args(["--world", "shared-phrase", "--quick"])) == {
        "seeds": 1, "n_test": 100, "n_train": 400, "sft_epochs": 2, "epochs": 1, "lr": 2e-4}  # fmt: skip
    assert world_config(p.parse_args(["--iterate"])) == get_world("classic")
    cfg = world_config(p.parse_args(["--world", "hidden-bias", "--style-overlap", "0.2"]), n_train=10)
    assert cfg == get_world("hidden-bias", style_overlap=0.2, n_train=10) and cfg.judge_bias == 1.0
    with pytest.raises(SystemExit, match="^dora demo: --judge-bias must be in \\[0, 1\\], got 1.5$"):
        world_config(p.parse_args(["--judge-bias", "1.5"]))


def test_a_finished_stage_is_kept_and_other_settings_refused(tmp_path):
    """A rerun into the same folder reuses a stage finished with the same settings; a result written with other
    settings is refused in one line, never reused nor overwritten."""
    from dora.demo.stages import _finished, _record

    path = str(tmp_path / "result.json")
    assert _finished(path, {"epochs": 2}) is None
    _record(path, {"epochs": 2, "world": {"mix": {"chatty": 1.0}}}, {"preference_accuracy": 0.61})
    assert _finished(path, {"epochs": 2, "world": {"mix": {"chatty": 1.0}}}) == {"preference_accuracy": 0.61}
    before = (tmp_path / "result.json").read_text()
    with pytest.raises(SystemExit, match="result.json was written by a run with other settings; use another --output"):
        _finished(path, {"epochs": 3, "world": {"mix": {"chatty": 1.0}}})
    assert (tmp_path / "result.json").read_text() == before
    # a world field added since (source_mark): the earlier run had its default, so its result is reused ...
    assert _finished(path, {"epochs": 2, "world": {"mix": {"chatty": 1.0}, "source_mark": {}}}) == {
        "preference_accuracy": 0.61}  # fmt: skip
    with pytest.raises(SystemExit, match="other settings"):  # ... and refused for a value it did not have
        _finished(path, {"epochs": 2, "world": {"mix": {"chatty": 1.0}, "source_mark": {"chatty": "."}}})
