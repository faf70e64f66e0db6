"""Training that is right for every input: listwise pairs ranked by score, reproducible LoRA without dropout,
a trained adapter as its own reference, per-source metrics per response, RRHF's two SFT terms, and
probabilities that never silently become weight 1."""

from __future__ import annotations

import pytest
import torch
from conftest import pair_rows, trainer_config
from datasets import Dataset

from dora import DoRATrainer

config = trainer_config


def losses_of(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


@pytest.mark.parametrize("objective", ["mean", "dora"])
def test_listwise_pair_is_ranked_by_its_scores(tmp_path, tiny_model_dir, one_thread, objective):
    """A listwise row [a, b] with scores [0, 1] trains as the pair chosen=b, rejected=a."""
    pairs = pair_rows(8)
    lists = [{"prompt": r["prompt"], "responses": [r["rejected"], r["chosen"]], "scores": [0.0, 1.0],
              "source": r["source"], "dora_weight": r["dora_weight"]} for r in pairs]  # fmt: skip
    as_given = [dict(r, scores=[1.0, 0.0]) for r in lists]  # the same lists, the first response ranked best
    runs = {}
    for name, rows in (("pairs", pairs), ("lists", lists), ("as_given", as_given)):
        t = DoRATrainer(model=tiny_model_dir, args=config(tmp_path, objective=objective, max_steps=2),
                        train_dataset=Dataset.from_list(rows))  # fmt: skip
        t.train()
        runs[name] = t.state.log_history
    keys = ("loss", "grad_norm", "rewards/chosen", "rewards/margins", "logps/chosen")
    for a, b in zip(runs["pairs"][:2], runs["lists"][:2]):
        for k in keys:
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), k
    assert runs["as_given"][1]["grad_norm"] != pytest.approx(runs["pairs"][1]["grad_norm"], rel=1e-4)
    assert runs["as_given"][0]["logps/chosen"] == pytest.approx(runs["pairs"][0]["logps/rejected"], rel=1e-6)


LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.05)


def test_lora_runs_are_reproducible_and_dropout_free(tmp_path, tiny_model_dir, one_thread):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    rows = Dataset.from_list(pair_rows(16))
    runs = []
    for k in range(2):
        torch.manual_seed(1000 + k)  # the global RNG differs between the two runs; the config's seed does not
        t = DoRATrainer(
            model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            args=config(tmp_path, max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
                        dro_accumulation="full", gradient_accumulation_steps=2),  # fmt: skip
            train_dataset=rows,
            peft_config=LoraConfig(**LORA),
        )
        dropouts = [m for n, m in t.model.named_modules() if "lora_dropout" in n and isinstance(m, torch.nn.Dropout)]
        assert dropouts, "the adapter has dropout modules"
        active = [n for n, m in t.model.named_modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
        assert active == []
        t.train()
        runs.append(losses_of(t))
    assert len(runs[0]) == 3 and runs[0] == runs[1]  # bit-identical


def test_lora_keeps_dropout_when_asked(tmp_path, tiny_model_dir, one_thread):
    from peft import LoraConfig

    t = DoRATrainer(model=tiny_model_dir, args=config(tmp_path, disable_dropout=False),
                    train_dataset=Dataset.from_list(pair_rows(8)), peft_config=LoraConfig(**LORA))  # fmt: skip
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.05 for m in t.model.modules())


def _trained_adapter(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(**LORA, init_lora_weights=False)
    )
    for name, p in model.named_parameters():  # an adapter far from zero, as after SFT
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    return model


