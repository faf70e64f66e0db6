"""`dora train`'s checks before any model loads: model paths, a PEFT adapter's base, and the train / eval
data (loaded, listwise vs the loss, every row validated)."""

from __future__ import annotations

import json
import os

from dora.config import DoRAConfig
from dora.data import (
    check_local_path,
    check_loss_fits_data,
    check_weight_columns,
    load_rows,
    looks_local,
    tokenize_row,
    validate_rows,
)
from dora.data.validation import add_prompt
from dora.train_cli.recipe import UsageError, lora_config
from dora.train_cli.run_dir import check_run_dir


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
    check_local_path(path, what)
    full = os.path.expanduser(path)
    if os.path.isdir(full) and not any(
        os.path.isfile(os.path.join(full, n)) for n in ("config.json", "adapter_config.json")
    ):
        raise UsageError(f"{what} {path!r}: the folder has no config.json (nor adapter_config.json)")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def load_tokenizer(model: str, base: str | None, trust_remote_code: bool = False):
    """The policy's tokenizer (an adapter's own, else its base's), loaded before the model: a local folder
    without one is an error naming it."""
    from transformers import AutoTokenizer

    full = os.path.expanduser(model)
    where = full
    if base is not None and not any(os.path.isfile(os.path.join(full, n)) for n in TOKENIZER_FILES):
        where = base
    if os.path.isdir(where) and not any(os.path.isfile(os.path.join(where, n)) for n in TOKENIZER_FILES):
        raise UsageError(
            f"model {where!r}: the folder has no tokenizer ({', '.join(TOKENIZER_FILES[:2])}, ...): save one there "
            "with tokenizer.save_pretrained(folder)"
        )
    try:
        return AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"model {where!r}: its tokenizer cannot be loaded ({first})") from e


def check_prompt_lengths(ds, tokenizer, args, where: str) -> None:
    """Every row's prompt longer than the limit (max_prompt_length, or max_length - 1 when keeping the start):
    nothing would be left to train on; refused here, before the model loads (some rows: dropped and counted)."""
    limit = args.max_prompt_length
    if args.max_length is not None and args.truncation_mode == "keep_start":
        limit = min(limit, args.max_length - 1) if limit is not None else args.max_length - 1
    if limit is None:
        return
    longest = 0
    for row in ds.select_columns(["prompt"]):
        n = len(tokenize_row(tokenizer, row["prompt"], ["x"])[0])
        if n <= limit:
            return  # one row fits: rows that do not are dropped and counted in a warning
        longest = max(longest, n)
    raise UsageError(
        f"{where}: every prompt is longer than {limit} tokens (max_length {args.max_length}, max_prompt_length "
        f"{args.max_prompt_length}; the longest {longest}): raise max_length"
    )


def load_data(args, extra: dict, skip_invalid: bool = False):
    """(train, eval or None), loaded and every row validated, before any model loads."""
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
        if name == "train" and split != "train" and os.path.isfile(os.path.expanduser(str(source))):
            raise UsageError(f"dataset_split {split!r}: {source} is a file, which is one split; drop dataset_split")
        try:
            what = "eval_dataset" if name == "eval" and extra.get("eval_dataset") else "dataset"
            ds = load_rows(source, split, extra.get("dataset_config"), what=what, skip_invalid=skip_invalid,
                           number_columns=(args.weight_column,) if args.weight_column else ())
        except ValueError as e:
            if implicit and "split" in str(e).lower():
                raise no_eval from e
            raise
        try:
            check_loss_fits_data(ds, args.loss_type, args.listwise, f"{name} dataset {source}")
        except ValueError as e:
            raise UsageError(str(e)) from e
        path = source if os.path.isfile(os.path.expanduser(source)) else None
        ds = add_prompt(ds, f"{name} dataset {source}")
        named, cols = args.weight_column, ds.column_names
        if name == "train" and named != "dora_weight" and named not in cols:
            has = ", and 'dora_weight' holds the weights: drop --weight_column" if "dora_weight" in cols else ""
            raise UsageError(  # a named column that is not there would silently turn DoRA into KL-DRO
                f"train dataset {source}: no column '{named}' (weight_column); it has {sorted(cols)}{has}"
            )
        kept = validate_rows(
            ds, weight_column=args.weight_column, name=name, path=path, group_column=group, skip_invalid=skip_invalid
        )
        check_weight_columns(kept.column_names, args.weight_column, name)
        out.append(kept)
    return out[0], (out[1] if len(out) > 1 else None)


def check_tracker_login(report_to) -> None:
    """wandb without a login would stop at its prompt (or a 30-line traceback) after the model loads."""
    if "wandb" not in (report_to or []) or os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled"):
        return
    if os.environ.get("WANDB_API_KEY"):
        return
    import netrc

    try:
        rc = netrc.netrc(os.environ.get("NETRC") or None)
    except (OSError, netrc.NetrcParseError):
        rc = None
    if rc is None or rc.authenticators("api.wandb.ai") is None:
        raise UsageError(
            "report_to wandb: not logged in (no WANDB_API_KEY, no api.wandb.ai in ~/.netrc): run `wandb login`, "
            "or set WANDB_MODE=offline to log to files"
        )


