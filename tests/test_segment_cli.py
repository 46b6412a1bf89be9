"""`mgca-segment` on folders, globs and list files (mgca/cli/segment.py over runtime/batch.py): where outputs go,
what a rerun may reuse, and the one-line errors of issue 29."""
from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from mgca.cli import segment as segment_cli

from .support import (
    BACKBONE_NOTICE,
    SEGMENT_CLASSES,
    blocky_image,
    one_line_error,
    one_line_exit_2,
    photo,
    photo_folder,
    segment,
    three_photos,
)


def summary_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def files_below(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ item 1: confinement

def test_a_list_with_dotdot_lines_writes_only_inside_out(bundle, tmp_path, monkeypatch, capsys):
    """The issue's case: `../photos/b.png` and `../../X/a.png` in D/lists/list.txt went to out/photos/b.png and over
    the input X/a.png itself."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path / "D" / "photos" / "b.png", 1)
    photo(tmp_path / "X" / "a.png", 2)
    listing = tmp_path / "D" / "lists" / "list.txt"
    listing.parent.mkdir(parents=True)
    listing.write_text("../photos/b.png\n../../X/a.png\n")
    before = files_below(tmp_path)
    assert segment(["D/lists/list.txt"], Path("out"), bundle) == 0, capsys.readouterr().err
    after = files_below(tmp_path)
    assert {name: data for name, data in after.items() if not name.startswith("out/")} == before
    assert sorted(p.relative_to(tmp_path / "out" / "labels").as_posix()
                  for p in (tmp_path / "out" / "labels").rglob("*.png")) == ["a.png", "b.png"]
    assert sorted(row["labels"] for row in summary_rows(tmp_path / "out" / "summary.csv")) == [
        "labels/a.png", "labels/b.png"]


def test_a_link_out_of_out_is_refused_before_any_work(bundle, tmp_path, capsys):
    photo(tmp_path / "in" / "p.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "labels").symlink_to(elsewhere)
    err = one_line_error(segment([tmp_path / "in"], tmp_path / "out", bundle), capsys.readouterr().err)
    assert "outside --out" in err and "remove the link" in err
    assert not list(elsewhere.iterdir())


# ------------------------------------------------------------------------------------------------ item 2: --overwrite


@pytest.mark.parametrize("ray", [False, True])
def test_overwrite_with_a_bad_setting_keeps_every_earlier_result(bundle, tmp_path, capsys, ray):
    """The issue's case: `--overwrite --background-threshold 7` (with --ray) left 0 of 3 labels and wrote none."""
    photos, out = three_photos(tmp_path / "photos"), tmp_path / "out"
    assert segment([photos], out, bundle, "--overlays") == 0
    before = files_below(out)
    code = segment([photos], out, bundle, "--overlays", "--overwrite", "--background-threshold", "7",
                   *(["--ray", "--actors", "1"] if ray else []))
    assert "background_threshold must be a number in [0, 1]" in one_line_error(code, capsys.readouterr().err)
    assert files_below(out) == before


def test_a_failed_redo_keeps_its_old_output_but_not_as_done(tmp_path, bundle, capsys):
    """--overwrite never deletes: an image that fails now keeps its earlier outputs (only a new output replaces one),
    its summary row says error, and the next run retries it instead of counting it done."""
    photos, out = three_photos(tmp_path / "photos"), tmp_path / "out"
    assert segment([photos], out, bundle, "--overlays") == 0
    old = files_below(out)
    broken = b"\x89PNG\r\n\x1a\n not an image any more"
    (photos / "img1.png").write_bytes(broken)
    assert segment([photos], out, bundle, "--overlays", "--overwrite") == 1
    assert "1 of 3 images could not be segmented" in capsys.readouterr().err
    for name in ("labels/img1.png", "overlays/img1.png"):
        assert (out / name).read_bytes() == old[name]
    assert not list(out.rglob("*.tmp")) and (photos / "img1.png").read_bytes() == broken
    rows = {Path(row["image"]).name: row for row in summary_rows(out / "summary.csv")}
    assert rows["img1.png"]["status"] == "error" and rows["img1.png"]["labels"] == ""
    assert rows["img0.png"]["status"] == rows["img2.png"]["status"] == "ok"
    assert segment([photos], out, bundle, "--overlays") == 1  # no --overwrite: the failed one is tried again
    assert "0 images segmented, 2 already done, 1 failed" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ item 3: the record

@pytest.mark.parametrize("change, needle", [
    (["--classes", "cat,dog,road,sky,tree"], "classes: cat,dog,road,sky -> cat,dog,road,sky,tree"),
    (["--background-threshold", "0.5"], "classes: cat,dog,road,sky -> background,cat,dog,road,sky"),
    (["--units", "4"], "settings.units: 9 -> 4"),
])
def test_a_rerun_with_other_settings_is_refused_in_one_line(bundle, tmp_path, capsys, change, needle):
    """The issue's case: another class list (or a background) crashed at the end with a raw ValueError, and the
    images done before kept the old class list's labels, counted as done."""
    photos, out = three_photos(tmp_path / "photos"), tmp_path / "out"
    assert segment([photos], out, bundle) == 0
    before = files_below(out)
    classes = change[1] if change[0] == "--classes" else SEGMENT_CLASSES
    code = segment([photos], out, bundle, *([] if change[0] == "--classes" else change), classes=classes)
    err = one_line_error(code, capsys.readouterr().err)
    assert needle in err and "--overwrite" in err and "another --out" in err, err
    assert files_below(out) == before


def test_an_interrupted_overwrite_with_new_classes_never_mixes(bundle, tmp_path, monkeypatch, capsys):
    from runtime.output_record import read_record
    from runtime.segmenter import Segmenter

    photos, out = three_photos(tmp_path / "photos"), tmp_path / "out"
    assert segment([photos], out, bundle) == 0
    original, calls = Segmenter.segment, []

    def interrupted(self, *args, **kwargs):  # Ctrl-C during the 2nd image of the redo
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "segment", interrupted)
    assert segment([photos], out, bundle, "--overwrite", classes="cat,dog") == 130
    monkeypatch.setattr(Segmenter, "segment", original)
    assert read_record(out).mixed  # two labels of the old classes are still there
    capsys.readouterr()
    assert segment([photos], out, bundle, classes="cat,dog") == 0  # resumes the redo: the old ones are not done
    assert "2 images segmented, 1 already done, 0 failed" in capsys.readouterr().out
    record = read_record(out)
    assert not record.mixed and record.producer["classes"] == ["cat", "dog"]
    rows = summary_rows(out / "summary.csv")
    assert len(rows) == 3 and all(row["status"] == "ok" for row in rows)
    assert [key for key in rows[0] if key.startswith("area:")] == ["area:cat", "area:dog"]
    fresh = tmp_path / "fresh"
    assert segment([photos], fresh, bundle, classes="cat,dog") == 0
    assert {k: v for k, v in files_below(out).items() if k.startswith("labels/")} == {
        k: v for k, v in files_below(fresh).items() if k.startswith("labels/")}


