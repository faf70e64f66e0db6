"""Bad input to `dora classify` / `dora eval` is one line on stderr and exit status 2; `--debug` shows the traceback."""

from __future__ import annotations

import json

import pytest
from conftest import pair_rows

from dora.cli import main


def test_classify_error_is_one_line(tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in pair_rows(40)))
    argv = ["classify", "--dataset", str(data), "--target-sources", "nobody", "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the datasets progress bar
    assert err.startswith("dora classify: error: unknown target source(s) ['nobody']")
    with pytest.raises(ValueError, match="nobody"):
        main([*argv, "--debug"])
