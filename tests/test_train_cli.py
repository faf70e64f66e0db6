"""`dora train`: YAML recipe + overrides, `trl dpo`'s own commands, one-line errors before any model loads,
and two CPU processes under accelerate."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml
from bad_inputs import forbid_loads
from conftest import accelerate_launch, pair_rows

from dora.cli import main
from dora.train_cli import UsageError, load_recipe, parse_overrides, preflight

ROOT = os.path.join(os.path.dirname(__file__), "..")


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


@pytest.fixture
def data(tmp_path):
    return write_jsonl(tmp_path / "rows.jsonl", pair_rows(16))


@pytest.fixture
def recipe(tmp_path, tiny_model_dir, data):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "model_name_or_path": tiny_model_dir, "dataset": data, "objective": "dora",
        "learning_rate": "1e-3", "per_device_train_batch_size": 4, "max_steps": 5, "report_to": [],
        "logging_steps": 1,
        "save_strategy": "no", "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
    }))  # fmt: skip
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: the errors under test must come before one (tokenizers may load)."""
    return forbid_loads(monkeypatch)


def one_line_error(capsys, *argv) -> str:
    """Run `dora train ...`; it must fail with exit status 2 and no traceback. Returns the message."""
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("dora train: error:")]
    assert len(lines) == 1, err
    return err[err.index("dora train: error:") + len("dora train: error: ") :].strip()


def test_overrides_parse_as_yaml_values():
    assert parse_overrides(["--a", "1e-5", "--b=x", "--flag", "--lst", "[1, 2]", "--m", "q_proj", "v_proj"]) == {
        "a": 1e-5,
        "b": "x",
        "flag": True,
        "lst": [1, 2],
        "m": ["q_proj", "v_proj"],
    }


def test_yaml_11_booleans_stay_text_for_text_fields(recipe):
    assert parse_overrides(["--save_strategy", "no", "--x", "false"]) == {"save_strategy": "no", "x": False}
    cfg, _ = load_recipe(str(recipe), {"eval_strategy": False})  # as `eval_strategy: no` reads in a YAML file
    assert cfg["eval_strategy"] == "no"


def test_recipe_keys_aliases_and_no_flags(recipe):
    cfg, extra = load_recipe(str(recipe), {"max_steps": 2, "dataset_name": "other.jsonl", "no_disable_dropout": True})
    assert cfg["max_steps"] == 2 and cfg["learning_rate"] == 1e-3 and extra["lora"]["r"] == 4
    assert extra["dataset"] == "other.jsonl" and cfg["disable_dropout"] is False


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"learning_rat": 1.0}, r"unknown key\(s\) 'learning_rat' \(did you mean 'learning_rate'\?\)"),
        ({"use_pef": True}, r"'use_pef' \(did you mean 'use_peft'\?\)"),
        ({"lora": {"rr": 4}}, r"unknown key\(s\) in lora: 'rr' \(did you mean 'r'\?\)"),
        ({"load_in_4bit": True}, r"load_in_4bit=True is not supported by dora train: quantised loading"),
        ({"learning_rate": "fast"}, r"key 'learning_rate': a number expected, got 'fast'"),
    ],
)
def test_recipe_mistakes_name_the_key(recipe, overrides, match, no_model):
    from dora.train_cli.recipe import lora_config

    with pytest.raises(UsageError, match=match):
        cfg, extra = load_recipe(str(recipe), overrides)
        lora_config(extra)


def test_yaml_typo_and_syntax_error(tmp_path, capsys, no_model):
    path = tmp_path / "r.yaml"
    path.write_text("model_name_or_path: x\ndataset: d.jsonl\nper_device_train_batchsize: 4\n")
    assert "did you mean 'per_device_train_batch_size'?" in one_line_error(capsys, "--config", str(path))
    path.write_text("model_name_or_path: x\ndataset: [d.jsonl\n")
    assert one_line_error(capsys, "--config", str(path)).startswith(f"{path}, line 3: not valid YAML")


def test_help_lists_every_field_and_trl_flag(capsys):
    from dora.train_cli.recipe import ALIASES, RECIPE_KEYS, _fields

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in [*_fields(), *RECIPE_KEYS, *ALIASES]:
        assert f"--{name} " in out, name
    assert "--skip-invalid-rows" in out and "--debug" in out


# ------------------------------------------------------------------ each bad input: one line, no model loaded


