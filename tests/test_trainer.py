"""DoRATrainer against TRL 1.16's DPOTrainer, across processes, with LoRA, resumed, and on bad input."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from conftest import accelerate_launch, pair_rows, run_together, trainer_config, write_jsonl
from datasets import Dataset

from dora import DoRATrainer

HERE = os.path.dirname(__file__)


config = trainer_config


@pytest.mark.parametrize("loss_type,eps", [("sigmoid", 0.0), ("ipo", 0.0), ("robust", 0.1)])
def test_first_step_equals_trl(tmp_path, tiny_model_dir, ref_dir, loss_type, eps):
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    rows = pair_rows(8)
    trl = DPOTrainer(
        model=tiny_model_dir,
        ref_model=AutoModelForCausalLM.from_pretrained(ref_dir),
        args=DPOConfig(
            output_dir=str(tmp_path / "trl"),
            bf16=False,
            gradient_checkpointing=False,
            per_device_train_batch_size=8,
            max_steps=1,
            logging_steps=1,
            report_to=[],
            loss_type=loss_type,
            label_smoothing=eps,
            beta=0.1,
            disable_tqdm=True,
            save_strategy="no",
        ),
        train_dataset=Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]),
    )
    trl.train()
    ours = DoRATrainer(
        model=tiny_model_dir,
        ref_model=ref_dir,
        args=config(tmp_path, loss_type=loss_type, label_smoothing=eps, objective="mean"),
        train_dataset=Dataset.from_list(rows),
    )
    ours.train()
    a, b = trl.state.log_history[0], ours.state.log_history[0]
    assert abs(a["loss"] - 0.6931) > 1e-3 or loss_type != "sigmoid"  # policy != reference
    for key in (
        "loss",
        "rewards/margins",
        "rewards/chosen",
        "rewards/accuracies",
        "logps/chosen",
        "grad_norm",
    ):
        assert b[key] == pytest.approx(a[key], abs=1e-5, rel=1e-5), key


def test_objective_and_weights_reach_the_loss(tmp_path, tiny_model_dir, ref_dir):
    """With objective "dora" the logged loss is lam log mean exp(h l / lam) of the per-sample losses."""
    rows = pair_rows(8)
    t = DoRATrainer(
        model=tiny_model_dir,
        ref_model=ref_dir,
        args=config(tmp_path, objective="mean"),
        train_dataset=Dataset.from_list(rows),
    )
    batch = t.data_collator([t.train_dataset[i] for i in range(8)])
    with torch.no_grad():
        losses, *_ = t._batch_losses(t.model, batch)
    h = torch.tensor([r["dora_weight"] for r in rows])
    lam = 0.7
    expected = lam * (torch.logsumexp(h * losses / lam, 0) - torch.log(torch.tensor(8.0)))
    t2 = DoRATrainer(
        model=tiny_model_dir,
        ref_model=ref_dir,
        args=config(tmp_path, objective="dora", dro_lambda=lam),
        train_dataset=Dataset.from_list(rows),
    )
    t2.train()
    log = t2.state.log_history[0]
    assert log["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert log["dora/weight_mean"] == pytest.approx(float(h.mean()), rel=1e-5)
    assert log["dora/weight_max"] == pytest.approx(float(h.max()), rel=1e-5)
    assert 1.0 <= log["dora/ess"] < 8.0
    assert {"source/human/loss", "source/gpt/accuracy"} <= set(log)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, tiny_model_dir):
    """accelerate launch, 2 CPU processes x 4 rows == 1 process x 8 rows, objective "dora", one SGD step."""
    data = write_jsonl(tmp_path / "rows.jsonl", pair_rows(8))
    script = os.path.join(HERE, "scripts", "one_step.py")
    cfg = os.path.join(HERE, "..", "recipes", "accelerate_configs", "cpu2.yaml")
    launchers = {"two": (accelerate_launch(cfg), 4), "one": ([sys.executable], 8)}
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    run_together({name: [*launcher, script, tiny_model_dir, data, str(tmp_path / f"{name}.pt"), str(batch), "dora"]
                  for name, (launcher, batch) in launchers.items()}, tmp_path, env)  # fmt: skip
    two, one = torch.load(tmp_path / "two.pt"), torch.load(tmp_path / "one.pt")
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-6)
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    moved = max(float((one["params"][k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-4  # the step changed the parameters
    for k, v in one["params"].items():
        torch.testing.assert_close(two["params"][k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_gradient_accumulation_full_equals_big_batch(tmp_path, tiny_model_dir, ref_dir):
    rows = Dataset.from_list(pair_rows(8))

    def params(**kw):
        t = DoRATrainer(
            model=tiny_model_dir,
            ref_model=ref_dir,
            args=config(
                tmp_path, objective="dora", optim="sgd", learning_rate=0.5, lr_scheduler_type="constant", **kw
            ),
            train_dataset=rows,
        )
        t.train()
        return {k: v.detach().clone() for k, v in t.model.state_dict().items()}, t.state.log_history[0][
            "loss"
        ]

    big, big_loss = params(per_device_train_batch_size=8)
    full, full_loss = params(
        per_device_train_batch_size=4, gradient_accumulation_steps=2, dro_accumulation="full"
    )
    micro, micro_loss = params(per_device_train_batch_size=4, gradient_accumulation_steps=2)
    assert full_loss == pytest.approx(big_loss, rel=1e-5)
    for k in big:
        torch.testing.assert_close(full[k], big[k], rtol=1e-5, atol=1e-6, msg=k)
    # per micro-batch DRO is a different objective: the log-mean-exp of halves differs from the whole
    assert micro_loss != pytest.approx(big_loss, rel=1e-4)


def test_metrics_count_every_row_of_the_last_accumulation(tmp_path, tiny_model_dir):
    """14 rows, micro-batches of 4, 2 accumulation steps: step 2 runs micro-batches of 4 and 2 rows, both fetched
    before either runs. Its logged means cover those 6 rows (not the last batch's 2 rows twice)."""
    rows = pair_rows(14)
    t = DoRATrainer(model=tiny_model_dir, train_dataset=Dataset.from_list(rows), args=config(
        tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=-1, num_train_epochs=1,
        objective="mean", learning_rate=1e-6))  # fmt: skip
    t.train()
    first, second = [h for h in t.state.log_history if "loss" in h]
    total = sum(r["dora_weight"] for r in rows)
    assert 8 * first["dora/weight_mean"] + 6 * second["dora/weight_mean"] == pytest.approx(total, rel=1e-6)


def test_lora_trains_adapter_with_disabled_adapter_reference(tmp_path, tiny_model_dir):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    rows = Dataset.from_list(pair_rows(8))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.05)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    torch.manual_seed(0)
    t = DoRATrainer(
        model=base,
        args=config(tmp_path, max_steps=3, learning_rate=1e-2),
        train_dataset=rows,
        peft_config=lora,
    )
    assert t.ref_model is None
    trainable = [n for n, p in t.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    t.train()
    merged = t.model.get_base_model().state_dict()
    for k, v in before.items():  # base weights untouched
        key = next(m for m in merged if m.replace("base_layer.", "") == k)
        torch.testing.assert_close(merged[key], v, msg=k)
    # the same run with an explicit frozen base as the reference gives the same losses
    torch.manual_seed(0)
    t2 = DoRATrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        ref_model=tiny_model_dir,
        args=config(tmp_path, max_steps=3, learning_rate=1e-2),
        train_dataset=rows,
        peft_config=lora,
    )
    t2.train()
    l1 = [h["loss"] for h in t.state.log_history if "loss" in h]
    l2 = [h["loss"] for h in t2.state.log_history if "loss" in h]
    assert len(l1) == 3 and l1 == pytest.approx(l2, rel=1e-5)
    assert l1[-1] != pytest.approx(l1[0], rel=1e-4)  # the adapter moved