def _check_reference(args, extra: dict) -> None:
    if not extra.get("ref_model_name_or_path"):
        return
    check_model_path(str(extra["ref_model_name_or_path"]), "ref_model")
    if args.reference_free:
        raise UsageError(
            f"ref_model given, but loss_type {args.loss_type} uses no reference: it would be loaded and never "
            "used; drop ref_model"
        )


ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention", "paged_attention")


def _weight_names(folder: str) -> list[str]:
    from safetensors import safe_open

    names = []
    for n in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if n.endswith(".safetensors"):
            with safe_open(os.path.join(folder, n), "pt") as f:
                names += list(f.keys())
    return names


def check_model_fit(args, extra: dict, tokenizer, peft_config, base: str | None) -> None:
    """Settings that need the model's files, not its weights in memory: chat rows and a tokenizer without a chat
    template, a pad_token outside the vocabulary, attn_implementation, router_aux_loss_coef on a dense model,
    LoRA target modules the model does not have."""
    model = os.path.expanduser(str(base or extra["model_name_or_path"]))
    attn = extra.get("attn_implementation")
    if attn and attn not in ATTENTION and "/" not in str(attn):  # "/": a kernel from the Hub
        raise UsageError(f"attn_implementation {attn!r}: one of {', '.join(ATTENTION)} (or a Hub kernel) expected")
    if args.pad_token is not None and args.pad_token not in tokenizer.get_vocab():
        raise UsageError(f"pad_token {args.pad_token!r} is not in the vocabulary of {model}'s tokenizer")
    config = {}
    if os.path.isfile(os.path.join(model, "config.json")):
        with open(os.path.join(model, "config.json")) as f:
            config = json.load(f)
    if args.router_aux_loss_coef and config and "output_router_logits" not in json.dumps(config):
        raise UsageError(f"router_aux_loss_coef={args.router_aux_loss_coef}, but {model} is not a Mixture-of-Experts "
                         "model returning router logits: leave router_aux_loss_coef unset")  # fmt: skip
    targets = getattr(peft_config, "target_modules", None)
    names = _weight_names(model) if isinstance(targets, (set, list, tuple)) else []
    missing = sorted(t for t in targets or () if names and not any(f".{t}." in f".{n}" for n in names))
    if missing:
        raise UsageError(f"lora target_modules {missing}: {model} has no such modules (its weights are named like "
                         f"{names[len(names) // 2]!r})")  # fmt: skip


def check_chat_template(ds, tokenizer, where: str, model: str) -> None:
    """Chat rows need the tokenizer's chat template."""
    first = ds[0]
    chat = any(isinstance(first.get(c), list) and first.get(c) and isinstance(first[c][0], dict)
               for c in ("prompt", "chosen", "rejected", "responses"))  # fmt: skip
    if chat and not getattr(tokenizer, "chat_template", None):
        raise UsageError(f"{where}: the rows are chat messages, and the tokenizer of {model} has no chat template: "
                         "use a model with one, or give the rows as text")  # fmt: skip


def preflight(config_kwargs: dict, extra: dict, skip_invalid: bool = False) -> dict:
    """Everything that needs no model, in one pass before any model loads: the config (values, trackers),
    the model paths and tokenizer, the output folder and the checkpoint to resume, the data. Returns the
    pieces `build` needs: args, base, peft_config, tokenizer, train, eval, resume, record."""
    try:
        args = DoRAConfig(**config_kwargs)
    except TypeError as e:
        raise UsageError(str(e)) from e
    check_tracker_login(args.report_to)
    model = str(extra["model_name_or_path"])
    check_model_path(model, "model")
    _check_reference(args, extra)
    base = adapter_base(os.path.expanduser(model))
    peft_config = lora_config(extra)
    resume, record = check_run_dir(args, extra, base, peft=peft_config is not None or base is not None)
    train, evald = load_data(args, extra, skip_invalid)
    tokenizer = load_tokenizer(model, base, args.trust_remote_code)
    check_model_fit(args, extra, tokenizer, peft_config, base)
    for name, ds, source in (("train", train, extra["dataset"]), ("eval", evald, extra.get("eval_dataset"))):
        if ds is not None:
            check_chat_template(ds, tokenizer, f"{name} dataset {source or extra['dataset']}", model)
            check_prompt_lengths(ds, tokenizer, args, f"{name} dataset {source or extra['dataset']}")
    return dict(args=args, base=base, peft_config=peft_config, tokenizer=tokenizer, train=train, eval=evald,
                resume=resume, record=record)  # fmt: skip
