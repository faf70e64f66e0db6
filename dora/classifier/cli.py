"""`dora classify`: a dataset with a source column -> the same dataset with target probabilities and
`dora_weight`, the classifier, and a diagnostics report."""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings

from dora.classifier.extremes import format_extremes, weight_extremes
from dora.data import check_local_path, load_rows, read_utf8
from dora.local_model import check_model_folder
from dora.output_dir import claim_output_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML whose keys are these flags (underscores); flags win")
    p.add_argument("--dataset", default=None, help="local file (jsonl/json/parquet/csv), saved dataset, or Hub id")
    p.add_argument("--split", default="train", help="split of a Hub or saved dataset")
    p.add_argument("--source-column", default="source", help="column naming each row's source")
    p.add_argument("--target-sources", default=None, help="comma-separated target (human) sources, e.g. human")
    p.add_argument("--backend", default="tfidf", choices=["tfidf", "embedding", "transformer"])
    p.add_argument("--model", default=None, help="encoder / classifier checkpoint for embedding and transformer")
    p.add_argument(
        "--folds", type=int, default=5, help="cross-fitting folds (1 = no cross-fitting; >= 2 with --target-dataset)"
    )
    p.add_argument("--calibration", default="platt", choices=["platt", "isotonic", "none"])
    p.add_argument(
        "--target-share",
        type=float,
        default=None,
        help="α: share of target responses in the data the weights are for (default: this dataset's share)",
    )
    p.add_argument("--stabilizer", type=float, default=None, help="s of the weight formula (default α)")
    p.add_argument("--preset", default=None, choices=["authors"], help="authors: the released code's w = n·c")
    p.add_argument(
        "--clip", type=float, default=None,
        help="cap on each response's weight (the ratio, before --normalize); with --target-dataset: from the data",
    )  # fmt: skip
    p.add_argument(
        "--normalize", action="store_true",
        help="rescale the row weights to mean 1 (default: written as is; always on with --target-dataset)",
    )  # fmt: skip
    p.add_argument("--eps", type=float, default=1e-4, help="probabilities are clamped to [eps, 1 - eps]")
    p.add_argument("--epochs", type=float, default=1.0, help="transformer backend: fine-tuning epochs")
    p.add_argument("--learning-rate", type=float, default=2e-5, help="transformer backend: fine-tuning learning rate")
    p.add_argument("--batch-size", type=int, default=16, help="transformer / embedding batch size")
    p.add_argument("--max-length", type=int, default=256, help="transformer / embedding max tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="output folder (new or empty)")
    p.add_argument(
        "--overwrite-output-dir", action="store_true", help="replace the files of an earlier run in --output"
    )
    p.add_argument(
        "--target-dataset",
        default=None,
        help="no source labels: a trusted sample of the target (same columns); weights are dQ0/dP of it vs --dataset",
    )
    p.add_argument("--target-split", default="train", help="split of a Hub or saved --target-dataset")
    p.add_argument(
        "--trusted-in-pool", action="store_true", help="the --target-dataset rows are rows of --dataset (a subset)"
    )
    p.add_argument(
        "--share-bootstrap", type=int, default=200, help="bootstrap resamples for the target share (0: no interval)"
    )
    p.add_argument("--debug", action="store_true", help="on an error, the full traceback instead of one line")


def save_like_input(dataset, source: str, output: str) -> str:
    """Write the annotated dataset in the input's format; a Hub id is written as jsonl."""
    ext = source.rsplit(".", 1)[-1].lower() if os.path.isfile(source) else ""
    if os.path.isdir(source):
        path = os.path.join(output, "data")
        dataset.save_to_disk(path)
    elif ext == "parquet":
        path = os.path.join(output, "data.parquet")
        dataset.to_parquet(path)
    elif ext == "csv":
        path = os.path.join(output, "data.csv")
        dataset.to_csv(path, index=False)
    elif ext == "json":
        path = os.path.join(output, "data.json")
        dataset.to_json(path, lines=False)
    else:
        path = os.path.join(output, "data.jsonl")
        dataset.to_json(path, lines=True)
    return path


def _read_config(path: str) -> dict:
    """The YAML of ``--config``: one line naming the file (and line) when it is missing, not UTF-8, not YAML, or
    not a mapping."""
    import yaml

    if not os.path.isfile(os.path.expanduser(path)):
        raise FileNotFoundError(f"--config {path!r}: no such file")
    text = read_utf8(path)
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a mapping of flag names to values, got a {type(cfg).__name__}")
    return cfg


def apply_config(args, parser: argparse.ArgumentParser) -> None:
    """Fill the flags a user left at their defaults from the YAML of ``--config`` (each value read as its flag
    reads text); check the required ones."""
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    if args.config:
        for key, value in _read_config(args.config).items():
            key = str(key).replace("-", "_")
            if key not in actions:
                raise ValueError(f"{args.config}: unknown key {key!r}")
            action = actions[key]
            if key == "target_sources" and isinstance(value, list):
                value = ",".join(map(str, value))
            value = _config_value(args.config, key, value, action)  # checked even where a flag wins
            if getattr(args, key) == action.default:
                setattr(args, key, value)
    required = ("dataset", "output") if args.target_dataset else ("dataset", "target_sources", "output")
    missing = [f"--{k.replace('_', '-')}" for k in required if not getattr(args, k)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (as flags or in --config)")


def _config_value(path: str, key: str, value, action):
    """A YAML value as its flag would read it: a number for a number flag, a choice among the flag's choices."""
    if action.nargs == 0:  # store_true
        if not isinstance(value, bool):
            raise ValueError(f"{path}, key {key!r}: true or false expected, got {value!r}")
        return value
    if value is not None and action.type in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (action.type is int and value != int(
                value)):  # fmt: skip
            raise ValueError(f"{path}, key {key!r}: {'an integer' if action.type is int else 'a number'} "
                             f"expected, got {value!r}")  # fmt: skip
        value = action.type(value)
    elif value is not None and not isinstance(value, str):
        raise ValueError(f"{path}, key {key!r}: a text value expected, got {value!r}")
    if action.choices and value not in action.choices:
        raise ValueError(f"{path}, key {key!r}: {value!r} is not one of {list(action.choices)}")
    return value


MAX_STABILIZER = 1e6  # weights are at most 1/s: beyond this every weight is ~0 (1e308 wrote 0 everywhere)


def check_weight_flags(args) -> None:
    """The weight formula's flags and the training flags, checked before any data or model loads (one line each;
    NaN and infinity are refused where a finite number is meant)."""
    if args.preset and (args.target_share is not None or args.stabilizer is not None):
        raise ValueError("--preset authors fixes the constants; drop --target-share / --stabilizer")
    if args.target_share is not None and not 0.0 < float(args.target_share) <= 1.0:
        raise ValueError(f"--target-share must be in (0, 1], got {args.target_share}")
    if args.stabilizer is not None and not float(args.stabilizer) >= 0.0:
        raise ValueError(f"--stabilizer must be >= 0, got {args.stabilizer}")
    if args.stabilizer is not None and not float(args.stabilizer) <= MAX_STABILIZER:
        raise ValueError(f"--stabilizer must be <= {MAX_STABILIZER:g} (weights are at most 1/s: every weight "
                         f"would be ~0), got {args.stabilizer}")  # fmt: skip
    if args.clip is not None and not float(args.clip) > 0.0:  # inf: no cap
        raise ValueError(f"--clip must be > 0, got {args.clip}")
    if not 0.0 < float(args.eps) < 0.5:
        raise ValueError(f"--eps must be in (0, 0.5), got {args.eps}")
    # weights are read in float32 when training: bounds that keep every weight a normal float32 number
    for flag, value, low in (("--clip", args.clip, 1e-6), ("--eps", args.eps, 1e-12),
                             ("--target-share", args.target_share, 1e-6)):  # fmt: skip
        if value is not None and float(value) < low:
            raise ValueError(f"{flag} must be >= {low:g} (weights would underflow or overflow in float32), "
                             f"got {value}")  # fmt: skip
    if int(args.folds) < 1:
        raise ValueError(f"--folds must be >= 1, got {args.folds}")
    for flag, value in (("--epochs", args.epochs), ("--learning-rate", args.learning_rate)):
        if not 0.0 < float(value) < math.inf:
            raise ValueError(f"{flag} must be a finite number > 0, got {value}")
    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--max-length", args.max_length, 2),
                             ("--seed", args.seed, 0), ("--share-bootstrap", args.share_bootstrap, 0)):  # fmt: skip
        if int(value) < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")


def _data_name(source: str) -> str:
    """The name ``save_like_input`` writes the annotated dataset under."""
    ext = source.rsplit(".", 1)[-1].lower() if os.path.isfile(source) else ""
    if os.path.isdir(source):
        return "data"
    return {"parquet": "data.parquet", "csv": "data.csv", "json": "data.json"}.get(ext, "data.jsonl")


def _claim(args):
    """The output folder, checked and created before the work: not a file, not an earlier run (unless
    --overwrite-output-dir), not the model's folder, never over an input, writable."""
    writes = (_data_name(args.dataset), "classifier", "report.json", "report.md", "reliability.png", "weights.png",
              "share.png", "extremes.json")  # fmt: skip
    return claim_output_dir(
        args.output, flag="--output", writes=writes, inputs=(args.dataset, args.target_dataset, args.config),
        models=(args.model,), overwrite=args.overwrite_output_dir,
    )  # fmt: skip


def run(args) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    apply_config(args, parser)

    if args.target_dataset:
        check_no_labels_flags(args)
    check_weight_flags(args)
    if args.model:  # a mistyped local path is named, not looked up on the Hub
        check_model_folder(args.model, "--model")
    if args.target_dataset:
        check_local_path(args.target_dataset, "--target-dataset")
    dataset = load_rows(args.dataset, args.split)
    with _claim(args):
        return _run_claimed(args, dataset)


def _run_claimed(args, dataset) -> int:
    from dora.classifier.annotate import annotate
    from dora.classifier.report import format_table

    backend_kwargs = {}
    if args.backend in ("embedding", "transformer"):
        backend_kwargs = {
            "model_name_or_path": args.model,
            "max_length": args.max_length,
            "batch_size": args.batch_size,
        }
        if args.backend == "transformer":
            backend_kwargs["epochs"] = args.epochs
            backend_kwargs["learning_rate"] = args.learning_rate
    if args.target_dataset:
        return run_no_labels(args, dataset, backend_kwargs)
    annotated, report = annotate(
        dataset,
        target_sources=[s.strip() for s in args.target_sources.split(",") if s.strip()],
        source_column=args.source_column,
        backend=args.backend,
        folds=args.folds,
        calibration=args.calibration,
        target_share=args.target_share,
        stabilizer=args.stabilizer,
        preset=args.preset,
        clip=args.clip,
        normalize=args.normalize,
        eps=args.eps,
        seed=args.seed,
        output_dir=args.output,
        name=args.dataset,
        line_offset=_row_names(args.dataset, len(dataset)),
        **backend_kwargs,
    )
    path = save_like_input(annotated, args.dataset, args.output)
    print(format_table(report))
    _write_extremes(args, annotated, args.source_column)
    print(f"\nwrote {path}, {args.output}/classifier, report.json, report.md, reliability.png, weights.png, "
          "extremes.json")  # fmt: skip
    return 0


def _write_extremes(args, annotated, source_column: str) -> None:
    """Per source, the rows with the lowest and the highest weight: printed, in extremes.json, and appended to
    report.md."""
    names = _row_names(args.dataset, len(annotated))
    if isinstance(names, int):
        names = [f"line {i + names}" for i in range(len(annotated))]
    extremes = weight_extremes(annotated, source_column=source_column, row_names=names)
    table = format_extremes(extremes)
    print("\nlowest and highest weights per source:\n" + table)
    with open(os.path.join(args.output, "extremes.json"), "w") as f:
        json.dump(extremes, f, indent=1)
    with open(os.path.join(args.output, "report.md"), "a") as f:
        f.write("\n\n## Lowest and highest weights per source\n\n" + table + "\n")


def _row_names(path: str, n: int) -> list[str] | int | None:
    """How errors name row i: its line in a jsonl file (blank lines skipped, ``dora.data.row_labels``), line
    i + 2 of a csv file; other inputs by row number."""
    from dora.data import row_labels

    ext = path.rsplit(".", 1)[-1].lower() if os.path.isfile(path) else ""
    if ext == "jsonl":
        return row_labels(path, n)
    return 2 if ext == "csv" else None


def check_no_labels_flags(args) -> None:
    """With --target-dataset: refuse the labelled mode's flags and values out of range, before any loading (an empty
    file is refused by ``load_rows``)."""
    given = [f for f, v in (("--target-sources", args.target_sources), ("--target-share", args.target_share),
                            ("--stabilizer", args.stabilizer), ("--preset", args.preset)) if v is not None]
    if args.source_column != "source":
        given.append("--source-column")
    if given:
        raise ValueError(f"{', '.join(given)} belong to labelled mode, not to --target-dataset")
    if int(args.folds) < 2:
        raise ValueError(f"--folds must be >= 2 with --target-dataset (cross-fitted scores), got {args.folds}")


def run_no_labels(args, dataset, backend_kwargs) -> int:
    """`dora classify --target-dataset`: density-ratio weights of the trusted sample against the pool."""
    from dora.classifier.density import DensityRatioWarning, format_table

    trusted = load_rows(args.target_dataset, args.target_split)
    with warnings.catch_warnings():  # printed below, once, as "warning: ..." lines
        warnings.simplefilter("ignore", DensityRatioWarning)
        annotated, report = _annotate(args, dataset, trusted, backend_kwargs)
    path = save_like_input(annotated, args.dataset, args.output)
    print(format_table(report))
    for message in report["warnings"]:
        print(f"warning: {message}")
    _write_extremes(args, annotated, "source")
    print(f"\nwrote {path}, {args.output}/classifier, report.json, report.md, reliability.png, weights.png, share.png, "
          "extremes.json")  # fmt: skip
    return 0


def _annotate(args, dataset, trusted, backend_kwargs):
    from dora.classifier.density import annotate_density_ratio

    return annotate_density_ratio(
        dataset,
        trusted,
        trusted_in_pool=args.trusted_in_pool,
        backend=args.backend,
        folds=args.folds,
        calibration=args.calibration,
        clip="auto" if args.clip is None else args.clip,
        eps=args.eps,
        bootstrap=args.share_bootstrap,
        seed=args.seed,
        output_dir=args.output,
        names=(args.dataset, args.target_dataset),
        line_offsets=(_row_names(args.dataset, len(dataset)), _row_names(args.target_dataset, len(trusted))),
        **backend_kwargs,
    )
