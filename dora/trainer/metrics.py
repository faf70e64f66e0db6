"""Logged metrics, as TRL names them (``rewards/*``, ``logps/*``) plus DoRA's own (``dora/*``) and per source:
gathered across processes, summed per logging window, and averaged per sample when logged."""

from __future__ import annotations

import logging

import torch

from dora.losses import implicit_rewards, ranked
from dora.trainer.summary import ess_warning

logger = logging.getLogger("dora.trainer")

__all__ = ["MetricsMixin"]

# metrics logged as a per-sample mean over the logging window; the weights' maxima are logged as a maximum
MEAN_METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "dora/loss_mean",
    "dora/weight_mean",
)
MAX_METRICS = ("dora/weight_max", "dora/objective_weight_max")


class MetricsMixin:
    """DoRATrainer's metric recording (``self._metrics``, ``self._per_source`` are set up by the trainer)."""

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        """All processes' rows. ``gather_for_metrics`` drops the padding rows of a dataloader's last batch; the
        Trainer fetches an accumulation's micro-batches before running them, so in training it is used only for
        the accumulation's last micro-batch (``_micro_batches_left`` is kept by the trainer)."""
        t = t.detach().contiguous()
        if self.model.training and getattr(self, "_micro_batches_left", 0) > 0:
            return self.accelerator.gather(t)
        return self.accelerator.gather_for_metrics(t)

    def _gather_named(self, columns: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One gather for several per-row metrics ([B] each), returned by name."""
        g = self._gather(torch.stack(list(columns.values()), dim=1))
        return dict(zip(columns, g.unbind(dim=1)))

    def _record(self, mode, inputs, losses, policy, ref, out) -> None:
        """One batch's metrics; ``policy`` is the trainer's ``PolicyOutput``, ``out`` the objective's output."""
        logps = policy.logps.detach()
        rewards = implicit_rewards(logps, ref, lengths=policy.lengths, beta=self.args.beta)
        rewards, logps = ranked(inputs["scores"], rewards, logps)  # best response first, worst last
        g = self._gather_named({
            "rewards/chosen": rewards[:, 0],
            "rewards/rejected": rewards[:, -1],
            "rewards/accuracies": (rewards[:, 0] > rewards[:, -1]).float(),
            "rewards/margins": rewards[:, 0] - rewards[:, -1],
            "logps/chosen": logps[:, 0],
            "logps/rejected": logps[:, -1],
            "dora/loss_mean": losses.detach().float(),
            "dora/weight_mean": inputs["weight"].float(),
            "objective_weight": out.sample_weights.float(),
        })  # fmt: skip
        m = self._metrics[mode]  # (sum, count) per batch, so the logged value is a per-sample mean
        n = g["dora/loss_mean"].shape[0]
        for name in MEAN_METRICS:
            m[name].append((g[name].sum().item(), n))
        m["dora/weight_max"].append((g["dora/weight_mean"].max().item(), 1))
        m["dora/objective_weight_max"].append((g["objective_weight"].max().item(), 1))
        m["dora/ess"].append((out.ess, 1))
        if mode == "train" and self._weight_histogram is not None:
            self._weight_histogram.add(g["dora/weight_mean"])
        if self.source_vocab:
            weights = g["dora/weight_mean"]
            self._record_sources(mode, inputs, g["dora/loss_mean"], g["rewards/accuracies"], weights=weights)

    def _record_sources(self, mode, inputs, losses, correct, weights=None) -> None:
        """Per-source loss and accuracy: each response counts under its own source (a pair of a human and a
        synthetic response counts once under each); pairs whose two sources differ also count under
        ``chosen_vs_rejected``. ``losses`` / ``correct`` / ``weights`` are the gathered per-sample values."""
        ids, scores = self._gather(inputs["source_ids"]), self._gather(inputs["scores"])
        if ids.dim() == 1:
            ids = ids.unsqueeze(1)
        if weights is not None:
            self._record_weight_share(mode, ids, weights)
        (ids,) = ranked(scores, ids)  # best response first
        names = {i: s for s, i in self.source_vocab.items()}
        buckets = self._per_source[mode]
        for sid in ids.unique().tolist():
            if sid < 0:  # a response without a source name
                continue
            per_row = (ids == sid).sum(dim=1).to(losses.dtype)  # responses of this source in each row
            acc = buckets[names[sid]]
            acc[0] += (per_row * losses).sum().item()
            acc[1] += (per_row * correct).sum().item()
            acc[2] += int(per_row.sum().item())
        if ids.shape[1] == 2:
            for a, b in ids[ids[:, 0] != ids[:, 1]].unique(dim=0).tolist():
                if a < 0 or b < 0:
                    continue
                sel = (ids[:, 0] == a) & (ids[:, 1] == b)
                acc = buckets[(names[a], names[b])]
                acc[0] += losses[sel].sum().item()
                acc[1] += correct[sel].sum().item()
                acc[2] += int(sel.sum().item())

    def _record_weight_share(self, mode, ids, weights) -> None:
        """Each source's share of the calibration weight h: a row's weight is split evenly over its responses,
        each part going to that response's source (a pair of two human responses puts all of it on ``human``,
        a human / synthetic pair half on each). Stored as (source's weight, all rows' weight) per batch, so the
        logged value is a ratio of sums over the logging window, not a mean of per-batch shares; it sums to 1
        over the sources when every response has one. ``ids`` [B, n] and ``weights`` [B] are gathered."""
        total = weights.double().sum().item()
        if total <= 0:
            return
        m, w = self._metrics[mode], weights.double().unsqueeze(1) / ids.shape[1]  # each response's part
        for name, sid in self.source_vocab.items():  # every source, so each window has the same denominator
            m[f"source/{name}/weight_share"].append(((w * (ids == sid)).sum().item(), total))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = {
            k: sum(x for x, _ in v) / sum(c for _, c in v) for k, v in self._metrics[mode].items() if v
        }
        for k in MAX_METRICS:
            if self._metrics[mode].get(k):
                metrics[k] = max(x for x, _ in self._metrics[mode][k])
        for name, (loss_sum, acc_sum, count) in self._per_source[mode].items():
            if count:
                key = f"source_pair/{name[0]}_vs_{name[1]}" if isinstance(name, tuple) else f"source/{name}"
                metrics[f"{key}/loss"] = loss_sum / count
                metrics[f"{key}/accuracy"] = acc_sum / count
        if mode == "train" and "dora/ess" in metrics and not getattr(self, "_ess_warned", False):
            text = ess_warning(self.args, metrics["dora/ess"])  # once a run, when the tilt is sharp
            if text:
                logger.warning(text)
                self._ess_warned = True
        if mode == "eval":
            metrics = {f"eval_{k}": v for k, v in metrics.items()}
        logs.update(metrics)
        super().log(logs, start_time)
        self._metrics[mode].clear()
        self._per_source[mode].clear()
