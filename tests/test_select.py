"""`dora select`: the held-out split never reaches training, finished candidates are not trained again, bad input
is one line before any model loads, the verdict's paired bootstrap against a hand computation, and the chosen
recipe read back by `dora train`'s loader."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import yaml
from bad_inputs import forbid_model_loads, one_line_error  # noqa: F401 - a fixture

import dora.select.pilot as pilot
from dora.select import parse_candidates, plan, run_plan, verdict
from dora.select.report import recipe_for
from dora.train_cli import load_recipe

KEYS = {"per_device_train_batch_size": 4, "learning_rate": 1e-3, "report_to": [], "disable_tqdm": True,
        "logging_steps": 1}  # fmt: skip


def rows(n_prompts: int = 20) -> list[dict]:
    """Per prompt: two human rows (different wrong answers) and one synthetic row; distinct texts across prompts."""
    out = []
    for i in range(n_prompts):
        a, b = i // 10, i % 10
        p, c = f"Q: {a}+{b}=\nA: ", a + b
        out.append({"prompt": p, "chosen": f"{c}", "rejected": f"{c + 1}", "source": "human", "dora_weight": 2.0})
        out.append({"prompt": p, "chosen": f"{c}", "rejected": f"{c + 2}", "source": "human", "dora_weight": 1.5})
        out.append({"prompt": p, "chosen": f"The answer is {c + 1}.", "rejected": f"The answer is {c}.",
                    "source": "bot", "dora_weight": 0.5})  # fmt: skip
    return out


def write(path, data) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return str(path)


def triple(r: dict) -> tuple:
    return (r["prompt"], r["chosen"], r["rejected"])


@pytest.fixture
def seen(monkeypatch):
    """The rows every candidate's trainer trains on, decoded from its tokenised train dataset, by candidate folder;
    and the number of trainers built."""
    out = {}
    build = pilot.build

    def spy(kwargs, extra, *a, **k):
        built = build(kwargs, extra, *a, **k)
        trainer = built[0]
        tok, ds = trainer.processing_class, trainer.train_dataset
        out[os.path.basename(kwargs["output_dir"])] = [
            (tok.decode(r["prompt_ids"]), tok.decode(r["completion_ids"][0]), tok.decode(r["completion_ids"][1]))
            for r in ds
        ]
        return built

    monkeypatch.setattr(pilot, "build", spy)
    return out


def test_heldout_never_reaches_training(tmp_path, tiny_model_dir, seen, one_thread):
    data = rows()
    p = plan(None, {"model_name_or_path": tiny_model_dir, "dataset": write(tmp_path / "d.jsonl", data), **KEYS},
             output=str(tmp_path / "out"), candidates="DPO,target,label", steps=1, heldout_fraction=0.25)  # fmt: skip
    run_plan(p)
    held = {triple(r) for r in p.heldout_rows}
    held_prompts = {r["prompt"] for r in p.heldout_rows}
    assert len(held_prompts) == 5 and len(held) == 10  # a quarter of 20 prompts, with both their human rows
    assert all(r["source"] == "human" for r in p.heldout_rows)
    assert sorted(map(triple, p.train_rows + p.heldout_rows)) == sorted(map(triple, data))  # nothing else lost
    assert set(seen) == {"dpo", "dpo_target", "label_reweight"}
    for name, trained in seen.items():
        assert trained and not held & set(trained), name
        assert not [t for t in trained if t[0] in held_prompts and t[1][0].isdigit()], name  # no human row there
    assert len(seen["dpo"]) == len(data) - 10
    assert len(seen["dpo_target"]) == 30  # the 15 other prompts' human rows
    assert {t[0] for t in seen["dpo"]} >= held_prompts  # the bot rows of held-out prompts still train


def test_given_heldout_rows_are_removed_from_training(tmp_path, tiny_model_dir, seen, one_thread):
    data = rows(6)
    given = [{k: v for k, v in data[0].items() if k != "dora_weight"},
             {"prompt": "Q: 9+9=\nA: ", "chosen": "18", "rejected": "19", "source": "human"}]
    p = plan(None, {"model_name_or_path": tiny_model_dir, "dataset": write(tmp_path / "d.jsonl", data), **KEYS},
             output=str(tmp_path / "out"), candidates="DPO", steps=1, heldout=write(tmp_path / "h.jsonl", given))
    run_plan(p)
    assert triple(data[0]) not in set(seen["dpo"]) and len(seen["dpo"]) == len(data) - 1
    assert p.notes == ["1 training row(s) equal to held-out rows were left out of the pilots' training"]


def test_keep_heldout_duplicates_keeps_them_and_no_other_row(tmp_path, tiny_model_dir):
    """The opt-in for data that repeats by design: the training rows are all kept (the equal one included), the
    held-out rows are still scored, and the choice is part of the recorded settings."""
    data = rows(6)
    given = [{k: v for k, v in data[0].items() if k != "dora_weight"}]
    kwargs = dict(output=str(tmp_path / "out"), candidates="DPO", steps=1, heldout=write(tmp_path / "h.jsonl", given))
    recipe = {"model_name_or_path": tiny_model_dir, "dataset": write(tmp_path / "d.jsonl", data), **KEYS}
    p = plan(None, recipe, keep_heldout_duplicates=True, **kwargs)
    assert [triple(r) for r in p.train_rows] == [triple(r) for r in data] and len(p.heldout_rows) == 1
    assert p.notes == ["1 training row(s) equal to held-out rows were kept (--keep-heldout-duplicates)"]
    assert p.settings["keep_heldout_duplicates"] is True
    assert plan(None, recipe, **kwargs).settings["keep_heldout_duplicates"] is False


def test_resume_skips_finished_candidates(tmp_path, tiny_model_dir, seen, one_thread):
    import dora

    d = write(tmp_path / "d.jsonl", rows())
    out = str(tmp_path / "out")
    kw = dict(model=tiny_model_dir, dataset=d, output=out, candidates="DPO,dora-lambda=0.5", steps=1,
              heldout_fraction=0.25, **KEYS)
    import dora.select  # noqa: F401 - the package is then the attribute dora.select: still callable

    first = dora.select(**kw)
    assert len(seen) == 2
    seen.clear()
    again = dora.select(**kw)  # both finished: nothing is trained
    assert seen == {} and again["verdict"] == first["verdict"]
    os.remove(os.path.join(out, "candidates", "dora_lambda0.5", "done.json"))  # as if killed before its marker
    third = dora.select(**kw)
    assert list(seen) == ["dora_lambda0.5"]
    assert third["results"]["DPO"] == first["results"]["DPO"]  # read back, with its time
    with pytest.raises(ValueError, match="other settings .*steps"):
        dora.select(**{**kw, "steps": 2})
    manifest = os.path.join(out, "select.json")  # a run from before --schedule: its pilots had their own schedule
    with open(manifest) as f:
        old = {k: v for k, v in json.load(f).items() if k != "schedule"}
    with open(manifest, "w") as f:
        json.dump(old, f)
    with pytest.raises(ValueError, match="other settings \\(schedule differ"):
        dora.select(**kw)
    seen.clear()
    assert dora.select(**kw, schedule="pilot")["verdict"] == first["verdict"] and seen == {}


def test_bad_input_is_one_line_before_any_model_loads(tmp_path, tiny_model_dir, capsys, forbid_model_loads):  # noqa: F811
    good = rows()
    d = write(tmp_path / "d.jsonl", good)
    no_weights = write(tmp_path / "nw.jsonl", [{k: v for k, v in r.items() if k != "dora_weight"} for r in good])
    no_source = write(tmp_path / "ns.jsonl", [{k: v for k, v in r.items() if k != "source"} for r in good])
    bad_row = write(tmp_path / "br.jsonl", good[:3] + [{**good[3], "chosen": good[3]["rejected"]}])
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    base = ["select", "--model_name_or_path", tiny_model_dir, "--output", str(tmp_path / "out"), "--heldout-fraction",
            "0.25"]
    cases = [
        (["--dataset", str(tmp_path / "missing.jsonl")], "missing.jsonl"),
        (["--dataset", d, "--candidates", "DPO,DoRB"], "unknown candidate 'DoRB'"),
        (["--dataset", d, "--candidates", "dora-lambda=0"], "λ must be a positive number"),
        (["--dataset", d, "--steps", "0"], "--steps"),
        (["--dataset", d, "--heldout-fraction", "1.5"], "--heldout-fraction"),
        (["--dataset", d, "--heldout-fraction", "0.01"], "held-out split would have 2 pairs"),
        (["--dataset", d, "--learning_rat", "0.1"], "learning_rat.*did you mean 'learning_rate'"),
        (["--dataset", no_weights], "needs the 'dora_weight' column.*dora classify"),
        (["--dataset", no_source, "--candidates", "DPO,KL-DRO"], "carving the held-out split needs the 'source'"),
        (["--dataset", d, "--target-sources", "gpt"], "no training row has source in \\['gpt'\\]"),
        (["--dataset", bad_row], "line 4"),
        (["--dataset", d, "--beta", "-1"], "beta"),
    ]
    for extra, expect in cases:
        one_line_error(base + extra, capsys, watch=[tmp_path], expect=expect)
    one_line_error(base[:-4] + ["--output", str(used), "--heldout-fraction", "0.25", "--dataset", d], capsys,
                   watch=[tmp_path], expect="is not empty.*--overwrite-output")  # fmt: skip


def hand_interval(a, b, samples: int, seed: int, level: float) -> tuple[float, float]:
    """The paired bootstrap written out: per resample, the same n indices for both; the percentile interval by
    linear interpolation between order statistics (numpy's default quantile), in float64."""
    rng = np.random.default_rng(seed)
    n, diffs = len(a), []
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        diffs.append(sum(float(a[i]) - float(b[i]) for i in idx) / n)
    diffs.sort()

    def q(p):
        pos = p * (samples - 1)
        lo = math.floor(pos)
        return diffs[lo] + (pos - lo) * (diffs[min(lo + 1, samples - 1)] - diffs[lo])

    return q((1 - level) / 2), q(1 - (1 - level) / 2)


def test_verdict_against_a_hand_computed_paired_bootstrap():
    n, rng = 200, np.random.default_rng(7)
    dpo = (rng.random(n) < 0.6).astype(float)
    wrong = np.flatnonzero(dpo == 0)
    big = dpo.copy()
    big[wrong[:30]] = 1  # right on 30 more pairs: +15 points
    small = dpo.copy()
    small[wrong[:3]] = 1  # +1.5 points: within the noise
    worse = dpo.copy()
    worse[np.flatnonzero(dpo == 1)[:20]] = 0
    scores = {"DPO": dpo, "small": small, "worse": worse}
    v = verdict(scores, samples=400, seed=3)
    level = 1 - 0.05 / 2  # two comparisons with DPO
    assert v["level"] == pytest.approx(level)
    for name in ("small", "worse"):
        assert v["candidates"][name]["vs_baseline_ci"] == pytest.approx(
            hand_interval(scores[name], dpo, 400, 3, level), abs=1e-12)
    assert hand_interval(small, dpo, 400, 3, level)[0] <= 0  # hence:
    assert v["choice"] == "DPO" and v["best"] == "small" and v["text"].startswith("keep DPO")
    # the pairs that would resolve small's lead: (z s / lead)^2, z the normal quantile at 1 - 0.025/2 (a table's
    # 2.2414), s the sample sd of the per-pair differences (three 1s, the rest 0), in float64
    d = [float(a) - float(b) for a, b in zip(small, dpo)]
    lead = sum(d) / n
    s = math.sqrt(sum((x - lead) ** 2 for x in d) / (n - 1))
    need = math.ceil((2.2414 * s / lead) ** 2)
    assert abs(v["pairs_to_resolve"] - need) <= 1 and need > n  # the table's z to 4 digits
    assert f"needs about {v['pairs_to_resolve']} held-out pairs to resolve" in v["text"]
    scores["big"] = big
    v = verdict(scores, samples=400, seed=3)
    level = 1 - 0.05 / 3
    ci = hand_interval(big, dpo, 400, 3, level)
    assert ci[0] > 0 and v["candidates"]["big"]["vs_baseline_ci"] == pytest.approx(ci, abs=1e-12)
    assert v["candidates"]["small"]["vs_best_ci"] == pytest.approx(hand_interval(small, big, 400, 3, level), abs=1e-12)
    assert v["choice"] == "big" and v["better_than_baseline"] == ["big"]
    assert v["text"].startswith("use big: +15.0 points") and v["tied_with_choice"] == []
    assert v["pairs_to_resolve"] is None and "needs about" not in v["text"]  # resolved: nothing to add
    tie = dict(scores, DPO=dpo, twin=big.copy())  # a second candidate as good: tied with the choice
    v = verdict(tie, samples=400, seed=3)
    assert v["choice"] in ("big", "twin") and v["tied_with_choice"] == [{"big": "twin", "twin": "big"}[v["choice"]]]
    same = verdict({"DPO": dpo, "copy": dpo.copy()}, samples=400, seed=3)
    assert same["choice"] == "DPO" and same["best"] == "DPO"  # a tie at the top stays with DPO


def test_candidates_parse():
    assert parse_candidates("dora, target ,DoRA λ=0.25") == ["DPO", "DoRA λ=1", "DPO (target)", "DoRA λ=0.25"]
    with pytest.raises(ValueError, match="named twice"):
        parse_candidates("DoRA λ=1,dora")


@pytest.mark.parametrize("choice", ["Label reweight", "DoRA λ=0.5"])
def test_chosen_recipe_parses_with_dora_train(tmp_path, tiny_model_dir, choice, forbid_model_loads):  # noqa: F811
    data = rows()
    recipe_in = tmp_path / "recipe.yaml"
    recipe_in.write_text(yaml.safe_dump({"model_name_or_path": tiny_model_dir, "dataset": write(
        tmp_path / "d.jsonl", data), "num_train_epochs": 3, "beta": 0.2, **KEYS}))  # fmt: skip
    p = plan(str(recipe_in), {}, output=str(tmp_path / "out"), candidates=f"DPO,{choice}", steps=1,
             heldout_fraction=0.25)
    path = tmp_path / "chosen.yaml"
    path.write_text(yaml.safe_dump(recipe_for(p, choice)))
    cfg, extra = load_recipe(str(path), {})
    args, train, _ = pilot._preflight(cfg, extra)  # every dora train check, no model
    assert args.beta == 0.2 and args.num_train_epochs == 3 and args.max_steps == -1  # the user's full run
    assert "use_peft" not in extra and "eval_dataset" not in extra  # the pilot's own settings stay out
    if choice == "Label reweight":
        assert args.objective == "reweight" and args.weight_column == "label_weight"
        alpha = 40 / 60  # every row of the user's data, held-out ones included
        assert len(train) == 60
        assert sorted(set(train["label_weight"])) == pytest.approx([1.0, 1 / alpha])
        assert [w for w, s in zip(train["label_weight"], train["source"]) if s == "human"] == [1 / alpha] * 40
    else:
        assert args.objective == "dora" and args.dro_lambda == 0.5 and extra["dataset"] == str(tmp_path / "d.jsonl")


@pytest.mark.parametrize("schedule", ["full", "pilot"])
def test_pilot_follows_the_full_runs_schedule_for_its_steps(tmp_path, tiny_model_dir, monkeypatch, schedule,
                                                            one_thread):  # fmt: skip
    """``schedule="full"``: the learning rate of each pilot step is the full run's linear schedule at that step
    (its horizon: the recipe's epochs over all rows), and training stops after ``steps``; ``"pilot"``: the linear
    schedule spans the pilot's own steps."""
    trainers = []
    build = pilot.build

    def keep(kwargs, extra, *a, **k):
        built = build(kwargs, extra, *a, **k)
        trainers.append(built[0])
        return built

    monkeypatch.setattr(pilot, "build", keep)
    data = rows()
    d = write(tmp_path / "d.jsonl", data)
    keys = {**KEYS, "num_train_epochs": 2, "lr_scheduler_type": "linear", "warmup_steps": 0}
    p = plan(None, {**keys, "model_name_or_path": tiny_model_dir, "dataset": d}, output=str(tmp_path / "out"),
             candidates="DPO", steps=3, heldout_fraction=0.25, schedule=schedule)  # fmt: skip
    run_plan(p)
    horizon = 2 * math.ceil(len(data) / 4) if schedule == "full" else 3  # 2 epochs of 60 rows, batch 4
    logged = [h["learning_rate"] for h in trainers[0].state.log_history if "learning_rate" in h]
    assert trainers[0].state.global_step == 3
    # the rate each step trained with: lr (H - t) / H after t steps
    assert logged == pytest.approx([1e-3 * (horizon - t) / horizon for t in (0, 1, 2)], rel=1e-6)
    with pytest.raises(ValueError, match="--schedule"):
        plan(None, {**keys, "model_name_or_path": tiny_model_dir, "dataset": d}, output=str(tmp_path / "o2"),
             candidates="DPO", steps=3, heldout_fraction=0.25, schedule="cosine")
    # a pilot that ends inside the full run's warmup says so (it never reaches the peak rate); its own schedule not
    warm = plan(None, {**keys, "warmup_steps": 10, "model_name_or_path": tiny_model_dir, "dataset": d},
                output=str(tmp_path / "o3"), candidates="DPO", steps=3, heldout_fraction=0.25, schedule=schedule)
    said = [n for n in warm.notes if "inside the full run's warmup (10 of its 30 steps)" in n]
    assert len(said) == (schedule == "full")
