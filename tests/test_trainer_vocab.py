"""Source and group names the trainer reads: a custom group column holds only groups, listwise ``sources``
feed the per-source metrics."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from conftest import pair_rows, trainer_config
from datasets import Dataset

from dora import DoRAConfig, DoRATrainer

config = partial(trainer_config, per_device_train_batch_size=4, learning_rate=1e-6)


def test_custom_group_column_holds_only_groups(tmp_path, tiny_model_dir):
    rows = [
        dict(r, domain=["math", "chat"][i % 2], chosen_source="human", rejected_source=["gpt", "llama"][i % 2])
        for i, r in enumerate(pair_rows(4))
    ]
    t = DoRATrainer(model=tiny_model_dir, args=config(tmp_path, objective="group_dro", group_column="domain"),
                    train_dataset=Dataset.from_list(rows))  # fmt: skip
    assert t.group_vocab == {"chat": 0, "math": 1}
    assert t.group_state.alpha.numel() == 2
    # no phantom group keeps weight: two groups of equal loss share the objective's mass evenly
    torch.testing.assert_close(t.group_state.alpha, torch.full((2,), 0.5, dtype=torch.float64))
    assert set(t.source_vocab) == {"human", "gpt", "llama"}


def test_listwise_sources_give_per_source_metrics(tmp_path, tiny_model_dir):
    lists = [
        {"prompt": f"Q: {i}+1=\nA: ", "responses": [f"{i + 1}", f"{i + 2}"], "scores": [1.0, 0.0],
         "sources": [["human", "gpt"][i % 2], "gpt"]}
        for i in range(4)
    ]  # fmt: skip
    t = DoRATrainer(model=tiny_model_dir, args=config(tmp_path, loss_type="dpo_pl", objective="mean"),
                    train_dataset=Dataset.from_list(lists))  # fmt: skip
    assert set(t.source_vocab) == {"human", "gpt"}
    t.train()
    logs = t.state.log_history[0]
    assert {"source/human/loss", "source/gpt/loss", "source/human/accuracy"} <= set(logs)
    assert logs["source/human/loss"] == pytest.approx(logs["loss"], rel=0.5)  # a loss, not a count


def test_group_dro_rows_need_a_group(tmp_path, tiny_model_dir):
    rows = [dict(r, group="a" if i != 2 else None) for i, r in enumerate(pair_rows(6))]
    args = DoRAConfig(output_dir=str(tmp_path), objective="group_dro", report_to=[], max_steps=1)
    with pytest.raises(ValueError, match="row 3, column 'group': no group"):  # 1-based rows
        DoRATrainer(model=tiny_model_dir, args=args, train_dataset=Dataset.from_list(rows))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['group'\]"):
        DoRATrainer(model=tiny_model_dir, args=args, train_dataset=Dataset.from_list(pair_rows(6)))
