"""User uploads: every bad file gets a DataError that names the problem; good files become datasets."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from metanlp.data import (
    DataError,
    SharedClassDataset,
    check_dataset,
    check_episode_feasibility,
    examples_for_split,
    load_user_dataset,
    split_user_classes,
)


def make_csv(n_classes: int, per_class: int, header: str = "text,label") -> str:
    rows = [header] + [
        f"sample number {i} of class {c},class_{c}" for c in range(n_classes) for i in range(per_class)
    ]
    return "\n".join(rows) + "\n"


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def error_message(tmp_path, name: str, content: str | bytes, **kwargs) -> str:
    with pytest.raises(DataError) as error:
        load_user_dataset(write(tmp_path, name, content), **kwargs)
    return str(error.value)


# ---------------------------------------------------------------- good files


def split_sizes(dataset) -> list[int]:
    return [len(dataset.class_splits[split]) for split in ("train", "val", "test")]


def test_enough_classes_for_n_way_in_every_split_get_a_disjoint_class_split(tmp_path):
    path = write(tmp_path, "intents.csv", make_csv(20, 8))
    dataset, warnings = load_user_dataset(path)  # the default episodes: 5-way 1-shot, 5 queries
    check_dataset(dataset)  # disjoint: a class split that mixed splits would be refused here
    assert len(dataset.examples) == 160 and not isinstance(dataset, SharedClassDataset)
    assert split_sizes(dataset) == [10, 5, 5] and warnings == []
    assert "disjoint" in dataset.split_note and "10 train, 5 validation and 5 test classes" in dataset.split_note
    # 10 classes: two disjoint 5-class splits fit, a third (validation) does not; 2-way fits all three.
    ten = write(tmp_path, "ten.csv", make_csv(10, 8))
    five_way, _ = load_user_dataset(ten)
    assert split_sizes(five_way) == [5, 0, 5] and "no validation classes: that needs 15" in five_way.split_note
    assert split_sizes(load_user_dataset(ten, n_way=2)[0]) == [6, 2, 2]


def test_six_classes_of_ten_share_classes_for_5_way_and_split_classes_for_3_way(tmp_path):
    path = write(tmp_path, "six.csv", make_csv(6, 10))
    shared, warnings = load_user_dataset(path, n_way=5, k_shot=1, n_query=3)
    assert isinstance(shared, SharedClassDataset) and shared.split_note in warnings
    assert "need 10 classes" in shared.split_note and "examples are split" in shared.split_note
    train, test = examples_for_split(shared, "train"), examples_for_split(shared, "test")
    assert not {e.text for e in train} & {e.text for e in test}
    assert Counter(e.label for e in test) == dict.fromkeys(shared.labels(), 4)  # K + queries per class in test
    for split in ("train", "test"):  # the 5-way task works in both splits
        check_episode_feasibility(shared, n_way=5, k_shot=1, n_query=3, split=split)
    disjoint, _ = load_user_dataset(path, n_way=3)  # the README's example: 3-way
    assert split_sizes(disjoint) == [3, 0, 3] and "never saw in training" in disjoint.split_note
    for split in ("train", "test"):
        check_episode_feasibility(disjoint, n_way=3, k_shot=1, n_query=5, split=split)


def test_shared_split_says_when_too_few_examples_stay_for_training(tmp_path):
    dataset, _ = load_user_dataset(write(tmp_path, "six.csv", make_csv(6, 10)))  # 5-way, K + queries = 6
    assert "fewer than 6 stay in train" in dataset.split_note and "K + queries ≤ 5" in dataset.split_note
    assert "With N ≤ 3, the classes themselves would be split" in dataset.split_note
    check_episode_feasibility(dataset, n_way=5, k_shot=1, n_query=5, split="test")  # evaluation works
    with pytest.raises(DataError) as error:
        check_episode_feasibility(dataset, n_way=5, k_shot=1, n_query=5, split="train")
    message = str(error.value)
    assert "examples" in message and "split between them" in message and "only 0 of the 6 classes" in message


def test_the_policy_counts_classes_big_enough_for_an_episode(tmp_path):
    rows = make_csv(6, 10).splitlines() + [f"short {i} of tiny {c},tiny_{c}" for c in range(6) for i in range(3)]
    dataset, _ = load_user_dataset(write(tmp_path, "mixed.csv", "\n".join(rows) + "\n"), n_way=3)
    # 12 classes, but only 6 have the 6 examples an episode needs: 3 + 3 of those, the tiny ones in train.
    assert split_sizes(dataset) == [9, 0, 3] and set(dataset.class_splits["test"]) < {f"class_{c}" for c in range(6)}
    assert "6 classes with fewer than 6 examples" in dataset.split_note


def test_few_classes_become_a_shared_class_dataset_with_a_warning(tmp_path):
    dataset, warnings = load_user_dataset(write(tmp_path, "sentiment.csv", make_csv(3, 20)))
    assert isinstance(dataset, SharedClassDataset) and split_sizes(dataset) == [3, 0, 3]
    train, test = examples_for_split(dataset, "train"), examples_for_split(dataset, "test")
    assert len(train) == 42 and len(test) == 18 and not set(train) & set(test)
    assert "fewer than the 5 that 5-way episodes need: choose N ≤ 3" in warnings[0]


def test_split_policy_is_seeded(tmp_path):
    content = make_csv(6, 10)
    first, _ = load_user_dataset(content.encode(), filename="a.csv")
    again, _ = load_user_dataset(content.encode(), filename="b.csv")
    assert first.example_splits == again.example_splits
    three_way = [load_user_dataset(content.encode(), filename="c.csv", n_way=3)[0].class_splits for _ in range(2)]
    assert three_way[0] == three_way[1]


def test_bytes_uploads_in_csv_and_jsonl(tmp_path):
    csv_bytes = make_csv(6, 5).encode("utf-8")
    jsonl_bytes = "\n".join(
        json.dumps({"text": f"text {i} {c}", "label": c}) for c in "abcdef" for i in range(5)
    ).encode("utf-8")
    from_csv, _ = load_user_dataset(csv_bytes, filename="upload.csv")
    from_jsonl, _ = load_user_dataset(jsonl_bytes, filename="upload.jsonl")
    assert len(from_csv.examples) == len(from_jsonl.examples) == 30
    assert from_jsonl.labels() == list("abcdef")


def test_json_array_bom_custom_columns_and_numeric_labels(tmp_path):
    records = [{"utterance": f"hello {i}", "intent": i % 6} for i in range(30)]
    data = b"\xef\xbb\xbf" + json.dumps(records).encode("utf-8")
    dataset, _ = load_user_dataset(data, filename="x.json", text_column="utterance", label_column="intent")
    assert dataset.labels() == ["0", "1", "2", "3", "4", "5"]


def test_semicolon_csv_and_quoted_commas(tmp_path):
    content = 'text;label\n"one, two; three";a\nfour;b\n'
    dataset, _ = load_user_dataset(write(tmp_path, "eu.csv", content))
    assert dataset.examples[0].text == "one, two; three"


def test_chinese_text_is_detected(tmp_path):
    content = "text,label\n" + "".join(f"今天股市上涨{i},财经\n体育比赛结果{i},体育\n" for i in range(5))
    dataset, _ = load_user_dataset(write(tmp_path, "zh.csv", content))
    assert dataset.language == "zh"


def test_split_user_classes_is_seeded_disjoint_and_complete():
    labels = [f"c{i}" for i in range(6)]
    split = split_user_classes(labels, seed=3)
    assert split == split_user_classes(list(reversed(labels)), seed=3)
    assert sorted(split["train"] + split["val"] + split["test"]) == labels
    assert all(len(split[s]) >= 2 for s in split)  # an episode needs N >= 2
    big = split_user_classes([f"c{i}" for i in range(20)])
    assert [len(big[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    with pytest.raises(DataError, match="fractions"):
        split_user_classes(labels, fractions=(0.5, 0.5, 0.5))


# ---------------------------------------------------------------- bad files


def test_empty_files(tmp_path):
    assert "empty" in error_message(tmp_path, "a.csv", b"")
    assert "empty" in error_message(tmp_path, "b.jsonl", "\n  \n")
    assert "no data rows" in error_message(tmp_path, "c.csv", "text,label\n")


def test_not_utf8_names_the_offset_and_line(tmp_path):
    content = "text,label\nfine,a\ncaf\xe9 au lait,b\n".encode("latin-1")
    message = error_message(tmp_path, "latin.csv", content)
    assert "UTF-8" in message and "line 3" in message and "0xE9" in message


def test_csv_with_wrong_field_count_names_the_line(tmp_path):
    message = error_message(tmp_path, "bad.csv", "text,label\nok,a\nhello, world,b\n")
    assert "Line 3" in message and "3 fields" in message


def test_csv_with_unclosed_quote_is_reported(tmp_path):
    message = error_message(tmp_path, "quote.csv", 'text,label\nok,a\n"never closed,b\nmore,c\n')
    assert "line 3" in message and "quotes" in message


def test_bad_jsonl_line_is_named(tmp_path):
    content = '{"text": "fine", "label": "a"}\n{"text": "broken", "label": }\n'
    assert "Line 2" in error_message(tmp_path, "bad.jsonl", content)
    message = error_message(tmp_path, "list.jsonl", '{"text": "fine", "label": "a"}\n["x", "b"]\n')
    assert "Line 2" in message and "array" in message


def test_misnamed_column_lists_found_columns_and_suggests_one(tmp_path):
    message = error_message(tmp_path, "cols.csv", make_csv(6, 3, header="txt,Label"))
    assert "'text'" in message and "Did you mean 'txt'" in message
    assert "'label'" in message and "Did you mean 'Label'" in message
    assert "Columns found: 'txt', 'Label'" in message


def test_common_synonym_is_suggested(tmp_path):
    message = error_message(tmp_path, "syn.csv", make_csv(6, 3, header="sentence,category"))
    assert "Did you mean 'sentence'" in message and "Did you mean 'category'" in message


def test_label_suggestion_is_never_the_text_column(tmp_path):
    # "intent" is spelled closer to "text" than to "label", but "text" is already the text column.
    message = error_message(tmp_path, "held.csv", make_csv(6, 3), label_column="intent")
    assert "Did you mean 'label'? Choose it as the label column" in message and "'text'?" not in message
    message = error_message(tmp_path, "si.csv", make_csv(6, 3, header="sentence,intent"))
    assert "no text column named 'text'. Did you mean 'sentence'?" in message
    assert "no label column named 'label'. Did you mean 'intent'?" in message


def test_unusual_column_names_are_suggested_by_what_their_cells_hold(tmp_path):
    rows = ["row_id,comment,gold"] + [
        f"{i},this is a fairly long free-text comment number {i},{'yes' if i % 3 else 'no'}" for i in range(12)
    ]
    message = error_message(tmp_path, "odd.csv", "\n".join(rows) + "\n")
    assert "no text column named 'text'. Did you mean 'comment'?" in message  # the longest cells
    assert "no label column named 'label'. Did you mean 'gold'?" in message  # few values that repeat


def test_empty_texts_name_their_lines(tmp_path):
    content = "text,label\nfine,a\n,b\nalso fine,a\n   ,c\n"
    message = error_message(tmp_path, "holes.csv", content)
    assert "Empty text" in message and "lines 3, 5" in message


def test_file_over_the_size_limit(tmp_path):
    content = "text,label\n" + "x" * (2**20 + 2**18) + ",a\n"
    message = error_message(tmp_path, "big.csv", content, max_bytes=2**20)
    assert "1.25 MB" in message and "over the 1 MB limit" in message
    with pytest.raises(DataError, match="limit"):
        load_user_dataset(b"x" * 2000, filename="big.csv", max_bytes=1000)


def test_unsupported_extension_and_single_class(tmp_path):
    assert ".xlsx" in error_message(tmp_path, "sheet.xlsx", b"PK\x03\x04")
    assert "only one class" in error_message(tmp_path, "one.csv", "text,label\na,x\nb,x\n")


def test_too_few_classes_for_n_way(tmp_path):
    dataset, _ = load_user_dataset(write(tmp_path, "two.csv", make_csv(2, 20)))
    with pytest.raises(DataError) as error:
        check_episode_feasibility(dataset, n_way=5, k_shot=1, n_query=2)
    assert "only 2 classes" in str(error.value) and "5-way" in str(error.value)


def test_small_classes_are_named_with_counts(tmp_path):
    content = (
        "text,label\n" + "".join(f"t{i},big\n" for i in range(20)) + "".join(f"s{i},tiny\n" for i in range(4))
    )
    dataset, _ = load_user_dataset(write(tmp_path, "small.csv", content), n_way=2, k_shot=5, n_query=5)
    with pytest.raises(DataError) as error:
        check_episode_feasibility(dataset, n_way=2, k_shot=5, n_query=5, split="test")
    assert "'tiny' (4)" in str(error.value) and "10 examples" in str(error.value)  # the class's real size
    with pytest.raises(DataError) as error:  # a class too small for any episode is not in train at all
        check_episode_feasibility(dataset, n_way=2, k_shot=5, n_query=5, split="train")
    assert "only 1 class (big)" in str(error.value) and "Use data with more classes" in str(error.value)
    assert "split between them" in str(error.value)


def test_feasibility_rejects_bad_parameters_and_empty_split(tmp_path):
    dataset, _ = load_user_dataset(write(tmp_path, "two.csv", make_csv(2, 20)))
    with pytest.raises(DataError, match="at least 2"):
        check_episode_feasibility(dataset, n_way=1, k_shot=1, n_query=1)
    with pytest.raises(DataError, match="no classes"):
        check_episode_feasibility(dataset, n_way=2, k_shot=1, n_query=1, split="val")


# ---------------------------------------------------------------- warnings and entity markers


def test_duplicates_are_removed_and_conflicts_reported(tmp_path):
    content = make_csv(6, 4) + "sample number 0 of class 0,class_0\nsample number 1 of class 1,class_2\n"
    dataset, warnings = load_user_dataset(write(tmp_path, "dups.csv", content))
    assert len(dataset.examples) == 25  # the exact repeat is gone, the conflicting one is kept
    assert any("Removed 1 duplicate row " in w and "line 26" in w for w in warnings)
    assert any("more than one label" in w and "sample number 1 of class 1" in w for w in warnings)


def test_head_and_tail_markers_are_inserted(tmp_path):
    rows = [
        {
            "text": "Marie Curie was born in Warsaw.",
            "head": "Marie Curie",
            "tail": "Warsaw",
            "label": "born in",
        },
        {"text": "Paris is the capital of France.", "head": "france", "tail": "Paris", "label": "capital"},
        {"text": "New York City is in New York.", "head": "New York City", "tail": "New York", "label": "in"},
        {"text": "No entity here.", "head": "Berlin", "tail": "here", "label": "in"},
    ]
    content = "\n".join(json.dumps(row) for row in rows)
    dataset, warnings = load_user_dataset(
        write(tmp_path, "rel.jsonl", content), head_column="head", tail_column="tail"
    )
    texts = [example.text for example in dataset.examples]
    assert texts[0] == "[E1] Marie Curie [/E1] was born in [E2] Warsaw [/E2]."
    assert texts[1] == "[E2] Paris [/E2] is the capital of [E1] France [/E1]."
    assert texts[2] == "[E1] New York City [/E1] is in [E2] New York [/E2]."
    assert "[E1]" not in texts[3] and "[E2] here [/E2]" in texts[3]
    assert dataset.task.startswith("relation")
    assert any("head entity was not found" in w and "line 4" in w for w in warnings)


def test_missing_head_column_is_reported(tmp_path):
    message = error_message(tmp_path, "rel.csv", make_csv(6, 2), head_column="subject")
    assert "head entity column named 'subject'" in message


def test_a_file_with_too_many_rows_is_refused_while_it_is_read(tmp_path, monkeypatch):
    """A million short rows (11 MB) is refused with a clear message before it costs the server a gigabyte."""
    import time

    from metanlp.data import file_reading

    big = tmp_path / "big.csv"
    big.write_text("text,label\n" + "".join(f"sentence {i},class{i % 7}\n" for i in range(1_000_000)))
    started = time.monotonic()
    with pytest.raises(DataError, match="more than 200,000 rows"):
        load_user_dataset(big)
    assert time.monotonic() - started < 20
    monkeypatch.setattr(file_reading, "MAX_ROWS", 30)
    rows = "".join(f"sentence {i},class{i % 3}\n" for i in range(30))
    (tmp_path / "ok.csv").write_text("text,label\n" + rows)
    assert len(load_user_dataset(tmp_path / "ok.csv")[0].examples) == 30  # exactly the limit is fine
    (tmp_path / "over.csv").write_text("text,label\n" + rows + "one more,class0\n")
    lines = "".join(json.dumps({"text": f"sentence {i}", "label": f"c{i % 3}"}) + "\n" for i in range(31))
    (tmp_path / "over.jsonl").write_text(lines)
    (tmp_path / "over.json").write_text(json.dumps([{"text": f"s {i}", "label": f"c{i % 3}"} for i in range(31)]))
    for name in ("over.csv", "over.jsonl", "over.json"):
        with pytest.raises(DataError, match="more than 30 rows"):
            load_user_dataset(tmp_path / name)
