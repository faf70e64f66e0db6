"""Run TRL's own DPO tests against DoRATrainer, offline, and compare with TRL's DPOTrainer.

    python examples/trl_tests.py /path/to/trl-checkout --work /tmp/trl_run [-k EXPR] [--no-models]

The checkout (a clone of github.com/huggingface/trl) must hold ``tests/`` and ``scripts/``. Nothing is copied into
this repository and nothing is downloaded:

1. Stand-ins. TRL's tests load tiny models (``trl-internal-testing/tiny-*``) and data sets
   (``trl-internal-testing/zen`` ...) from the Hub. TRL builds them with ``scripts/generate_*``; this script runs
   those same scripts with their Hub calls replaced: data sets are written as parquet under ``WORK/stand-ins``
   (with the ``configs`` card the Hub uses), models are saved there with a local byte-level BPE tokenizer (the
   family's chat template from ``trl/chat_templates``) in place of the Hub tokenizer. ``from_pretrained`` and
   ``load_dataset`` find a local folder named like the Hub id before they try the Hub, so the tests run from
   ``WORK/stand-ins`` unchanged. The vision-language models of ``VLMS`` are built by their scripts too, with the
   Hub's processor and config replaced: the family's image processor class with its settings (its torchvision-free
   variant), the local tokenizer with the family's image tokens and chat template, and the family's config class
   with the script's sizes and the local tokenizer's token ids. Without torchvision, transformers cannot load a
   processor that has a video processor (Qwen-VL's), although images never need it:
   ``allow_missing_video_processor`` lets it load without one, in the build and (as a pytest plugin) in both test
   runs alike. Models without a recipe are not built; their tests then fail under both trainers.
2. Two copies of ``tests/``: ``tests_trl`` as is, ``tests_dora`` with one line changed, the import of
   ``DPOConfig, DPOTrainer`` from ``trl`` replaced by ``from dora import DoRAConfig as DPOConfig, DoRATrainer as
   DPOTrainer``.
3. pytest on ``test_dpo_trainer.py`` in each copy (``-p no:randomly``), then the two pass counts and every test
   whose outcome differs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import inspect
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

ORG = "trl-internal-testing"
TEST_FILE = "test_dpo_trainer.py"
PLUGIN = "dora_stand_in_env"  # a pytest plugin: allow_missing_video_processor in the test runs
TRL_IMPORT = "from trl import DPOConfig, DPOTrainer\n"
DORA_IMPORT = "from dora import DoRAConfig as DPOConfig, DoRATrainer as DPOTrainer\n"
DATASET_SCRIPTS = {
    "generate_zen_dataset.py": "zen",
    "generate_toolcall_dataset.py": "toolcall",
    "generate_harmony_dataset.py": "harmony",
    "generate_zen_image_dataset.py": "zen-image",
    "generate_zen_multi_image_dataset.py": "zen-multi-image",
}
# the chat template (trl/chat_templates/NAME.jinja) of a tokenizer's Hub id, by the id's first matching part
TEMPLATES = [
    ("Qwen2.5-VL", "qwen2_5_vl"), ("Qwen2-VL", "qwen2_5_vl"), ("Qwen2.5", "qwen2_5"), ("Qwen3-30B-A3B", "qwen3"),
    ("Qwen3", "qwen3"),
    ("Cohere", "cohere2"), ("tiny-aya", "cohere2"), ("GLM", "glm4moe"), ("gpt-oss", "gptoss"),
    ("LFM2.5", "lfm2_2_5"), ("LFM2", "lfm2"), ("Nemotron", "nemotron_3_nano"), ("Llama-3.2", "llama3_2"),
    ("Llama-3.1", "llama3_1"), ("Llama-3", "llama3"), ("Phi-3.5", "phi3_5"), ("Phi-3", "phi3"),
]  # fmt: skip
EOS_CANDIDATES = ["<|im_end|>", "<|eot_id|>", "<|return|>", "<|END_OF_TURN_TOKEN|>", "<|end|>", "<|endoftext|>"]
TEXT = (
    "Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex. "
    "Complex is better than complicated. Flat is better than nested. Sparse is better than dense. "
    "Readability counts. Errors should never pass silently. Now is better than never. "
    "What is the weather like today? It is sunny and warm. The answer is 42. Please call the tool. "
    "You are a helpful assistant. What is this? Describe the image. "
)
# vision-language models, by the Hub id TRL's script builds from: the config's model_type, the processor class, the
# torchvision-free image processor class and its settings, the chat template, and the config's token-id attributes
# with the token each names
QWEN_VL_TOKENS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}
QWEN3_IMAGES = {"patch_size": 16, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
LLAVA_IMAGES = {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}}
LLAVA_TOWER = {"patch_size": 14, "image_size": 336}  # the Hub checkpoints' CLIP tower, which the scripts keep
GEMMA3_TOKENS = {"boi_token": "<start_of_image>", "image_token": "<image_soft_token>", "eoi_token": "<end_of_image>"}
LLAVA = {"patch_size": 14, "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1}


@dataclasses.dataclass
class VLM:
    model_type: str
    processor: str
    image_processor: str
    template: str
    tokens: dict
    image_kwargs: dict = dataclasses.field(default_factory=dict)
    processor_kwargs: dict = dataclasses.field(default_factory=dict)
    specials: tuple = ()  # tokens the template names outside <|...|>
    vision_defaults: dict = dataclasses.field(default_factory=dict)  # the Hub config's, under the script's sizes
    named_tokens: dict = dataclasses.field(default_factory=dict)  # tokenizer attributes the processor reads


VLMS = {
    "Qwen/Qwen2-VL-2B-Instruct": VLM("qwen2_vl", "Qwen2VLProcessor", "Qwen2VLImageProcessorPil", "qwen2_5_vl",
                                     QWEN_VL_TOKENS),
    "Qwen/Qwen2.5-VL-3B-Instruct": VLM("qwen2_5_vl", "Qwen2_5_VLProcessor", "Qwen2VLImageProcessorPil", "qwen2_5_vl",
                                       QWEN_VL_TOKENS),
    "Qwen/Qwen3-VL-2B-Instruct": VLM("qwen3_vl", "Qwen3VLProcessor", "Qwen2VLImageProcessorPil", "qwen3_vl",
                                     QWEN_VL_TOKENS, QWEN3_IMAGES),
    "Qwen/Qwen3.5-0.8B": VLM("qwen3_5", "Qwen3VLProcessor", "Qwen2VLImageProcessorPil", "qwen3_5_nothink",
                             QWEN_VL_TOKENS, QWEN3_IMAGES),
    "Qwen/Qwen3.6-35B-A3B": VLM("qwen3_5_moe", "Qwen3VLProcessor", "Qwen2VLImageProcessorPil", "qwen3_6",
                                QWEN_VL_TOKENS, QWEN3_IMAGES),
    "llava-hf/llava-1.5-7b-hf": VLM("llava", "LlavaProcessor", "CLIPImageProcessorPil", "llava_next",
                                    {"image_token_index": "<image>"}, LLAVA_IMAGES, LLAVA, ("<image>", "</s>"),
                                    LLAVA_TOWER),
    "llava-hf/llava-v1.6-mistral-7b-hf": VLM("llava_next", "LlavaNextProcessor", "LlavaNextImageProcessorPil",
                                             "llava_next", {"image_token_index": "<image>"}, LLAVA_IMAGES, LLAVA,
                                             ("<image>", "</s>"), LLAVA_TOWER),
    "google/gemma-3-4b-it": VLM("gemma3", "Gemma3Processor", "Gemma3ImageProcessorPil", "gemma3",
                                {"image_token_index": "<image_soft_token>", "boi_token_index": "<start_of_image>",
                                 "eoi_token_index": "<end_of_image>"}, {"size": {"height": 224, "width": 224}},
                                specials=("<start_of_turn>", "<end_of_turn>", *GEMMA3_TOKENS.values()),
                                vision_defaults={"patch_size": 14, "vision_use_head": False},
                                named_tokens=GEMMA3_TOKENS),
}  # fmt: skip


# ------------------------------------------------------------------ data sets


def _save_config(repo_dir: str, config_name: str, splits: dict) -> None:
    for split, ds in splits.items():
        path = os.path.join(repo_dir, config_name, f"{split}-00000-of-00001.parquet")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        ds.to_parquet(path)


def _write_card(repo_dir: str) -> None:
    """The ``configs`` block of a Hub data set card, so that ``load_dataset(dir, config)`` finds each config."""
    lines = ["---", "configs:"]
    for config in sorted(os.listdir(repo_dir)):
        folder = os.path.join(repo_dir, config)
        if not os.path.isdir(folder):
            continue
        lines += [f"- config_name: {config}", "  data_files:"]
        for f in sorted(os.listdir(folder)):
            lines += [f"  - split: {f.split('-')[0]}", f"    path: {config}/{f}"]
    with open(os.path.join(repo_dir, "README.md"), "w") as f:
        f.write("\n".join(lines + ["---", ""]))


def build_datasets(trl_dir: str, root: str) -> list[str]:
    """Run TRL's scripts/generate_*_dataset.py with ``push_to_hub`` writing parquet under ``root``."""
    import datasets

    built = []
    for script, name in DATASET_SCRIPTS.items():
        repo_dir = os.path.join(root, ORG, name)
        path = os.path.join(trl_dir, "scripts", script)
        if os.path.exists(os.path.join(repo_dir, "README.md")) or not os.path.exists(path):
            continue

        def push(self, repo_id, config_name="default", **_):
            splits = dict(self) if isinstance(self, datasets.DatasetDict) else {"train": self}
            _save_config(os.path.join(root, repo_id), config_name, splits)

        with _patched([(datasets.Dataset, "push_to_hub", push), (datasets.DatasetDict, "push_to_hub", push)]):
            with _argv([path, "--push_to_hub", "True", "--repo_id", f"{ORG}/{name}"]):
                runpy.run_path(path, run_name="__main__")
        _write_card(repo_dir)
        built.append(f"{ORG}/{name}")
    for path in glob.glob(os.path.join(root, ORG, "*", "*", "*.parquet")):  # the tokenizers' training text
        table = datasets.Dataset.from_parquet(path)
        table = table.select_columns([c for c in ("prompt", "chosen", "rejected", "tools") if c in table.column_names])
        CORPUS.extend(json.dumps(row, default=str) for row in table.to_list())
    return built