def test_bad_rows_in_train_and_eval_named(tmp_path, tiny_model_dir, capsys, no_model):
    rows = pair_rows(16)
    rows[2]["chosen"], rows[7]["dora_weight"] = "", float("nan")
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    msg = one_line_error(capsys, "--model_name_or_path", tiny_model_dir, "--dataset_name", train)
    assert msg.splitlines()[0] == (
        f"train dataset {train}, line 3, column 'chosen': empty (2 invalid rows of 16: fix them, or drop them with "
        "--skip-invalid-rows); the others:"
    )
    assert [x.strip().split(",")[0] for x in msg.splitlines()[1:]] == ["line 8"]
    evald = write_jsonl(tmp_path / "eval.jsonl", rows)
    good = write_jsonl(tmp_path / "good.jsonl", pair_rows(8))
    msg = one_line_error(capsys, "--model_name_or_path", tiny_model_dir, "--dataset", good, "--eval_dataset", evald)
    assert msg.startswith(f"eval dataset {evald}, line 3, column 'chosen': empty (2 invalid rows of 16")


def test_skip_invalid_rows_drops_and_counts(tmp_path, tiny_model_dir, caplog, no_model):
    rows = pair_rows(16)
    rows[2]["chosen"] = rows[5]["rejected"] = ""
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg, extra = load_recipe(None, {"model_name_or_path": tiny_model_dir, "dataset": train})
    cfg["output_dir"] = str(tmp_path / "out")
    with caplog.at_level("WARNING"):
        kept = preflight(cfg, extra, skip_invalid=True)["train"]
    assert len(kept) == 14 and "2 of 16 rows dropped as invalid" in caplog.text


def test_broken_jsonl_line(tmp_path, tiny_model_dir, capsys, no_model):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(pair_rows(1)[0]) + "\n" + '{"prompt": "p",, "chosen": "a"}\n')
    msg = one_line_error(capsys, "--model_name_or_path", tiny_model_dir, "--dataset_name", str(path))
    assert msg.startswith(f"{path}, line 2: not valid JSON") and len(msg.splitlines()) == 1


def test_mistyped_dataset_and_model_paths(tmp_path, tiny_model_dir, data, capsys, monkeypatch, no_model):
    monkeypatch.chdir(tmp_path)
    msg = one_line_error(capsys, "--model_name_or_path", tiny_model_dir, "--dataset", "rowz.jsonl")
    assert msg == (
        f"dataset 'rowz.jsonl' not found: no file or folder {tmp_path}/rowz.jsonl; did you mean 'rows.jsonl'?"
    )
    msg = one_line_error(capsys, "--model", "./nope", "--dataset", data)
    assert msg == f"model './nope' not found: no file or folder {tmp_path}/nope"
    msg = one_line_error(
        capsys, "--model_name_or_path", tiny_model_dir, "--ref_model_name_or_path", "../x", "--dataset", data
    )
    assert msg.startswith("ref_model '../x' not found")


def test_adapter_with_a_relative_base_that_is_missing(tmp_path, data, capsys, no_model):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "../models/base"}))
    msg = one_line_error(capsys, "--model_name_or_path", str(adapter), "--dataset", data)
    assert msg.startswith(f"adapter '{adapter}': its base model '../models/base' (adapter_config.json")


def test_listwise_data_with_a_pairwise_loss(tmp_path, tiny_model_dir, capsys, no_model):
    rows = [{"prompt": f"q{i}", "responses": ["a", "b", "c"], "scores": [3, 2, 1]} for i in range(4)]
    path = write_jsonl(tmp_path / "lists.jsonl", rows)
    msg = one_line_error(capsys, "--model_name_or_path", tiny_model_dir, "--dataset", path)
    assert "lists of 3 responses, but loss_type ['sigmoid'] is pairwise (lists of 2 only): use loss_type dpo_pl" in msg


def test_group_dro_without_groups(tiny_model_dir, data, capsys, no_model):
    msg = one_line_error(capsys, "--model_name_or_path", tiny_model_dir, "--dataset", data, "--objective", "group_dro")
    assert "missing column(s) ['group']" in msg


def test_missing_tracker_and_refused_value(tiny_model_dir, data, capsys, monkeypatch, no_model):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    msg = one_line_error(capsys, "--model_name_or_path", tiny_model_dir, "--dataset", data, "--report_to", "wandb")
    assert msg.startswith("report_to names 'wandb', which is not installed: pip install wandb")
    msg = one_line_error(
        capsys, "--model_name_or_path", tiny_model_dir, "--dataset", data, "--activation_offloading", "true"
    )
    assert msg.startswith("activation_offloading=True is not supported by DoRATrainer: use gradient_checkpointing")