def test_trained_adapter_is_its_own_reference(tmp_path, tiny_model_dir, one_thread):
    """As TRL: a PeftModel passed with a trained adapter gets a frozen copy of that adapter as the reference,
    so the implicit rewards are 0 before the first update (the bare base would give non-zero rewards)."""
    model = _trained_adapter(tiny_model_dir)
    t = DoRATrainer(model=model, args=config(tmp_path, max_steps=2, learning_rate=1e-2),
                    train_dataset=Dataset.from_list(pair_rows(8)))  # fmt: skip
    assert t.ref_model is None and set(t.model.peft_config) == {"default", "ref"}
    batch = t._prepare_inputs(t.data_collator([t.train_dataset[i] for i in range(8)]))
    with torch.no_grad():
        with t.model.disable_adapter():
            base = t._forward(t.model, batch).logps
        policy = t._forward(t.model, batch).logps
    assert (policy - base).abs().max() > 1e-2  # the adapter matters
    t.train()
    first, second = [h for h in t.state.log_history if "loss" in h][:2]
    assert first["rewards/chosen"] == 0.0 and first["rewards/rejected"] == 0.0 and first["rewards/margins"] == 0.0
    assert second["rewards/margins"] != 0.0  # the "default" adapter trained, the "ref" copy did not
    trainable = {n for n, p in t.model.named_parameters() if p.requires_grad}
    assert trainable and all(".default." in n for n in trainable)


def test_frozen_reference_copy_scores_as_the_reference_adapter(tmp_path, tiny_model_dir, one_thread):
    """The copy that scores the precomputed reference under FSDP (the "ref" adapter merged into the base, or the
    bare base) gives the log-probs the policy gives inside ``reference_adapter``, and is a separate model."""
    from dora.logprobs import add_logprob_head
    from dora.trainer.reference import frozen_reference_copy, reference_adapter

    t = DoRATrainer(model=_trained_adapter(tiny_model_dir), args=config(tmp_path),
                    train_dataset=Dataset.from_list(pair_rows(8)))  # fmt: skip
    batch = t._prepare_inputs(t.data_collator([t.train_dataset[i] for i in range(8)]))
    copy = frozen_reference_copy(t.model)
    add_logprob_head(copy)
    with torch.no_grad():
        with reference_adapter(t.model):
            ref = t._forward(t.model, batch).logps
        copied = t._forward(copy, batch).logps
        with t.model.disable_adapter():
            base = t._forward(t.model, batch).logps
    torch.testing.assert_close(copied, ref, rtol=1e-5, atol=1e-5)
    assert (copied - base).abs().max() > 1e-2  # the "ref" adapter is in the copy
    assert not any(p.requires_grad for p in copy.parameters())
    assert {"default", "ref"} == set(t.model.peft_config)  # the policy keeps both adapters
    plain = _trained_adapter(tiny_model_dir)  # no "ref" adapter: the reference is the bare base
    assert set(plain.peft_config) == {"default"}
    bare = frozen_reference_copy(plain)
    add_logprob_head(bare)
    with torch.no_grad():
        torch.testing.assert_close(t._forward(bare, batch).logps, base, rtol=1e-5, atol=1e-5)


def test_peft_config_with_a_peft_model_is_an_error(tmp_path, tiny_model_dir):
    from peft import LoraConfig

    with pytest.raises(ValueError, match="already a PeftModel and peft_config"):
        DoRATrainer(model=_trained_adapter(tiny_model_dir), args=config(tmp_path),
                    train_dataset=Dataset.from_list(pair_rows(8)), peft_config=LoraConfig(**LORA))  # fmt: skip


def test_per_source_metrics_count_each_response(tmp_path, tiny_model_dir):
    rows = [dict(r, chosen_source=c, rejected_source=rj) for r, (c, rj) in
            zip(pair_rows(4), [("human", "human"), ("human", "gpt"), ("gpt", "human"), ("gpt", "gpt")])]  # fmt: skip
    t = DoRATrainer(model=tiny_model_dir, args=config(tmp_path), train_dataset=Dataset.from_list(rows))
    batch = t.data_collator([t.train_dataset[i] for i in range(4)])
    losses = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    correct = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    t._record_sources("train", batch, losses, correct)
    got = t._per_source["train"]
    # human: rows 0 (twice), 1 and 2 (once each); gpt: rows 1, 2 (once), 3 (twice)
    assert got["human"] == pytest.approx([2 * 0.5 + 1.0 + 2.0, 2 * 1 + 0 + 1, 4])
    assert got["gpt"] == pytest.approx([1.0 + 2.0 + 2 * 4.0, 0 + 1 + 0, 4])
    assert got[("human", "gpt")] == pytest.approx([1.0, 0.0, 1])
    assert got[("gpt", "human")] == pytest.approx([2.0, 1.0, 1])
    logs = {}
    t.model.train()
    t.log(logs)
    assert logs["source/human/loss"] == pytest.approx(4.0 / 4) and logs["source/gpt/accuracy"] == pytest.approx(0.25)
    assert logs["source_pair/gpt_vs_human/loss"] == pytest.approx(2.0)


