"""The in-process harness of the bad-input batteries (tests/test_bad_inputs_*.py): run ``dora ...`` through
``dora.cli.main`` and assert exit status 2, one line on stderr naming what is wrong, no model loaded, and every
file under the watched folders byte-identical (nothing created, changed or removed)."""

from __future__ import annotations

import os
import re

import pytest


class ModelLoaded(BaseException):  # noqa: N818 - a BaseException, so that no `except Exception` swallows it
    """Raised by a model load under ``forbid_model_loads``."""


@pytest.fixture
def forbid_model_loads(monkeypatch):
    """Any model load (``from_pretrained`` of a transformers model class or a PeftModel) fails the test: the
    errors under test must come before one. Tokenizers may load (they are checked up front)."""
    return forbid_loads(monkeypatch)


def forbid_loads(monkeypatch):
    """``forbid_model_loads`` for a test module's own fixture."""
    import peft
    import transformers

    def boom(*args, **kwargs):
        raise ModelLoaded("a model was loaded")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(boom))
    monkeypatch.setattr(peft.PeftModel, "from_pretrained", classmethod(boom))
    for name in ("AutoModelForCausalLM", "AutoModelForSequenceClassification", "AutoModel"):
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", boom)
    return boom


def snapshot(*folders) -> dict:
    """{path: (bytes, mode)} of every file under ``folders`` (and the folders themselves, by path)."""
    out = {}
    for folder in folders:
        folder = str(folder)
        if os.path.isfile(folder):
            with open(folder, "rb") as f:
                out[folder] = (f.read(), os.stat(folder).st_mode)
            continue
        for root, _dirs, files in os.walk(folder):
            out[root] = (None, os.stat(root).st_mode)
            for name in files:
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    out[path] = (f.read(), os.stat(path).st_mode)
    return out


def assert_unchanged(before: dict, after: dict) -> None:
    added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    assert not added and not removed, f"created {added}, removed {removed}"
    changed = [p for p in before if before[p] != after[p]]
    assert not changed, f"changed {changed}"


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """(exit status, stderr) of ``dora argv`` run in this process (argparse's SystemExit caught)."""
    from dora.cli import main

    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 2
    return code, capsys.readouterr().err


def one_line_error(argv: list[str], capsys, watch=(), expect: str | None = None) -> str:
    """Run ``dora argv``: exit status 2, no traceback, exactly one ``dora <command>: error:`` line on stderr
    (matching the regular expression ``expect``, if given), the files under ``watch`` unchanged. Returns the
    message after ``error:``."""
    before = snapshot(*watch)
    code, err = run_cli(argv, capsys)
    after = snapshot(*watch)
    assert "Traceback" not in err, err
    assert code == 2, f"exit status {code}:\n{err}"
    lines = [x for x in err.splitlines() if re.match(r"dora( [a-z]+)?: error:", x)]
    assert len(lines) == 1, err
    message = lines[0].split("error:", 1)[1].strip()
    if expect is not None:
        assert re.search(expect, message), f"{expect!r} not in {message!r}"
    assert_unchanged(before, after)
    return message