# ------------------------------------------------------------------------------------------------ property: confinement

TREE = ["a/p0.png", "a/b/p1.png", "c/p2.png", "c/d/p3.png", "p4.png"]
ITEMS = [  # inputs as users write them: relative, absolute (ABS/), with '..', through links, globs and lists
    "a", "ABS/a", "a/b/../b", "c/../a", "lc", "ABS/lc/d", "a/*.png", "*/../c/*.png", "ABS/c/**/*.png", "p4.png",
    "lf.png", "a/b/../../c/p2.png", "LIST",
]
LINES = ["../../a/p0.png", "../../c/d/p3.png", "ABS/c/p2.png", "sub/../../../p4.png", "../../lc/d/p3.png",
         "../../lf.png", "../../../root/a/b/p1.png"]  # lines of lists/deep/list.txt
OUTS = ["out", "ABS/out2", "a/out", "lc/out", "c/../out3"]


def _tree_state(root: Path) -> dict[str, bytes | str]:
    """Every file's bytes and every link's target below `root` (links not followed)."""
    state: dict[str, bytes | str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            key = path.relative_to(root).as_posix()
            if path.is_symlink():
                state[key] = "-> " + os.readlink(path)
            elif path.is_file():
                state[key] = path.read_bytes()
    return state


@example(items=["LIST"], lines=["../../a/p0.png", "../../c/d/p3.png"], out="out", overlays=False)  # the issue's
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.sampled_from(ITEMS), min_size=1, max_size=3, unique=True),
       lines=st.lists(st.sampled_from(LINES), min_size=1, max_size=3, unique=True),
       out=st.sampled_from(OUTS), overlays=st.booleans())
