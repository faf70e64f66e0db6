"""DoRAConfig against TRL 1.16's own DPOConfig: every field is accepted with TRL's default and resolves to
TRL's value (bar the documented device-aware ones), a refused value names the field and the alternative,
TRL's documented configurations carry over by renaming the class, and a missing tracker is named up front."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import trl
from conftest import pair_rows
from datasets import Dataset
from transformers import TrainingArguments

from dora import DoRAConfig, DoRATrainer
from dora.config import REFUSED

TA = {f.name: f for f in dataclasses.fields(TrainingArguments)}
TRL = {f.name: f for f in dataclasses.fields(trl.DPOConfig) if f.init}
# DPOConfig's own fields, and the TrainingArguments fields whose default it changes
TRL_FIELDS = sorted(n for n, f in TRL.items() if n not in TA or f.default != TA[n].default)
DEVICE_AWARE = {"bf16", "gradient_checkpointing"}  # None: on with CUDA, off on a CPU (docs/training.md)
# a value other than TRL's default for each field DoRAConfig refuses
NON_DEFAULT = {"pad_to_multiple_of": 8, "activation_offloading": True}


def _default(f):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _value(config, name):
    """A field as resolved; TRL's loss_weights=None means weight 1 for each loss, which DoRAConfig writes out."""
    value = getattr(config, name)
    if name == "loss_weights" and value is None:
        return [1.0] * len(config.loss_type)
    return value


@pytest.fixture(scope="module")
def trl_config(tmp_path_factory):
    return trl.DPOConfig(output_dir=str(tmp_path_factory.mktemp("trl")), report_to="none", bf16=False)


def test_the_field_list_is_trl_1_16s():
    """Guards the parametrisation below: TRL's DPO-specific fields, as read from trl.DPOConfig."""
    for name in ("loss_type", "beta", "use_weighting", "sync_ref_model", "padding_free", "ld_alpha", "learning_rate"):
        assert name in TRL_FIELDS
    assert set(NON_DEFAULT) == set(REFUSED)


@pytest.mark.parametrize("name", TRL_FIELDS)
def test_trl_field_accepted_with_trls_default(tmp_path, trl_config, name):
    value = _default(TRL[name])
    ours = DoRAConfig(output_dir=str(tmp_path), report_to="none", **{name: value})
    if name not in DEVICE_AWARE:
        assert _value(ours, name) == _value(trl_config, name)
        # and without passing it: the same default as TRL
        assert _value(DoRAConfig(output_dir=str(tmp_path), report_to="none"), name) == _value(trl_config, name)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_trl_value_names_field_and_alternative(tmp_path, name):
    with pytest.raises(ValueError, match=rf"^{name}=.* is not supported by DoRATrainer: .+"):
        DoRAConfig(output_dir=str(tmp_path), report_to="none", **{name: NON_DEFAULT[name]})


def test_device_aware_defaults_on_cpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("the CPU defaults")
    args = DoRAConfig(output_dir=str(tmp_path), report_to="none")
    assert args.bf16 is False and args.gradient_checkpointing is False
    assert args.learning_rate == 1e-6 == _default(TRL["learning_rate"])


# the configurations of TRL's DPO documentation, as written there but for the class name
TRL_DOC_CONFIGS = [
    {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]},  # MPO
    {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 1.0]},  # RPO
    {"model_init_kwargs": {"dtype": torch.bfloat16}},
    {"learning_rate": 1e-5},
]


@pytest.mark.parametrize("kwargs", TRL_DOC_CONFIGS, ids=lambda k: next(iter(k)))
def test_trl_doc_configs_carry_over(tmp_path, kwargs):
    ours = DoRAConfig(output_dir=str(tmp_path), report_to="none", **kwargs)
    theirs = trl.DPOConfig(output_dir=str(tmp_path), report_to="none", bf16=False, **kwargs)
    for name in TRL_FIELDS:
        if name not in DEVICE_AWARE:
            assert _value(ours, name) == _value(theirs, name), name


def test_mpo_config_trains_and_model_init_kwargs_reach_from_pretrained(tmp_path, tiny_model_dir, one_thread):
    from peft import LoraConfig

    args = DoRAConfig(
        output_dir=str(tmp_path), report_to="none", max_steps=2, per_device_train_batch_size=4, save_strategy="no",
        loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0], learning_rate=1e-5,
        model_init_kwargs={"dtype": torch.bfloat16},
    )  # fmt: skip
    trainer = DoRATrainer(
        tiny_model_dir, args=args, train_dataset=Dataset.from_list(pair_rows(8)), peft_config=LoraConfig(r=4)
    )
    assert trainer.model.get_base_model().dtype == torch.bfloat16
    assert trainer.train().global_step == 2


@pytest.mark.parametrize("tracker,package", [("mlflow", "mlflow"), ("comet_ml", "comet-ml"), ("clearml", "clearml")])
def test_missing_tracker_named_with_pip_line(tmp_path, monkeypatch, tracker, package):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == tracker else real(n, *a))
    match = rf"report_to names '{tracker}', which is not installed: pip install {package}"
    with pytest.raises(ValueError, match=match):
        DoRAConfig(output_dir=str(tmp_path), report_to=[tracker])


def test_model_init_kwargs_from_json_text(tmp_path):
    args = DoRAConfig(output_dir=str(tmp_path), report_to="none", model_init_kwargs=json.dumps({"revision": "v1"}))
    assert args.model_init_kwargs == {"revision": "v1"}


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(loss_type="robust", label_smoothing=0.5), r"label_smoothing must be in \[0, 0.5\) with loss 'robust'"),
        (dict(loss_type="cdpo", label_smoothing=1.0), r"label_smoothing must be in \[0, 1.0\), got 1.0"),
        (dict(objective="cvar", cvar_alpha=0.0), r"cvar_alpha must be in \(0, 1\]"),
        (dict(objective="kldpo", kldpo_tau=0.0), "kldpo_tau must be > 0"),
        (dict(objective="dr_dpo", dr_dpo_beta=-1.0), "dr_dpo_beta must be > 0"),
        (dict(loss_type="lire", lire_temperature=0.0), "lire_temperature must be > 0"),
    ],
)
def test_out_of_range_values_fail_in_the_config(tmp_path, kw, match):
    """Before any model loads: otherwise the first step fails (robust, cvar) or the losses are NaN (a zero
    temperature divides by 0)."""
    with pytest.raises(ValueError, match=match):
        DoRAConfig(output_dir=str(tmp_path), report_to="none", **kw)
    inside = dict(label_smoothing=0.49, cvar_alpha=1.0, kldpo_tau=0.1, dr_dpo_beta=0.1, lire_temperature=0.1)
    DoRAConfig(output_dir=str(tmp_path), report_to="none", **{**kw, **{k: v for k, v in inside.items() if k in kw}})


def test_cpu_defaults_warn_about_nothing(tmp_path):
    """On this CPU machine the device-aware defaults leave checkpointing and pinned memory off, set through
    transformers' current names: no FutureWarning for `gradient_checkpointing`, no pin_memory warning later."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = DoRAConfig(output_dir=str(tmp_path))
    assert [str(w.message) for w in caught if "checkpointing" in str(w.message)] == []
    assert args.activation_checkpointing is False and args.gradient_checkpointing is False
    assert args.dataloader_pin_memory is False
    with pytest.warns(FutureWarning, match="gradient_checkpointing"):  # a user's explicit old name: theirs to see
        explicit = DoRAConfig(output_dir=str(tmp_path), gradient_checkpointing=True)
    assert explicit.activation_checkpointing is True
