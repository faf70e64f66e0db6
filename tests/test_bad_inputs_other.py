"""A battery of bad inputs to `dora classify`, `dora eval preference`, `dora eval distalign` and `dora iterate`.

Each case asserts: exit status 2; one line on stderr, `dora <command>: error: ...`, naming the file and line, the
key or the flag; no model or tokenizer loaded (``from_pretrained`` is replaced by a function that fails the
test); and every file in the folder (inputs, an earlier run's outputs) byte-identical after the call, with no
file or folder added. Run in-process, so the whole battery takes seconds.
"""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml
from bad_inputs import forbid_loads, one_line_error
from conftest import pair_rows

from dora.cli import main

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "distalign", "questions.jsonl")
BAD_UTF8 = b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b", "source": "human"}\n'


def _jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _model_folder(path, tokenizer=True, **config) -> None:
    path.mkdir()
    cfg = {"model_type": "llama", "max_position_embeddings": 64, **config}
    (path / "config.json").write_text(json.dumps(cfg))
    if tokenizer:
        (path / "tokenizer_config.json").write_text("{}")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The files every case reads: good data, broken copies, model folders (config and tokenizer files only:
    nothing here can load), an earlier run's outputs, recipes."""
    d = tmp_path_factory.mktemp("bad_inputs")
    rows = pair_rows(40)
    _jsonl(d / "pool.jsonl", rows)
    _jsonl(d / "heldout.jsonl", pair_rows(8, seed=1))
    (d / "notjson.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]) + "{oops\n")
    (d / "bad_utf8.jsonl").write_bytes(json.dumps(rows[0]).encode() + b"\n" + BAD_UTF8)
    (d / "empty.jsonl").write_text("")
    _jsonl(d / "null_chosen.jsonl", [rows[0], dict(rows[1], chosen=None), *rows[2:]])
    _jsonl(d / "empty_chosen.jsonl", [rows[0], dict(rows[1], chosen=""), *rows[2:]])
    _jsonl(d / "listwise.jsonl", [{"prompt": "p", "responses": ["a", "b"], "scores": [1, 0]}] * 4)
    (d / "earlier").mkdir()
    for name in ("data.jsonl", "report.json", "results.json", "results.md"):
        (d / "earlier" / name).write_text(f"an earlier run's {name}\n")
    (d / "afile.txt").write_text("not a folder\n")
    (d / "own").mkdir()
    _jsonl(d / "own" / "data.jsonl", rows)
    _model_folder(d / "model")
    _model_folder(d / "notok", tokenizer=False)
    (d / "emptymodel").mkdir()
    _model_folder(d / "rm3", id2label={"0": "a", "1": "b", "2": "c"})
    for name, text in {"bad.yaml": "dataset: [a\n", "list.yaml": "- a\n- b\n", "unknown.yaml": "colour: red\n",
                       "folds.yaml": "folds: five\n"}.items():  # fmt: skip
        (d / name).write_text(text)
    (d / "utf8.yaml").write_bytes(b"target_sources: caf\xe9\n")
    # distalign: predictions for the first of the fixture's two questions only, and broken ones
    first = json.loads(open(FIX).readline())
    pred = {"dataset": first["dataset"], "question": first["qid"], "group": first["group"], "method": "verbalize",
            "steering": "persona", "distribution": {"A": 0.6, "B": 0.4}}  # fmt: skip
    _jsonl(d / "partial.jsonl", [pred])
    _jsonl(d / "pred_missing.jsonl", [{k: v for k, v in pred.items() if k != "distribution"}])
    _jsonl(d / "pred_letter.jsonl", [dict(pred, distribution={"Z": 1.0})])
    _jsonl(d / "pred_list.jsonl", [{**{k: v for k, v in pred.items() if k != "distribution"}, "prediction": [1.0]}])
    _jsonl(d / "pred_nan.jsonl", [dict(pred, distribution={"A": -1})])
    (d / "pred_utf8.jsonl").write_bytes(json.dumps(pred).encode() + b"\n\xff\xfe\n")
    (d / "pred_notjson.jsonl").write_text(json.dumps(pred) + "\n{\n")
    # iterate: a judge that is never imported in these cases, and recipes
    (d / "prompts_bad.jsonl").write_text('{"prompt": "a"}\n\n{"text": "b"}\n')
    (d / "blank_lines.jsonl").write_text(f"{json.dumps(rows[0])}\n\n{json.dumps(rows[1])}\n"
                                         f"{json.dumps(dict(rows[2], rejected=None))}\n")  # fmt: skip
    (d / "array_row.jsonl").write_text(f"{json.dumps(rows[0])}\n[1, 2]\n")
    (d / "pool_utf8.jsonl").write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows[:3]) + BAD_UTF8)
    return d