def test_eval_strategy_without_eval_data(tiny_model_dir, data, capsys, no_model):
    msg = one_line_error(capsys, "--model_name_or_path", tiny_model_dir, "--dataset", data, "--eval_strategy", "steps")
    assert "eval_strategy='steps' needs eval data" in msg


def test_debug_shows_the_traceback(tiny_model_dir, no_model):
    with pytest.raises(FileNotFoundError, match="not found"):
        main(["train", "--debug", "--model_name_or_path", tiny_model_dir, "--dataset", "nope.jsonl"])


# ------------------------------------------------------------------ runs


def test_train_command_with_lora(recipe, tmp_path):
    out = tmp_path / "out"
    assert main(["train", "--config", str(recipe), "--output_dir", str(out), "--max_steps", "2"]) == 0
    assert (out / "adapter_model.safetensors").exists() and (out / "tokenizer.json").exists()


# `trl dpo`'s two documented commands (trl/scripts/dpo.py), unchanged but for the command name, the model and
# dataset (a tiny local model; a saved dataset with train and test splits) and max_steps 1000 -> 2
TRL_FULL = ("--learning_rate 5.0e-7 --num_train_epochs 1 --per_device_train_batch_size 2 --max_steps 2 "
            "--gradient_accumulation_steps 8 --eval_strategy steps --eval_steps 50 --output_dir {out} "
            "--no_remove_unused_columns")  # fmt: skip
TRL_LORA = TRL_FULL.replace("5.0e-7", "5.0e-6") + " --use_peft --lora_r 32 --lora_alpha 16"


@pytest.mark.slow
@pytest.mark.parametrize("command", [TRL_FULL, TRL_LORA], ids=["full", "lora"])
def test_trl_dpo_commands_run_unchanged(tmp_path, tiny_model_dir, command, capsys, one_thread):
    from datasets import Dataset, DatasetDict

    DatasetDict(
        {"train": Dataset.from_list(pair_rows(32)), "test": Dataset.from_list(pair_rows(4, seed=1))}
    ).save_to_disk(str(tmp_path / "prefs"))
    out = tmp_path / "out"
    argv = ["--dataset_name", str(tmp_path / "prefs"), "--model_name_or_path", tiny_model_dir]
    assert main(["train", *argv, *command.format(out=out).split()]) == 0
    printed = capsys.readouterr().out
    assert "robust batch 2 rows (2 per device x 1 process(es); not the 8 accumulation steps" in printed
    assert "eval_loss" in printed  # the test split was evaluated
    weights = "adapter_model.safetensors" if "--use_peft" in command else "model.safetensors"
    assert (out / weights).exists()
    if "--use_peft" in command:
        cfg = json.loads((out / "adapter_config.json").read_text())
        assert cfg["r"] == 32 and cfg["lora_alpha"] == 16 and cfg["lora_dropout"] == 0.05