# ------------------------------------------------------------------ models


CORPUS: list[str] = [TEXT]  # build_datasets adds the text of the data sets it wrote


def local_tokenizer(hub_id: str, template_name: str | None = None, extra_specials=(), named_tokens=None):
    """A byte-level BPE tokenizer trained on the stand-in data sets' text (so that a tool-calling row fits TRL's
    max_length as it does with a Hub tokenizer), with the family's chat template; every special token the template
    names is a single token, and so is each of ``extra_specials``; ``named_tokens`` become tokenizer attributes
    (``tokenizer.boi_token``, as a processor reads them)."""
    import trl
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    name = template_name or next((t for key, t in TEMPLATES if key.lower() in hub_id.lower()), "qwen2_5")
    with open(os.path.join(os.path.dirname(trl.__file__), "chat_templates", f"{name}.jinja")) as f:
        template = f.read()
    specials = list(dict.fromkeys(["<|endoftext|>", *re.findall(r"<\|[A-Za-z0-9_]+\|>", template), *extra_specials]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    eos = next((t for t in EOS_CANDIDATES if t in specials), "<|endoftext|>")
    bos = "<|begin_of_text|>" if "<|begin_of_text|>" in specials else None
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token="<|endoftext|>", bos_token=bos,
                                   extra_special_tokens=named_tokens or {})
    fast.chat_template = template
    return fast


def shrink_vocab(model, tokenizer) -> None:
    """A script that sets the Hub vocabulary's size (262k for Cohere 2) would make every step a 262k-way softmax on
    a CPU: the embeddings are cut to the local tokenizer's size, and the special-token ids set to its own."""
    text = model.config.get_text_config()
    if text.vocab_size > len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if hasattr(text, name):
            setattr(text, name, getattr(tokenizer, name))


def _model_scripts(trl_dir: str, wanted: set[str]) -> dict[str, str]:
    """Hub id -> the generate_tiny_models script that builds it, for the causal LMs among ``wanted`` and the
    vision-language models of ``VLMS``."""
    found = {}
    kinds = (("for_causal_lm", r"\w+ForCausalLM"), ("for_conditional_generation", r"\w+ForConditionalGeneration"))
    for kind, pattern in kinds:
        folder = os.path.join(trl_dir, "scripts", "generate_tiny_models", kind)
        for f in sorted(os.listdir(folder)):
            if not f.endswith(".py") or f.startswith("_"):
                continue
            text = open(os.path.join(folder, f)).read()
            call = re.search(r'push_to_hub\(model, \w+, \w+, "(\w+)"(?:, "([^"]+)")?\)', text)
            cls = re.search(rf"model = ({pattern})\(", text)
            hub = re.search(r'MODEL_ID = "([^"]+)"', text)
            if kind != "for_causal_lm" and (hub is None or hub.group(1) not in VLMS):
                continue
            if call and cls:
                repo = f"{ORG}/{call.group(1)}-{cls.group(1)}" + (f"-{call.group(2)}" if call.group(2) else "")
                if repo in wanted:
                    found[repo] = f"scripts.generate_tiny_models.{kind}.{f[:-3]}"
    return found


def local_processor(hub_id: str):
    """The family's processor, built here: its image processor with the family's settings, the local tokenizer (the
    family's image tokens and chat template), and the template on the processor too."""
    import transformers

    vlm = VLMS[hub_id]
    tokenizer = local_tokenizer(hub_id, vlm.template, vlm.specials, vlm.named_tokens)
    image_processor = getattr(transformers, vlm.image_processor)(**vlm.image_kwargs)
    return getattr(transformers, vlm.processor)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template,
        **vlm.processor_kwargs,
    )  # fmt: skip