def test_target_probs_without_weights_is_an_error(tmp_path, tiny_model_dir):
    rows = [{k: v for k, v in dict(r, target_prob=0.3).items() if k != "dora_weight"} for r in pair_rows(8)]
    with pytest.raises(ValueError, match="column 'target_prob' but no 'dora_weight'"):
        DoRATrainer(model=tiny_model_dir, args=config(tmp_path), train_dataset=Dataset.from_list(rows))


def test_rrhf_sft_terms():
    """float64 formulas: rank term (1/n) sum_{s_i<s_j} max(0, p_i - p_j) with p = logp/|y|, plus either -p_best
    (default) or the DoRA code's -logp[-2] / padded length."""
    from dora.losses import listwise_loss

    g = torch.Generator().manual_seed(0)
    logps = -torch.rand(3, 4, generator=g, dtype=torch.float64) * 20
    lengths = torch.randint(1, 9, (3, 4), generator=g).double()
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [1.0, 0.0, 2.0, 3.0], [0.0, 0.0, 1.0, 0.5]], dtype=torch.float64)
    p = (logps / lengths).tolist()
    s = scores.tolist()
    rank = [sum(max(0.0, p[b][i] - p[b][j]) for i in range(4) for j in range(4) if s[b][i] < s[b][j]) / 4
            for b in range(3)]  # fmt: skip
    best = [-p[b][max(range(4), key=lambda j: s[b][j])] for b in range(3)]
    authors = [-float(logps[b, -2]) / 37 for b in range(3)]
    got = listwise_loss("rrhf", logps, scores=scores, lengths=lengths, rrhf_sft_weight=0.5)
    torch.testing.assert_close(got, torch.tensor([r + 0.5 * x for r, x in zip(rank, best)], dtype=torch.float64))
    got = listwise_loss("rrhf", logps, scores=scores, lengths=lengths, rrhf_sft="authors", padded_length=37)
    torch.testing.assert_close(got, torch.tensor([r + x for r, x in zip(rank, authors)], dtype=torch.float64))
    with pytest.raises(ValueError, match="padded_length"):
        listwise_loss("rrhf", logps, scores=scores, lengths=lengths, rrhf_sft="authors")


def test_python_api_checks_the_data_before_the_model_loads(tmp_path, monkeypatch):
    """From Python too: a bad row, or lists too long for a pairwise loss, fail before from_pretrained runs."""
    import transformers

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_load)
    rows = pair_rows(6)
    rows[2] = dict(rows[2], rejected=rows[2]["chosen"])
    with pytest.raises(ValueError, match=r"(?s)train dataset.*row 3.*identical"):
        DoRATrainer(model="some/model", args=config(tmp_path), train_dataset=Dataset.from_list(rows))
    lists = [{"prompt": f"q{i}", "responses": ["a", "b", "c"], "scores": [3, 2, 1]} for i in range(4)]
    with pytest.raises(ValueError, match=r"eval dataset: lists of 3 responses.*use loss_type dpo_pl"):
        DoRATrainer(model="some/model", args=config(tmp_path), train_dataset=Dataset.from_list(pair_rows(4)),
                    eval_dataset=Dataset.from_list(lists))  # fmt: skip
