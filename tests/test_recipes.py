"""Recipes cannot rot: every recipe matches the paper setup it claims, parses, builds its DoRAConfig and trains
two steps with a tiny local model and fixture data, its tracker on (in process, through the train CLI's functions); the
classify recipes run; the accelerate configs load under accelerate's own schema; and a real recipe trains
under `accelerate launch --config_file recipes/accelerate_configs/cpu2.yaml` on two CPU processes."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess

import pytest
import torch
import yaml
from conftest import accelerate_launch

from dora.cli import main
from dora.train_cli import build, load_recipe

ROOT = os.path.join(os.path.dirname(__file__), "..")
RECIPES = os.path.join(ROOT, "recipes")
TRAIN_RECIPES = sorted(
    p
    for p in glob.glob(os.path.join(RECIPES, "*", "*.yaml"))
    if "accelerate_configs" not in p and not p.endswith("classify.yaml")
)
CLASSIFY_RECIPES = sorted(glob.glob(os.path.join(RECIPES, "**", "*classify.yaml"), recursive=True))
ACCELERATE_CONFIGS = sorted(glob.glob(os.path.join(RECIPES, "accelerate_configs", "*.yaml")))
rel = lambda p: os.path.relpath(p, RECIPES)  # noqa: E731

# The paper's HH setup (DoRA, arXiv 2504.05831), written out here independently of the recipes.
FAMILIES = {"hh_mistral7b": "mistralai/Mistral-7B-v0.1", "hh_llama3_8b": "meta-llama/Meta-Llama-3-8B"}
# recipe name -> (loss_type, objective, extra keys that must hold)
METHODS = {
    "dpo": ("sigmoid", "mean", {}),
    "dora_dpo": ("sigmoid", "dora", {"dora_placement": "inside"}),
    "rdpo": ("robust", "mean", {"label_smoothing": 0.1}),
    "dr_dpo": ("sigmoid", "dr_dpo", {"dr_dpo_beta": 1.0}),
    "simpo": ("simpo", "mean", {"beta": 2.0, "simpo_gamma": 0.5}),  # SimPO's own beta, gamma/beta = 0.25
    "dpo_pl": ("dpo_pl", "mean", {}),
    "dora_dpo_pl": ("dpo_pl", "dora", {"dora_placement": "inside"}),
    "lire": ("lire", "mean", {"lire_temperature": 2.0}),
    "dora_lire": ("lire", "dora", {"dora_placement": "outside", "lire_temperature": 2.0}),
}
EFFECTIVE_BATCH = 32


def _recipe(path: str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _assumed_gpus(path: str) -> int:
    """The GPU count a recipe's header says its effective batch assumes: '... x 8 GPUs = 32'."""
    head = "".join(line for line in open(path) if line.startswith("#"))
    m = re.search(r"x (\d+) GPUs? = (\d+)", head)
    assert m, f"{rel(path)}: the header must say 'per device ... x N GPUs = 32'"
    assert int(m.group(2)) == EFFECTIVE_BATCH, rel(path)
    return int(m.group(1))


def test_every_method_has_a_recipe():
    names = {rel(p) for p in TRAIN_RECIPES}
    for family in FAMILIES:
        for method in METHODS:
            assert f"{family}/{method}.yaml" in names
    assert {"ultrafeedback/dpo.yaml", "ultrafeedback/dora_dpo.yaml", "ultrafeedback/classify.yaml"} <= {
        rel(p) for p in TRAIN_RECIPES + CLASSIFY_RECIPES
    }
    for p in TRAIN_RECIPES + CLASSIFY_RECIPES:
        head = "".join(line for line in open(p) if line.startswith("#"))
        assert head.splitlines()[0].startswith("#"), f"{rel(p)} must say what it reproduces"
        assert "Hardware" in head, f"{rel(p)} must say the expected hardware"


