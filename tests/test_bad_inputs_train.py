# ruff: noqa: E501 - the tables of cases read one case a line
"""Bad input to `dora train` and the Python API, table-driven and in-process: each case exits with status 2 and one
line naming the file, row (1-based file line) and field, or the flag (the Python API: the exception), before any
model loads (a load fails the test), and leaves every input and earlier output byte-identical."""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from bad_inputs import assert_unchanged, forbid_loads, one_line_error, snapshot
from conftest import pair_rows


@dataclass
class Ctx:
    tmp: Path
    model: str  # a copy of the tiny model, inside tmp (watched)
    data: str  # 16 good rows

    def write(self, name: str, rows=None, text: str | None = None, raw: bytes | None = None) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if raw is not None:
            path.write_bytes(raw)
        elif text is not None:
            path.write_text(text)
        else:
            path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        return str(path)

    def rows(self, n: int = 16, **change) -> list[dict]:
        """Good rows; ``change``: {"line<k>": {column: value}} (1-based line of the file)."""
        rows = pair_rows(n)
        for key, values in change.items():
            rows[int(key[4:]) - 1].update(values)
        return rows

    def bad_rows(self, **change) -> str:
        return self.write("bad.jsonl", self.rows(**change))

    def argv(self, *extra, data: str | None = None, out: str | None = None) -> list[str]:
        return ["train", "--model_name_or_path", self.model, "--dataset", data or self.data,
                "--output_dir", out or str(self.tmp / "out"), "--report_to", "none", *extra]  # fmt: skip


@pytest.fixture
def ctx(tmp_path, tiny_model_dir, monkeypatch):
    forbid_loads(monkeypatch)
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    c = Ctx(tmp_path, str(model), "")
    c.data = c.write("rows.jsonl", pair_rows(16))
    monkeypatch.chdir(tmp_path)
    return c


def _listwise(n: int, k: int) -> list[dict]:
    return [{"prompt": f"q{i}", "responses": [f"r{j} {i}" for j in range(k)], "scores": list(range(k))}
            for i in range(n)]  # fmt: skip


def _chat_rows(n: int = 4) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"hi {i}"}], "chosen": [{"role": "assistant", "content": "yes"}],
             "rejected": [{"role": "assistant", "content": "no"}]} for i in range(n)]  # fmt: skip


def _group_rows(blank_line: int | None = None) -> list[dict]:
    rows = [dict(r, group="a" if i % 2 else "b") for i, r in enumerate(pair_rows(16))]
    if blank_line:
        rows[blank_line - 1]["group"] = ""
    return rows


def _null_content(c: Ctx) -> str:
    rows = _chat_rows()
    rows[2]["chosen"] = [{"role": "assistant", "content": None}]
    return c.write("chat.jsonl", rows)


def _checkpoint(c: Ctx, name: str, complete: bool = True, **config) -> str:
    """A checkpoint folder in tmp/out (complete: with its marker), with the model's config changed by ``config``."""
    folder = c.tmp / "out" / name
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    cfg = json.loads((Path(c.model) / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **config}))
    if complete:
        (folder / "dora_checkpoint.json").write_text('{"global_step": 2}')
    return str(folder)


def _earlier_run(c: Ctx, data: str) -> None:
    """tmp/out holds an earlier run on other data, with a complete checkpoint."""
    _checkpoint(c, "checkpoint-2")
    record = {"model": os.path.realpath(c.model), "data": {"dataset": [data, "", "0" * 64]}, "earlier_checkpoints": []}
    (c.tmp / "out" / "dora_run.json").write_text(json.dumps(record))


def _overwritten_run(c: Ctx) -> None:
    """tmp/out was overwritten (--overwrite_output_dir) by a run on the same data, killed before its first
    checkpoint: the complete checkpoint-2 there is the earlier run's."""
    from dora.train_cli.run_dir import _record

    _checkpoint(c, "checkpoint-2")
    (c.tmp / "out/checkpoint-2/dora_checkpoint.json").write_text('{"global_step": 2, "run": "earlier"}')
    record = _record({"model_name_or_path": c.model, "dataset": c.data})
    (c.tmp / "out" / "dora_run.json").write_text(json.dumps({**record, "run": "now"}))


def _adapter(c: Ctx, base: str) -> str:
    folder = c.tmp / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "peft_type": "LORA"}))
    return str(folder)