def _recipe(d, name: str, **changes) -> str:
    recipe = {"model": str(d / "model"), "pool": str(d / "pool.jsonl"), "judge": {"callable": "json:dumps"},
              "output_dir": str(d / "iter_out"), "rounds": 1}  # fmt: skip
    recipe.update(changes)
    for k in [k for k, v in recipe.items() if v is DROP]:
        del recipe[k]
    path = d / f"recipe_{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


DROP = object()
NAN = float("nan")

CLASSIFY = "classify --dataset {d}/pool.jsonl --target-sources human --folds 2 --output {d}/out"
PREF = "eval preference --model {d}/model --ref-model {d}/model --dataset {d}/heldout.jsonl --split train"
DIST = "eval distalign --predictions {d}/partial.jsonl --data " + FIX

CASES = [
    # ---------------------------------------------------------------- dora classify
    ("classify", "classify --dataset {d}/pool.jsonl --output {d}/out", "--target-sources"),
    ("classify", "classify --dataset {d}/nope.jsonl --target-sources human --output {d}/out", "nope.jsonl"),
    ("classify", "classify --dataset {d}/notjson.jsonl --target-sources human --output {d}/out", "line 3"),
    ("classify", "classify --dataset {d}/bad_utf8.jsonl --target-sources human --output {d}/out", "bad_utf8.jsonl"),
    ("classify", "classify --dataset {d}/empty.jsonl --target-sources human --output {d}/out", "empty.jsonl"),
    ("classify", "classify --dataset {d}/null_chosen.jsonl --target-sources human --output {d}/out", "line 2"),
    ("classify", "classify --dataset {d}/empty_chosen.jsonl --target-sources human --output {d}/out", "line 2"),
    ("classify", CLASSIFY.replace("human", "nobody"), "nobody"),
    ("classify", CLASSIFY + " --source-column src", "src"),
    ("classify", CLASSIFY + " --stabilizer 1e308", "--stabilizer"),
    ("classify", CLASSIFY + " --stabilizer -1", "--stabilizer"),
    ("classify", CLASSIFY + " --stabilizer nan", "--stabilizer"),
    ("classify", CLASSIFY + " --target-share 0", "--target-share"),
    ("classify", CLASSIFY + " --target-share nan", "--target-share"),
    ("classify", CLASSIFY + " --target-share 1.5", "--target-share"),
    ("classify", CLASSIFY + " --clip 0", "--clip"),
    ("classify", CLASSIFY + " --clip nan", "--clip"),
    ("classify", CLASSIFY + " --eps 0.5", "--eps"),
    ("classify", CLASSIFY + " --eps nan", "--eps"),
    ("classify", CLASSIFY + " --eps 1e-300", "--eps must be >= 1e-12"),
    ("classify", CLASSIFY + " --clip 1e-300", "--clip must be >= 1e-06"),
    ("classify", CLASSIFY + " --target-share 1e-300", "--target-share must be >= 1e-06"),
    ("classify", CLASSIFY + " --folds 0", "--folds"),
    ("classify", CLASSIFY + " --epochs nan", "--epochs"),
    ("classify", CLASSIFY + " --learning-rate -1", "--learning-rate"),
    ("classify", CLASSIFY + " --batch-size 0", "--batch-size"),
    ("classify", CLASSIFY + " --max-length 1", "--max-length"),
    ("classify", CLASSIFY + " --seed -1", "--seed"),
    ("classify", CLASSIFY + " --preset authors --stabilizer 1", "--preset"),
    ("classify", CLASSIFY.replace("{d}/out", "{d}/afile.txt"), "is a file"),
    ("classify", CLASSIFY.replace("{d}/out", "{d}/earlier"), "--overwrite-output-dir"),
    ("classify", "classify --dataset {d}/own/data.jsonl --target-sources human --output {d}/own --overwrite-output-dir",
     "would write over the input"),
    ("classify", CLASSIFY.replace("{d}/out", "/proc/self/dora_out"), "cannot write"),
    ("classify", CLASSIFY.replace("{d}/out", "{d}/model") + " --backend embedding --model {d}/model",
     "would write into the model"),
    ("classify", CLASSIFY + " --backend embedding --model {d}/modl", "--model"),
    ("classify", CLASSIFY + " --backend embedding --model {d}/notok", "has no tokenizer"),
    ("classify", CLASSIFY + " --backend embedding --model {d}/emptymodel", "not a model folder"),
    ("classify", CLASSIFY + " --config {d}/bad.yaml", "bad.yaml, line"),
    ("classify", CLASSIFY + " --config {d}/list.yaml", "list.yaml"),
    ("classify", CLASSIFY + " --config {d}/unknown.yaml", "colour"),
    ("classify", CLASSIFY + " --config {d}/folds.yaml", "'folds'"),
    ("classify", CLASSIFY + " --config {d}/utf8.yaml", "utf8.yaml, line 1"),
    ("classify", CLASSIFY + " --config {d}/missing.yaml", "missing.yaml"),
    ("classify", "classify --dataset {d}/pool.jsonl --target-dataset {d}/heldout.jsonl --target-sources human "
                 "--output {d}/out", "--target-sources"),  # fmt: skip
    ("classify", "classify --dataset {d}/pool.jsonl --target-dataset {d}/heldout.jsonl --folds 1 --output {d}/out",
     "--folds"),
    ("classify", "classify --dataset {d}/pool.jsonl --target-dataset {d}/nope.jsonl --output {d}/out", "nope.jsonl"),
    ("classify", CLASSIFY + " --share-bootstrap -1", "--share-bootstrap"),
    # ---------------------------------------------------------------- dora eval preference
    ("eval", PREF + " --beta nan", "--beta"),
    ("eval", PREF + " --beta inf", "--beta"),
    ("eval", PREF + " --beta 0", "--beta"),
    ("eval", PREF + " --beta -1", "--beta"),
    ("eval", PREF + " --top-p nan", "--top-p"),
    ("eval", PREF + " --top-p 1.5", "--top-p"),
    ("eval", PREF + " --temperature 0", "--temperature"),
    ("eval", PREF + " --temperature nan", "--temperature"),
    ("eval", PREF + " --tie-margin -1", "--tie-margin"),
    ("eval", PREF + " --tie-margin inf", "--tie-margin"),
    ("eval", PREF + " --bootstrap 0", "--bootstrap"),
    ("eval", PREF + " --batch-size 0", "--batch-size"),
    ("eval", PREF + " --max-length 1", "--max-length"),
    ("eval", PREF + " --max-new-tokens 0", "--max-new-tokens"),
    ("eval", PREF + " --max-prompts 0", "--max-prompts"),
    ("eval", PREF + " --seed -1", "--seed"),
    ("eval", PREF.replace("--model {d}/model", "--model {d}/modl"), "modl"),
    ("eval", PREF.replace("--model {d}/model", "--model {d}/notok"), "has no tokenizer"),
    ("eval", PREF.replace("--model {d}/model", "--model {d}/emptymodel"), "not a model folder"),
    ("eval", PREF.replace("--ref-model {d}/model", "--ref-model {d}/nope"), "nope"),
    ("eval", PREF + " --reward-model {d}/rm3", "3"),
    ("eval", PREF + " --win-rate", "--win-rate"),
    ("eval", PREF + " --reference-free", "--reference-free"),
    ("eval", PREF.replace("heldout.jsonl", "nope.jsonl"), "nope.jsonl"),
    ("eval", PREF.replace("heldout.jsonl", "null_chosen.jsonl"), "line 2, column 'chosen'"),
    ("eval", PREF.replace("heldout.jsonl", "notjson.jsonl"), "line 3"),
    ("eval", PREF.replace("heldout.jsonl", "bad_utf8.jsonl"), "bad_utf8.jsonl"),
    ("eval", PREF.replace("heldout.jsonl", "empty.jsonl"), "empty.jsonl"),
    ("eval", PREF.replace("heldout.jsonl", "listwise.jsonl"), "pairwise"),
    ("eval", PREF + " --target-sources nobody", "nobody"),
    ("eval", PREF + " --target-sources ,", "--target-sources"),
    ("eval", PREF + " --source-column src", "--source-column"),
    ("eval", PREF + " --output {d}/afile.txt", "is a file"),
    ("eval", PREF + " --output {d}/earlier", "--overwrite-output-dir"),
    ("eval", PREF + " --output {d}/model", "would write into the model"),
    ("eval", PREF + " --output /proc/self/dora_out", "cannot write"),
    # ---------------------------------------------------------------- dora eval distalign
    ("eval", DIST, "1 of 2 loaded questions have no verbalize/persona prediction"),
    ("eval", DIST + " --samples 0", "--samples"),
    ("eval", DIST + " --shots -1", "--shots"),
    ("eval", DIST + " --max-questions 0", "--max-questions"),
    ("eval", DIST + " --batch-size 0", "--batch-size"),
    ("eval", DIST + " --bootstrap 0", "--bootstrap"),
    ("eval", DIST + " --seed -1", "--seed"),
    ("eval", DIST + " --methods logits", "logits"),
    ("eval", DIST + " --groups nobody", "nobody"),
    ("eval", DIST.replace(FIX, "{d}/nope.jsonl"), "nope.jsonl"),
    ("eval", DIST.replace(FIX, "{d}"), "a folder"),
    ("eval", DIST.replace("partial.jsonl", "pred_missing.jsonl"), "pred_missing.jsonl: line 1: missing field"),
    ("eval", DIST.replace("partial.jsonl", "pred_letter.jsonl"), "pred_letter.jsonl: line 1, field 'distribution'"),
    ("eval", DIST.replace("partial.jsonl", "pred_list.jsonl"), "pred_list.jsonl: line 1, field 'prediction'"),
    ("eval", DIST.replace("partial.jsonl", "pred_nan.jsonl"), "pred_nan.jsonl: line 1, field 'distribution'"),
    ("eval", DIST.replace("partial.jsonl", "pred_utf8.jsonl"), "pred_utf8.jsonl: line 2: not UTF-8"),
    ("eval", DIST.replace("partial.jsonl", "pred_notjson.jsonl"), "pred_notjson.jsonl: line 2"),
    ("eval", DIST.replace("partial.jsonl", "nope.jsonl"), "nope.jsonl"),
    ("eval", "eval distalign --model {d}/notok --data " + FIX, "has no tokenizer"),
    ("eval", "eval distalign --model {d}/model --allow-partial --data " + FIX, "--allow-partial"),
    ("eval", DIST + " --allow-partial --output {d}/afile.txt", "is a file"),
    ("eval", DIST + " --allow-partial --output {d}/earlier", "--overwrite-output-dir"),
]