def test_resume_gives_the_same_parameters(tmp_path, tiny_model_dir, ref_dir):
    rows = [dict(r, group=["a", "b", "c"][i % 3]) for i, r in enumerate(pair_rows(16))]
    ds = Dataset.from_list(rows)

    def trainer(out, **kw):
        return DoRATrainer(
            model=tiny_model_dir,
            ref_model=ref_dir,
            args=config(
                tmp_path,
                output_dir=str(out),
                objective="group_dro",
                group_dro_eta=0.5,
                per_device_train_batch_size=4,
                max_steps=4,
                save_strategy="steps",
                save_steps=2,
                lr_scheduler_type="constant",
                **kw,
            ),
            train_dataset=ds,
        )

    full = trainer(tmp_path / "full")
    full.train()
    part = trainer(tmp_path / "part")
    part.args.max_steps = 2
    part.train()
    assert os.path.exists(tmp_path / "part" / "checkpoint-2" / "dora_state.json")
    resumed = trainer(tmp_path / "part")
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-2"))
    torch.testing.assert_close(resumed.group_state.alpha, full.group_state.alpha)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-6, atol=1e-7, msg=k)


def test_listwise_and_reference_free(tmp_path, tiny_model_dir):
    lists = [
        {
            "prompt": f"Q: {i}+1=\nA: ",
            "responses": [f"{i + 1}", f"{i + 2}", f"= {i}"],
            "scores": [2.0, 1.0, 0.0],
            "source": "human",
        }
        for i in range(6)
    ]
    t = DoRATrainer(
        model=tiny_model_dir,
        args=config(tmp_path, loss_type="dpo_pl", max_steps=2, per_device_train_batch_size=3),
        train_dataset=Dataset.from_list(lists),
    )
    t.train()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in t.state.log_history if "loss" in h)
    s = DoRATrainer(
        model=tiny_model_dir,
        args=config(tmp_path, loss_type="simpo", max_steps=1),
        train_dataset=Dataset.from_list(pair_rows(8)),
    )
    assert s.ref_model is None and s.args.beta == 2.0
    s.train()
    assert "rewards/margins" in s.state.log_history[0]


