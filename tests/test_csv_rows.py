"""CSV rows are read as written: a cell that is no number in a number column is that row's error (naming its
file line, the header being line 1, and the column); text that looks like a number stays text."""

from __future__ import annotations

import csv
import logging

import pytest
from bad_inputs import forbid_loads, one_line_error

from dora.data import load_rows, validate_rows

BAD = 6  # index of the data row whose dora_weight is no number: file line BAD + 2


def write_csv(path, bad_weight="abc"):
    """16 pairwise rows with distinct weights; row BAD's weight is ``bad_weight``."""
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["prompt", "chosen", "rejected", "dora_weight"])
        for i in range(16):
            out.writerow([f"q{i}", f"good {i}", f"bad {i}", bad_weight if i == BAD else f"{0.25 + i / 7:.6f}"])
    return str(path)


def weights_in_file(path):
    """(file line, float weight) of each row whose weight parses, read with the csv module independently."""
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    out = []
    for k, cells in enumerate(lines[1:], 2):
        try:
            out.append((k, float(cells[3])))
        except ValueError:
            pass
    return out


def test_one_bad_weight_names_exactly_its_line_and_column(tmp_path):
    path = write_csv(tmp_path / "d.csv")
    with pytest.raises(ValueError) as e:
        load_rows(path)
    message = str(e.value)
    assert "\n" not in message
    assert f"d.csv: line {BAD + 2}, column 'dora_weight': 'abc' is not a number (1 of 16 rows" in message
    assert message.count("line ") == 1  # no other row named


def test_skip_invalid_drops_only_that_row_and_keeps_weights_as_written(tmp_path, caplog):
    path = write_csv(tmp_path / "d.csv")
    with caplog.at_level(logging.WARNING, logger="dora.data"):
        ds = load_rows(path, skip_invalid=True)
    assert f"line {BAD + 2}, column 'dora_weight'" in caplog.text
    expected = weights_in_file(path)
    assert len(ds) == 15 == len(expected)
    assert [k for k, _ in expected] == [k for k in range(2, 18) if k != BAD + 2]
    assert ds["dora_weight"] == [w for _, w in expected]
    assert ds["prompt"] == [f"q{i}" for i in range(16) if i != BAD]
    # a later row error is named by its file line, not its position among the kept rows
    rows = ds.to_list()
    rows[BAD]["chosen"] = rows[BAD]["rejected"]  # the file's line BAD + 3, e.csv's line BAD + 2
    with open(tmp_path / "e.csv", "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows)
    with pytest.raises(ValueError, match=rf"e.csv, line {BAD + 2}, columns 'chosen'/'rejected'"):
        validate_rows(load_rows(str(tmp_path / "e.csv")), path=str(tmp_path / "e.csv"))


def test_text_that_looks_like_numbers_stays_text(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('prompt,chosen,rejected,dora_weight,note\n1,15,007,1,\n2,"1e3",abc,0.5,x\n\n3,16,x,,\n')
    ds = load_rows(str(path))
    assert ds["prompt"] == ["1", "2", "3"]
    assert ds["chosen"] == ["15", "1e3", "16"]
    assert ds["rejected"] == ["007", "abc", "x"]
    assert ds["dora_weight"] == [1.0, 0.5, None]  # an empty cell stays missing
    assert ds["note"] == [None, "x", None]
    with pytest.raises(ValueError, match=r"t.csv, line 5, column 'dora_weight': missing"):
        validate_rows(ds, path=str(path))  # the blank line 4 is counted


def test_a_row_with_more_fields_than_the_header_is_named(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("prompt,chosen,rejected\na,b,c\nd,e,f,g\n")
    with pytest.raises(ValueError, match=r"w.csv, line 3: 4 fields where the header has 3"):
        load_rows(str(path))


def test_dora_train_names_the_csv_line_before_a_model_loads(tmp_path, tiny_model_dir, monkeypatch, capsys):
    forbid_loads(monkeypatch)
    path = write_csv(tmp_path / "d.csv")
    argv = ["train", "--model_name_or_path", tiny_model_dir, "--dataset", path,
            "--output_dir", str(tmp_path / "out"), "--report_to", "none"]  # fmt: skip
    message = one_line_error(argv, capsys, watch=[path])
    assert f"line {BAD + 2}, column 'dora_weight': 'abc' is not a number" in message
    assert message.count("line ") == 1


def test_a_custom_weight_column_is_read_as_numbers_too(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """--weight_column w: its one bad cell is that row's error (file line and column), not every row's; through
    load_rows the other rows' weights are floats as written."""
    forbid_loads(monkeypatch)
    with open(write_csv(tmp_path / "d.csv"), newline="") as f:
        text = f.read().replace(",dora_weight\r\n", ",w\r\n", 1)
    path = tmp_path / "w.csv"
    path.write_bytes(text.encode())
    assert text.startswith("prompt,chosen,rejected,w\r\n")
    with pytest.raises(ValueError, match=rf"w.csv: line {BAD + 2}, column 'w': 'abc' is not a number \(1 of 16 rows"):
        load_rows(str(path), number_columns=("w",))
    kept = load_rows(str(path), number_columns=("w",), skip_invalid=True)
    assert kept["w"] == [w for _, w in weights_in_file(str(path))]
    argv = ["train", "--model_name_or_path", tiny_model_dir, "--dataset", str(path), "--weight_column", "w",
            "--output_dir", str(tmp_path / "out"), "--report_to", "none"]  # fmt: skip
    message = one_line_error(argv, capsys, watch=[str(path)])
    assert f"line {BAD + 2}, column 'w': 'abc' is not a number" in message and message.count("line ") == 1