ITERATE = [  # (recipe changes, extra flags, expected)
    (dict(rounds="three"), [], "rounds: an integer expected, got 'three'"),
    (dict(rounds=0), [], "rounds must be >= 1"),
    (dict(samples_per_prompt=1), [], "samples_per_prompt"),
    (dict(reference="other"), [], "reference"),
    (dict(weights="magic"), [], "weights"),
    (dict(eval_beta=NAN), [], "eval_beta"),
    (dict(seed=1.5), [], "seed"),
    (dict(target_sources=5), [], "target_sources"),
    (dict(training={"learning_rate": NAN}), [], "training: learning_rate"),
    (dict(training={"learnin_rate": 1e-3}), [], "training: unknown key 'learnin_rate'"),
    (dict(training="fast"), [], "training: a mapping"),
    (dict(training={"output_dir": "x"}), [], "training.output_dir"),
    (dict(classifier={"folds": 0}), [], "classifier.folds"),
    (dict(classifier={"calibration": "sigmoid"}), [], "classifier.calibration"),
    (dict(classifier={"backend": "tfidff"}), [], "classifier.backend"),
    (dict(classifier={"stabilizer": 1e308}), [], "classifier.stabilizer"),
    (dict(classifier={"eps": NAN}), [], "classifier.eps"),
    (dict(classifier={"bootstrap": 10}), [], "classifier.bootstrap"),
    (dict(classifier={"folds": "five"}), [], "classifier.folds"),
    (dict(generation={"temperature": 0}), [], "generation.temperature"),
    (dict(generation={"top_p": NAN}), [], "generation.top_p"),
    (dict(generation={"max_new_tokens": "many"}), [], "generation.max_new_tokens"),
    (dict(generation={"backend": "tgi"}), [], "generation.backend"),
    (dict(generation={"max_new_token": 4}), [], "generation: unknown key"),
    (dict(lora={"r": 0}), [], "lora.r"),
    (dict(lora={"rank": 8}), [], "lora: unknown key 'rank'"),
    (dict(judge={"callable": "no_such_module_xyz:judge"}), [], "judge: cannot import module 'no_such_module_xyz'"),
    (dict(judge={"callable": "json:no_such_name"}), [], "judge: module 'json' has no 'no_such_name'"),
    (dict(judge={"callable": "nocolon"}), [], "judge: callable must read"),
    (dict(judge=5), [], "judge: expected"),
    (dict(judge={"reward_model": "{d}/notok"}), [], "has no tokenizer"),
    (dict(colour="red"), [], "unknown key(s) ['colour']"),
    (dict(pool=DROP), [], "needs 'pool'"),
    (dict(pool="{d}/nope.jsonl"), [], "nope.jsonl"),
    (dict(pool="{d}/pool_utf8.jsonl"), [], "pool_utf8.jsonl, line 4: not UTF-8"),
    (dict(pool="{d}/empty_chosen.jsonl"), [], "empty_chosen.jsonl, line 2, field 'chosen'"),
    (dict(pool="{d}/blank_lines.jsonl"), [], "blank_lines.jsonl, line 4, field 'rejected'"),
    (dict(pool="{d}/array_row.jsonl"), [], "array_row.jsonl, line 2: a JSON object expected"),
    (dict(eval_data="{d}/empty_chosen.jsonl"), [], "eval_data {d}/empty_chosen.jsonl, line 2, field 'chosen'"),
    (dict(pool="{d}/notjson.jsonl"), [], "notjson.jsonl, line 3"),
    (dict(prompts="{d}/prompts_bad.jsonl"), [], "prompts_bad.jsonl, line 3, field 'prompt'"),
    (dict(model="{d}/notok"), [], "has no tokenizer"),
    (dict(model="{d}/modl"), [], "modl"),
    (dict(target_sources=["humans"]), [], "target_sources ['humans']"),
    (dict(pool=[1, 2]), [], "pool: a jsonl path"),
    (dict(lora={"target_modules": 5}), [], "lora.target_modules"),
    (dict(training={"num_train_epochs": "x"}), [], "training.num_train_epochs: a number expected"),
    (dict(output_dir="{d}/model"), [], "inside the model folder"),
    (dict(output_dir="{d}/afile.txt"), [], "is a file"),
    (dict(output_dir="{d}/earlier"), [], "holds other files"),
    (dict(output_dir="/proc/self/dora_it"), [], "cannot write"),
    ({}, ["--rounds", "three"], "rounds: an integer expected"),
    ({}, ["--eval_beta", "-1"], "eval_beta"),
]