def local_vlm_config(hub_id: str, processor, **kwargs):
    """The family's config with the script's tiny sizes, its vocabulary the local tokenizer's and its image-token ids
    the local tokenizer's ids of the same tokens."""
    from transformers import CONFIG_MAPPING

    vlm = VLMS[hub_id]
    if vlm.vision_defaults:
        kwargs["vision_config"] = {**vlm.vision_defaults, **kwargs.get("vision_config", {})}
    config = CONFIG_MAPPING[vlm.model_type](**kwargs)
    tokenizer = processor.tokenizer
    config.get_text_config().vocab_size = len(tokenizer)
    for name, token in vlm.tokens.items():
        setattr(config, name, tokenizer.convert_tokens_to_ids(token))
    return config


def allow_missing_video_processor() -> None:
    """Without torchvision, transformers cannot build or load a processor that has a video processor (Qwen2-VL's and
    others'), although images never need it: the processor is then built, saved and loaded without one. Applied in
    the stand-in build and, as a pytest plugin, in both test runs alike; a no-op where torchvision is installed."""
    import transformers
    from transformers import ProcessorMixin
    from transformers.models.auto.video_processing_auto import AutoVideoProcessor
    from transformers.utils import is_torchvision_available

    if is_torchvision_available() or getattr(ProcessorMixin, "_video_optional", False):
        return
    check, save = ProcessorMixin.check_argument_for_proper_class, ProcessorMixin.save_pretrained

    def check_argument(self, name, arg):
        return None if arg is None and "video" in name else check(self, name, arg)

    def save_pretrained(self, save_directory, *args, **kwargs):
        if all(getattr(self, n, None) is not None for n in self.get_attributes()):
            return save(self, save_directory, *args, **kwargs)
        os.makedirs(save_directory, exist_ok=True)
        for n in self.get_attributes():
            if getattr(self, n, None) is not None:
                getattr(self, n).save_pretrained(save_directory)
        self.to_json_file(os.path.join(save_directory, "processor_config.json"))
        if self.chat_template is not None:
            with open(os.path.join(save_directory, "chat_template.jinja"), "w") as f:
                f.write(self.chat_template)
        return [save_directory]

    ProcessorMixin.check_argument_for_proper_class = check_argument
    ProcessorMixin.save_pretrained = save_pretrained
    ProcessorMixin._video_optional = True
    AutoVideoProcessor.from_pretrained = classmethod(lambda cls, *a, **k: None)
    transformers.logging.get_logger("dora").info("processors load without a video processor (no torchvision)")


