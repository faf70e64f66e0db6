"""A TRL user's code runs on DoRATrainer with the two classes renamed (issue 21): TRL's parser and command-line
flags, TRL 1.16's __init__ signature and model loading, streamed rows, per-row chat-template arguments, tool-calling
rows, image columns refused, model tags and card, and the migration docs."""

from __future__ import annotations

from dora import DoRAConfig


def test_trl_parser_reads_loss_type_default_and_list(tmp_path):
    """TrlParser / HfArgumentParser build DoRAConfig from a command line: loss_type's default arrives as a list
    (it arrived as None, and __post_init__ raised TypeError), and `--loss_type a b` as that list."""
    from trl import TrlParser

    parser = TrlParser((DoRAConfig,))
    (args,) = parser.parse_args_and_config(["--output_dir", str(tmp_path)])
    assert args.loss_type == ["sigmoid"] and args.loss_weights == [1.0]
    (args,) = parser.parse_args_and_config(
        ["--output_dir", str(tmp_path), "--loss_type", "sigmoid", "sft", "--loss_weights", "1", "0.5"]
    )
    assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 0.5]
