"""Callbacks: TR-DPO's reference sync and the calibration-weight histogram for the trackers."""

from __future__ import annotations

import torch
from transformers import Trainer, TrainerCallback

from dora.logprobs import unwrap_causal_lm

__all__ = ["SyncReferenceCallback", "WeightHistogramCallback", "HISTOGRAM_TRACKERS", "MAX_WEIGHTS_KEPT"]


class SyncReferenceCallback(TrainerCallback):
    """TR-DPO (Gorbatovski et al. 2024, arXiv 2404.09656, Eq. 4), as TRL's ``sync_ref_model``: every
    ``ref_model_sync_steps`` optimizer steps, ref <- alpha * policy + (1 - alpha) * ref (soft update)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    @torch.no_grad()
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % args.ref_model_sync_steps:
            return
        policy = unwrap_causal_lm(self.trainer.accelerator.unwrap_model(self.trainer.model))
        ref = unwrap_causal_lm(self.trainer.ref_model)
        for r, p in zip(ref.parameters(), policy.parameters(), strict=True):
            r.data.mul_(1.0 - args.ref_model_mixup_alpha).add_(p.data, alpha=args.ref_model_mixup_alpha)


HISTOGRAM_TRACKERS = ("tensorboard", "wandb", "trackio")
MAX_WEIGHTS_KEPT = 65536


class WeightHistogramCallback(TrainerCallback):
    """The calibration weights of the training rows seen since the last log, written at each log as the histogram
    ``train/dora/weights`` to tensorboard, wandb and trackio (the trackers in ``report_to``), by rank 0 only.
    The trainer hands the weights over only while this callback is on; at most ``MAX_WEIGHTS_KEPT`` (the most
    recent) are kept per logging window."""

    def __init__(self, trainer: Trainer, max_kept: int = MAX_WEIGHTS_KEPT):
        self.trainer = trainer
        self.max_kept = max_kept
        self.window: list[torch.Tensor] = []
        self.kept = 0

    def add(self, weights: torch.Tensor) -> None:
        self.window.append(weights.detach().float().cpu().flatten())
        self.kept += self.window[-1].numel()
        while self.kept - self.window[0].numel() >= self.max_kept:
            self.kept -= self.window.pop(0).numel()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.window or not state.is_world_process_zero:
            return
        values = torch.cat(self.window)[-self.max_kept :]
        self.window, self.kept = [], 0
        tag, step = "train/dora/weights", state.global_step
        if "tensorboard" in args.report_to:
            for cb in self.trainer.callback_handler.callbacks:
                writer = getattr(cb, "tb_writer", None)
                if writer is not None:
                    writer.add_histogram(tag, values, step)
        if "wandb" in args.report_to:
            import wandb

            if wandb.run is not None:  # a row of its own at this step ("train/global_step" is wandb's x-axis)
                wandb.log({tag: wandb.Histogram(values.numpy()), "train/global_step": step})
        if "trackio" in args.report_to:
            import trackio

            trackio.log({tag: trackio.Histogram(values.numpy()), "train/global_step": step})
