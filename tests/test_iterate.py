"""Iterative DoRA: the prompt split across processes, the judge's pairs, a quick 2-round run (tiny model),
resume after a stop between rounds (same final parameters as an uninterrupted run), LoRA rounds, the recipe
and the CLI."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import accelerate_launch, pair_rows, write_jsonl

from dora.cli import main
from dora.demo.iterate import LengthBiasedJudge, correctness_judge
from dora.iterate import IterateConfig, iterate, load_iterate_recipe, make_pairs, shard_indices, unshard

ROOT = os.path.join(os.path.dirname(__file__), "..")


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 5, 8, 11])
def test_shards_cover_every_prompt_once_and_reassemble_in_order(n, world):
    shards = [shard_indices(n, r, world) for r in range(world)]
    flat = sorted(i for s in shards for i in s)
    assert flat == list(range(n))
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1  # balanced
    parts = [[f"answer to {i}" for i in s] for s in shards]  # what each rank would return
    assert unshard(parts, n) == [f"answer to {i}" for i in range(n)]


def test_unshard_rejects_a_short_shard():
    with pytest.raises(ValueError, match="rank 1 returned 1 results for 2 prompts"):
        unshard([["a", "c"], ["b"]], 4)


def test_make_pairs_best_against_worst_and_skips_ties():
    prompts = ["p0", "p1", "p2", "p3"]
    responses = [["a", "bb", "ccc"], ["x", "y", "z"], ["", "q", "r"], ["same", "same", "other"]]
    scores = [[0.2, -1.0, 3.0], [1.0, 1.0, 1.0], [9.0, 0.5, 0.1], [2.0, 2.0, 2.0]]
    rows, counts = make_pairs(prompts, responses, scores, "policy_r1")
    assert rows == [
        {"prompt": "p0", "chosen": "ccc", "rejected": "bb", "source": "policy_r1"},
        {"prompt": "p2", "chosen": "q", "rejected": "r", "source": "policy_r1"},  # the empty one is left out
    ]
    assert counts == {"prompts": 4, "pairs": 2, "ties": 2, "empty_responses": 1}
    with pytest.raises(ValueError, match="prompt 0 has a score that is NaN"):
        make_pairs(["p"], [["a", "b"]], [[float("nan"), 1.0]], "s")
    with pytest.raises(ValueError, match="prompt 0 has 2 responses but 1 scores"):
        make_pairs(["p"], [["a", "b"]], [[1.0]], "s")


def test_length_biased_judge_has_the_bias_it_claims():
    prompt = "Q: 3+4=\nA: "
    judge = LengthBiasedJudge(bias=0.8, seed=0)
    n = 2000
    # answer k to prompt i: a distinct prompt text per row so each row gets its own draw
    prompts = [prompt] * n
    responses = [["7", f"The answer is 8.{' ' * (i % 3)}"] for i in range(n)]
    scores = judge(prompts, responses)
    longer_wins = sum(s[1] > s[0] for s in scores) / n
    assert abs(longer_wins - 0.8) < 0.03  # binomial sd 0.009
    assert judge(prompts[:5], responses[:5]) == scores[:5]  # fixed by its inputs
    assert correctness_judge([prompt], [["7", "= 8", "The answer is 7."]]) == [[1.0, 0.0, 1.0]]


def test_bad_pool_row_is_named_before_any_model_loads(tmp_path):
    rows = pair_rows(4)
    rows[2]["chosen"] = ""
    cfg = IterateConfig(model=str(tmp_path / "no_model_here"), output_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"pool, row 3, field 'chosen': missing or empty"):
        iterate(cfg, pool=rows, judge=correctness_judge)
    path = tmp_path / "pool.jsonl"
    path.write_text(json.dumps(pair_rows(1)[0]) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"pool.jsonl, line 2: not JSON"):
        iterate(cfg, pool=str(path), judge=correctness_judge)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Q: 1+1=\\nA: "}\n{"text": "no prompt"}\n')
    with pytest.raises(ValueError, match=r"prompts.jsonl, line 2, field 'prompt': missing"):
        iterate(cfg, pool=_pool(), prompts=str(prompts), judge={"reward_model": str(tmp_path / "no_rm_here")})


def test_resume_accepts_the_same_settings_given_as_tuples(tmp_path):
    from dora.iterate.loop import _check_same_run

    cfg = IterateConfig(model="m", output_dir=str(tmp_path), target_sources=("human",),
                        lora={"target_modules": ("q_proj", "v_proj")})  # fmt: skip
    _check_same_run(str(tmp_path), cfg)  # the first run writes iterate_config.json
    _check_same_run(str(tmp_path), cfg)  # the resumed run reads it back: the same settings
    with pytest.raises(ValueError, match=r"other settings \(\['target_sources'\]\)"):
        _check_same_run(str(tmp_path), IterateConfig(**{**cfg.__dict__, "target_sources": ["synthetic"]}))


def test_a_training_output_dir_is_refused_not_deleted(tmp_path):
    # each round's trainer folder is removed after the round: a folder of the user's must never be that one
    with pytest.raises(ValueError, match=r"training.output_dir: each round trains in output_dir/round_<r>/trainer"):
        IterateConfig(model="m", output_dir=str(tmp_path / "out"), training={"output_dir": str(tmp_path)})
    with pytest.raises(ValueError, match=r"training.output_dir"):
        load_iterate_recipe(None, {"model": "m", "pool": "p", "judge": "j", "training": {"output_dir": "x"}})


def test_resume_refuses_another_pool_or_judge(tmp_path):
    """A run's folder records its data and judge; a later run with others stops instead of resuming."""
    (tmp_path / "no_model_here").mkdir()  # a folder (the path check passes) with no model in it
    cfg = IterateConfig(model=str(tmp_path / "no_model_here"), output_dir=str(tmp_path / "out"), rounds=1)
    pool = _pool()

    def start(**kw):  # round 0 needs no model; round 1 stops where the policy would load
        with pytest.raises(Exception) as e:
            iterate(cfg, **{"pool": pool, "judge": LengthBiasedJudge(0.8, seed=0), **kw})
        return str(e.value)

    assert "other settings" not in start()
    assert "other settings" not in start()  # the same pool and judge: resumes
    assert "other settings (['data.judge'])" in start(judge=LengthBiasedJudge(0.6, seed=0))
    assert "other settings (['data.judge'])" in start(judge=correctness_judge)
    assert "'data.pool'" in start(pool=pool[:-1])
    assert "other settings (['data.prompts'])" in start(prompts=[pool[0]["prompt"]])


