"""Loading and validation of preference data: the whole dataset is checked at once, bad rows are named by
file line (jsonl) or row number, unreadable files and missing local paths are one line naming them."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import pair_rows, write_jsonl
from datasets import Dataset

from dora.data import load_rows, prepare_dataset, validate_rows


def spoil(rows, bad):
    """Make row i invalid for each i in ``bad``, a different problem each time; returns the columns hit."""
    problems = [("chosen", ""), ("rejected", None), ("dora_weight", -1.0), ("prompt", "  ")]
    hit = {}
    for k, i in enumerate(bad):
        column, value = problems[k % len(problems)]
        rows[i][column] = value
        hit[i] = column
    return hit


def test_every_bad_row_named_by_its_file_line(tmp_path):
    rows = pair_rows(20)
    hit = spoil(rows, [1, 4, 9, 17])
    path = write_jsonl(tmp_path / "d.jsonl", rows, blank_after={2, 10})
    # file lines: rows 0-2 are lines 1-3, a blank line 4, rows 3-10 lines 5-12, blank 13, rows 11- from 14
    line = {i: i + 1 + (i > 2) + (i > 10) for i in range(20)}
    with pytest.raises(ValueError) as err:
        validate_rows(load_rows(path), path=path, name="eval")
    text = str(err.value)
    head, *listed = text.splitlines()
    first = min(hit)
    assert head.startswith(f"eval dataset {path}, line {line[first]}, column '{hit[first]}'")
    assert head.endswith("(4 invalid rows of 20: fix them, or drop them with --skip-invalid-rows); the others:")
    listed = [head[len(f"eval dataset {path}, "):], *listed]
    assert [x.split(",")[0].strip() for x in listed] == [f"line {line[i]}" for i in sorted(hit)]
    for x, i in zip(listed, sorted(hit)):
        assert f"'{hit[i]}'" in x


def test_at_most_ten_rows_listed_and_the_rest_counted():
    rows = pair_rows(30)
    spoil(rows, list(range(0, 26, 2)))  # 13 bad rows
    with pytest.raises(ValueError) as err:
        validate_rows(Dataset.from_list(rows))
    lines = str(err.value).splitlines()
    assert lines[0].startswith("train dataset, row 1, ") and "13 invalid rows of 30" in lines[0]
    assert [x.split(",")[0].strip() for x in lines[1:10]] == [f"row {i + 1}" for i in range(2, 20, 2)]
    assert lines[10].strip() == "... and 3 more"


def test_skip_invalid_rows_drops_exactly_the_bad_ones(tmp_path, caplog):
    rows = pair_rows(12)
    spoil(rows, [0, 5, 11])
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="dora.data"):
        kept = validate_rows(load_rows(path), path=path, skip_invalid=True)
    assert len(kept) == 9 and "3 of 12 rows dropped as invalid" in caplog.text
    assert kept["prompt"] == [r["prompt"] for i, r in enumerate(rows) if i not in (0, 5, 11)]
    assert kept["chosen"] == [r["chosen"] for i, r in enumerate(rows) if i not in (0, 5, 11)]
    with pytest.raises(ValueError, match="every one of its 2 rows is invalid"):
        validate_rows(Dataset.from_list(spoil_all(pair_rows(2))), skip_invalid=True)


def spoil_all(rows):
    for r in rows:
        r["rejected"] = r["chosen"]
    return rows


def chat_rows(n):
    return [{"prompt": [{"role": "user", "content": f"q{i}"}],
             "chosen": [{"role": "assistant", "content": "yes"}],
             "rejected": [{"role": "assistant", "content": "no"}]} for i in range(n)]  # fmt: skip


def test_response_types(tmp_path):
    rows = pair_rows(4)
    rows[2]["chosen"] = 3  # a jsonl file may hold a number where text belongs
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(ValueError, match=r"d.jsonl: line 3, column 'chosen': number 3 where the column's other rows"):
        validate_rows(load_rows(path), path=path)
    with pytest.raises(ValueError, match=r"row 1, column 'chosen': text or chat messages expected, got int 3"):
        validate_rows(Dataset.from_dict({k: [r[k] if k != "chosen" else 3 for r in rows] for k in rows[0]}))
    rows = [dict(r, chosen=["a", "b"]) for r in pair_rows(3)]
    with pytest.raises(ValueError, match=r"row 1, column 'chosen': a list must hold chat messages"):
        validate_rows(Dataset.from_list(rows))
    rows = chat_rows(3)
    rows[1]["chosen"] = [{"role": "assistant", "content": " "}]
    with pytest.raises(ValueError, match=r"row 2, column 'chosen': empty"):
        validate_rows(Dataset.from_list(rows))


def test_chat_rows_are_valid():
    assert len(validate_rows(Dataset.from_list(chat_rows(3)))) == 3


def test_missing_column_suggests_the_near_name():
    rows = [{"prompt": "p", "chosen": "a", "rejectd": "b"}]
    with pytest.raises(ValueError, match=r"missing column\(s\) \['rejected'\].*'rejectd' for 'rejected'\?"):
        validate_rows(Dataset.from_list(rows))


def test_group_column_required_for_group_dro():
    rows = pair_rows(4)
    for i, r in enumerate(rows):
        r["group"] = "" if i == 1 else "a"
    with pytest.raises(ValueError, match=r"row 2, column 'group': no group"):
        validate_rows(Dataset.from_list(rows), group_column="group")


def test_broken_jsonl_line_is_one_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    good = json.dumps(pair_rows(1)[0])
    path.write_text("\n".join([good] * 6 + ['{"prompt": "p", "chosen": "a" "rejected": "b"}'] + [good] * 3))
    with pytest.raises(ValueError) as err:
        load_rows(str(path))
    assert str(err.value).startswith(f"{path}, line 7: not valid JSON (")
    assert len(str(err.value).splitlines()) == 1


def test_broken_json_array_names_its_line(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[\n{"prompt": "p", "chosen": "a", "rejected": "b"},\n{"prompt": "p" "chosen": "a"}\n]')
    with pytest.raises(ValueError, match=rf"^{path}, line 3: not valid JSON"):
        load_rows(str(path))


@pytest.mark.parametrize("name", ["mixx.jsonl", "./nope", "../nope/data", "/no/such/file.parquet"])
def test_missing_local_path_is_not_a_hub_lookup(tmp_path, monkeypatch, name):
    import datasets

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mix.jsonl").write_text(json.dumps(pair_rows(1)[0]))
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("reached load_dataset"))
    with pytest.raises(FileNotFoundError, match=rf"dataset '{name}' not found: no file or folder /"):
        load_rows(name)
    if name == "mixx.jsonl":
        with pytest.raises(FileNotFoundError, match=r"did you mean 'mix.jsonl'\?"):
            load_rows(name)


def test_long_prompts_dropped_without_a_progress_bar(tmp_path, capsys, caplog):
    from dora.synthetic import build_tokenizer

    tok = build_tokenizer(str(tmp_path))
    rows = pair_rows(6)
    rows[0]["prompt"] = "Q: " + "1+" * 40 + "1=\nA: "
    with caplog.at_level(logging.WARNING, logger="dora.data"):
        out = prepare_dataset(Dataset.from_list(rows), tok, max_length=32)
    assert len(out) == 5 and "1 of 6 train rows dropped: prompt longer than 31 tokens" in caplog.text
    assert out["prompt_ids"][0] == tok(rows[1]["prompt"])["input_ids"]
    assert "Dropping long prompts" not in capsys.readouterr().err


def test_classify_names_a_missing_local_model(tmp_path, capsys):
    from dora.cli import main

    data = write_jsonl(tmp_path / "d.jsonl", pair_rows(8))
    argv = ["classify", "--dataset", data, "--target-sources", "human", "--backend", "embedding", "--model",
            "./nope", "--output", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("dora classify: error: --model './nope' not found: no file or folder /")
    with pytest.raises(FileNotFoundError, match=r"model './nope' not found: no file or folder /"):
        main([*argv, "--debug"])
