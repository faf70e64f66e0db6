"""A TRL user's code runs on DoRATrainer with the two classes renamed (issue 21): TRL's parser and command-line
flags, TRL 1.16's __init__ signature and model loading, streamed rows, per-row chat-template arguments, tool-calling
rows, image columns refused, model tags and card, and the migration docs."""

from __future__ import annotations

import pytest
from conftest import pair_rows

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


# a chat template that reads a per-row keyword (shout) and the tools, in characters the tiny tokenizer has
TEMPLATE = (
    "{% if tools %}Tools: {% for t in tools %}{{ t.function.name }} {% endfor %}\n{% endif %}"
    "{% for m in messages %}{{ m.role[0] | upper }}: {% if m.tool_calls %}call {{ m.tool_calls[0].function.name }}"
    "{% else %}{{ m.content }}{% endif %}{% if shout %}!{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}A: {% endif %}"
)


@pytest.fixture
def chat_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = TEMPLATE
    return tok


def _rendered(tok, messages, **kwargs) -> list[int]:
    return list(tok.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"])


def test_chat_template_kwargs_column_reaches_the_template_per_row(chat_tokenizer):
    """Each row's chat_template_kwargs go to its chat template, as TRL 1.16 (the column was dropped)."""
    from datasets import Dataset

    from dora.data import prepare_dataset

    prompt = [{"role": "user", "content": "Hi"}]
    rows = [
        {"prompt": prompt, "chosen": [{"role": "assistant", "content": "yes"}],
         "rejected": [{"role": "assistant", "content": "no"}], "chat_template_kwargs": {"shout": bool(i % 2)}}
        for i in range(2)
    ]  # fmt: skip
    out = prepare_dataset(Dataset.from_list(rows), chat_tokenizer)
    for i in range(2):
        expected = _rendered(chat_tokenizer, prompt, add_generation_prompt=True, shout=bool(i % 2))
        assert out[i]["prompt_ids"] == expected
        full = _rendered(chat_tokenizer, prompt + rows[i]["chosen"], shout=bool(i % 2))
        assert out[i]["prompt_ids"] + out[i]["completion_ids"][0] == full
    assert out[0]["prompt_ids"] != out[1]["prompt_ids"]


def test_tool_calling_rows_are_accepted_and_their_tools_rendered(chat_tokenizer, tiny_model_dir):
    """Assistant messages with tool_calls and no content, tool messages and a tools column (TRL's toolcall data,
    stored as JSON values so a message has only its own keys) are valid rows; the tools reach the template."""
    from datasets import Dataset

    from dora.data import prepare_dataset, validate_rows

    call = {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "timer", "arguments": {}}}]}
    tools = [{"type": "function", "function": {"name": "timer", "description": "Starts a timer"}}]
    prompt = [{"role": "user", "content": "Set a timer"}]
    answer = [call, {"role": "tool", "name": "timer", "content": "ok"}, {"role": "assistant", "content": "Set"}]
    data = {
        "prompt": [prompt, prompt],
        "chosen": [answer] * 2,
        "rejected": [[{"role": "assistant", "content": "No"}]] * 2,
        "tools": [tools, tools],
    }  # fmt: skip
    ds = Dataset.from_dict(data, on_mixed_types="use_json")
    assert "content" not in ds[0]["chosen"][0]  # the tool call has no content key, as in TRL's data set
    validate_rows(ds)
    out = prepare_dataset(ds, chat_tokenizer, validated=True)
    assert out[0]["prompt_ids"] == _rendered(chat_tokenizer, prompt, add_generation_prompt=True, tools=tools)
    full = _rendered(chat_tokenizer, prompt + data["chosen"][0], tools=tools)
    assert out[0]["prompt_ids"] + out[0]["completion_ids"][0] == full
    assert chat_tokenizer.decode(out[0]["prompt_ids"]).startswith("Tools: timer")


def test_image_column_on_a_text_model_is_refused(tmp_path, tiny_model_dir):
    """Rows with images on a text-only model are refused in one line naming the column, as TRL (they were dropped
    without a word); a vision-language model takes them (tests/test_vision.py)."""
    from dora import DoRATrainer

    rows = [{"prompt": "Q", "chosen": "a", "rejected": "b", "images": [[1, 2]]}] * 2
    args = DoRAConfig(output_dir=str(tmp_path / "out"), report_to=[])
    with pytest.raises(ValueError, match="column 'images'.*vision-related.*text-only model, not a vision-language"):
        DoRATrainer(tiny_model_dir, args=args, train_dataset=rows)


