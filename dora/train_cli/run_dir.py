"""`dora train`'s output folder: checked before any model loads (``dora.outputs``), and claimed with a record of
the run (``dora_run.json``: the model and a fingerprint of the data), so that a later ``--resume_from_checkpoint``
continues only a checkpoint of the same model on the same data, never an earlier run's."""

from __future__ import annotations

import hashlib
import json
import os
import uuid

from dora.outputs import check_output_dir
from dora.train_cli.recipe import UsageError
from dora.trainer.checkpoint import check_checkpoint, last_complete_checkpoint

__all__ = ["MANIFEST", "check_run_dir", "write_manifest"]

MANIFEST = "dora_run.json"
WRITES = ("config.json", "generation_config.json", "model.safetensors", "adapter_config.json",
          "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
          "chat_template.jinja", "README.md", "training_args.bin", MANIFEST)  # fmt: skip
# (what a run writes at the top of output_dir: an input there is refused)
SHAPE_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "intermediate_size")  # fmt: skip


def _fingerprint(source) -> str:
    """sha256 of a local file (or of a folder's files, by name), else the Hub id itself."""
    path = os.path.expanduser(str(source))
    if not os.path.exists(path):
        return f"id:{source}"
    h = hashlib.sha256()
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(r, n) for r, _, names in os.walk(path) for n in names
    )  # fmt: skip
    for name in files:
        h.update(os.path.relpath(name, path).encode())
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _record(extra: dict) -> dict:
    data = {k: [str(extra[k]), str(extra.get(k + "_split", "")), _fingerprint(extra[k])]
            for k in ("dataset", "eval_dataset") if extra.get(k)}  # fmt: skip
    model = os.path.expanduser(str(extra["model_name_or_path"]))
    return {"model": os.path.realpath(model) if os.path.exists(model) else model, "data": data}


def _model_bytes(path: str) -> int:
    full = os.path.expanduser(path)
    if not os.path.isdir(full):
        return 0
    return sum(os.path.getsize(os.path.join(full, n)) for n in os.listdir(full)
               if n.endswith((".safetensors", ".bin")))  # fmt: skip


def _config(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _same_model(ckpt: str, model: str, base: str | None, peft: bool) -> None:
    """A checkpoint of another model (another shape, or an adapter where the run trains the full model) is
    refused before any model loads."""
    adapter = os.path.isfile(os.path.join(ckpt, "adapter_config.json"))
    if adapter != peft:
        held, trains = ("a LoRA adapter", "the full model") if adapter else ("a full model", "a LoRA adapter")
        raise UsageError(f"resume_from_checkpoint {ckpt!r} holds {held}, but this run trains {trains}")
    if adapter:
        return
    mine, theirs = _config(os.path.expanduser(base or model)), _config(ckpt)
    for k in SHAPE_KEYS:
        if k in mine and k in theirs and mine[k] != theirs[k]:
            raise UsageError(
                f"resume_from_checkpoint {ckpt!r} is of another model ({k} {theirs[k]!r}, the model's {mine[k]!r})"
            )


def _resolve_resume(resume, out: str, record: dict) -> str:
    earlier = {}
    if os.path.isfile(os.path.join(out, MANIFEST)):
        with open(os.path.join(out, MANIFEST)) as f:
            earlier = json.load(f)
    if str(resume).lower() == "true":
        for key, what in (("model", "model"), ("data", "data")):
            if key in earlier and earlier[key] != record[key]:
                raise UsageError(
                    f"resume_from_checkpoint true: output_dir {out!r} holds a run of another {what} "
                    f"({MANIFEST}); resume it with the same {what}, or train into a new output_dir"
                )
        found = last_complete_checkpoint(out, run=earlier.get("run"))  # this run's, never an overwritten run's
        if found is None:
            raise UsageError(
                f"resume_from_checkpoint true: no complete checkpoint in output_dir {out!r}; drop "
                "resume_from_checkpoint, or give a checkpoint folder"
            )
        return found
    path = os.path.expanduser(str(resume))
    try:
        check_checkpoint(path)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return path


def check_run_dir(args, extra: dict, base: str | None, peft: bool) -> tuple[str | None, dict]:
    """(the checkpoint to resume from or None, the run's record), after refusing an output_dir that is a file,
    a model's folder, holds an input, holds an earlier run (without --overwrite_output_dir or a resume), or
    cannot be written; and a checkpoint that is incomplete, of another model or of a run on other data."""
    resume = args.resume_from_checkpoint
    resume = None if resume in (None, False, "", "false", "False") else resume
    out = os.path.expanduser(str(args.output_dir))
    models = [extra["model_name_or_path"], extra.get("ref_model_name_or_path"), base]
    need = 2 * _model_bytes(str(base or extra["model_name_or_path"])) if not peft else 0  # final model + a checkpoint
    check_output_dir(
        out, what="output_dir", flag="--overwrite_output_dir", overwrite=bool(extra.get("overwrite_output_dir")),
        resume=resume is not None, inputs=[extra["dataset"], extra.get("eval_dataset")],
        models=[m for m in models if m], writes=WRITES, need_bytes=need,
    )  # fmt: skip
    record = _record(extra)
    if resume is None:
        return None, record
    path = _resolve_resume(resume, out, record)
    _same_model(path, str(extra["model_name_or_path"]), base, peft)
    return path, record


def write_manifest(out: str, record: dict, resuming: bool) -> str:
    """The run's record in its output folder, with a new run id (kept when resuming); returns the run id, which
    each checkpoint's marker records: checkpoints an earlier run left there (``--overwrite_output_dir``) are
    never resumed by this one."""
    path = os.path.join(out, MANIFEST)
    if resuming and os.path.isfile(path):
        with open(path) as f:
            run = json.load(f).get("run")
        if run:
            return run
    run = uuid.uuid4().hex
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as f:
        json.dump({**record, "run": run}, f, indent=1)
    return run