def test_every_output_lands_inside_out_and_no_input_changes(bundle, items, lines, out, overlays):
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        root = Path(scratch).resolve() / "root"
        for index, name in enumerate(TREE):
            photo(root / name, index)
        (root / "lc").symlink_to(root / "c")  # a linked folder
        (root / "lf.png").symlink_to(root / "a" / "b" / "p1.png")  # a linked file
        (root / "lists" / "deep").mkdir(parents=True)
        os.chdir(root)

        def fill(text: str) -> str:
            return text.replace("ABS/", f"{root}/").replace("LIST", "lists/deep/list.txt")

        (root / "lists" / "deep" / "list.txt").write_text("".join(fill(line) + "\n" for line in lines))

        before = _tree_state(root)
        target = (root / fill(out)).resolve()
        for _ in range(2):  # a first run and a rerun into the same --out
            code = segment([fill(item) for item in items], Path(fill(out)), bundle,
                           *(["--overlays"] if overlays else []))
            assert code in (0, 2)
        after = _tree_state(root)
        assert all(after.get(key) == value for key, value in before.items())  # no input's bytes (or link) changed
        written = [key for key in after if key not in before]
        assert all((root / key).resolve().is_relative_to(target) for key in written), written


# ------------------------------------------------------------------------------------------------ item 7: --classes

def test_a_long_inline_class_list_is_a_list_not_a_path(tmp_path):
    """The issue's case: 40 names (629 characters) were tried as a path first: raw OSError File name too long."""
    names = [f"class number {index} of the long list" for index in range(40)]
    classes = segment_cli.parse_classes(",".join(names))
    assert list(classes.names) == names
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    assert segment_cli.parse_classes(str(tmp_path / "classes.txt")).names == ("cat", "dog")  # a file is still a file


def test_a_long_string_given_as_a_class_file_is_one_line():
    from mgca.prompts import VocabularyFileError, read_class_file

    with pytest.raises(VocabularyFileError, match="does not exist; give a text file"):
        read_class_file("x" * 600)


# ------------------------------------------------------------------------------------------------ item 9: BOM

def test_a_byte_order_mark_is_no_part_of_a_class_or_a_path(bundle, tmp_path, capsys):
    """Notepad's UTF-8 starts files with U+FEFF: the engine path failed with "'\\ufeffcat' not in text cache"."""
    photo(tmp_path / "photos" / "a.png")
    (tmp_path / "classes.txt").write_text("\ufeffcat\ndog\n", encoding="utf-8")
    (tmp_path / "list.txt").write_text("\ufeffphotos/a.png\n", encoding="utf-8")
    code = segment([tmp_path / "list.txt"], tmp_path / "out", bundle, classes=str(tmp_path / "classes.txt"))
    assert code == 0, capsys.readouterr().err
    assert [key for key in summary_rows(tmp_path / "out" / "summary.csv")[0] if key.startswith("area:")] == [
        "area:cat", "area:dog"]


# ------------------------------------------------------------------------------------------------ item 12: writes

@pytest.mark.parametrize("summary, needle", [
    ("notes.txt/summary.csv", "the folder of --summary"),  # found only after all the work, with a traceback
    ("folder.csv", "is a folder; give a file path"),  # a raw IsADirectoryError
])
def test_a_bad_summary_path_is_refused_before_any_work(bundle, tmp_path, capsys, summary, needle):
    photos = three_photos(tmp_path / "photos")
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    (tmp_path / "folder.csv").mkdir()
    code = segment([photos], tmp_path / "out", bundle, "--summary", str(tmp_path / summary))
    assert needle in one_line_error(code, capsys.readouterr().err)
    assert not (tmp_path / "out" / "labels").exists()