# --------------------------------------------------------------------------- runs with a tiny model


def _config(model_dir, out, **kw) -> IterateConfig:
    base = dict(
        model=model_dir,
        output_dir=str(out),
        rounds=2,
        samples_per_prompt=3,
        classifier={"folds": 2},
        generation={"max_new_tokens": 6, "batch_size": 16},
        training={"per_device_train_batch_size": 8, "num_train_epochs": 1, "learning_rate": 5e-3, "logging_steps": 1},
        seed=0,
    )
    base.update(kw)
    return IterateConfig(**base)


def _pool():
    return [{k: r[k] for k in ("prompt", "chosen", "rejected", "source")} for r in pair_rows(16, seed=1)]


def _params(path):
    from transformers import AutoModelForCausalLM

    return dict(AutoModelForCausalLM.from_pretrained(path).named_parameters())


def _length_judge(prompts, responses):
    return [[float(len(r)) for r in rs] for rs in responses]


def test_two_rounds_grow_the_pool_reweight_and_report(tiny_model_dir, tmp_path, one_thread):
    pool = _pool()
    evald = [r for r in pair_rows(12, seed=2) if r["source"] == "human"]
    reports = iterate(
        _config(tiny_model_dir, tmp_path / "run"), pool=pool, judge=_length_judge,
        eval_data=[{k: r[k] for k in ("prompt", "chosen", "rejected", "source")} for r in evald],
        eval_judge=correctness_judge,
    )  # fmt: skip
    assert [r["round"] for r in reports] == [0, 1, 2]
    assert reports[0]["eval"]["preference_accuracy"] is None and reports[0]["eval"]["win_rate"] == 0.5
    prev = len(pool)
    for r in (1, 2):
        rep, rdir = reports[r], tmp_path / "run" / f"round_{r}"
        written = [json.loads(x) for x in (rdir / "pool.jsonl").read_text().splitlines()]
        assert all(x["dora_weight"] > 0 for x in written)  # the weights the round trained with
        rows = [{k: x[k] for k in ("prompt", "chosen", "rejected", "source")} for x in written]
        new = [x for x in rows if x["source"] == f"policy_r{r}"]
        # the pool grows by this round's pairs only, and keeps the earlier rows as they were
        assert len(rows) == prev + rep["new_pairs"]["pairs"] and rows[: len(pool)] == pool
        assert len(new) == rep["new_pairs"]["pairs"] > 0
        assert all(len(x["chosen"]) > len(x["rejected"]) for x in new)  # the judge preferred the longer one
        assert rep["pool"] == {s: sum(x["source"] == s for x in rows) for s in {x["source"] for x in rows}}
        n_policy = sum(x["source"].startswith("policy_r") for x in rows)
        assert rep["policy_share"] == pytest.approx(n_policy / len(rows))
        assert 0.0 <= rep["weights"]["roc_auc"] <= 1.0 and rep["weights"]["min"] > 0
        assert 0 < rep["train"]["ess"] <= rep["train"]["batch_size"] + 1e-6
        assert 0.0 <= rep["eval"]["preference_accuracy"] <= 1.0 and 0.0 <= rep["eval"]["win_rate"] <= 1.0
        prev = len(rows)
    before, after = _params(tiny_model_dir), _params(reports[2]["policy"])
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert "| 2 |" in (tmp_path / "run" / "report.md").read_text()


