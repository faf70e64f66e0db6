"""Shared fixtures: a tiny Llama and a character tokenizer, saved and loaded like a Hub checkpoint."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
# one thread per process (this one, before torch is imported, and every subprocess a test starts): tiny models run
# fastest so, and two processes at once (pytest-xdist's workers, a launch beside another) do not fight for 2 cores
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and stay fast when other processes share the cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A folder with a tiny LlamaForCausalLM and its tokenizer (from_pretrained-able)."""
    from dora.synthetic import build_model, build_tokenizer

    path = str(tmp_path_factory.mktemp("tiny_llama"))
    tok = build_tokenizer(path)
    build_model(path, tok, hidden=32, layers=2, seed=0)
    return path


@pytest.fixture(scope="session")
def ref_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model with another seed (same tokenizer): a reference, so that policy != reference at step 1."""
    from transformers import AutoTokenizer

    from dora.synthetic import build_model

    path = str(tmp_path_factory.mktemp("tiny_ref"))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.save_pretrained(path)
    build_model(path, tok, hidden=32, layers=2, seed=1)
    return path


def pair_rows(n: int = 8, seed: int = 0, sources=("human", "gpt")) -> list[dict]:
    """Small pairwise rows with sources and weights."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append({
            "prompt": f"Q: {a}+{b}=\nA: ",
            "chosen": f"{a + b}" if i % 2 else f"The answer is {a + b}.",
            "rejected": f"{a + b + 1} I am sure." if i % 3 else f"{a + b - 1}",
            "source": sources[i % len(sources)],
            "dora_weight": round(0.25 + 1.5 * rng.random(), 4),
        })  # fmt: skip
    return rows


def free_port() -> int:
    """A TCP port free now, for one `accelerate launch`: launches that run at the same time (two in one test, or
    two pytest-xdist workers) must not share accelerate's default 29500."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(config: str, *flags: str) -> list[str]:
    """``accelerate launch --config_file CONFIG`` on a port of its own, then ``flags``."""
    import shutil
    import sys

    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    return [accelerate, "launch", "--config_file", config, "--main_process_port", str(free_port()), *flags]


def run_together(commands: dict, folder, env: dict, timeout: int = 420) -> None:
    """Start every command at once and wait for all (one process importing torch leaves the other core idle);
    each must exit 0. Their output goes to folder/<name>.log, whose tail is the failure message."""
    import subprocess

    procs = {}
    for name, cmd in commands.items():
        with open(folder / f"{name}.log", "w") as log:
            procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        for name, p in procs.items():
            assert p.wait(timeout=timeout) == 0, f"{name}: " + (folder / f"{name}.log").read_text()[-4000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def launch_cases(script: str, launchers: dict, model_dir: str, folder) -> dict:
    """Run a multi-process case script (tests/scripts/*_cases.py) once per launcher on the same 16 rows, all at
    once; each run must succeed and leave results.pt in folder/<name>. Returns {name: its results}."""
    import json

    import torch

    data = folder / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in pair_rows(16)))
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1")
    env.pop("TENSORBOARD_LOGGING_DIR", None)
    for name in launchers:
        (folder / name).mkdir()
    run_together({name: [*launcher, script, model_dir, str(data), str(folder / name)]
                  for name, launcher in launchers.items()}, folder, env)  # fmt: skip
    return {name: torch.load(folder / name / "results.pt") for name in launchers}


def assert_same_params(a: dict, b: dict, **tol) -> None:
    """The same parameter names, and each tensor of ``b`` close to ``a``'s."""
    import torch

    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], msg=k, **tol)


def write_jsonl(path, rows, blank_after=()) -> str:
    """Rows one JSON object per line (a blank line after the rows whose index is in ``blank_after``); the path."""
    import json

    with open(path, "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps(r) + "\n")
            if i in blank_after:
                f.write("\n")
    return str(path)


def trainer_config(tmp_path, **kw):
    """A DoRAConfig for one quick CPU step on 8 rows (no saving, no trackers, seed 0); ``kw`` overrides."""
    from dora import DoRAConfig

    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, max_steps=1, logging_steps=1,
                report_to=[], save_strategy="no", disable_tqdm=True, learning_rate=1e-3, seed=0)  # fmt: skip
    return DoRAConfig(**{**base, **kw})


def build_tiny_encoder(path, words) -> str:
    """A tiny BERT and a word-level tokenizer over ``words`` (plus BERT's special tokens), saved like a Hub
    checkpoint in ``path``, for the transformer and embedding classifier backends."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(str(path))  # fmt: skip
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    BertModel(config).save_pretrained(str(path))
    return str(path)
