"""Checkpoints that are complete or ignored.

A checkpoint counts only once every file is in it: the model, optimizer, scheduler, RNG and trainer state that
``transformers.Trainer`` writes, and group DRO's weights (``dora_state.json``); then a marker
(``dora_checkpoint.json``) is written last, atomically (a temporary file renamed into place). A process killed
at any moment of the write leaves a folder without the marker, which ``resume_from_checkpoint=True`` skips (the
previous complete checkpoint is resumed) and which an explicit path refuses. Old checkpoints are rotated away
(``save_total_limit``) only after the new one is complete, and a half-written folder of the same step is removed
before it is written again.

``DORA_CHECKPOINT_FAULT=<point>[@<step>]`` (a test hook) ends the process with ``os._exit`` at ``point`` of the
write: ``before_optimizer`` (the model written, not the optimizer), ``before_state`` (the trainer's files
written, not group DRO's), ``before_marker`` (everything but the marker).
"""

from __future__ import annotations

import json
import os
import re
import shutil

__all__ = ["COMPLETE", "STATE_FILE", "CheckpointMixin", "is_complete", "last_complete_checkpoint", "check_checkpoint"]

COMPLETE = "dora_checkpoint.json"
STATE_FILE = "dora_state.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def is_complete(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, COMPLETE))


def checkpoint_run(folder: str) -> str | None:
    """The run id a complete checkpoint's marker records (``DoRATrainer.run_id``; None: not recorded)."""
    try:
        with open(os.path.join(folder, COMPLETE)) as f:
            return json.load(f).get("run")
    except (OSError, ValueError):
        return None


def last_complete_checkpoint(output_dir: str, run: str | None = None) -> str | None:
    """The complete checkpoint of the highest step in ``output_dir`` (of the run ``run`` only, if given), or None."""
    if not os.path.isdir(output_dir):
        return None
    found = [
        (int(m.group(1)), os.path.join(output_dir, name))
        for name in os.listdir(output_dir)
        if (m := _STEP.match(name)) and is_complete(os.path.join(output_dir, name))
    ]
    found = [(step, path) for step, path in found if run is None or checkpoint_run(path) == run]
    return max(found)[1] if found else None


def check_checkpoint(path: str) -> None:
    """A ValueError when ``path`` is not a complete checkpoint folder."""
    if not os.path.isdir(path):
        raise ValueError(f"resume_from_checkpoint {path!r}: no such checkpoint folder")
    if not os.path.isfile(os.path.join(path, "trainer_state.json")):
        raise ValueError(f"resume_from_checkpoint {path!r}: not a checkpoint (no trainer_state.json)")
    if not is_complete(path):
        raise ValueError(
            f"resume_from_checkpoint {path!r}: incomplete (no {COMPLETE}: its write was interrupted); resume from "
            "an earlier checkpoint, or with resume_from_checkpoint=True (the last complete one)"
        )


def _write_json(path: str, payload: dict) -> None:
    """Written to a temporary name, flushed to disk, then renamed: the file is whole or absent."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fault(point: str, step: int) -> None:
    want = os.environ.get("DORA_CHECKPOINT_FAULT", "")
    name, _, at = want.partition("@")
    if name == point and (not at or int(at) == step):
        os._exit(137)  # as a kill -9: no clean-up, no flush


class CheckpointMixin:
    """``_save_checkpoint`` / ``_load_from_checkpoint`` / ``train`` of DoRATrainer: see the module docstring.
    Expects ``self.group_state`` (a GroupDROState or None). ``run_id`` (set by `dora train`) is recorded in each
    marker, so that a resume continues only this run's checkpoints, never an earlier run's in the same folder."""

    run_id: str | None = None

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint is True or str(resume_from_checkpoint).lower() == "true":
            found = last_complete_checkpoint(self.args.output_dir)
            if found is None:
                raise ValueError(
                    f"resume_from_checkpoint=True: no complete checkpoint in {self.args.output_dir!r}; train "
                    "without resume_from_checkpoint, or give a checkpoint folder"
                )
            resume_from_checkpoint = found
        elif isinstance(resume_from_checkpoint, str) and resume_from_checkpoint:
            check_checkpoint(resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model, trial):
        run_dir = self._get_output_dir(trial)
        folder = os.path.join(run_dir, f"checkpoint-{self.state.global_step}")
        stale = os.path.isdir(folder) and (not is_complete(folder) or checkpoint_run(folder) != self.run_id)
        if self.args.should_save and stale:
            shutil.rmtree(folder)  # half-written (a process killed while writing it), or an earlier run's
        self.accelerator.wait_for_everyone()
        limit, self.args.save_total_limit = self.args.save_total_limit, None  # rotate once this one is complete
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        _fault("before_state", self.state.global_step)
        if self.group_state is not None and self.args.should_save:
            _write_json(os.path.join(folder, STATE_FILE), {"group_dro": self.group_state.state_dict()})
        _fault("before_marker", self.state.global_step)
        self.accelerator.wait_for_everyone()  # every process's files (RNG states, shards) are in place
        if self.args.should_save:
            _write_json(os.path.join(folder, COMPLETE), {"global_step": self.state.global_step, "run": self.run_id})
            from transformers.trainer_utils import rotate_checkpoints

            rotate_checkpoints(run_dir, limit, self.state.best_model_checkpoint, use_mtime=True)

    def _save_optimizer_and_scheduler(self, output_dir):
        _fault("before_optimizer", self.state.global_step)
        super()._save_optimizer_and_scheduler(output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.group_state is None:
            return
        path = os.path.join(resume_from_checkpoint, STATE_FILE)
        if not os.path.isfile(path):
            raise ValueError(
                f"checkpoint {resume_from_checkpoint!r} has no {STATE_FILE} (group DRO's weights): it was not "
                "written by a group_dro run; resume a group_dro checkpoint, or start anew"
            )
        with open(path) as f:
            self.group_state.load_state_dict(json.load(f)["group_dro"])