def build_models(trl_dir: str, root: str, wanted: set[str]) -> tuple[list[str], dict[str, str]]:
    """Run each wanted model's generate_tiny_models script with its Hub calls replaced by local ones."""
    import transformers

    sys.path.insert(0, trl_dir)
    import scripts.generate_tiny_models._common as common

    allow_missing_video_processor()
    built, failed = [], {}
    for repo, module in _model_scripts(trl_dir, wanted).items():
        if os.path.exists(os.path.join(root, repo, "config.json")):
            built.append(repo)
            continue

        def save(model, tokenizer, generation_config, prefix=None, suffix=None, create_pr=None, repo=repo):
            out = os.path.join(root, repo)
            shrink_vocab(model, getattr(tokenizer, "tokenizer", tokenizer))  # a processor's own tokenizer
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            if generation_config is not None:
                generation_config.save_pretrained(out)

        noop = lambda *a, **k: None  # noqa: E731
        processors = {}  # the script's processor, whose token ids its config then takes

        def processor(hub_id, *a, processors=processors, **k):
            if hub_id not in processors:
                processors[hub_id] = local_processor(hub_id)
            return processors[hub_id]

        patches = [
            (transformers.AutoTokenizer, "from_pretrained", lambda hub_id, *a, **k: local_tokenizer(hub_id)),
            (transformers.AutoProcessor, "from_pretrained", processor),
            (transformers.AutoConfig, "from_pretrained", lambda hub_id, *a, **k: local_vlm_config(
                hub_id, processor(hub_id), **k)),
            (transformers.GenerationConfig, "from_pretrained", lambda *a, **k: transformers.GenerationConfig()),
            (common, "push_to_hub", save), (common, "check_transformers_version", noop),
            (common, "check_dtype_pattern", noop), (common, "print_config_diff", noop),
        ]  # fmt: skip
        try:
            with _patched(patches), _argv([module]):
                sys.modules.pop(module, None)
                runpy.run_module(module, run_name="__main__")
            built.append(repo)
        except Exception as e:  # noqa: BLE001 - reported, and its tests fail under both trainers
            failed[repo] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]
    return built, failed