@pytest.mark.parametrize("path", TRAIN_RECIPES, ids=rel)
def test_recipe_matches_the_paper_setup(path):
    r = _recipe(path)
    family, name = rel(path).split(os.sep)
    name = name.removesuffix(".yaml")
    assert r["learning_rate"] == pytest.approx(1e-5) and r["lr_scheduler_type"] == "cosine"
    assert r["warmup_steps"] == pytest.approx(0.03) and r["num_train_epochs"] == 1
    assert r["lora"]["r"] == 8 and r["lora"]["alpha"] == 16
    assert sorted(r["lora"]["target_modules"]) == ["q_proj", "v_proj"]
    gpus = _assumed_gpus(path)
    assert r["per_device_train_batch_size"] * r["gradient_accumulation_steps"] * gpus == EFFECTIVE_BATCH
    if family == "ultrafeedback":
        head = open(path).read()
        assert "HuggingFaceH4/ultrafeedback_binarized" in head and "train_prefs" in head
        assert r["loss_type"] == "sigmoid" and r["objective"] == {"dpo": "mean", "dora_dpo": "dora"}[name]
        return
    assert r["model_name_or_path"] == FAMILIES[family]
    assert r["max_length"] == 512 and r.get("dro_lambda", 1.0) == 1.0
    loss, objective, extra = METHODS[name]
    assert r["loss_type"] == loss and r["objective"] == objective
    assert r.get("beta") == extra.get("beta", 0.1)
    for key, value in extra.items():
        assert r.get(key, value if key == "dora_placement" and value == "inside" else None) == value, key


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    d = tmp_path_factory.mktemp("recipe_data")
    hh = []  # Anthropic HH layout: no prompt column, the dialogue prefix is shared
    for i in range(8):
        q = f"\n\nHuman: What is {i}+1?\n\nAssistant:"
        hh.append(
            {
                "chosen": f"{q} It is {i + 1}.",
                "rejected": f"{q} Maybe {i + 3}, I am sure.",
                "source": "human" if i % 2 else "synthetic",
                "dora_weight": 0.5 + (i % 3) * 0.5,
            }
        )
    lists = [
        {
            "prompt": f"Q: {i}+1=\nA: ",
            "responses": [f"{i + 1}", f"= {i + 1}", f"{i + 2}", f"= {i}"],
            "scores": [3.0, 2.0, 1.0, 0.0],
            "source": "human",
            "dora_weight": 1.0 + 0.1 * i,
        }
        for i in range(8)
    ]
    (d / "hh.jsonl").write_text("\n".join(json.dumps(r) for r in hh))
    (d / "lists.jsonl").write_text("\n".join(json.dumps(r) for r in lists))
    return d


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny_overrides(recipe: dict, fixtures, model_dir: str, out) -> dict:
    """A tiny model and the fixture data; the recipe's tracker stays on (it writes under ``out``)."""
    listwise = recipe["loss_type"] in ("dpo_pl", "lire", "rrhf")
    return {
        "model_name_or_path": model_dir, "dataset": str(fixtures / ("lists.jsonl" if listwise else "hh.jsonl")),
        "output_dir": str(out), "max_steps": 2, "per_device_train_batch_size": 2, "bf16": False,
        "gradient_checkpointing": False, "torch_dtype": "float32", "save_strategy": "no",
        "max_length": 128, "logging_steps": 1, "max_prompt_length": None, "disable_tqdm": True,
    }  # fmt: skip


@pytest.mark.parametrize("path", TRAIN_RECIPES, ids=rel)
def test_recipe_trains_two_steps(path, fixtures, tiny_model_dir, tmp_path, one_thread):
    from peft import PeftModel

    recipe = _recipe(path)
    config, extra = load_recipe(path, _tiny_overrides(recipe, fixtures, tiny_model_dir, tmp_path))
    trainer, _ = build(config, extra)
    # the recipe's own fields reach the config (only the overridden ones changed)
    for key in ("learning_rate", "gradient_accumulation_steps", "beta", "num_train_epochs"):
        assert getattr(trainer.args, key) == pytest.approx(recipe[key]), key
    assert trainer.args.lr_scheduler_type.value == recipe["lr_scheduler_type"]
    assert trainer.args.get_warmup_steps(1000) == 30  # warmup_steps 0.03 is a ratio of the steps
    assert trainer.args.loss_type == [recipe["loss_type"]] and trainer.args.objective == recipe["objective"]
    assert isinstance(trainer.model, PeftModel)  # the recipe's LoRA stays on: the tiny Llama has q/v_proj
    assert set(trainer.model.peft_config["default"].target_modules) == set(recipe["lora"]["target_modules"])
    assert trainer.args.report_to == recipe["report_to"]
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))  # two finite steps
    assert trainer.state.global_step == 2
    _assert_tensorboard_steps(tmp_path, losses)