@pytest.mark.slow
def test_jsonl_with_peft_flags_and_relative_adapter_base(
    tmp_path, tiny_model_dir, data, capsys, monkeypatch, one_thread
):
    """trl dpo's LoRA flags on a jsonl file; then the adapter it wrote, with its base written relative to the
    adapter's folder, trained again from another working directory."""
    out = tmp_path / "first"
    argv = ["--model_name_or_path", tiny_model_dir, "--dataset_name", data, "--use_peft", "--lora_r", "8",
            "--lora_target_modules", "q_proj", "v_proj", "--max_steps", "2", "--per_device_train_batch_size", "8",
            "--output_dir", str(out), "--save_strategy", "no"]  # fmt: skip
    assert main(["train", *argv]) == 0
    printed = capsys.readouterr().out
    assert "reference    the base model: the policy with its LoRA adapter disabled" in printed
    assert "objective    dora -> DoRA: KL-DRO over the calibrated losses" in printed
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    assert cfg["target_modules"] and sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]
    cfg["base_model_name_or_path"] = os.path.relpath(tiny_model_dir, out)
    cfg_path.write_text(json.dumps(cfg))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    argv = ["--model_name_or_path", str(out), "--dataset", data, "--max_steps", "1", "--output_dir", "again",
            "--per_device_train_batch_size", "8", "--save_strategy", "no"]  # fmt: skip
    assert main(["train", *argv]) == 0
    assert "reference    the given adapter, frozen as a copy" in capsys.readouterr().out
    assert (elsewhere / "again" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_summary_says_what_the_objective_reduces_to(tmp_path, tiny_model_dir, capsys, caplog, one_thread):
    rows = [{k: v for k, v in r.items() if k != "dora_weight"} for r in pair_rows(8)]
    path = write_jsonl(tmp_path / "plain.jsonl", rows)
    argv = ["--model_name_or_path", tiny_model_dir, "--dataset", path, "--max_steps", "1", "--output_dir",
            str(tmp_path / "o"), "--save_strategy", "no", "--per_device_train_batch_size", "2",
            "--gradient_accumulation_steps", "2"]  # fmt: skip
    with caplog.at_level("WARNING"):
        assert main(["train", *argv]) == 0
    printed = capsys.readouterr().out
    assert "objective    dora -> KL-DRO (objective kl_dro): every weight is 1" in printed
    assert "reference    a frozen copy of the initial policy (no ref_model given)" in printed
    assert "objective dora sees 2 row(s) per step" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        again = ["--objective", "mean", "--dro_accumulation", "full", "--overwrite_output_dir"]
        assert main(["train", *argv, *again]) == 0
    printed = capsys.readouterr().out
    assert "objective    mean -> DPO (ERM)" in printed
    assert "robust batch 4 rows (2 per device x 1 process(es) x 2 accumulation steps" in printed
    assert "row(s) per step" not in caplog.text


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(recipe, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        *accelerate_launch(os.path.join(ROOT, "recipes", "accelerate_configs", "cpu2.yaml")),
        "-m",
        "dora",
        "train",
        "--config",
        str(recipe),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "adapter_model.safetensors").exists()
    # 16 rows, 2 processes x 4 rows a step: 2 steps are one epoch (one process would be at 0.5)
    assert "'epoch': '1'" in res.stdout, res.stdout[-2000:]
    assert res.stdout.count("DoRA run") == 1  # the start-up summary on rank 0 only
    assert "robust batch 8 rows (4 per device x 2 process(es))" in res.stdout


def test_yes_no_words_and_numbers_are_read_by_the_field_type(recipe, no_model):
    """As `trl dpo` (HfArgumentParser's string_to_bool): yes/no/on/off/true/false set a boolean field, also one
    whose default is None and the recipe's own use_peft; an explicit use_peft false wins over --lora_* flags.
    A text for a number field whose default is None is refused, as is a list for a one-path key."""
    from dora.train_cli.recipe import lora_config

    words = {"gradient_checkpointing": "no", "bf16": "off", "trust_remote_code": "no", "use_peft": "no",
             "disable_dropout": "yes", "lora_r": 4}  # fmt: skip
    cfg, extra = load_recipe(str(recipe), parse_overrides([f"--{k}={v}" for k, v in words.items()]))
    assert cfg["gradient_checkpointing"] is False and cfg["bf16"] is False and cfg["trust_remote_code"] is False
    assert cfg["disable_dropout"] is True and extra["use_peft"] is False
    assert lora_config(extra) is None  # full fine-tuning, although the recipe has a lora mapping and --lora_r
    for overrides, match in [
        ({"bf16": "maybe"}, r"key 'bf16': true or false expected, got 'maybe'"),
        ({"use_peft": "perhaps"}, r"key 'use_peft': true or false expected, got 'perhaps'"),
        ({"beta": "high"}, r"key 'beta': a number expected, got 'high'"),
        ({"max_prompt_length": "abc"}, r"key 'max_prompt_length': a number expected, got 'abc'"),
        ({"ld_alpha": "abc"}, r"key 'ld_alpha': a number expected, got 'abc'"),
        ({"dataset": ["a.jsonl", "b.jsonl"]}, r"key 'dataset': one value expected, got 2"),
        ({"debug": "underflow_overflow"}, r"key 'debug': dora train's --debug"),
    ]:
        with pytest.raises(UsageError, match=match):
            load_recipe(str(recipe), overrides)


def test_more_mistakes_before_the_model_loads(tmp_path, tiny_model_dir, data, capsys, no_model):
    """A checkpoint that is not there, a weight column that is not there, an empty file, a mistyped eval file,
    a missing response and a NaN weight: one line each, before any model loads."""
    base = ["--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path / "out")]
    missing = str(tmp_path / "out" / "checkpoint-99")
    assert one_line_error(capsys, *base, "--dataset", data, "--resume_from_checkpoint", missing) == (
        f"resume_from_checkpoint {missing!r}: no such checkpoint folder"
    )
    msg = one_line_error(capsys, *base, "--dataset", data, "--weight_column", "hh")
    assert msg.startswith(f"train dataset {data}: no column 'hh' (weight_column); it has [")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert one_line_error(capsys, *base, "--dataset", str(empty)) == f"{empty}: empty file, no rows"
    msg = one_line_error(capsys, *base, "--dataset", data, "--eval_dataset", str(tmp_path / "evl.jsonl"),
                         "--eval_strategy", "steps")  # fmt: skip
    assert msg.startswith(f"eval_dataset '{tmp_path / 'evl.jsonl'}' not found")
    rows = pair_rows(6)
    del rows[1]["rejected"]
    rows[3]["dora_weight"] = float("nan")
    rows[4]["dora_weight"] = None
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    assert main(["train", *base, "--dataset", bad]) == 2
    err = capsys.readouterr().err
    assert "line 2, column 'rejected': missing (null or absent)" in err
    assert "line 4, column 'dora_weight': nan is not a finite number in [0.0, 1e+30]" in err
    assert "line 5, column 'dora_weight': missing (null, absent or NaN), a finite number in [0.0, 1e+30]" in err
    assert not (tmp_path / "out").exists()


def test_python_api_takes_lists_of_rows(tmp_path, tiny_model_dir, one_thread):
    """DoRATrainer and evaluate() take raw rows as a list of dicts, as a Dataset; other objects are a one-line
    TypeError; bad rows name the Python API's way to drop them."""
    from dora import DoRAConfig, DoRATrainer

    args = DoRAConfig(output_dir=str(tmp_path / "o"), per_device_train_batch_size=4, max_steps=1, report_to=[],
                      save_strategy="no", disable_tqdm=True, objective="mean")  # fmt: skip
    t = DoRATrainer(model=tiny_model_dir, args=args, train_dataset=pair_rows(8))
    assert len(t.train_dataset) == 8 and "completion_ids" in t.train_dataset.column_names
    assert "eval_loss" in t.evaluate(eval_dataset=pair_rows(4))
    with pytest.raises(TypeError, match="train dataset: expected a datasets.Dataset, a list of row dicts"):
        DoRATrainer(model=tiny_model_dir, args=args, train_dataset=42)
    rows = pair_rows(4)
    rows[2]["chosen"] = ""
    with pytest.raises(ValueError, match=r"drop it with dora.data.validate_rows\(rows, skip_invalid=True\)"):
        DoRATrainer(model=tiny_model_dir, args=args, train_dataset=rows)


def test_objective_ess_warning_and_the_batch_advice(tmp_path):
    from dora import DoRAConfig
    from dora.trainer.summary import ess_warning

    def cfg(**kw):
        return DoRAConfig(output_dir=str(tmp_path), report_to=[], per_device_train_batch_size=8, **kw)

    text = ess_warning(cfg(), 2.7)  # the quickstart's settings: ESS 1.8-2.7 of 8
    assert text.startswith("dora/ess 2.7 of 8 rows") and "dro_accumulation='full'" in text
    assert ess_warning(cfg(), 3.3) is None  # 40% of the batch and more: no warning
    assert ess_warning(cfg(objective="mean"), 1.0) is None  # no tilt to blame
    full = cfg(dro_accumulation="full", gradient_accumulation_steps=2)
    text = ess_warning(full, 4.0)  # of 16 rows
    assert "of 16 rows" in text and "dro_accumulation" not in text and "gradient_accumulation_steps" in text


def test_final_evaluation_runs_once(tmp_path, tiny_model_dir, data, capsys, monkeypatch, one_thread):
    from dora.trainer import DoRATrainer

    calls = []
    evaluate = DoRATrainer.evaluate

    def counted(self, *args, **kwargs):
        calls.append(self.state.global_step)
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(DoRATrainer, "evaluate", counted)
    argv = ["train", "--model_name_or_path", tiny_model_dir, "--dataset", data, "--eval_dataset", data,
            "--eval_strategy", "steps", "--eval_steps", "2", "--max_steps", "2", "--save_strategy", "no",
            "--per_device_train_batch_size", "8", "--report_to", "none",
            "--output_dir", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 0
    assert calls == [2]  # the Trainer's evaluation at the last step, not a second one after it
    printed = [x for x in capsys.readouterr().out.splitlines() if "'eval_loss'" in x]
    assert len(printed) == 2  # the Trainer's log line, and the final metrics printed once