# ------------------------------------------------------------------ running the tests


@contextlib.contextmanager
def _patched(patches):
    saved = [(obj, name, obj.__dict__.get(name)) for obj, name, _ in patches]
    for obj, name, value in patches:
        setattr(obj, name, staticmethod(value) if isinstance(obj, type) and name == "from_pretrained" else value)
    try:
        yield
    finally:
        for obj, name, value in saved:
            if value is None:
                delattr(obj, name)
            else:
                setattr(obj, name, value)


@contextlib.contextmanager
def _argv(argv):
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def copy_tests(trl_dir: str, root: str) -> None:
    """tests_trl (as is) and tests_dora (the DPOConfig / DPOTrainer import renamed) under ``root``."""
    for name, line in (("tests_trl", TRL_IMPORT), ("tests_dora", DORA_IMPORT)):
        dest = os.path.join(root, name)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(os.path.join(trl_dir, "tests"), dest)
        path = os.path.join(dest, TEST_FILE)
        text = open(path).read()
        if TRL_IMPORT not in text:
            raise SystemExit(f"{path}: the line {TRL_IMPORT.strip()!r} is not there; this TRL version differs")
        with open(path, "w") as f:
            f.write(text.replace(TRL_IMPORT, line, 1))
        _shim_missing_helpers(os.path.join(dest, "testing_utils.py"))