@pytest.fixture
def no_loads(monkeypatch):
    """Any model load (the shared harness) and, here, any tokenizer load too fails the test."""
    import transformers

    boom = forbid_loads(monkeypatch)
    monkeypatch.setattr(transformers.PreTrainedTokenizerBase, "from_pretrained", classmethod(boom))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)


def _check(world, capsys, argv: list[str], command: str, expected: str) -> None:
    """Exit status 2, one ``dora <command>: error:`` line holding ``expected``, no traceback, files unchanged."""
    assert argv[0] == command
    one_line_error(argv, capsys, watch=(world,), expect=re.escape(expected))


@pytest.mark.parametrize("command,argv,expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input(world, capsys, no_loads, command, argv, expected):
    _check(world, capsys, argv.format(d=world).split(), command, expected)


@pytest.mark.parametrize("changes,flags,expected", ITERATE, ids=[f"iterate-{i}" for i in range(len(ITERATE))])
def test_bad_recipe(world, capsys, no_loads, changes, flags, expected):
    changes = {k: v.format(d=world) if isinstance(v, str) else v for k, v in changes.items()}
    expected = expected.format(d=world)
    if isinstance(changes.get("judge"), dict) and "reward_model" in changes["judge"]:
        changes["judge"] = {"reward_model": changes["judge"]["reward_model"].format(d=world)}
    recipe = _recipe(world, "case", **changes)
    try:
        _check(world, capsys, ["iterate", "--config", recipe, *flags], "iterate", expected)
    finally:
        os.remove(recipe)


@pytest.mark.parametrize("name,content", [("bad", b"model: m\npool: [a\n"), ("list", b"- a\n"),
                                          ("utf8", b"model: caf\xe9\n")])  # fmt: skip
def test_broken_recipe_file(world, capsys, no_loads, name, content):
    path = world / f"broken_{name}.yaml"
    path.write_bytes(content)
    try:
        _check(world, capsys, ["iterate", "--config", str(path)], "iterate", str(path))
    finally:
        os.remove(path)



# --------------------------------------------------------------------------- what the checks let through


def test_classify_overwrite_and_weight_extremes(tmp_path, capsys):
    """An earlier run is replaced only with --overwrite-output-dir; extremes.json lists, per source, the rows with
    the lowest and highest weights, checked against the written data.jsonl (rows named by their file line)."""
    data = tmp_path / "rows.jsonl"
    _jsonl(data, pair_rows(40))
    out = tmp_path / "out"
    argv = ["classify", "--dataset", str(data), "--target-sources", "human", "--folds", "2", "--output", str(out)]
    assert main(argv) == 0
    assert main(argv) == 2 and "--overwrite-output-dir" in capsys.readouterr().err
    assert main([*argv, "--overwrite-output-dir"]) == 0
    written = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    extremes = json.loads((out / "extremes.json").read_text())
    assert set(extremes) == {"human", "gpt"}
    for source, ends in extremes.items():
        mine = sorted((r["dora_weight"], i + 1) for i, r in enumerate(written) if r["source"] == source)
        assert [e["weight"] for e in ends["lowest"]] == pytest.approx([w for w, _ in mine[:3]])
        assert [e["weight"] for e in ends["highest"]] == pytest.approx([w for w, _ in mine[::-1][:3]])
        for e in ends["lowest"] + ends["highest"]:
            line = int(e["row"].split()[-1])
            assert written[line - 1]["dora_weight"] == pytest.approx(e["weight"])
            assert e["text"] == " ".join(str(written[line - 1]["chosen"]).split())[:80]
    assert "Lowest and highest weights per source" in (out / "report.md").read_text()


def test_iterate_corrected_recipe_continues_and_resume_is_announced(tmp_path, capsys):
    """A run that stopped before training any round (here: its model folder holds no model) does not block the
    same folder for a recipe with corrected training values; a started-again run says that it resumes."""
    (tmp_path / "empty_model").mkdir()
    pool = tmp_path / "pool.jsonl"
    _jsonl(pool, pair_rows(12))
    recipe = {"model": str(tmp_path / "empty_model"), "pool": str(pool), "judge": {"callable": "json:dumps"},
              "output_dir": str(tmp_path / "run"), "rounds": 2, "training": {"learning_rate": 1e-3}}  # fmt: skip
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["iterate", "--config", str(path)]) == 2  # stops where the policy loads, in one line
    err = capsys.readouterr().err
    assert "Traceback" not in err and [line for line in err.splitlines() if line.startswith("dora ")] == [
        err.strip().splitlines()[-1]]  # fmt: skip
    path.write_text(yaml.safe_dump({**recipe, "training": {"learning_rate": 1e-4}}))
    assert main(["iterate", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "other settings" not in err and err.strip().splitlines()[-1].startswith("dora iterate: error: ")
    saved = json.loads((tmp_path / "run" / "iterate_config.json").read_text())
    assert saved["training"] == {"learning_rate": 1e-4}
    # a finished round 1 (its report written last): the next start says it resumes, and a changed judge now binds
    (tmp_path / "run" / "round_1").mkdir()
    report = {"round": 1, "policy": str(tmp_path / "empty_model"), "pool": {}, "eval": {}}
    (tmp_path / "run" / "round_1" / "report.json").write_text(json.dumps(report))
    assert main(["iterate", "--config", str(path)]) == 2
    out = capsys.readouterr().out
    assert f"resuming the run in {tmp_path / 'run'} after round 1" in out
    path.write_text(yaml.safe_dump({**recipe, "training": {"learning_rate": 1e-5}}))
    assert main(["iterate", "--config", str(path)]) == 2
    assert "other settings (['training'])" in capsys.readouterr().err


def test_checks_that_need_the_tokenizer(tmp_path, capsys, monkeypatch, tiny_model_dir):
    """Prompts that no --max-length fits, and --chat-template with a tokenizer that has none: refused after the
    tokenizer loads, before any model does."""
    forbid_loads(monkeypatch)
    long_rows = [dict(r, prompt=r["prompt"] * 200) for r in pair_rows(4)]
    _jsonl(tmp_path / "long.jsonl", long_rows)
    argv = ["eval", "preference", "--model", tiny_model_dir, "--ref-model", tiny_model_dir, "--dataset",
            str(tmp_path / "long.jsonl"), "--max-length", "32"]  # fmt: skip
    one_line_error(argv, capsys, watch=(tmp_path,), expect=r"long\.jsonl: every prompt is longer than --max-length 32")
    argv = ["eval", "distalign", "--model", tiny_model_dir, "--data", FIX, "--chat-template"]
    one_line_error(argv, capsys, watch=(tmp_path,), expect="--chat-template: the tokenizer of .* has no chat template")