def test_resume_after_a_stop_gives_the_uninterrupted_final_policy(tiny_model_dir, tmp_path, one_thread):
    kw = dict(pool=_pool(), judge=LengthBiasedJudge(0.8, seed=0))
    straight = iterate(_config(tiny_model_dir, tmp_path / "a", reference="previous"), **kw)
    # stopped after round 1; then a crash in round 2 left a half-written round folder behind
    iterate(_config(tiny_model_dir, tmp_path / "b", rounds=1, reference="previous"), **kw)
    (tmp_path / "b" / "round_2").mkdir()
    (tmp_path / "b" / "round_2" / "pool.jsonl").write_text("half")
    resumed = iterate(_config(tiny_model_dir, tmp_path / "b", reference="previous"), **kw)
    assert [r["round"] for r in resumed] == [0, 1, 2]
    a, b = _params(straight[-1]["policy"]), _params(resumed[-1]["policy"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a/round_2/pool.jsonl").read_text() == (tmp_path / "b/round_2/pool.jsonl").read_text()
    with pytest.raises(ValueError, match="other settings"):
        iterate(_config(tiny_model_dir, tmp_path / "b", samples_per_prompt=4), **kw)


def test_lora_rounds_save_a_merged_policy(tiny_model_dir, tmp_path, one_thread):
    from transformers import AutoModelForCausalLM

    cfg = _config(tiny_model_dir, tmp_path / "lora", rounds=1, weights="none",
                  lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})  # fmt: skip
    reports = iterate(cfg, pool=_pool(), judge=_length_judge)
    policy = reports[-1]["policy"]
    assert not os.path.exists(os.path.join(policy, "adapter_config.json"))
    model = AutoModelForCausalLM.from_pretrained(policy)  # a full model, the adapter merged in
    assert not any("lora" in n for n, _ in model.named_parameters())
    before = _params(tiny_model_dir)
    changed = [k for k, v in model.named_parameters() if not torch.equal(before[k], v)]
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed)


def test_recipe_parses_and_cli_runs_a_round(tiny_model_dir, tmp_path, one_thread):
    cfg, data = load_iterate_recipe(os.path.join(ROOT, "recipes", "iterate_demo.yaml"))
    assert cfg.rounds == 3 and cfg.weights == "classifier" and data["judge"]["callable"].endswith(":LengthBiasedJudge")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \[.roundz.\]"):
        load_iterate_recipe(None, {"roundz": 2, "model": "m", "pool": "p", "judge": "j"})
    pool = tmp_path / "pool.jsonl"
    write_jsonl(pool, _pool())
    out = tmp_path / "cli"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model: {tiny_model_dir}\noutput_dir: {out}\npool: {pool}\nsamples_per_prompt: 2\nweights: none\n"
        "judge: {callable: 'dora.demo.iterate:LengthBiasedJudge', kwargs: {bias: 0.8}}\n"
        "generation: {max_new_tokens: 4}\ntraining: {per_device_train_batch_size: 8, max_steps: 1}\n"
    )
    assert main(["iterate", "--config", str(recipe), "--rounds", "1"]) == 0
    assert json.loads((out / "round_1" / "report.json").read_text())["train"]["steps"] == 1


