"""`dora train`'s checks before any model loads: model paths, a PEFT adapter's base, and the train / eval
data (loaded, listwise vs the loss, every row validated)."""

from __future__ import annotations

import json
import os

from dora.train_cli.recipe import UsageError, lora_config


def adapter_base(path: str) -> str | None:
    """For a folder holding a PEFT adapter, its base model: relative paths resolved against the working
    directory, then against the adapter's folder; a base that is neither is an error naming it."""
    cfg_path = os.path.join(path, "adapter_config.json")
    if not os.path.isfile(cfg_path):
        return None
    with open(cfg_path) as f:
        base = json.load(f).get("base_model_name_or_path")
    if not base:
        raise UsageError(f"{cfg_path}: no base_model_name_or_path")
    from dora.data import looks_local

    for candidate in (base, os.path.join(path, base)):
        if os.path.isdir(os.path.expanduser(candidate)):
            return os.path.abspath(os.path.expanduser(candidate))
    if looks_local(base):
        raise UsageError(
            f"adapter {path!r}: its base model {base!r} (adapter_config.json base_model_name_or_path) is not "
            f"found, neither from {os.getcwd()} nor from the adapter's folder; edit it or run from its folder"
        )
    return base  # a Hub id


def check_model_path(path: str, what: str) -> None:
    from dora.data import check_local_path

    check_local_path(path, what)
    full = os.path.expanduser(path)
    if os.path.isdir(full) and not any(
        os.path.isfile(os.path.join(full, n)) for n in ("config.json", "adapter_config.json")
    ):
        raise UsageError(f"{what} {path!r}: the folder has no config.json (nor adapter_config.json)")


def load_data(args, extra: dict, skip_invalid: bool = False):
    """(train, eval or None), loaded and every row validated, before any model loads."""
    from dora.data import add_implicit_prompt, check_loss_fits_data, check_weight_columns, load_rows, validate_rows

    group = args.group_column if args.objective == "group_dro" else None
    parts = [("train", extra["dataset"], extra.get("dataset_split", "train"))]
    if extra.get("eval_dataset"):
        parts.append(("eval", extra["eval_dataset"], extra.get("eval_dataset_split", "test")))
    elif args.eval_strategy != "no":  # trl dpo: the dataset's test split
        parts.append(("eval", extra["dataset"], extra.get("eval_dataset_split", "test")))
    out = []
    for name, source, split in parts:
        no_eval = UsageError(
            f"eval_strategy={args.eval_strategy.value!r} needs eval data: {source!r} has no split {split!r}; "
            f"give eval_dataset (or eval_strategy no)"
        )
        implicit = name == "eval" and not extra.get("eval_dataset")
        if implicit and os.path.isfile(os.path.expanduser(str(source))):
            raise no_eval  # a file is one split
        try:
            what = "eval_dataset" if name == "eval" and extra.get("eval_dataset") else "dataset"
            ds = load_rows(source, split, extra.get("dataset_config"), what=what)
        except ValueError as e:
            if implicit and "split" in str(e).lower():
                raise no_eval from e
            raise
        try:
            check_loss_fits_data(ds, args.loss_type, args.listwise, f"{name} dataset {source}")
        except ValueError as e:
            raise UsageError(str(e)) from e
        ds = add_implicit_prompt(ds)
        path = source if os.path.isfile(os.path.expanduser(source)) else None
        kept = validate_rows(
            ds, weight_column=args.weight_column, name=name, path=path, group_column=group, skip_invalid=skip_invalid
        )
        check_weight_columns(kept.column_names, args.weight_column, name)
        if name == "train" and args.weight_column != "dora_weight" and args.weight_column not in kept.column_names:
            raise UsageError(  # a named column that is not there would silently turn DoRA into KL-DRO
                f"train dataset {source}: no column '{args.weight_column}' (weight_column); it has "
                f"{sorted(kept.column_names)}"
            )
        out.append(kept)
    return out[0], (out[1] if len(out) > 1 else None)


def preflight(config_kwargs: dict, extra: dict, skip_invalid: bool = False):
    """Everything that needs no model: the config (refused values, trackers), the paths, the data."""
    from dora.config import DoRAConfig

    try:
        args = DoRAConfig(**config_kwargs)
    except TypeError as e:
        raise UsageError(str(e)) from e
    check_model_path(str(extra["model_name_or_path"]), "model")
    resume = config_kwargs.get("resume_from_checkpoint")
    if isinstance(resume, str) and resume.lower() not in ("true", "") and not os.path.isdir(os.path.expanduser(resume)):
        raise UsageError(f"resume_from_checkpoint {resume!r}: no such checkpoint folder")
    if extra.get("ref_model_name_or_path"):
        check_model_path(str(extra["ref_model_name_or_path"]), "ref_model")
    base = adapter_base(os.path.expanduser(str(extra["model_name_or_path"])))
    peft_config = lora_config(extra)
    train, evald = load_data(args, extra, skip_invalid)
    return args, base, peft_config, train, evald
