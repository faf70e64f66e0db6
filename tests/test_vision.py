"""Vision-language DPO (TRL 1.16's vision path) on a tiny Qwen2-VL built from its config, with a processor built
here (Qwen2-VL's image processor with defaults, a character tokenizer with the image tokens and a chat template)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_same_params

from dora import DoRAConfig

# a Qwen-VL style template (written here): an image item renders as <|vision_start|><|image_pad|><|vision_end|>
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TOKENS = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
          "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}  # fmt: skip


@pytest.fixture(scope="module")
def qwen2_vl(tmp_path_factory, one_thread):
    """(model, processor): a tiny Qwen2VLForConditionalGeneration (TRL's generate script's sizes) and its processor.
    Without torchvision, transformers refuses a processor without a video processor; images never need one."""
    from transformers import ProcessorMixin, Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from dora.synthetic import build_tokenizer

    tok = build_tokenizer(str(tmp_path_factory.mktemp("vl_tok")))
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", *TOKENS.values()]})
    tok.chat_template = TEMPLATE
    check = ProcessorMixin.check_argument_for_proper_class
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ProcessorMixin, "check_argument_for_proper_class",
                   lambda self, name, arg: None if arg is None else check(self, name, arg))  # fmt: skip
        processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessorPil(), tokenizer=tok, chat_template=TEMPLATE)
    rope = {"type": "default", "mrope_section": [1, 1], "rope_type": "default"}
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), num_hidden_layers=2, hidden_size=16, num_attention_heads=4,
                         num_key_value_heads=2, layer_types=None, rope_scaling=rope),
        vision_config=dict(hidden_size=16, num_heads=4, embed_dim=64, depth=2),
        rope_scaling=rope,
        **{name: tok.convert_tokens_to_ids(t) for name, t in TOKENS.items()},
    )  # fmt: skip
    torch.manual_seed(0)
    return Qwen2VLForConditionalGeneration(config).eval(), processor


def _image(seed: int, size=(40, 36)):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8))


def _rows(n: int = 4, weights=None) -> list[dict]:
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"what is {i}?"}]}]
        row = {"images": [_image(i)], "prompt": prompt,
               "chosen": [{"role": "assistant", "content": f"it is {i}"}],
               "rejected": [{"role": "assistant", "content": f"no {i + 1}"}]}  # fmt: skip
        if weights is not None:
            row["dora_weight"] = weights[i]
        rows.append(row)
    return rows


def _dataset(rows):
    import datasets

    return datasets.Dataset.from_list(rows)


def _args(cls, tmp_path, **kw):
    kw = dict(dict(output_dir=str(tmp_path), report_to="none", per_device_train_batch_size=4, max_steps=1,
                   logging_steps=1, learning_rate=1e-2, bf16=False, gradient_checkpointing=False, max_length=None,
                   save_strategy="no"), **kw)  # fmt: skip
    return cls(**kw)


def _copy(model, noise: float = 0.0):
    """A deep copy; with ``noise`` every weight moved by a seeded normal step (a reference unlike the policy)."""
    import copy

    model = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * torch.randn(p.shape, generator=gen))
    return model


def test_vision_dpo_step_matches_trl(qwen2_vl, tmp_path):
    """objective="mean" on image rows: the logged loss, rewards and log-probs of one step, and the updated weights,
    equal TRL's DPOTrainer's on the same tiny Qwen2-VL, reference (unlike the policy, so the loss is not log 2) and
    rows."""
    from trl import DPOConfig, DPOTrainer

    from dora import DoRATrainer

    model, processor = qwen2_vl
    sgd = dict(optim="sgd", learning_rate=1.0)  # Adam's first step is lr * sign(g): it would hide a gradient's size
    ours = DoRATrainer(_copy(model), _copy(model, 0.05),
                       args=_args(DoRAConfig, tmp_path / "d", objective="mean", **sgd),
                       train_dataset=_dataset(_rows()), processing_class=processor)  # fmt: skip
    ours.train()
    trl = DPOTrainer(_copy(model), _copy(model, 0.05), args=_args(DPOConfig, tmp_path / "t", **sgd),
                     train_dataset=_dataset(_rows()), processing_class=processor)  # fmt: skip
    trl.train()
    a, b = ours.state.log_history[0], trl.state.log_history[0]
    for key in ("loss", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    assert abs(a["loss"] - math.log(2)) > 1e-3 and abs(a["rewards/chosen"]) > 1e-4  # the reference is not the policy
    moved = [n for n, p in model.named_parameters() if not torch.allclose(p, ours.model.get_parameter(n), atol=1e-5)]
    assert len(moved) > len(list(model.parameters())) // 2
    assert_same_params(dict(ours.model.named_parameters()), dict(trl.model.named_parameters()), rtol=1e-4, atol=1e-6)


def _hand_logps(model, batch) -> torch.Tensor:
    """Summed completion log-probs per sequence from the model's own logits (float64), pixel values included."""
    keys = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")
    with torch.no_grad():
        logits = model(**{k: batch[k] for k in keys if k in batch}).logits.double()
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    return (logp * batch["completion_mask"][:, 1:]).sum(dim=1)