def test_init_takes_trl_signature_in_trl_order():
    """Every parameter of TRL 1.16's DPOTrainer.__init__, in TRL's order, so that positional calls bind alike
    (data_collator came after processing_class; compute_metrics and quantization_config were missing)."""
    import inspect

    from trl import DPOTrainer

    from dora import DoRATrainer

    trl_names = list(inspect.signature(DPOTrainer.__init__).parameters)
    ours = list(inspect.signature(DoRATrainer.__init__).parameters)
    assert ours[: len(trl_names)] == trl_names
    assert all(p.kind == p.KEYWORD_ONLY for p in list(inspect.signature(DoRATrainer.__init__).parameters.values())[
        len(trl_names):])  # fmt: skip


def test_train_dataset_none_is_refused_in_init(tmp_path):
    from dora import DoRATrainer

    args = DoRAConfig(output_dir=str(tmp_path / "out"), report_to=[])
    with pytest.raises(ValueError, match="`train_dataset` is required"):
        DoRATrainer(str(tmp_path / "no-model"), args=args)


def test_compute_metrics_is_called_at_evaluation(tmp_path, tiny_model_dir, one_thread):
    """compute_metrics receives the policy's logits and the input ids (TRL 1.16's deprecated path) and its result is
    logged with the eval prefix."""
    from datasets import Dataset

    from dora import DoRATrainer

    seen = {}

    def metrics(pred):
        seen["shapes"] = (pred.predictions.shape, pred.label_ids.shape)
        return {"my_metric": 0.123}

    rows = Dataset.from_list(pair_rows(4))
    args = DoRAConfig(output_dir=str(tmp_path / "out"), report_to=[], max_steps=1, per_device_train_batch_size=2,
                      per_device_eval_batch_size=4, eval_strategy="steps", eval_steps=1, disable_tqdm=True)  # fmt: skip
    trainer = DoRATrainer(tiny_model_dir, None, args, None, rows, rows, compute_metrics=metrics)
    trainer.train()
    assert [h["eval_my_metric"] for h in trainer.state.log_history if "eval_my_metric" in h] == [0.123]
    (logits, labels) = seen["shapes"]
    assert logits[:2] == labels and logits[2] == trainer.model.config.vocab_size


@pytest.fixture(scope="module")
def bf16_model_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model saved in bfloat16, as most Hub checkpoints are."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(tmp_path_factory.mktemp("tiny_bf16"))
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="bfloat16").save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


@pytest.mark.parametrize("init_kwargs", [None, {"dtype": "bfloat16"}, {"dtype": "auto"}])
def test_model_by_name_loads_in_trl_dtype(tmp_path, bf16_model_dir, init_kwargs):
    """A model given by name loads as TRL 1.16's create_model_from_path loads it: float32 unless model_init_kwargs
    sets a dtype (it loaded in the checkpoint's bf16)."""
    import torch
    from trl.trainer.utils import create_model_from_path

    from dora import DoRATrainer

    args = DoRAConfig(output_dir=str(tmp_path / "out"), report_to=[], model_init_kwargs=init_kwargs)
    trainer = DoRATrainer(bf16_model_dir, args=args, train_dataset=pair_rows(2))
    expected = create_model_from_path(bf16_model_dir, **(init_kwargs or {})).dtype
    assert trainer.model.dtype == expected == (torch.float32 if init_kwargs is None else torch.bfloat16)
    assert trainer.ref_model.dtype == expected