def test_frozen_copy_is_a_separate_reference(tmp_path, tiny_model_dir):
    """Without ref_model, the reference is a frozen copy: after training, policy and reference differ."""
    rows = Dataset.from_list(pair_rows(8))
    t = DoRATrainer(model=tiny_model_dir, args=config(tmp_path, max_steps=3, learning_rate=1e-2),
                    train_dataset=rows)
    start = {k: v.clone() for k, v in t.ref_model.state_dict().items()}
    t.train()
    for k, v in t.ref_model.state_dict().items():
        torch.testing.assert_close(v, start[k], msg=k)
    batch = t.data_collator([t.train_dataset[i] for i in range(8)])
    with torch.no_grad():
        policy = t._forward(t.model, batch).logps
        ref = t._reference(batch)
    assert (policy - ref).abs().max() > 1e-3
    assert t.state.log_history[-2]["rewards/margins"] != 0.0


def test_precomputed_reference_matches_live_reference(tmp_path, tiny_model_dir, ref_dir):
    """Three steps, so that from step 2 on the policy has moved away from the reference: a precomputed
    column that tracked the policy (or a reference that is not frozen) would change the losses."""
    rows = Dataset.from_list(pair_rows(8))
    kw = dict(objective="mean", max_steps=3, learning_rate=1e-2, lr_scheduler_type="constant")
    live = DoRATrainer(model=tiny_model_dir, args=config(tmp_path, **kw), train_dataset=rows)
    pre = DoRATrainer(
        model=tiny_model_dir,
        args=config(tmp_path, precompute_ref_log_probs=True, **kw),
        train_dataset=rows,
    )
    assert live.ref_model is not None and pre.ref_model is None
    assert "ref_logps" in pre.train_dataset.column_names
    live.train()
    pre.train()
    live_logs = [h for h in live.state.log_history if "loss" in h]
    pre_logs = [h for h in pre.state.log_history if "loss" in h]
    assert len(live_logs) == len(pre_logs) == 3
    assert live_logs[-1]["rewards/margins"] != pytest.approx(0.0, abs=1e-4)  # policy != reference by then
    for a, b in zip(live_logs, pre_logs):
        for key in ("loss", "grad_norm", "rewards/margins", "rewards/chosen"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("precompute", [False, True])
def test_bf16_reference_scores_under_the_policy_autocast(tmp_path, tiny_model_dir, precompute):
    """bf16 mixed precision: the frozen copy (live or precomputed) runs under accelerate's autocast as the policy
    does, so at step 1 policy == reference: rewards exactly 0 and the loss log 2, as TRL's DPOTrainer logs."""
    import math

    t = DoRATrainer(
        model=tiny_model_dir,
        args=config(tmp_path, objective="mean", bf16=True, use_cpu=True, precompute_ref_log_probs=precompute),
        train_dataset=Dataset.from_list(pair_rows(8)),
    )
    t.train()
    log = t.state.log_history[0]
    assert log["rewards/chosen"] == 0.0 and log["rewards/rejected"] == 0.0 and log["rewards/margins"] == 0.0
    assert log["loss"] == pytest.approx(math.log(2), abs=1e-7)


def test_startup_summary_names_the_precomputed_reference(tmp_path, tiny_model_dir, ref_dir):
    rows = Dataset.from_list(pair_rows(8))
    given = DoRATrainer(model=tiny_model_dir, ref_model=ref_dir, train_dataset=rows,
                        args=config(tmp_path, precompute_ref_log_probs=True, objective="cvar", cvar_alpha=1.0))
    text = given.startup_summary()
    assert f"reference    log-probs of {ref_dir} (ref_model), precomputed" in text
    assert "importance-weighted mean of the losses: cvar_alpha 1" in text  # the rows' weights differ
    copy = DoRATrainer(model=tiny_model_dir, args=config(tmp_path, precompute_ref_log_probs=True), train_dataset=rows)
    assert "reference    log-probs of the initial policy, precomputed" in copy.startup_summary()


def test_evaluate_prepares_the_rows_it_is_given(tmp_path, tiny_model_dir, ref_dir):
    """As TRL's evaluate(eval_dataset=...): raw rows are checked, tokenised and (precompute_ref_log_probs) given their
    reference column, and score as the same rows given at construction; new source names get their metrics."""
    held_out = pair_rows(6, seed=5, sources=("human", "claude"))
    for pre in (False, True):
        kw = dict(precompute_ref_log_probs=pre, per_device_eval_batch_size=3)
        at_init = DoRATrainer(model=tiny_model_dir, ref_model=ref_dir, args=config(tmp_path, **kw),
                              train_dataset=Dataset.from_list(pair_rows(8)), eval_dataset=Dataset.from_list(held_out))
        later = DoRATrainer(model=tiny_model_dir, ref_model=ref_dir, args=config(tmp_path, **kw),
                            train_dataset=Dataset.from_list(pair_rows(8)))
        a, b = at_init.evaluate(), later.evaluate(eval_dataset=Dataset.from_list(held_out))
        for key in ("eval_loss", "eval_rewards/margins", "eval_logps/chosen", "eval_source/claude/loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-6), key
        assert b["eval_rewards/margins"] != 0.0  # the reference is the other model
    bad = [dict(r, dora_weight=-1.0) if i == 2 else r for i, r in enumerate(held_out)]
    with pytest.raises(ValueError, match="row 3, column 'dora_weight'"):
        later.evaluate(eval_dataset={"test": Dataset.from_list(bad)})
    copy = DoRATrainer(model=tiny_model_dir, args=config(tmp_path, precompute_ref_log_probs=True),
                       train_dataset=Dataset.from_list(pair_rows(8)))
    copy.train()
    with pytest.raises(ValueError, match="after training started, with precompute_ref_log_probs=True and no ref_model"):
        copy.evaluate(eval_dataset=Dataset.from_list(held_out))


@pytest.mark.parametrize(
    "patch,match",
    [
        ({"rejected": None}, "row 4, column 'rejected'"),
        ({"rejected": "SAME"}, "row 4, columns 'chosen'/'rejected': the two responses are identical"),
        ({"dora_weight": float("nan")}, "row 4, column 'dora_weight'"),
        ({"dora_weight": -1.0}, "row 4, column 'dora_weight'"),
        ({"prompt": " "}, "row 4, column 'prompt'"),
    ],
)
def test_bad_rows_name_row_and_column(tmp_path, tiny_model_dir, patch, match):
    rows = pair_rows(6)
    rows[3] = dict(rows[3], **patch)
    if patch.get("rejected") == "SAME":
        rows[3]["rejected"] = rows[3]["chosen"]
    with pytest.raises(ValueError, match=match):
        DoRATrainer(model=tiny_model_dir, args=config(tmp_path), train_dataset=Dataset.from_list(rows))


def test_missing_column_and_long_prompts(tmp_path, tiny_model_dir, caplog):
    rows = [{k: v for k, v in r.items() if k != "rejected"} for r in pair_rows(4)]
    with pytest.raises(ValueError, match=r"missing column\(s\) \['rejected'\]"):
        DoRATrainer(model=tiny_model_dir, args=config(tmp_path), train_dataset=Dataset.from_list(rows))
    rows = pair_rows(6)
    rows[0]["prompt"] = "Q: " + "1+" * 40 + "1=\nA: "
    with caplog.at_level("WARNING"):
        t = DoRATrainer(
            model=tiny_model_dir,
            args=config(tmp_path, max_prompt_length=40),
            train_dataset=Dataset.from_list(rows),
        )
    assert len(t.train_dataset) == 5
    assert "1 of 6 train rows dropped" in caplog.text
