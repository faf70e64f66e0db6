"""A local model folder is checked before anything loads: a folder that holds no model, or a model without a
tokenizer, is named in one line instead of failing deep inside ``from_pretrained``."""

from __future__ import annotations

import json
import os

from dora.data import check_local_path

__all__ = ["check_model_folder", "local_num_labels"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model")  # fmt: skip


def check_model_folder(path: str | None, what: str = "model", tokenizer: bool = True, strict: bool = True) -> None:
    """A missing local path (with a near name), a folder without ``config.json`` / ``adapter_config.json``
    (``strict``), and (``tokenizer``) a model folder without tokenizer files: one line each. A Hub id passes
    unchecked."""
    if not path:
        return
    check_local_path(path, what)
    full = os.path.expanduser(str(path))
    if not os.path.isdir(full):
        if os.path.exists(full):
            raise ValueError(f"{what} {path!r} is a file: a model folder (or a Hub id) expected")
        return
    names = set(os.listdir(full))
    if strict and not names & {"config.json", "adapter_config.json"}:
        raise ValueError(f"{what} {path!r}: not a model folder (no config.json or adapter_config.json)")
    if tokenizer and "config.json" in names and not names & set(TOKENIZER_FILES):
        raise ValueError(f"{what} {path!r} has no tokenizer (no tokenizer.json or tokenizer_config.json): save "
                         "one there with tokenizer.save_pretrained")  # fmt: skip


def local_num_labels(path: str) -> int | None:
    """The label count of a local classifier folder's config.json, read without loading the model."""
    config = os.path.join(os.path.expanduser(str(path)), "config.json")
    if not os.path.isfile(config):
        return None
    try:
        with open(config, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{config}: not readable JSON ({e})") from None
    if "id2label" in cfg:
        return len(cfg["id2label"])
    return cfg.get("num_labels", 2)