def _shim_missing_helpers(path: str) -> None:
    """testing_utils.py imports ``is_*_available`` helpers of the TRL version it was written for; one the installed
    trl lacks becomes a stand-in returning False (its tests are then skipped, as where the package is missing)."""
    text = open(path).read()
    block = re.search(r"from trl\.import_utils import \(([^)]*)\)\n", text)
    if block is None:
        return
    names = re.findall(r"\w+", block.group(1))
    shim = "import trl.import_utils as _trl_import_utils\n" + "".join(
        f"{n} = getattr(_trl_import_utils, {n!r}, lambda *a, **k: False)\n" for n in names
    )
    with open(path, "w") as f:
        f.write(text.replace(block.group(0), shim, 1))


def run_pytest(root: str, name: str, extra: list[str]) -> dict[str, str]:
    """test id -> passed | failed | skipped, from one pytest run on ``root/name/test_dpo_trainer.py``."""
    xml = os.path.join(root, f"{name}.xml")
    with open(os.path.join(root, f"{PLUGIN}.py"), "w") as f:  # the same environment for both runs
        source = inspect.getsource(allow_missing_video_processor)
        f.write(f"import os\n\n\n{source}\n\nallow_missing_video_processor()\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1",
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pytest", f"{name}/{TEST_FILE}", "-p", "no:randomly", "-p", "no:cacheprovider",
           "-p", PLUGIN, "-q", "--tb=line", f"--junitxml={xml}", *extra]  # fmt: skip
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=root, env=env)
    return read_outcomes(xml)


def read_outcomes(xml: str) -> dict[str, str]:
    """test id -> passed | failed | skipped, from a pytest junit XML report."""
    outcomes = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        test = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcomes[test] = (
            "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        )
    return outcomes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trl_dir", help="a TRL checkout holding tests/ and scripts/")
    p.add_argument("--work", default="trl_tests_run", help="folder for stand-ins, test copies and reports")
    p.add_argument("-k", default=None, help="pytest -k expression (a subset while iterating)")
    p.add_argument("--only", choices=["trl", "dora"], default=None, help="run one of the two")
    args = p.parse_args(argv)
    trl_dir, root = os.path.abspath(args.trl_dir), os.path.abspath(os.path.join(args.work, "stand-ins"))
    os.makedirs(root, exist_ok=True)
    text = open(os.path.join(trl_dir, "tests", TEST_FILE)).read()
    wanted = set(re.findall(rf'"({ORG}/tiny-[A-Za-z0-9._-]+)"', text))
    print("data sets:", build_datasets(trl_dir, root) or "(already built)")
    built, failed = build_models(trl_dir, root, wanted)
    print(f"models built: {len(built)} of {len(wanted)} named by {TEST_FILE}")
    for repo in sorted(wanted - set(built)):
        why = failed.get(repo, "no generate script for it here (a vision-language model outside VLMS)")
        print(f"  not built: {repo}: {why}")
    copy_tests(trl_dir, root)
    extra = ["-k", args.k] if args.k else []
    runs = {n: run_pytest(root, f"tests_{n}", extra) for n in ("trl", "dora") if args.only in (None, n)}
    for n in ("trl", "dora"):  # with --only, the other side's last report, if there is one
        xml = os.path.join(root, f"tests_{n}.xml")
        if n not in runs and os.path.exists(xml):
            runs[n] = read_outcomes(xml)
    for n, out in runs.items():
        counts = {k: sum(v == k for v in out.values()) for k in ("passed", "failed", "skipped")}
        print(f"{n}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    if len(runs) == 2:
        differ = sorted(t for t in runs["trl"] if runs["trl"][t] != runs["dora"].get(t))
        print(f"{len(differ)} tests differ (TRL -> DoRATrainer):")
        for t in differ:
            print(f"  {t}: {runs['trl'][t]} -> {runs['dora'].get(t)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
