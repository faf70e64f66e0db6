"""The weight histogram reaches tensorboard's writer (and wandb's, when a run is active) at each log."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from dora.trainer import WeightHistogramCallback


class FakeWriter:
    def __init__(self):
        self.calls = []

    def add_histogram(self, tag, values, step):
        self.calls.append((tag, values.clone(), step))


def test_histogram_goes_to_tensorboard_and_window_resets():
    writer = FakeWriter()
    trainer = SimpleNamespace(_weights_seen=[torch.tensor([0.5, 2.0]), torch.tensor([1.0])],
                              callback_handler=SimpleNamespace(callbacks=[SimpleNamespace(tb_writer=writer)]))
    cb = WeightHistogramCallback(trainer)
    state = SimpleNamespace(is_world_process_zero=True, global_step=7)
    cb.on_log(SimpleNamespace(report_to=["tensorboard"]), state, None)
    assert len(writer.calls) == 1
    tag, values, step = writer.calls[0]
    assert tag == "dora/weights" and step == 7 and values.tolist() == [0.5, 2.0, 1.0]
    assert trainer._weights_seen == []  # the next histogram covers the next logging window only
    cb.on_log(SimpleNamespace(report_to=["tensorboard"]), state, None)
    assert len(writer.calls) == 1  # nothing new seen, nothing logged


def test_other_ranks_and_other_integrations_log_nothing():
    writer = FakeWriter()
    trainer = SimpleNamespace(_weights_seen=[torch.tensor([1.0])],
                              callback_handler=SimpleNamespace(callbacks=[SimpleNamespace(tb_writer=writer)]))
    cb = WeightHistogramCallback(trainer)
    cb.on_log(SimpleNamespace(report_to=["tensorboard"]), SimpleNamespace(is_world_process_zero=False, global_step=1),
              None)
    cb.on_log(SimpleNamespace(report_to=["wandb"]), SimpleNamespace(is_world_process_zero=True, global_step=1), None)
    assert writer.calls == []
