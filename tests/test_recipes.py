"""Every recipe parses, builds its DoRAConfig and trains two steps with a tiny local model and fixture data,
so a recipe cannot rot; the classify recipes run too."""

from __future__ import annotations

import glob
import json
import os

import pytest
import yaml

from dora.cli import main
from dora.train_cli import build, load_recipe

ROOT = os.path.join(os.path.dirname(__file__), "..")
TRAIN_RECIPES = sorted(
    p
    for p in glob.glob(os.path.join(ROOT, "recipes", "*", "*.yaml"))
    if "accelerate_configs" not in p and not p.endswith("classify.yaml")
)
CLASSIFY_RECIPES = sorted(glob.glob(os.path.join(ROOT, "recipes", "**", "*classify.yaml"), recursive=True))


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


def test_recipes_exist():
    names = {os.path.relpath(p, os.path.join(ROOT, "recipes")) for p in TRAIN_RECIPES}
    for family in ("hh_mistral7b", "hh_llama3_8b"):
        for r in ("dpo", "dora_dpo", "rdpo", "dr_dpo", "simpo", "dpo_pl", "lire"):
            assert f"{family}/{r}.yaml" in names
    assert {"ultrafeedback/dpo.yaml", "ultrafeedback/dora_dpo.yaml"} <= names
    for p in TRAIN_RECIPES + CLASSIFY_RECIPES:
        assert open(p).readline().startswith("#"), f"{p} must say what it reproduces"


@pytest.mark.parametrize("path", TRAIN_RECIPES, ids=lambda p: os.path.relpath(p, os.path.join(ROOT, "recipes")))
def test_recipe_trains_two_steps(path, fixtures, tiny_model_dir, tmp_path):
    with open(path) as f:
        recipe = yaml.safe_load(f)
    listwise = recipe["loss_type"] in ("dpo_pl", "lire", "rrhf")
    overrides = {
        "model_name_or_path": tiny_model_dir, "dataset": str(fixtures / ("lists.jsonl" if listwise else "hh.jsonl")),
        "output_dir": str(tmp_path), "max_steps": 2, "per_device_train_batch_size": 2, "bf16": False,
        "gradient_checkpointing": False, "report_to": [], "torch_dtype": "float32", "save_strategy": "no",
        "max_length": 128, "logging_steps": 1, "max_prompt_length": None,
    }  # fmt: skip
    config, extra = load_recipe(path, overrides)
    for key in ("learning_rate", "num_train_epochs", "beta", "objective", "lora"):
        assert key in recipe, f"{path}: {key} missing"
    trainer = build(config, extra)
    assert trainer.args.loss_type == [recipe["loss_type"]] and trainer.args.objective == recipe["objective"]
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(x == x for x in losses)  # two finite steps
    assert trainer.args.gradient_accumulation_steps == recipe["gradient_accumulation_steps"]


@pytest.mark.parametrize("path", CLASSIFY_RECIPES, ids=os.path.basename)
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