@pytest.mark.parametrize("errno_, fix", [(28, "free some space"), (13, "make it writable")])
def test_a_failed_write_stops_in_one_line_and_the_rerun_resumes(bundle, tmp_path, monkeypatch, capsys, errno_, fix):
    """A full disk gave a raw OSError [Errno 28] (a read-only folder a PermissionError) in the middle of the run."""
    import runtime.batch

    photos, out = three_photos(tmp_path / "photos"), tmp_path / "out"
    original, calls = runtime.batch.write_png, []

    def failing(path, picture):  # the disk fills up at the 2nd image
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno_, os.strerror(errno_))
        return original(path, picture)

    monkeypatch.setattr(runtime.batch, "write_png", failing)
    err = one_line_error(segment([photos], out, bundle), capsys.readouterr().err)
    assert f"({os.strerror(errno_)}): {fix}, then run the same command again to resume" in err, err
    assert "the 1 images segmented before are written and kept" in err
    assert len(list((out / "labels").glob("*.png"))) == 1 and not list(out.rglob("*.tmp"))
    monkeypatch.setattr(runtime.batch, "write_png", original)
    assert segment([photos], out, bundle) == 0
    assert "2 images segmented, 1 already done, 0 failed" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ item 13: leftovers

def test_a_killed_runs_temporary_files_are_cleaned_on_resume(bundle, tmp_path, capsys):
    photos, out = three_photos(tmp_path / "photos"), tmp_path / "out"
    assert segment([photos], out, bundle) == 0
    (out / "labels" / "img2.png").unlink()
    leftovers = [out / "labels" / ".img2.png.0a1b2c3d.tmp", out / ".summary.csv.99aa88bb.tmp"]
    for path in leftovers:  # what kill -9 between the write and the rename leaves
        path.write_bytes(b"half a png")
    (out / "labels" / "notes.tmp").write_text("not ours\n")
    assert segment([photos], out, bundle) == 0
    assert "1 images segmented, 2 already done" in capsys.readouterr().out
    assert not any(path.exists() for path in leftovers) and (out / "labels" / "notes.tmp").is_file()


@pytest.mark.parametrize("inputs", [["*/../a.png"], ["x/../*.png", "y/../*.png"], ["a.png", "link.png"]])
def test_one_image_reached_two_ways_is_segmented_once(bundle, tmp_path, monkeypatch, capsys, inputs):
    monkeypatch.chdir(tmp_path)
    photo(tmp_path / "a.png")
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "link.png").symlink_to(tmp_path / "a.png")
    assert segment(inputs, tmp_path / "out", bundle) == 0, capsys.readouterr().err
    assert "1 images segmented, 0 already done" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "out" / "labels").rglob("*.png")] == ["a.png"]


def test_an_earlier_output_folder_inside_the_input_is_not_read_as_photos(bundle, tmp_path, capsys):
    """--out inside the input folder, then a run into another --out segmented the first run's label PNGs and
    overlays: 9 labels from 3 photos."""
    photos = three_photos(tmp_path / "photos")
    assert segment([photos], photos / "seg", bundle, "--overlays") == 0
    assert segment([photos], tmp_path / "other", bundle, "--overlays") == 0
    assert sorted(p.name for p in (tmp_path / "other" / "labels").rglob("*.png")) == [
        "img0.png", "img1.png", "img2.png"]
    assert segment([f"{photos}/**/*.png"], tmp_path / "globbed", bundle) == 0  # globs skip it too
    assert len(list((tmp_path / "globbed" / "labels").rglob("*.png"))) == 3


# ------------------------------------------------------------------------------------------------ item 14: messages

def test_a_list_naming_a_folder_says_it_is_a_folder(tmp_path, capsys):
    three_photos(tmp_path / "photos")
    (tmp_path / "list.txt").write_text("photos\n")
    code = segment_cli.main([str(tmp_path / "list.txt"), "--classes", SEGMENT_CLASSES, "--decoder", "none", "--out",
                             str(tmp_path / "out")])
    err = one_line_error(code, capsys.readouterr().err)
    assert "(listed in" in err and "is a folder; a list names image files" in err and "does not exist" not in err