def test_reference_forward_sees_the_pixel_values_and_weights_reach_the_objective(qwen2_vl, tmp_path):
    """The reference's per-row log-probs equal a hand forward of the initial model with the batch's pixel values
    (and differ without them); each row's dora_weight reaches the "dora" objective: λ log mean exp(h ℓ / λ)."""
    from dora import DoRATrainer

    model, processor = qwen2_vl
    weights = [0.5, 2.0, 1.0, 3.0]
    trainer = DoRATrainer(_copy(model), args=_args(DoRAConfig, tmp_path), train_dataset=_dataset(_rows(4, weights)),
                          processing_class=processor)  # fmt: skip
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(4)]))
    assert batch["pixel_values"].shape[0] > 0 and batch["input_ids"].shape[0] == 8
    ref = trainer._reference(batch)  # [B, 2]: chosen, rejected
    hand = _hand_logps(model, batch).view(2, -1).T
    torch.testing.assert_close(ref.double(), hand, rtol=1e-4, atol=1e-4)
    blind = _hand_logps(model, {k: v for k, v in batch.items() if k != "pixel_values"} | {
        "pixel_values": torch.zeros_like(batch["pixel_values"])}).view(2, -1).T
    assert not torch.allclose(ref.double(), blind, atol=1e-3)
    torch.testing.assert_close(batch["weight"], torch.tensor(weights))
    trainer.model.train()
    loss, out = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    h, losses = torch.tensor(weights, dtype=torch.float64), out["losses"].double()
    expected = torch.log(torch.mean(torch.exp(h * losses)))  # λ = 1
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_text_only_rows_train_a_vision_language_model(qwen2_vl, tmp_path):
    """Rows without images on a VLM are tokenised as text (the processor's tokenizer): the language model trains,
    the vision tower gets no gradient (so DDP is told to expect unused parameters, as TRL)."""
    from dora import DoRATrainer

    model, processor = qwen2_vl
    rows = [{"prompt": [{"role": "user", "content": f"what is {i}?"}],
             "chosen": [{"role": "assistant", "content": f"it is {i}"}],
             "rejected": [{"role": "assistant", "content": f"no {i + 1}"}]} for i in range(4)]  # fmt: skip
    trainer = DoRATrainer(_copy(model), args=_args(DoRAConfig, tmp_path), train_dataset=_dataset(rows),
                          processing_class=processor)  # fmt: skip
    assert trainer.args.ddp_find_unused_parameters is True  # under DDP the unused vision tower is expected (as TRL)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.log_history[-1]["train_loss"] is not None
    for n, p in trainer.model.named_parameters():
        changed = not torch.equal(before[n], p)
        assert changed == (not n.startswith("model.visual")), n


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        (dict(max_length=32, truncation_mode="keep_end"), "truncation_mode='keep_end' is not supported for vision"),
        (dict(precompute_ref_log_probs=True), "precompute_ref_log_probs.*not supported for vision datasets"),
    ],
)
def test_vision_rows_refuse_what_trl_refuses(tmp_path, setting, match):
    """TRL's refusals for vision rows, with TRL's words, before any model loads (the model path does not exist);
    keep_end also warns that TRL deprecates it, as TRL's DPOConfig."""
    import contextlib

    from dora import DoRATrainer

    keep_end = setting.get("truncation_mode") == "keep_end"
    with pytest.warns(FutureWarning, match="keep_end.*deprecated") if keep_end else contextlib.nullcontext():
        args = DoRAConfig(output_dir=str(tmp_path), report_to="none", **setting)
    with pytest.raises(ValueError, match=match):
        DoRATrainer(str(tmp_path / "no-model"), args=args, train_dataset=_dataset(_rows(2)))


def test_max_length_cuts_vision_sequences_as_trl(qwen2_vl, tmp_path):
    """Vision sequences are cut at max_length after the processor (TRL keeps the start, and drops no row): cut at
    the shortest prompt's end, no completion token is left, and the step trains on log 2 (a zero gradient), as TRL's."""
    from dora import DoRATrainer
    from dora.data.vision import VisionPreferenceCollator

    model, processor = qwen2_vl
    full = VisionPreferenceCollator(processor)(_rows())
    prompt_len = int(full["completion_mask"].argmax(dim=1).min())
    trainer = DoRATrainer(_copy(model), args=_args(DoRAConfig, tmp_path, objective="mean", max_length=prompt_len),
                          train_dataset=_dataset(_rows()), processing_class=processor)  # fmt: skip
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert batch["input_ids"].shape[1] == prompt_len and batch["completion_mask"].sum() == 0
    trainer.train()
    assert trainer.state.log_history[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_streamed_image_rows_are_refused_in_one_line(tmp_path):
    """An IterableDataset of image rows is refused before any model loads, naming the alternative."""
    from dora import DoRATrainer

    args = DoRAConfig(output_dir=str(tmp_path), report_to="none", max_steps=1)
    stream = _dataset(_rows(2)).to_iterable_dataset()
    with pytest.raises(ValueError, match="train dataset: streamed rows with images .* use a Dataset"):
        DoRATrainer(str(tmp_path / "no-model"), args=args, train_dataset=stream)