def _assert_tensorboard_steps(out, losses):
    """The recipes' tracker (tensorboard) wrote each step's loss once, from one process, and the weights."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = glob.glob(os.path.join(out, "runs", "*", "events.out.tfevents.*"))
    assert len(files) == 1
    ea = EventAccumulator(files[0], size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    assert [e.step for e in ea.Scalars("train/loss")] == list(range(1, len(losses) + 1))
    assert [e.value for e in ea.Scalars("train/loss")] == pytest.approx(losses, rel=1e-6)
    assert [e.step for e in ea.Histograms("train/dora/weights")] == list(range(1, len(losses) + 1))


@pytest.mark.parametrize("path", CLASSIFY_RECIPES, ids=rel)
def test_classify_recipe_runs(path, tmp_path):
    rows = [
        {
            "prompt": f"q{i}",
            "chosen": ("ok " if i % 3 else "Certainly! ") + str(i),
            "rejected": "As an AI, " + str(i + 1),
            "source": "human" if i % 3 else "synthetic",
        }
        for i in range(60)
    ]
    data = tmp_path / "mix.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    assert main(["classify", "--config", path, "--dataset", str(data), "--output", str(out), "--folds", "3"]) == 0
    assert (out / "data.jsonl").exists() and (out / "report.json").exists()
    annotated = [json.loads(line) for line in open(out / "data.jsonl")]
    assert len(annotated) == 60 and all(r["dora_weight"] > 0 for r in annotated)


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=rel)
def test_accelerate_config_loads_with_accelerate(path):
    """accelerate's own loader rejects unknown top-level keys; nested keys must be `accelerate launch` flags."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    config = load_config_from_file(path)
    flags = {a.dest for a in launch_command_parser()._actions}
    for key in list(config.fsdp_config) + list(config.deepspeed_config):
        assert key in flags, f"{rel(path)}: {key} is not an accelerate launch option"
    name = os.path.basename(path)
    kind = {"ddp.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP", "zero2.yaml": "DEEPSPEED", "zero3.yaml": "DEEPSPEED",
            "cpu2.yaml": "MULTI_GPU", "fsdp_cpu2.yaml": "FSDP", "zero3_cpu2.yaml": "DEEPSPEED"}[name]  # fmt: skip
    assert config.distributed_type.value == kind
    if name.startswith("fsdp"):
        assert config.fsdp_config["fsdp_version"] == 2
    if name == "fsdp_cpu2.yaml":  # the plugin of fsdp.yaml, on two CPU processes in float32
        assert config.use_cpu and config.num_processes == 2 and config.mixed_precision == "no"
        fsdp = load_config_from_file(os.path.join(os.path.dirname(path), "fsdp.yaml")).fsdp_config
        assert config.fsdp_config == fsdp
    if name.startswith("zero"):
        assert config.deepspeed_config["zero_stage"] == int(name[4])
    if name == "zero3_cpu2.yaml":  # the ZeRO-3 settings of zero3.yaml, on two CPU processes in float32
        assert config.use_cpu and config.num_processes == 2 and config.mixed_precision == "no"
        zero3 = load_config_from_file(os.path.join(os.path.dirname(path), "zero3.yaml")).deepspeed_config
        assert config.deepspeed_config == zero3
    if name == "cpu2.yaml":
        assert config.use_cpu and config.num_processes == 2 and config.mixed_precision == "no"


@pytest.mark.slow
def test_accelerate_launch_cpu2_trains_a_recipe(fixtures, tiny_model_dir, tmp_path):
    """The DoRA-DPO HH recipe as written (global-batch DRO over the full accumulated batch) on two CPU
    processes: 8 rows, 2 processes x 2 rows x 2 accumulation steps make one step exactly one epoch; one
    process would reach epoch 0.5."""
    recipe = os.path.join(RECIPES, "hh_mistral7b", "dora_dpo.yaml")
    out = tmp_path / "out"
    over = {**_tiny_overrides(_recipe(recipe), fixtures, tiny_model_dir, out), "max_steps": 1,
            "save_strategy": "steps", "save_steps": 1}  # fmt: skip
    flags = [tok for k, v in over.items() for tok in (f"--{k}", json.dumps(v) if not isinstance(v, str) else v)]
    cmd = [*accelerate_launch(os.path.join(RECIPES, "accelerate_configs", "cpu2.yaml")), "-m", "dora", "train",
           "--config", recipe, *flags]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    assert (out / "adapter_model.safetensors").exists() and (out / "tokenizer.json").exists()
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and state["epoch"] == pytest.approx(1.0)
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 1 and losses[0] == losses[0]
    _assert_tensorboard_steps(out, losses)  # two processes, one writer, one event per step