def test_odd_file_names_reach_the_csv_summary_safely(bundle, tmp_path, monkeypatch, capsys):
    """A non-UTF-8 name gave a raw UnicodeEncodeError; a name starting with '=' was a spreadsheet formula."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path / os.fsdecode(b"caf\xe9.png"), 1)
    photo(tmp_path / "=HYPERLINK(1).png", 2)
    assert segment([os.fsdecode(b"caf\xe9.png"), "=HYPERLINK(1).png"], tmp_path / "out", bundle) == 0, \
        capsys.readouterr().err
    text = (tmp_path / "out" / "summary.csv").read_text(encoding="utf-8")  # valid UTF-8
    images = [row["image"] for row in summary_rows(tmp_path / "out" / "summary.csv")]
    assert images == ["caf\\xe9.png", "'=HYPERLINK(1).png"] and "\n=" not in text


def test_segment_outputs_never_overwrite_the_class_file(tmp_path, capsys, monkeypatch):
    from mgca.cli import segment as segment_cli

    monkeypatch.chdir(tmp_path)  # the one-photo overlay's default place
    classes = tmp_path / "classes.csv"  # a name a summary could have
    classes.write_text("cat\ndog\n")
    photos = photo_folder(tmp_path / "photos")
    common = ["--classes", str(classes), "--decoder", "none", "--short-side", "64", "--window", "64", "--stride", "32"]
    for argv in ([str(photos / "a.png"), "--labels-out", str(classes)],
                 [str(photos), "--out", str(tmp_path / "out"), "--summary", str(classes)]):
        code = segment_cli.main([*argv, *common])
        assert "is the input file" in one_line_error(code, capsys.readouterr().err)
    assert classes.read_text() == "cat\ndog\n"


@pytest.mark.parametrize("summary, needle", [("folder.csv", "is a folder"), ("notes.txt/s.csv", "the folder of")])
def test_a_bad_summary_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch, summary, needle):
    """--summary naming a folder or below a file failed only after the model (and, before issue 29, every image)."""
    from mgca.cli import segment as segment_cli

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model loaded before --summary was checked")

    monkeypatch.setattr(segment_cli, "_predict", must_not_run)
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "notes.txt").write_text("a file\n")
    code = segment_cli.main([str(photo_folder(tmp_path / "photos")), "--classes", "cat,dog", "--decoder", "none",
                             "--out", str(tmp_path / "out"), "--summary", str(tmp_path / summary)])
    assert needle in one_line_error(code, capsys.readouterr().err)


def test_linked_sub_folders_are_followed_once(bundle, tmp_path, capsys):
    """A symlinked sub-folder was silently skipped by mgca-segment (Path.rglob does not follow links); a link back
    to an ancestor must not loop."""
    from .support import photo, segment

    photos = tmp_path / "photos"
    photo(photos / "a.png")
    photo(tmp_path / "elsewhere" / "b.png", 1)
    (photos / "linked").symlink_to(tmp_path / "elsewhere")
    (photos / "loop").symlink_to(photos)
    assert segment([photos], tmp_path / "out", bundle) == 0, capsys.readouterr().err
    assert "2 images segmented" in capsys.readouterr().out
    assert sorted(p.relative_to(tmp_path / "out" / "labels").as_posix()
                  for p in (tmp_path / "out" / "labels").rglob("*.png")) == ["a.png", "linked/b.png"]


def test_segment_refuses_to_overwrite_its_input(tmp_path, monkeypatch, capsys):
    from mgca.cli import segment as segment_cli

    photo = tmp_path / "photo.jpg"
    Image.fromarray(blocky_image(np.random.default_rng(0), 40, 60)).save(photo)
    original = photo.read_bytes()
    monkeypatch.chdir(tmp_path)
    common = ["--classes", "cat,dog", "--decoder", "none", "--short-side", "64", "--window", "64", "--stride", "32"]
    for out in ["photo.jpg", str(photo), "./sub/../photo.jpg"]:
        (tmp_path / "sub").mkdir(exist_ok=True)
        one_line_exit_2(segment_cli.main(["photo.jpg", *common, "--out", out]), capsys.readouterr().err,
                        "is the input file")
    (tmp_path / "alias.jpg").symlink_to(photo)
    one_line_exit_2(segment_cli.main(["photo.jpg", *common, "--labels-out", "alias.jpg"]),
                    capsys.readouterr().err, "is the input file")
    assert photo.read_bytes() == original


def test_an_unknown_template_set_is_one_line(tmp_path, capsys):
    """get_templates raises the project's error type naming the set and the choices; the CLIs print it as one line."""
    from mgca.cli import segment as segment_cli
    from mgca.prompts import TEMPLATE_SETS, get_templates
    from runtime.errors import MgcaError

    with pytest.raises(MgcaError, match="unknown prompt template set 'nope'; choose one of") as info:
        get_templates("nope")
    assert all(name in str(info.value) for name in TEMPLATE_SETS) and isinstance(info.value, ValueError)
    photo = tmp_path / "photo.png"
    Image.fromarray(blocky_image(np.random.default_rng(0), 40, 60)).save(photo)
    out = tmp_path / "o.png"
    code = segment_cli.main([str(photo), "--classes", "cat,dog", "--decoder", "none", "--templates", "nope",
                             "--short-side", "64", "--window", "64", "--stride", "32", "--out", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if BACKBONE_NOTICE not in line]  # the random-init note
    one_line_exit_2(code, "\n".join(lines), "mgca-segment: error:", "template set 'nope'", "tcl")
    assert "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ the output record

@pytest.mark.parametrize("damage", ["truncated", "wrong types"])
def test_a_damaged_record_is_replaced_by_overwrite(bundle, tmp_path, capsys, damage):
    three_photos(tmp_path / "in")
    out = tmp_path / "out"
    assert segment([tmp_path / "in"], out, bundle) == 0, capsys.readouterr().err
    record = out / ".mgca-output.json"
    record.write_text(record.read_text()[:25] if damage == "truncated" else '{"producer": 5}')
    capsys.readouterr()
    err = one_line_error(segment([tmp_path / "in"], out, bundle), capsys.readouterr().err)
    assert "cannot be read" in err and "--overwrite" in err
    assert segment([tmp_path / "in"], out, bundle, "--overwrite") == 0, capsys.readouterr().err
    assert segment([tmp_path / "in"], out, bundle) == 0, capsys.readouterr().err  # the record reads back


def test_a_record_that_is_a_folder_is_one_line(bundle, tmp_path, capsys):
    three_photos(tmp_path / "in")
    (tmp_path / "out" / ".mgca-output.json").mkdir(parents=True)
    for extra in ((), ("--overwrite",)):
        err = one_line_error(segment([tmp_path / "in"], tmp_path / "out", bundle, *extra), capsys.readouterr().err)
        assert ".mgca-output.json is a folder" in err and "remove it" in err


def test_out_equal_to_the_input_or_a_stray_record_names_the_cause(bundle, tmp_path, capsys):
    photos = three_photos(tmp_path / "photos")
    err = one_line_error(segment([photos], photos, bundle), capsys.readouterr().err)
    assert "is the output folder --out" in err and "holds no images" not in err
    (photos / ".mgca-output.json").write_text("{}")  # a stray record: the folder reads as an earlier run's output
    err = one_line_error(segment([tmp_path], tmp_path / "out", bundle), capsys.readouterr().err)
    assert f"delete {photos / '.mgca-output.json'}" in err and "holds no images" not in err


def test_a_second_run_on_the_same_out_is_refused_naming_the_first(bundle, tmp_path, capsys):
    """One run per --out at a time: an OS lock held by a running process (here a child holding it) refuses a second
    run in one line naming its pid, and nothing of the folder changes; once it ends, a run goes ahead."""
    import subprocess
    import sys
    import time

    from .support import subprocess_env

    three_photos(tmp_path / "in")
    out = tmp_path / "out"
    script = ("import sys, pathlib\nfrom runtime.output_record import output_lock\n"
              "with output_lock(pathlib.Path(sys.argv[1])):\n    print('held', flush=True)\n    sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", script, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=subprocess_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        before = files_below(out)
        err = one_line_error(segment([tmp_path / "in"], out, bundle), capsys.readouterr().err)
        assert f"in use by another run (pid {holder.pid})" in err
        assert files_below(out) == before
    finally:
        holder.communicate("", timeout=60)
    deadline = time.monotonic() + 60
    while holder.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert segment([tmp_path / "in"], out, bundle) == 0, capsys.readouterr().err
    assert len(list((out / "labels").glob("*.png"))) == 3


def test_inline_classes_follow_the_class_file_rule():
    r"""`\:` is a colon of the name and `name: prompt` a prompt, inline as in a class file (it was taken literally)."""
    inline = segment_cli.parse_classes(r"ratio 16\:9, cat: a photo of a cat, dog")
    assert inline.names == ("ratio 16:9", "cat", "dog") and inline.prompts == (None, "a photo of a cat", None)
    from mgca.config import ConfigError

    with pytest.raises(ConfigError, match="must be 'name' or 'name: prompt'"):
        segment_cli.parse_classes("cat, dog:")