def _no_tokenizer(c: Ctx) -> str:
    folder = c.tmp / "bare_model"
    folder.mkdir()
    for name in os.listdir(c.model):
        if "token" not in name and not name.endswith((".txt", ".model")) and name != "special_tokens_map.json":
            shutil.copy(os.path.join(c.model, name), folder / name)
    return str(folder)


def _read_only(c: Ctx) -> str:
    folder = c.tmp / "ro"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: an immutable folder
        if os.system(f"chattr +i {folder} 2>/dev/null") != 0:
            pytest.skip("chattr +i is not available")
    else:
        folder.chmod(0o555)
    return str(folder / "out")


# (id, argv builder, the message's expected pattern)
CASES = [
    # ---- rows: each named by file, 1-based line and column
    ("number-in-text-column", lambda c: c.argv(data=c.bad_rows(line3={"chosen": 15})),
     r"bad.jsonl: line 3, column 'chosen': number 15 where"),
    ("text-in-number-column", lambda c: c.argv(data=c.bad_rows(line4={"dora_weight": "0.5"})),
     r"bad.jsonl: line 4, column 'dora_weight': text '0.5'"),
    ("list-in-text-column", lambda c: c.argv(data=c.bad_rows(line2={"rejected": ["a", "b"]})),
     r"line 2, column 'rejected': list"),
    ("object-in-text-column", lambda c: c.argv(data=c.bad_rows(line5={"prompt": {"x": 1}})),
     r"line 5, column 'prompt': object"),
    ("empty-chosen", lambda c: c.argv(data=c.bad_rows(line2={"chosen": ""})), r"bad.jsonl, line 2, column 'chosen': empty"),
    ("blank-chosen", lambda c: c.argv(data=c.bad_rows(line2={"chosen": "   "})), r"line 2, column 'chosen': empty"),
    ("null-rejected", lambda c: c.argv(data=c.bad_rows(line7={"rejected": None})), r"line 7, column 'rejected': missing"),
    ("identical-pair", lambda c: c.argv(data=c.bad_rows(line3={"chosen": "same", "rejected": "same"})),
     r"line 3, columns 'chosen'/'rejected': the two responses are identical"),
    ("empty-prompt", lambda c: c.argv(data=c.bad_rows(line9={"prompt": ""})), r"line 9, column 'prompt': empty"),
    ("weight-negative", lambda c: c.argv(data=c.bad_rows(line4={"dora_weight": -1})),
     r"line 4, column 'dora_weight': -1.0 is not a finite number"),
    ("weight-1e300", lambda c: c.argv(data=c.bad_rows(line4={"dora_weight": 1e300})),
     r"line 4, column 'dora_weight': 1e\+300 is not a finite number in \[0.0, 1e\+30\]"),
    ("weight-nan", lambda c: c.argv(data=c.bad_rows(line6={"dora_weight": math.nan})), r"line 6, column 'dora_weight'"),
    ("weight-inf", lambda c: c.argv(data=c.bad_rows(line6={"dora_weight": math.inf})),
     r"line 6, column 'dora_weight': inf"),
    ("weight-null", lambda c: c.argv(data=c.bad_rows(line8={"dora_weight": None})),
     r"line 8, column 'dora_weight': missing"),
    ("weights-all-zero", lambda c: c.argv(data=c.write("z.jsonl", [dict(r, dora_weight=0) for r in pair_rows(16)])),
     r"z.jsonl: every row's 'dora_weight' is 0"),
    ("target-prob-above-1", lambda c: c.argv(data=c.write("p.jsonl", [
        dict(r, target_prob=1.5 if i == 2 else 0.5) for i, r in enumerate(pair_rows(16))])),
     r"line 3, column 'target_prob': 1.5"),
    ("target-prob-without-weights", lambda c: c.argv(data=c.write("p.jsonl", [
        {k: v for k, v in dict(r, target_prob=0.5).items() if k != "dora_weight"} for r in pair_rows(16)])),
     r"column 'target_prob' but no 'dora_weight' column"),
    ("chat-content-null", lambda c: c.argv(data=_null_content(c)),
     r"chat.jsonl, line 3, column 'chosen': message 1 \('assistant'\) has content null"),
    ("chat-list-of-strings", lambda c: c.argv(data=c.write("s.jsonl", [dict(r, chosen=["a", "b"], rejected=["c", "d"])
                                                                      for r in pair_rows(4)])),
     r"s.jsonl, line 1, column 'chosen': a list must hold chat messages \(.* \(4 invalid rows of 4"),
    ("prompt-column-named-question", lambda c: c.argv(data=c.write("q.jsonl", [
        {"question" if k == "prompt" else k: v for k, v in r.items()} for r in pair_rows(16)])),
     r"q.jsonl: no column 'prompt'.*it has \[.*'question'.*rename 'question' to 'prompt'"),
    ("missing-rejected-column", lambda c: c.argv(data=c.write("m.jsonl", [
        {k: v for k, v in r.items() if k != "rejected"} for r in pair_rows(16)])), r"missing column\(s\) \['rejected'\]"),
    ("misspelt-column", lambda c: c.argv(data=c.write("m.jsonl", [
        {"rejectd" if k == "rejected" else k: v for k, v in r.items()} for r in pair_rows(16)])),
     r"'rejectd' for 'rejected'\?"),
    ("broken-json-line", lambda c: c.argv(data=c.write("b.jsonl", text=json.dumps(pair_rows(1)[0]) + "\n{\"prompt\": \n")),
     r"b.jsonl, line 2: not valid JSON"),
    ("json-array-line", lambda c: c.argv(data=c.write("b.jsonl", text=json.dumps(pair_rows(1)[0]) + "\n[1, 2]\n")),
     r"b.jsonl, line 2: a JSON object expected, got list"),
    ("non-utf8-jsonl", lambda c: c.argv(data=c.write("u.jsonl", raw=(json.dumps(pair_rows(1)[0]) + "\n").encode()
                                                     + b'{"prompt": "\xff\xfe"}\n')),
     r"u.jsonl, line 2: not UTF-8 text \(byte 0xff"),
    ("non-utf8-csv", lambda c: c.argv(data=c.write("u.csv", raw=b"prompt,chosen,rejected\na,b,c\nd,\xe9,f\n")),
     r"u.csv, line 3: not UTF-8"),
    ("empty-file", lambda c: c.argv(data=c.write("e.jsonl", text="")), r"e.jsonl: empty file"),
    ("blank-lines-only", lambda c: c.argv(data=c.write("e.jsonl", text="\n\n  \n")), r"e.jsonl: empty file"),
    ("unsupported-suffix", lambda c: c.argv(data=c.write("d.txt", text="hello")), r"d.txt: unsupported file type .txt"),
    ("json-not-array", lambda c: c.argv(data=c.write("d.json", text='"just text"')),
     r"d.json: a JSON array of objects"),
    ("json-broken", lambda c: c.argv(data=c.write("d.json", text='[{"prompt": "a",]')), r"d.json, line 1: not valid JSON"),
    ("missing-dataset", lambda c: c.argv(data="rowz.jsonl"), r"dataset 'rowz.jsonl' not found.*did you mean 'rows.jsonl'"),
    ("mistyped-folder", lambda c: c.argv(data=(c.write("data/rows.jsonl", pair_rows(4)), "dta/rows.jsonl")[1]),
     r"'dta/rows.jsonl' not found.*did you mean 'data/rows.jsonl'"),
    ("listwise-3-pairwise-loss", lambda c: c.argv(data=c.write("l.jsonl", _listwise(8, 3))),
     r"lists of 3 responses, but loss_type \['sigmoid'\] is pairwise"),
    ("listwise-one-response", lambda c: c.argv("--loss_type", "dpo_pl", data=c.write("l.jsonl", _listwise(8, 1))),
     r"line 1, column 'responses': needs a list of at least 2"),
    ("listwise-scores-short", lambda c: c.argv("--loss_type", "dpo_pl", data=c.write("l.jsonl", [
        dict(r, scores=[1]) if i == 2 else r for i, r in enumerate(_listwise(8, 3))])),
     r"line 3, column 'scores': needs one score per response"),
    ("listwise-mixed-items", lambda c: c.argv("--loss_type", "dpo_pl", data=c.write("l.jsonl", [
        dict(r, responses=["a", 2, "c"]) if i == 1 else r for i, r in enumerate(_listwise(8, 3))])),
     r"line 2, column 'responses': a list whose items have different types"),
    ("group-dro-no-group-column", lambda c: c.argv("--objective", "group_dro"), r"missing column\(s\) \['group'\]"),
    ("group-dro-empty-group", lambda c: c.argv("--objective", "group_dro", data=c.write("g.jsonl", _group_rows(5))),
     r"g.jsonl, line 5, column 'group': no group"),
    ("prompt-a-number-everywhere", lambda c: c.argv(data=c.write("n.jsonl", [dict(r, prompt=7) for r in pair_rows(4)])),
     r"column 'prompt': text or chat messages expected, got int 7"),
    ("bad-eval-row", lambda c: c.argv("--eval_dataset", c.bad_rows(line2={"chosen": ""}), "--eval_strategy", "steps"),
     r"eval dataset .*bad.jsonl, line 2, column 'chosen': empty"),
    ("eval-strategy-without-eval-data", lambda c: c.argv("--eval_strategy", "steps"), r"needs eval data"),
    ("weight-column-named-wrong", lambda c: c.argv("--weight_column", "weights"),
     r"no column 'weights' \(weight_column\).*'dora_weight' holds the weights"),
    ("prompts-longer-than-max-length", lambda c: c.argv("--max_length", "3"), r"every prompt is longer than 2 tokens"),
    ("prompts-longer-than-max-prompt-length", lambda c: c.argv("--max_prompt_length", "1"),
     r"every prompt is longer than 1 tokens"),
    # ---- values of flags
    ("beta-nan", lambda c: c.argv("--beta", "nan"), r"beta must be a finite number > 0, got nan"),
    ("beta-yaml-nan", lambda c: c.argv("--beta", ".nan"), r"beta must be a finite number > 0, got nan"),
    ("beta-inf", lambda c: c.argv("--beta", "inf"), r"beta must be a finite number > 0, got inf"),
    ("beta-zero", lambda c: c.argv("--beta", "0"), r"beta must be a finite number > 0, got 0"),
    ("beta-negative", lambda c: c.argv("--beta", "-1"), r"beta must be a finite number > 0, got -1"),
    ("beta-text", lambda c: c.argv("--beta", "big"), r"key 'beta': a number expected, got 'big'"),
    ("dro-lambda-nan", lambda c: c.argv("--dro_lambda", ".nan"), r"dro_lambda must be a finite number"),
    ("dro-lambda-inf", lambda c: c.argv("--dro_lambda", ".inf"), r"dro_lambda must be a finite number"),
    ("dro-lambda-zero", lambda c: c.argv("--dro_lambda", "0"), r"dro_lambda must be a finite number > 0, got 0"),
    ("learning-rate-negative", lambda c: c.argv("--learning_rate", "-1"), r"learning_rate must be >= 0, got -1"),
    ("learning-rate-nan", lambda c: c.argv("--learning_rate", "nan"), r"learning_rate must be a finite number"),
    ("learning-rate-text", lambda c: c.argv("--learning_rate", "fast"), r"key 'learning_rate': a number expected"),
    ("batch-size-zero", lambda c: c.argv("--per_device_train_batch_size", "0"),
     r"per_device_train_batch_size must be >= 1, got 0"),
    ("eval-batch-size-zero", lambda c: c.argv("--per_device_eval_batch_size", "0"),
     r"per_device_eval_batch_size must be >= 1"),
    ("accumulation-zero", lambda c: c.argv("--gradient_accumulation_steps", "0"), r"gradient_accumulation_steps must be >= 1"),
    ("max-length-zero", lambda c: c.argv("--max_length", "0"), r"max_length must be >= 1"),
    ("max-prompt-length-negative", lambda c: c.argv("--max_prompt_length", "-5"), r"max_prompt_length must be >= 1"),
    ("torch-dtype-float13", lambda c: c.argv("--torch_dtype", "float13"),
     r"torch_dtype 'float13': one of auto, bfloat16, float16, float32"),
    ("unknown-tracker", lambda c: c.argv("--report_to", "wandbb"), r"unknown tracker 'wandbb' \(did you mean 'wandb'\?\)"),
    ("objective-kl-dro", lambda c: c.argv("--objective", "kl-dro"), r"unknown objective 'kl-dro' \(did you mean 'kl_dro'"),
    ("unknown-loss", lambda c: c.argv("--loss_type", "dpoo"), r"dpoo"),
    ("robust-label-smoothing", lambda c: c.argv("--loss_type", "robust", "--label_smoothing", "0.6"),
     r"label_smoothing must be in \[0, 0.5\)"),
    ("cvar-alpha-zero", lambda c: c.argv("--objective", "cvar", "--cvar_alpha", "0"), r"cvar_alpha"),
    ("simpo-gamma-nan", lambda c: c.argv("--simpo_gamma", "nan"), r"simpo_gamma must be a finite number"),
    ("group-dro-eta-inf", lambda c: c.argv("--group_dro_eta", "inf"), r"group_dro_eta must be a finite number"),
    ("dr-dpo-beta-zero", lambda c: c.argv("--objective", "dr_dpo", "--dr_dpo_beta", "0"), r"dr_dpo_beta must be > 0"),
    ("truncation-mode-middle", lambda c: c.argv("--truncation_mode", "middle"), r"truncation_mode"),
    ("dora-placement-middle", lambda c: c.argv("--dora_placement", "middle"), r"dora_placement"),
    ("dro-accumulation-all", lambda c: c.argv("--dro_accumulation", "all"), r"dro_accumulation"),
    ("simpo-with-ref-model", lambda c: c.argv("--loss_type", "simpo", "--ref_model", c.model),
     r"ref_model given, but loss_type \['simpo'\] uses no reference: it would be loaded and never used"),
    ("batch-size-fraction", lambda c: c.argv("--per_device_train_batch_size", "2.5"),
     r"key 'per_device_train_batch_size': a whole number expected, got 2.5"),
    ("max-steps-fraction", lambda c: c.argv("--max_steps", "1.5"), r"key 'max_steps': a whole number expected"),
    ("num-train-epochs-nan", lambda c: c.argv("--num_train_epochs", "nan"), r"num_train_epochs must be a number, got nan"),
    ("num-train-epochs-negative", lambda c: c.argv("--num_train_epochs", "-1"), r"num_train_epochs must be > 0"),
    ("max-steps-negative", lambda c: c.argv("--max_steps", "-5"), r"max_steps must be >= 1, or -1"),
    ("save-steps-zero", lambda c: c.argv("--save_steps", "0"), r"save_steps must be > 0 with save_strategy 'steps'"),
    ("eval-steps-zero", lambda c: c.argv("--eval_strategy", "steps", "--eval_steps", "0", "--eval_dataset", c.data),
     r"eval_steps must be > 0"),
    ("max-grad-norm-nan", lambda c: c.argv("--max_grad_norm", "nan"), r"max_grad_norm must be a number, got nan"),
    ("seed-negative", lambda c: c.argv("--seed", "-1"), r"seed must be >= 0"),
    ("dataloader-workers-negative", lambda c: c.argv("--dataloader_num_workers", "-1"), r"dataloader_num_workers must be >= 0"),
    ("logprob-chunk-zero", lambda c: c.argv("--logprob_chunk_tokens", "0"), r"logprob_chunk_tokens must be >= 1"),
    ("dataset-num-proc-zero", lambda c: c.argv("--dataset_num_proc", "0"), r"dataset_num_proc must be >= 1"),
    ("lora-r-zero", lambda c: c.argv("--use_peft", "--lora_r", "0"), r"lora: r must be a whole number >= 1, got 0"),
    ("lora-dropout-one", lambda c: c.argv("--use_peft", "--lora_dropout", "1"), r"lora: lora_dropout must be in \[0, 1\)"),
    ("output-dir-without-value", lambda c: c.argv()[:-4] + ["--report_to", "none", "--output_dir"],
     r"key 'output_dir': a value expected"),
    ("dataset-split-of-a-file", lambda c: c.argv("--dataset_split", "test"),
     r"dataset_split 'test': .*rows.jsonl is a file, which is one split"),
    ("broken-yaml-value", lambda c: c.argv("--model_init_kwargs", "{bad"), r"--model_init_kwargs '\{bad': not a YAML value"),
    ("chat-rows-without-chat-template", lambda c: c.argv(data=c.write("chat.jsonl", _chat_rows(8))),
     r"chat.jsonl: the rows are chat messages, and the tokenizer of .* has no chat template"),
    ("pad-token-not-in-vocabulary", lambda c: c.argv("--pad_token", "<nope>"), r"pad_token '<nope>' is not in the vocabulary"),
    ("attn-implementation", lambda c: c.argv("--attn_implementation", "fast"), r"attn_implementation 'fast': one of eager"),
    ("router-aux-loss-on-dense-model", lambda c: c.argv("--router_aux_loss_coef", "0.1"), r"is not a Mixture-of-Experts"),
    ("lora-target-missing", lambda c: c.argv("--use_peft", "--lora_target_modules", "q_proj", "qkv_proj"),
     r"lora target_modules \['qkv_proj'\]: .* has no such modules"),
    # ---- keys and the recipe
    ("misspelt-key", lambda c: c.argv("--learning_rat", "1e-5"), r"unknown key\(s\) 'learning_rat' \(did you mean 'learning_rate'"),
    ("per-device-batch-size", lambda c: c.argv("--per_device_batch_size", "4"),
     r"did you mean 'per_device_train_batch_size'"),
    ("boolean-word", lambda c: c.argv("--use_peft", "maybe"), r"key 'use_peft': true or false expected"),
    ("streaming", lambda c: c.argv("--dataset_streaming", "true"), r"streaming is not supported"),
    ("load-in-4bit", lambda c: c.argv("--load_in_4bit", "true"), r"quantised loading is not supported"),
    ("lora-not-mapping", lambda c: c.argv("--lora", "[1, 2]"), r"lora: a mapping"),
    ("two-models", lambda c: c.argv("--model_name_or_path", c.model, c.model), r"key 'model_name_or_path': one value"),
    ("no-model", lambda c: ["train", "--dataset", c.data], r"no model: give --model_name_or_path"),
    ("no-data", lambda c: ["train", "--model_name_or_path", c.model], r"no data: give --dataset_name"),
    ("stray-word", lambda c: c.argv("--beta", "0.1", "0.2", "--", "x"), r"."),
    ("config-missing", lambda c: ["train", "--config", "nope.yaml"], r"recipe 'nope.yaml' not found"),
    ("config-invalid-yaml", lambda c: ["train", "--config", c.write("r.yaml", text="a: [1,\nb: 2\n")],
     r"r.yaml, line \d+: not valid YAML"),
    ("config-a-list", lambda c: ["train", "--config", c.write("r.yaml", text="- a\n- b\n")],
     r"r.yaml: a mapping of keys to values expected, got list"),
    ("config-not-utf8", lambda c: ["train", "--config", c.write("r.yaml", raw=b"beta: \xff\xfe\n")], r"r.yaml: not a UTF-8 YAML file"),
    ("config-unknown-lora-key", lambda c: ["train", "--config", c.write("r.yaml", text=(
        f"model_name_or_path: {c.model}\ndataset: {c.data}\noutput_dir: {c.tmp / 'out'}\nlora: {{rank: 4}}\n"))],
     r"unknown key\(s\) in lora: 'rank'"),
    ("debug-key", lambda c: ["train", "--config", c.write("r.yaml", text="debug: underflow_overflow\n")],
     r"key 'debug'"),
    # ---- models
    ("model-missing", lambda c: ["train", "--model_name_or_path", "./no_model", "--dataset", c.data],
     r"model './no_model' not found"),
    ("model-folder-without-config", lambda c: ["train", "--model_name_or_path", str(c.tmp / "data_only"), "--dataset",
                                               (c.write("data_only/x.jsonl", pair_rows(4)), c.data)[1]],
     r"the folder has no config.json"),
    ("model-without-tokenizer", lambda c: c.argv("--model_name_or_path", _no_tokenizer(c)),
     r"model '.*bare_model': the folder has no tokenizer"),
    ("ref-model-missing", lambda c: c.argv("--ref_model", "./no_ref"), r"ref_model './no_ref' not found"),
    ("adapter-base-missing", lambda c: c.argv("--model_name_or_path", _adapter(c, "./gone_base")),
     r"its base model './gone_base'.*is not found"),
    # ---- outputs
    ("output-is-a-file", lambda c: c.argv(out=c.write("out.txt", text="keep me")), r"output_dir '.*out.txt' is a file"),
    ("output-holds-earlier-run", lambda c: c.argv(out=(c.write("out/results.json", text="{}"), str(c.tmp / "out"))[1]),
     r"output_dir '.*out' is not empty \(results.json\): .*--overwrite_output_dir"),
    ("output-is-the-model", lambda c: c.argv(out=c.model), r"output_dir '.*model' would write into the model"),
    ("output-is-the-model-overwrite", lambda c: c.argv("--overwrite_output_dir", out=c.model),
     r"would write into the model"),
    ("output-inside-the-model", lambda c: c.argv(out=os.path.join(c.model, "run")), r"would write into the model"),
    ("output-inside-another-model", lambda c: c.argv(out=os.path.join(_no_tokenizer(c), "run")),
     r"is inside the model folder"),
    ("output-read-only", lambda c: c.argv(out=_read_only(c)), r"output_dir '.*ro/out': cannot write in"),
    ("output-under-sys", lambda c: c.argv(out="/sys/dora_out"), r"output_dir '/sys/dora_out': cannot write"),
    ("output-is-the-dataset-folder", lambda c: c.argv("--overwrite_output_dir", out=c.data), r"is a file"),
    ("output-would-write-over-an-input", lambda c: c.argv("--overwrite_output_dir", data=c.write(
        "run/README.md", text="\n".join(json.dumps(r) for r in pair_rows(16))), out=str(c.tmp / "run")),
     r"output_dir '.*run' would write over the input '.*run/README.md'"),
    # ---- resuming
    ("resume-with-no-checkpoint", lambda c: c.argv("--resume_from_checkpoint", "true"),
     r"resume_from_checkpoint true: no complete checkpoint in output_dir"),
    ("resume-missing-folder", lambda c: c.argv("--resume_from_checkpoint", "./out/checkpoint-9"),
     r"no such checkpoint folder"),
    ("resume-incomplete", lambda c: c.argv("--resume_from_checkpoint", _checkpoint(c, "checkpoint-4", complete=False)),
     r"checkpoint-4': incomplete"),
    ("resume-only-incomplete", lambda c: (_checkpoint(c, "checkpoint-4", complete=False),
                                          c.argv("--resume_from_checkpoint", "true"))[1],
     r"no complete checkpoint"),
    ("resume-another-model", lambda c: c.argv("--resume_from_checkpoint", _checkpoint(c, "checkpoint-2", hidden_size=64)),
     r"is of another model \(hidden_size 64, the model's 32\)"),
    ("resume-lora-on-full", lambda c: c.argv("--resume_from_checkpoint", (
        _checkpoint(c, "checkpoint-2"), (c.tmp / "out/checkpoint-2/adapter_config.json").write_text("{}"),
        str(c.tmp / "out/checkpoint-2"))[2]), r"holds a LoRA adapter, but this run trains the full model"),
    ("resume-skips-an-overwritten-runs-checkpoint", lambda c: (_overwritten_run(c), c.argv(
        "--resume_from_checkpoint", "true"))[1], r"resume_from_checkpoint true: no complete checkpoint in output_dir"),
    ("resume-earlier-run-new-data", lambda c: (_earlier_run(c, c.data), c.argv(
        "--resume_from_checkpoint", "true", data=c.write("new.jsonl", pair_rows(16, seed=1))))[1],
     r"output_dir '.*out' holds a run of another data"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_dora_train_bad_input(case, ctx, capsys):
    _, build, expect = case
    argv = build(ctx)
    try:
        one_line_error(argv, capsys, watch=[ctx.tmp], expect=expect)
    finally:
        if os.geteuid() == 0 and (ctx.tmp / "ro").exists():
            os.system(f"chattr -i {ctx.tmp / 'ro'} 2>/dev/null")


def test_full_disk_is_refused_before_the_model_loads(ctx, capsys, monkeypatch):
    import shutil as _shutil

    real = _shutil.disk_usage
    monkeypatch.setattr(_shutil, "disk_usage", lambda p: real(p)._replace(free=1024))
    one_line_error(ctx.argv(), capsys, watch=[ctx.tmp], expect=r"output_dir '.*out': 0 MiB free in .*needs about")


def test_wandb_without_login_says_how(ctx, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(ctx.tmp / "no_netrc"))
    if not __import__("importlib").util.find_spec("wandb"):
        pytest.skip("wandb is not installed")
    one_line_error(ctx.argv("--report_to", "wandb"), capsys, watch=[ctx.tmp],
                   expect=r"report_to wandb: not logged in .*WANDB_MODE=offline")  # fmt: skip


# ---- the Python API: the exception, before any model loads, inputs unchanged

API_CASES = [
    ("config-beta-nan", dict(beta=math.nan), r"beta must be a finite number > 0"),
    ("config-beta-zero", dict(beta=0.0), r"beta must be a finite number > 0"),
    ("config-beta-inf", dict(beta=math.inf), r"beta must be a finite number > 0"),
    ("config-dro-lambda-nan", dict(dro_lambda=math.nan), r"dro_lambda must be a finite number"),
    ("config-dro-lambda-inf", dict(dro_lambda=math.inf), r"dro_lambda must be a finite number"),
    ("config-learning-rate", dict(learning_rate=-1.0), r"learning_rate must be >= 0"),
    ("config-batch-size", dict(per_device_train_batch_size=0), r"per_device_train_batch_size must be >= 1"),
    ("config-max-length", dict(max_length=0), r"max_length must be >= 1"),
    ("config-tracker", dict(report_to=["tensorbord"]), r"unknown tracker 'tensorbord' \(did you mean 'tensorboard'"),
    ("config-objective", dict(objective="kl-dro"), r"did you mean 'kl_dro'"),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_doraconfig_refuses(case, tmp_path):
    from dora import DoRAConfig

    _, kwargs, expect = case
    with pytest.raises(ValueError, match=expect):
        DoRAConfig(output_dir=str(tmp_path / "out"), report_to=kwargs.pop("report_to", []), **kwargs)
    assert not (tmp_path / "out").exists()


def _trainer(ctx, train_dataset, **config):
    from dora import DoRAConfig, DoRATrainer

    args = DoRAConfig(output_dir=str(ctx.tmp / "out"), report_to=[], **config)
    return DoRATrainer(model=ctx.model, args=args, train_dataset=train_dataset)


TRAINER_CASES = [
    ("path-string", lambda c: c.data, TypeError, r"train_dataset '.*rows.jsonl': rows expected, not a path"),
    ("content-null", lambda c: [dict(r, chosen=[{"role": "assistant", "content": None}]) for r in _chat_rows()],
     ValueError, r"row 1, column 'chosen': message 1 \('assistant'\) has content null"),
    ("all-zero-weights", lambda c: [dict(r, dora_weight=0.0) for r in pair_rows(8)], ValueError,
     r"every row's 'dora_weight' is 0"),
    ("weight-1e300", lambda c: [dict(r, dora_weight=1e300 if i == 3 else 1.0) for i, r in enumerate(pair_rows(8))],
     ValueError, r"row 4, column 'dora_weight': 1e\+300"),
    ("question-column", lambda c: [{"question" if k == "prompt" else k: v for k, v in r.items()} for r in pair_rows(8)],
     ValueError, r"no column 'prompt'.*rename 'question' to 'prompt'"),
    ("not-rows", lambda c: [1, 2, 3], TypeError, r"expected a datasets.Dataset, a list of row dicts"),
]


@pytest.mark.parametrize("case", TRAINER_CASES, ids=[c[0] for c in TRAINER_CASES])
def test_doratrainer_refuses_before_the_model_loads(case, ctx):
    _, rows, error, expect = case
    before = snapshot(ctx.tmp)
    with pytest.raises(error, match=expect):
        _trainer(ctx, rows(ctx))
    assert_unchanged(before, snapshot(ctx.tmp))


def test_calibration_weights_refuse_what_would_be_nan():
    import torch

    from dora import calibration_weights

    with pytest.raises(ValueError, match=r"every weight is 0"):
        calibration_weights(torch.zeros(4), target_share=0.5, eps=0.0, normalize=True)
    with pytest.raises(ValueError, match=r"probs is empty"):
        calibration_weights(torch.zeros(0), target_share=0.5, normalize=True)
    h = calibration_weights(torch.zeros(4), target_share=0.5, normalize=True)  # eps > 0: finite, all equal
    assert torch.equal(h, torch.ones(4))


def test_skip_invalid_rows_drops_only_the_mistyped_row(ctx, caplog):
    from dora.data import load_rows

    path = ctx.bad_rows(line5={"chosen": 15})
    with caplog.at_level("WARNING"):
        ds = load_rows(path, skip_invalid=True)
    assert len(ds) == 15 and ds["chosen"] == [r["chosen"] for i, r in enumerate(pair_rows(16)) if i != 4]
    assert "1 of 16 rows dropped as invalid: line 5, column 'chosen'" in caplog.text


def test_reference_free_loss_does_not_load_the_given_reference(tiny_model_dir, ref_dir, tmp_path, monkeypatch, caplog):
    import transformers

    from dora import DoRAConfig, DoRATrainer

    loads, real = [], transformers.PreTrainedModel.from_pretrained.__func__

    def counted(cls, path, *args, **kwargs):
        loads.append(str(path))
        return real(cls, path, *args, **kwargs)

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(counted))
    args = DoRAConfig(output_dir=str(tmp_path / "out"), loss_type="simpo", report_to=[])
    with caplog.at_level("WARNING"):
        trainer = DoRATrainer(model=tiny_model_dir, ref_model=ref_dir, args=args, train_dataset=pair_rows(8))
    assert loads == [tiny_model_dir] and trainer.ref_model is None
    assert f"ref_model {ref_dir!r} not loaded: loss_type ['simpo'] uses no reference" in caplog.text
