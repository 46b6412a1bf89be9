"""mgca/prompts.py: class files (`name: prompt`, escaped colons)."""
from __future__ import annotations


def test_a_colon_in_a_class_name_is_written_escaped(tmp_path):
    """`name: prompt` left no way to write a class whose name holds a colon; `\\:` is one (docs/own-data.md)."""
    from mgca.prompts import read_class_file

    path = tmp_path / "classes.txt"
    path.write_text("screen 16\\:9\nratio 4\\:3: a photo of a 4:3 frame\nroad: a road: wide\n")
    classes = read_class_file(path)
    assert classes.names == ("screen 16:9", "ratio 4:3", "road")
    assert classes.prompts == (None, "a photo of a 4:3 frame", "a road: wide")
