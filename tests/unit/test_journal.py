"""The stage journal: replays only what an earlier process recorded, survives a line cut short by a
kill, and leaves nothing behind once discarded."""

from __future__ import annotations

import json

from mecharule.io.journal import Journal


def test_answers_recorded_by_this_process_are_not_replayed_to_it(tmp_path):
    journal = Journal(tmp_path / "stage")
    journal.put("a", [1, 2, 3])
    journal.put_many([("b", {"x": 1.5}), ("c", None)])
    assert journal.get("a") is None and journal.get("b") is None
    assert (journal.recorded, journal.replayed, len(journal)) == (3, 0, 0)
    journal.close()

    again = Journal(tmp_path / "stage")
    assert again.get("a") == [1, 2, 3] and again.get("b") == {"x": 1.5}
    assert again.get("missing") is None
    assert (again.replayed, again.recorded, len(again)) == (2, 0, 3)


def test_a_later_value_under_the_same_key_wins(tmp_path):
    first = Journal(tmp_path / "stage")
    first.put("a", 1)
    first.put("a", 2)
    first.close()
    assert Journal(tmp_path / "stage").get("a") == 2


def test_a_line_cut_short_by_a_kill_is_ignored(tmp_path):
    journal = Journal(tmp_path / "stage")
    journal.put_many([("a", 1), ("b", [True, False])])
    journal.close()
    with journal.path.open("a", encoding="utf-8") as handle:
        handle.write('{"k":"c","v":[1,')  # the write a kill interrupted
    resumed = Journal(tmp_path / "stage")
    assert len(resumed) == 2
    assert resumed.get("a") == 1 and resumed.get("b") == [True, False] and resumed.get("c") is None


def test_the_first_answer_after_a_cut_short_line_survives_the_next_resume(tmp_path):
    journal = Journal(tmp_path / "stage")
    journal.put("a", 1)
    journal.close()
    with journal.path.open("a", encoding="utf-8") as handle:
        handle.write('{"k":"c","v":[1,')
    resumed = Journal(tmp_path / "stage")
    resumed.put("d", 4)
    resumed.close()
    assert Journal(tmp_path / "stage").get("d") == 4


def test_numpy_values_are_journaled_as_plain_json(tmp_path):
    import numpy as np

    journal = Journal(tmp_path / "stage")
    journal.put("n", {"x": np.int64(3), "y": np.array([True, False]), "z": np.float32(0.5)})
    journal.close()
    assert Journal(tmp_path / "stage").get("n") == {"x": 3, "y": [True, False], "z": 0.5}


def test_lines_are_json_with_key_and_value(tmp_path):
    journal = Journal(tmp_path / "stage")
    journal.put("cha|R1/positive|1|abc", [3, 24, 0, 24, 3, 1, 0, 0])
    journal.close()
    lines = journal.path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"k": "cha|R1/positive|1|abc", "v": [3, 24, 0, 24, 3, 1, 0, 0]}
    ]


def test_discard_removes_the_folder_and_an_empty_partial_parent(tmp_path):
    partial = tmp_path / ".partial"
    first = Journal(partial / "localize-123")
    second = Journal(partial / "anchor-456")
    first.put("a", 1)
    second.put("b", 2)
    first.discard()
    assert not first.folder.exists() and second.folder.exists()
    assert partial.exists()  # another stage's journal is still there
    second.discard()
    assert not partial.exists()
    Journal(partial / "never-written").discard()  # nothing written: nothing to remove, no error
    assert not partial.exists()
