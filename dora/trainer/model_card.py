"""The model's tags and card, as TRL's trainers write them: tags ``trl`` and ``dpo`` (a TRL user's filters find the
model) plus ``dora``; a README.md model card (TRL's template) in the output folder at each checkpoint and on
``push_to_hub``, for a full fine-tune as for an adapter, with ``dataset_name`` as TRL's script passes it."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["TAG_NAMES", "create_model_card", "card_model_name"]

TAG_NAMES = ["trl", "dpo", "dora"]
PAPER_TITLE = "Leveraging Robust Optimization for LLM Alignment under Distribution Shifts"
PAPER_ID = "2504.05831"
CITATION = """\
@inproceedings{zhu2025leveraging,
    title        = {{Leveraging Robust Optimization for LLM Alignment under Distribution Shifts}},
    author       = {Zhu, Mingye and Liu, Yi and Fu, Zheren and Zhang, Yongdong and Mao, Zhendong},
    year         = 2025,
    booktitle    = {Advances in Neural Information Processing Systems 38 (NeurIPS 2025)},
    eprint       = {arXiv:2504.05831},
}"""


def card_model_name(args) -> str:
    """The model's name on its card: the Hub id's last part, else the output folder's name (as TRL)."""
    return args.hub_model_id.split("/")[-1] if args.hub_model_id else Path(args.output_dir).name


def create_model_card(trainer, model_name: str | None = None, dataset_name: str | None = None,
                      tags: str | list[str] | None = None) -> None:  # fmt: skip
    """Write ``README.md`` into ``args.output_dir`` (rank 0 only), from TRL's model-card template."""
    if not trainer.is_world_process_zero():
        return
    from trl.trainer.utils import generate_model_card, get_config_model_id

    name_or_path = get_config_model_id(trainer.model.config)
    base_model = name_or_path if name_or_path and not os.path.isdir(name_or_path) else None
    tags = {tags} if isinstance(tags, str) else set(tags or [])
    tags.update(TAG_NAMES)
    card = generate_model_card(
        base_model=base_model,
        model_name=model_name or card_model_name(trainer.args),
        hub_model_id=trainer.hub_model_id,
        dataset_name=dataset_name,
        tags=sorted(tags),
        wandb_url=_wandb_url(),
        trackio_url=None,
        trainer_name="DoRA",
        trainer_citation=CITATION,
        paper_title=PAPER_TITLE,
        paper_id=PAPER_ID,
    )
    os.makedirs(trainer.args.output_dir, exist_ok=True)
    card.save(os.path.join(trainer.args.output_dir, "README.md"))


def _wandb_url() -> str | None:
    import importlib.util
    import sys

    if importlib.util.find_spec("wandb") is None or "wandb" not in sys.modules:
        return None
    run = sys.modules["wandb"].run
    return run.url if run is not None else None
