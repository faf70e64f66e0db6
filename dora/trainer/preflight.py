"""Preflight: what is checked and set up before training runs a step. The data before any model loads, the padding
token, the MoE auxiliary loss, padding-free attention, losses that sort the batch, and the source / group
vocabularies."""

from __future__ import annotations

import os

from dora.data import as_dataset, check_loss_fits_data, check_weight_columns, validate_rows
from dora.data.streaming import check_stream, is_stream
from dora.data.validation import add_prompt
from dora.data.vision import is_vision_data
from dora.logprobs import PADDING_FREE_ATTENTION, unwrap_causal_lm
from dora.objectives import objective_spec

__all__ = ["check_data", "check_vision_settings",
           "set_pad_token", "router_aux_loss", "check_padding_free", "check_sorting_losses", "vocab",
           "source_columns"]


def check_data(args, train_dataset, eval_dataset):
    """Every row of every dataset, and whether the loss fits the data, checked before a model loads. Returns
    (train, eval) as checked: rows whose prompt is the dialogue's shared start get their ``prompt`` column."""

    def check(name, ds):
        if isinstance(ds, (str, os.PathLike)) and name == "train":  # not loaded for the user: say how
            raise TypeError(f"train_dataset {str(ds)!r}: rows expected, not a path; load it with "
                            "dora.data.load_rows(path) (or datasets.load_dataset)")  # fmt: skip
        if ds is None or isinstance(ds, str) or hasattr(ds, "__next__"):  # an eval set's name; an iterator
            return ds
        if is_stream(ds):  # streamed rows: the columns now, each row as it is read
            if args.precompute_ref_log_probs and not args.reference_free:
                raise ValueError(
                    f"{name} dataset: precompute_ref_log_probs=True is not supported with IterableDataset (streamed "
                    "rows; the reference log-probs are stored as a column): use a map-style Dataset, or set "
                    "precompute_ref_log_probs=False"
                )
            return check_stream(ds, weight_column=args.weight_column, name=name, group_column=group)
        if not hasattr(ds, "column_names"):
            ds = as_dataset(ds, f"{name} dataset")  # a list of row dicts or a DataFrame
        ds = add_prompt(ds, f"{name} dataset")  # a prompt column under another name is named, not emptied
        validate_rows(ds, weight_column=args.weight_column, name=name, group_column=group, allow_images=True,
                      skip_hint="dora.data.validate_rows(rows, skip_invalid=True)")  # fmt: skip
        check_vision_settings(args, ds.column_names, name)
        check_weight_columns(ds.column_names, args.weight_column, name)
        check_loss_fits_data(ds, args.loss_type, args.listwise, f"{name} dataset")
        return ds

    group = args.group_column if args.objective == "group_dro" else None
    if isinstance(eval_dataset, dict):
        eval_dataset = {k: check(f"eval ({k})", v) for k, v in eval_dataset.items()}
    else:
        eval_dataset = check("eval", eval_dataset)
    return check("train", train_dataset), eval_dataset


def check_vision_settings(args, columns, name: str = "train") -> None:
    """Settings that vision rows (an ``image`` / ``images`` column) cannot take, refused as TRL 1.16 refuses them
    (``keep_end``, ``precompute_ref_log_probs``), and those DoRA's vision path does not take (listwise rows,
    ``padding_free``)."""
    if not is_vision_data(columns):
        return
    where = f"{name} dataset (vision rows: an image column)"
    if args.max_length is not None and args.truncation_mode == "keep_end":
        raise ValueError(
            f"{where}: truncation_mode='keep_end' is not supported for vision-language models: the image tokens are "
            "in the prompt, which keep_end may cut while the pixel values stay. Use truncation_mode='keep_start' "
            "(the default) or max_length=None"
        )
    if args.precompute_ref_log_probs and not args.reference_free:
        raise ValueError(
            f"{where}: precompute_ref_log_probs=True is not supported for vision datasets (the images are processed "
            "batch by batch, not ahead): set precompute_ref_log_probs=False"
        )
    if "responses" in columns:
        raise ValueError(f"{where}: listwise rows (responses) with images are not supported: use pairs "
                         "(prompt, chosen, rejected)")  # fmt: skip
    if args.padding_free:
        raise ValueError(f"{where}: padding_free=True packs text only; set padding_free=False for vision rows")


def set_pad_token(tokenizer, pad_token: str | None) -> None:
    """``pad_token`` (TRL's field) as the tokenizer's padding token; it must be in the vocabulary."""
    if pad_token is None:
        return
    if pad_token not in tokenizer.get_vocab():
        raise ValueError(
            f"pad_token {pad_token!r} is not in the vocabulary of {type(tokenizer).__name__}: pick a token it has"
        )
    tokenizer.pad_token = pad_token


def router_aux_loss(model, coef: float | None) -> tuple[float, bool]:
    """(coefficient, enabled) of the MoE load-balancing loss, as TRL 1.16: ``router_aux_loss_coef``, else the
    model config's; on for any model whose config has ``output_router_logits``, unless the coefficient is 0."""
    text = unwrap_causal_lm(model).config.get_text_config()
    moe = hasattr(text, "output_router_logits")
    if coef and not moe:
        raise ValueError(
            f"router_aux_loss_coef={coef}, but {type(unwrap_causal_lm(model)).__name__} is not a Mixture-of-Experts "
            "model returning router logits: leave router_aux_loss_coef unset"
        )
    coef = getattr(text, "router_aux_loss_coef", 0.0) if coef is None else coef
    return float(coef or 0.0), moe and coef != 0.0


def check_padding_free(model) -> None:
    impl = getattr(unwrap_causal_lm(model).config, "_attn_implementation", None)
    if impl not in PADDING_FREE_ATTENTION:
        raise ValueError(
            f"padding_free=True packs a batch into one row, which needs attention that follows position_ids "
            f"({', '.join(PADDING_FREE_ATTENTION)}); this model uses {impl!r}: load it with "
            "attn_implementation='sdpa' (or flash_attention_2), or set padding_free=False"
        )


SORTING_LOSSES = ("aot", "aot_unpaired")


def check_sorting_losses(args, datasets_) -> None:
    """AOT sorts the batch, so its i-th loss is not pair i's: a per-sample weight or group cannot follow it."""
    sorting = [n for n in args.loss_type if n in SORTING_LOSSES]
    if not sorting or not objective_spec(args.objective).weighted:
        return
    weighted = objective_spec(args.objective).needs_groups or any(
        ds is not None and not is_stream(ds) and len(set(ds["weight"])) > 1 for ds in datasets_
    )
    if weighted:
        raise ValueError(
            f"loss {sorting} sorts the batch, so a per-sample weight cannot follow its pair under objective "
            f"{args.objective!r}: use objective 'mean' or 'kl_dro' (what 'dora' computes without weights)"
        )


def source_columns(args) -> tuple[str, ...]:
    """The columns that name a response's source: the configured one, the pair's two, and a list's."""
    return (args.source_column, "chosen_source", "rejected_source", "sources")


def vocab(datasets_, columns: tuple[str, ...]) -> dict[str, int]:
    """Sorted names found in ``columns`` (a column may hold one name per row or a list, as ``sources``)."""
    names = set()
    for ds in datasets_:
        if ds is None or is_stream(ds):  # a stream's names are not read ahead: its rows count under ''
            continue
        for c in columns:
            if c in ds.column_names:
                for x in ds[c]:
                    names.update(str(v) for v in (x if isinstance(x, list) else [x]) if v is not None)
    return {name: i for i, name in enumerate(sorted(names))}