def test_quantization_config_is_refused_on_cpu_in_one_line(tmp_path, tiny_model_dir):
    """QLoRA's quantization_config is a trainer argument (as TRL 1.16); without bitsandbytes on a CUDA GPU it is
    refused before the model loads, as is a quantization_config for a model already loaded, or set twice."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from dora import DoRATrainer

    q = BitsAndBytesConfig(load_in_4bit=True)
    args = DoRAConfig(output_dir=str(tmp_path / "out"), report_to=[])
    with pytest.raises(ValueError, match="quantization_config loads the model in 4/8 bits with bitsandbytes"):
        DoRATrainer(str(tmp_path / "no-model"), args=args, train_dataset=pair_rows(2), quantization_config=q,
                    peft_config=LoraConfig())  # fmt: skip
    twice = DoRAConfig(output_dir=str(tmp_path / "out"), report_to=[], model_init_kwargs={"quantization_config": q})
    with pytest.raises(ValueError, match="set it in one place"):
        DoRATrainer(tiny_model_dir, args=twice, train_dataset=pair_rows(2), quantization_config=q)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="loaded by name"):
        DoRATrainer(model, args=args, train_dataset=pair_rows(2), quantization_config=q)


def test_remove_unused_columns_as_trl(tmp_path, tiny_model_dir, one_thread):
    """remove_unused_columns defaults to True, as TRL's (so TRL's documented `--no_remove_unused_columns` parses),
    and training keeps the columns the collator reads, with or without it."""
    from trl import TrlParser

    from dora import DoRATrainer

    parser = TrlParser((DoRAConfig,))
    (args,) = parser.parse_args_and_config(["--output_dir", str(tmp_path), "--no_remove_unused_columns"])
    assert args.remove_unused_columns is False
    (args,) = parser.parse_args_and_config(["--output_dir", str(tmp_path / "out"), "--max_steps", "1",
                                            "--per_device_train_batch_size", "2", "--report_to", "none"])  # fmt: skip
    assert args.remove_unused_columns is True
    rows = [{**r, "note": "kept out of the batch"} for r in pair_rows(2)]
    trainer = DoRATrainer(tiny_model_dir, args=args, train_dataset=rows)
    assert trainer.train().global_step == 1
    batch = next(iter(trainer.get_train_dataloader()))
    assert {"input_ids", "attention_mask", "completion_mask", "scores"} <= set(batch)


def _stream(rows):
    from datasets import Dataset

    return Dataset.from_list(rows).to_iterable_dataset()


def test_streamed_rows_train_and_evaluate_as_the_same_rows_in_a_dataset(tmp_path, tiny_model_dir, one_thread):
    """An IterableDataset trains (max_steps) and evaluates, alone or in a dict (it crashed on len() in the row
    check); with every row in one batch its first loss equals that of the same rows as a map-style Dataset."""
    from datasets import Dataset, IterableDatasetDict

    from dora import DoRATrainer

    rows = pair_rows(4)

    def run(train, evals):
        args = DoRAConfig(output_dir=str(tmp_path / "out"), report_to=[], max_steps=1, per_device_train_batch_size=4,
                          per_device_eval_batch_size=4, logging_steps=1, disable_tqdm=True)  # fmt: skip
        trainer = DoRATrainer(tiny_model_dir, args=args, train_dataset=train, eval_dataset=evals)
        trainer.train()
        return trainer.state.log_history[0]["loss"], trainer.evaluate()

    loss_stream, eval_stream = run(_stream(rows), IterableDatasetDict({"a": _stream(rows)}))
    loss_map, eval_map = run(Dataset.from_list(rows), {"a": Dataset.from_list(rows)})
    assert loss_stream == pytest.approx(loss_map, rel=1e-5)
    assert eval_stream["eval_a_loss"] == pytest.approx(eval_map["eval_a_loss"], rel=1e-5)


def test_streams_refuse_precompute_and_name_a_bad_row(tmp_path, tiny_model_dir):
    """precompute_ref_log_probs on a stream is refused before the model loads, as TRL; a bad row of a stream is
    named by its row number when it is read."""
    from dora import DoRATrainer

    args = DoRAConfig(output_dir=str(tmp_path / "out"), report_to=[], max_steps=1, precompute_ref_log_probs=True)
    for train, evals in [(_stream(pair_rows(2)), None), (pair_rows(2), {"e": _stream(pair_rows(2))})]:
        with pytest.raises(ValueError, match="precompute_ref_log_probs=True is not supported with IterableDataset"):
            DoRATrainer(str(tmp_path / "no-model"), args=args, train_dataset=train, eval_dataset=evals)
    rows = pair_rows(3)
    rows[2]["chosen"] = rows[2]["rejected"]
    args = DoRAConfig(output_dir=str(tmp_path / "out"), report_to=[], max_steps=1, per_device_train_batch_size=3)
    trainer = DoRATrainer(tiny_model_dir, args=args, train_dataset=_stream(rows))
    with pytest.raises(ValueError, match="train dataset, row 3, columns 'chosen'/'rejected': the two responses"):
        trainer.train()


@pytest.mark.parametrize("peft", [False, True])
def test_model_tags_and_card_as_trl(tmp_path, tiny_model_dir, monkeypatch, one_thread, peft):
    """Tags trl, dpo (as TRL) and dora on the model, full fine-tune or adapter; a README.md card beside each
    checkpoint; create_model_card(dataset_name=...) and push_to_hub(dataset_name=...) as TRL's script calls them
    (both raised TypeError). The upload itself is replaced: nothing leaves the machine."""
    import transformers.trainer
    from peft import LoraConfig

    from dora import DoRATrainer

    out = tmp_path / "run"
    args = DoRAConfig(output_dir=str(out), report_to=[], max_steps=1, per_device_train_batch_size=2, save_steps=1)
    trainer = DoRATrainer(tiny_model_dir, args=args, train_dataset=pair_rows(2),
                          peft_config=LoraConfig(r=4) if peft else None)  # fmt: skip
    assert {"trl", "dpo", "dora"} <= set(trainer.model.model_tags)
    trainer.train()
    card = (out / "README.md").read_text()
    assert "DoRA" in card and "- dora" in card and "- trl" in card and "2504.05831" in card
    trainer.create_model_card(dataset_name="my/prefs")
    assert "my/prefs" in (out / "README.md").read_text()

    uploads = []

    class Api:
        def upload_folder(self, **kwargs):
            uploads.append(kwargs)

    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: Api())
    trainer.hub_model_id = "me/tiny-dora"
    trainer.push_to_hub(dataset_name="other/prefs")
    assert uploads and uploads[0]["repo_id"] == "me/tiny-dora"
    assert "other/prefs" in (out / "README.md").read_text()


# ---------------------------------------------------------------- TRL's own example script, two classes renamed

RENAMED = {
    "DPOTrainer": "from dora import DoRATrainer as DPOTrainer",
    "DPOConfig": "from dora import DoRAConfig as DPOConfig",
}
LOGGED = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
          "logps/rejected"]  # fmt: skip


def _run_dpo_script(argv: list[str], renamed: bool) -> list[dict]:
    """Run the installed trl/scripts/dpo.py in this process (as its __main__ block does), TRL's classes or ours, and
    return the log history of the last checkpoint it saved."""
    import glob
    import json
    import os
    import re

    import trl.scripts.dpo as script

    source = open(script.__file__).read()
    for name, line in RENAMED.items() if renamed else ():  # `from trl import A, DPOTrainer, B` loses the name
        pattern = re.compile(rf"^( *)(from trl import .*){name}, (.*)$", re.M)
        assert len(pattern.findall(source)) == 1, f"{script.__file__}: no single import of {name} from trl"
        source = pattern.sub(lambda m, line=line: f"{m[1]}{m[2]}{m[3]}\n{m[1]}{line}", source)
    namespace = {"__name__": "dpo_script", "__file__": script.__file__}
    exec(compile(source, script.__file__, "exec"), namespace)
    parsed = namespace["make_parser"]().parse_args_and_config(argv)
    namespace["main"](*parsed)
    out = argv[argv.index("--output_dir") + 1]
    last = max(glob.glob(os.path.join(out, "checkpoint-*")), key=lambda p: int(p.rsplit("-", 1)[1]))
    return json.load(open(os.path.join(last, "trainer_state.json")))["log_history"]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_trl_dpo_script_renamed_logs_trl_numbers(tmp_path, tiny_model_dir, one_thread, lora):
    """trl/scripts/dpo.py with only DPOConfig / DPOTrainer renamed runs TRL's documented command lines (full and
    LoRA; fewer steps, a tiny local model and data set) and, with --objective mean, logs the loss and rewards that
    TRL's own run of the same command logs, train and eval. --bf16 false on both: TRL turns bf16 on even on a CPU,
    DoRAConfig only on a GPU."""
    import json

    data = tmp_path / "prefs"
    data.mkdir()
    for split, seed in (("train", 0), ("test", 1)):
        with open(data / f"{split}.jsonl", "w") as f:
            for r in pair_rows(4, seed=seed):
                f.write(json.dumps({k: r[k] for k in ("prompt", "chosen", "rejected")}) + "\n")
    command = [
        "--dataset_name", str(data), "--model_name_or_path", tiny_model_dir, "--learning_rate", "5.0e-6",
        "--num_train_epochs", "1", "--per_device_train_batch_size", "2", "--max_steps", "2",
        "--gradient_accumulation_steps", "2", "--eval_strategy", "steps", "--eval_steps", "1",
        "--no_remove_unused_columns", "--logging_steps", "1", "--save_steps", "2", "--bf16", "false",
        "--report_to", "none", "--seed", "0",
    ] + (["--use_peft", "--lora_r", "32", "--lora_alpha", "16"] if lora else [])  # fmt: skip
    ours = _run_dpo_script([*command, "--output_dir", str(tmp_path / "dora"), "--objective", "mean"], renamed=True)
    theirs = _run_dpo_script([*command, "--output_dir", str(tmp_path / "trl")], renamed=False)
    for key in LOGGED + [f"eval_{k}" for k in LOGGED]:
        mine = [h[key] for h in ours if key in h]
        trl_values = [h[key] for h in theirs if key in h]
        assert len(mine) == len(trl_values) == 2, key
        assert mine == pytest.approx(trl_values, rel=1e-4, abs=1e-6), key


def test_migration_docs_say_first_to_set_objective_mean():
    """docs/trl.md opens with objective="mean" (a renamed script otherwise trains KL-DRO), and the README's section
    for TRL users says it first and links there."""
    import os

    root = os.path.join(os.path.dirname(__file__), "..")
    doc = open(os.path.join(root, "docs", "trl.md")).read()
    assert doc.split("\n## ")[1].startswith('First: `objective="mean"` reproduces DPO')
    readme = open(os.path.join(root, "README.md")).read()
    section = readme.split("## Coming from TRL")[1].split("\n## ")[0]
    assert section.index('objective="mean"') < section.index("docs/trl.md")
