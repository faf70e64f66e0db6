"""The weight histogram's window: kept only while a tracker draws it, emptied at each log, bounded.
(What the trackers receive is read back from their files in tests/test_trackers.py.)"""

from __future__ import annotations

import torch
from conftest import pair_rows
from datasets import Dataset
from transformers import TrainerState

from dora import DoRAConfig, DoRATrainer
from dora.trainer import WeightHistogramCallback


def _trainer(tmp_path, model_dir, report_to):
    args = DoRAConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2, logging_steps=1,
                      report_to=report_to, save_strategy="no", disable_tqdm=True)  # fmt: skip
    return DoRATrainer(model=model_dir, args=args, train_dataset=Dataset.from_list(pair_rows(8)))


def test_weights_kept_only_with_a_tracker(tmp_path, tiny_model_dir, one_thread):
    quiet = _trainer(tmp_path, tiny_model_dir, [])
    quiet.train()
    assert quiet._weight_histogram is None
    assert not any(isinstance(cb, WeightHistogramCallback) for cb in quiet.callback_handler.callbacks)

    seen = []
    tb = _trainer(tmp_path, tiny_model_dir, ["tensorboard"])
    add = tb._weight_histogram.add
    tb._weight_histogram.add = lambda w: (seen.append(w.clone()), add(w))
    tb.train()
    assert [w.numel() for w in seen] == [4, 4]  # each step's rows, handed over once
    assert tb._weight_histogram.window == [] and tb._weight_histogram.kept == 0  # emptied by the last log


def test_window_is_bounded_and_keeps_the_latest(tmp_path):
    cb = WeightHistogramCallback(trainer=None, max_kept=5)
    values = torch.arange(30, dtype=torch.float32)
    for chunk in values.split(3):
        cb.add(chunk)
        assert cb.kept == sum(w.numel() for w in cb.window) < 5 + 3
    assert torch.cat(cb.window)[-5:].tolist() == values[-5:].tolist()
    state = TrainerState(is_world_process_zero=True, global_step=10)
    cb.on_log(DoRAConfig(output_dir=str(tmp_path), report_to=[]), state, None)
    assert cb.window == [] and cb.kept == 0