def test_density_weights_never_read_the_pool_sources(tmp_path):
    from dora.iterate.weights import fit_weights

    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected", "source")} for r in pair_rows(60, seed=3)]
    trusted = [
        {k: r[k] for k in ("prompt", "chosen", "rejected")} for r in pair_rows(30, seed=4) if r["source"] == "human"
    ]
    kw = dict(target_sources=["human"], classifier={"folds": 2, "bootstrap": 20}, seed=0, output_dir=None)
    a, report = fit_weights(rows, "density", trusted=trusted, **kw)
    relabelled = [dict(r, source=f"policy_r{i % 3}") for i, r in enumerate(rows)]
    b, _ = fit_weights(relabelled, "density", trusted=trusted, **kw)
    assert [r["dora_weight"] for r in a] == [r["dora_weight"] for r in b]
    assert [r["source"] for r in b] == [r["source"] for r in relabelled]  # the pool keeps its own columns
    assert "roc_auc" in report and all(r["dora_weight"] > 0 for r in a)
    none, _ = fit_weights(rows, "none", **kw)
    assert {r["dora_weight"] for r in none} == {1.0}


@pytest.mark.slow
def test_two_processes_split_the_sampling_and_gather_it_in_prompt_order(tiny_model_dir, tmp_path, one_thread):
    """`accelerate launch` (two CPU processes) runs a round; its policy-written pairs are exactly the pairs
    made from rank 0 sampling and judging prompts 0, 2, 4, ... (seed s) and rank 1 prompts 1, 3, ... (seed
    s + 1000003); the weights are fitted once, by rank 0, and every process trains on them."""
    import subprocess

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dora.iterate import sample_responses

    pool = tmp_path / "pool.jsonl"
    rows = _pool()
    write_jsonl(pool, rows)
    out = tmp_path / "ddp"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model: {tiny_model_dir}\noutput_dir: {out}\npool: {pool}\nsamples_per_prompt: 3\nweights: none\n"
        "judge: {callable: 'dora.demo.iterate:LengthBiasedJudge'}\nrounds: 1\nseed: 3\n"
        "generation: {max_new_tokens: 6}\ntraining: {per_device_train_batch_size: 4, max_steps: 1}\n"
    )
    calls = tmp_path / "calls.txt"
    cmd = [*accelerate_launch(os.path.join(ROOT, "recipes", "accelerate_configs", "cpu2.yaml")),
           os.path.join(ROOT, "tests", "scripts", "iterate_round.py"), str(recipe), str(calls)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    written = [json.loads(x) for x in (out / "round_1" / "pool.jsonl").read_text().splitlines()][len(rows) :]
    got = [{k: x[k] for k in ("prompt", "chosen", "rejected", "source")} for x in written]

    prompts = list(dict.fromkeys(r["prompt"] for r in rows))
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    seed = 3 * 1000 + 1  # the round's sampling seed
    shards = [
        sample_responses(model, tok, prompts[rank::2], 3, max_new_tokens=6, seed=seed + 1_000_003 * rank)
        for rank in (0, 1)
    ]
    samples = unshard(shards, len(prompts))
    # each rank judges its own shard once (a judge called on every rank with every prompt could give each
    # rank another pool); this judge's verdicts depend on the call, so the two ways give other pairs here
    scores = unshard([LengthBiasedJudge()(prompts[rank::2], shards[rank]) for rank in (0, 1)], len(prompts))
    expected, _ = make_pairs(prompts, samples, scores, "policy_r1")
    assert got == expected and len(got) > 0
    assert expected != make_pairs(prompts, samples, LengthBiasedJudge()(prompts, samples), "policy_r1")[0]
    report = json.loads((out / "round_1" / "report.json").read_text())
    assert report["train"]["batch_size"] == 8  # 4 per process x 2 processes
    # the weights function ran once, on rank 0 (rank 1 would have given 2.0), and that is what was trained on
    assert calls.read_text() == "0\n"
    assert {x["dora_weight"] for x in written} == {1.0}


def test_demo_table_gives_mean_sd_and_per_seed_numbers():
    from dora.demo.iterate import markdown

    def rep(r, acc, share=0.0, w=None):
        out = {"round": r, "eval": {"preference_accuracy": acc, "task_accuracy": 0.5, "win_rate": 0.5}}
        if r:
            out.update(pool_size=100 + 10 * r, policy_share=share, train={"ess": 8.0, "batch_size": 32},
                       weights={"roc_auc": 0.9, "mean_policy_rows": w, "mean_target_rows": 2.0,
                                "weight_share_policy_rows": 0.05})  # fmt: skip
        return out

    seeds = [
        {"DPO": [rep(0, None), rep(1, 0.50)], "DoRA": [rep(0, None), rep(1, 0.60, 0.1, 0.4)]},
        {"DPO": [rep(0, None), rep(1, 0.60)], "DoRA": [rep(0, None), rep(1, 0.70, 0.3, 0.6)]},
    ]
    table = markdown(seeds)
    # mean and sample standard deviation of (0.5, 0.6): 55.0 and 7.07
    assert "| 1 | 55.0 ± 7.1 [50.0, 60.0] | 65.0 ± 7.1 [60.0, 70.0] |" in table
    assert "| 0 | – [–, –] | – [–, –] |" in table
    assert "| 1 | 110 | 20.0 | 0.900 | 0.500 | 2.000 | 5.0 | 8.0 / 32 |" in table


@pytest.mark.slow
def test_demo_iterate_quick_runs_both_runs_from_one_sft(tmp_path, one_thread):
    out = tmp_path / "demo"
    assert main(["demo", "--iterate", "--quick", "--output", str(out)]) == 0
    result = json.loads((out / "iterate.json").read_text())
    seed0 = result["per_seed"][0]
    assert [r["round"] for r in seed0["DPO"]] == [r["round"] for r in seed0["DoRA"]] == [0, 1, 2]
    assert seed0["DPO"][0]["eval"] == seed0["DoRA"][0]["eval"]  # the same SFT model at round 0
    for rep in seed0["DoRA"][1:]:
        assert rep["pool"][f"policy_r{rep['round']}"] == rep["new_pairs"]["pairs"] > 0
        assert 0.5 < rep["weights"]["roc_auc"] <= 1.0  # human text is told apart from the rest
    assert all(rep["weights"]["max"] == rep["weights"]["min"] == 1.0 for rep in seed0["DPO"][1:])
    assert "| 2 |" in (out / "iterate.md").read_text() and (out / "iterate.png").stat().st_size > 1000


def test_recipe_mistakes_fail_before_any_model_loads(tmp_path, capsys):
    """Keys and values a round would reach only after sampling are checked when the recipe is read; a target
    source the pool does not have, a mistyped model folder, a missing or broken recipe: one line, exit status 2,
    nothing written."""
    for overrides, match in [
        ({"eval_beta": 0}, r"eval_beta must be > 0, got 0"),
        ({"prompts_per_round": -1}, r"prompts_per_round must be >= 1"),
        ({"generation": {"max_new_token": 4}}, r"generation: unknown key 'max_new_token' \(did you mean 'max_new_t"),
        ({"training": {"learnin_rate": 1e-3}}, r"training: unknown key 'learnin_rate' \(did you mean 'learning_r"),
        ({"classifier": {"backend": "tfidff"}}, r"classifier.backend 'tfidff' is not one of \['embedding', 'tfidf'"),
    ]:
        with pytest.raises(ValueError, match=match):
            load_iterate_recipe(None, {"model": "m", "pool": "p", "judge": "j", **overrides})
    pool = tmp_path / "pool.jsonl"
    write_jsonl(pool, _pool())
    out = tmp_path / "out"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"model": "./nope", "pool": str(pool), "judge": {"callable": "x:y"},
                                  "output_dir": str(out)}))  # fmt: skip

    def error(*argv) -> str:
        assert main(["iterate", *argv]) == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    assert error("--config", str(recipe)).startswith("dora iterate: error: model './nope' not found")
    assert error("--config", str(recipe), "--model", str(tmp_path), "--target_sources", "humans") == (
        f"dora iterate: error: target_sources ['humans']: none is a source of the pool, which has "
        f"{sorted({r['source'] for r in _pool()})}"
    )
    assert not out.exists()
    assert error("--config", str(tmp_path / "missing.yaml")) == (
        f"dora iterate: error: recipe {str(tmp_path / 'missing.yaml')!r} not found"
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: m\npool: [a\n")
    assert error("--config", str(broken)).startswith(f"dora iterate: error: {broken}, line 3: not valid YAML")
