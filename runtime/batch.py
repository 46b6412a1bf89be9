"""Segment whole folders into an output folder, resumably: in this process, or as a Ray Data pipeline.

    OUT/labels/<input tree>/NAME.png     label ids (uint8, uint16 past 256 classes), one per image
    OUT/overlays/<input tree>/NAME.png   colour overlays, when asked for
    OUT/summary.csv (or .parquet)        per image: status, size, seconds, the area share of every class

Every output file is written atomically (`runtime.files`), so an image either has its complete label PNG or none:
a rerun skips the images already done and redoes nothing else. Output names never hold `..`, every output path
resolves inside OUT and onto no input, OUT/.mgca-output.json (`runtime.output_record`) says what made the outputs,
and an old output is only ever replaced by its new one, never deleted first (docs/reliability.md). Each finished
image also appends one line to OUT/.segment-log.jsonl (its summary row and the producer's fingerprint); the summary
table is rewritten from it at the end of every run, so it covers the images of earlier, interrupted runs too. An
image that cannot be read or segmented (any `MgcaError`) is logged, counted and skipped; the run goes on; an output
that cannot be written stops the run in one line (`BatchWriteError`), keeping what was written.

`run_ray` runs the same per-image work (`segment_file`) inside Ray Data: `from_items` over the images still to do,
`map_batches` over an actor pool where each actor holds one `runtime.Segmenter` (the bundle loaded once per actor),
rows streamed back to this process for the log and the summary. Ray does the scheduling, retries and
back-pressure. Torch-free: only numpy, Pillow and the runtime (plus ray and pyarrow for `run_ray` / parquet).
"""
from __future__ import annotations

import csv
import errno
import glob
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from .errors import MgcaError, OutputPathError, RuntimeInputError, one_line
from .files import (
    atomic_path,
    check_writable_dir,
    check_writable_file,
    files_below,
    read_text_file,
    remove_temporaries,
)
from .image_files import DECODE_ERRORS, IMAGE_SUFFIXES, open_rgb
from .output_record import (
    RECORD_NAME,
    OutputRecord,
    check_record,
    fingerprint,
    is_output_folder,
    output_lock,
    write_record,
)
from .ray_start import RayOptions, start_ray

PredictFn = Callable[[np.ndarray], np.ndarray]
OverlayFn = Callable[[np.ndarray, np.ndarray], Image.Image]  # (image, labels) -> picture
LOG_NAME = ".segment-log.jsonl"
PRODUCER_KEY = "producer"  # in each log row: the fingerprint of the producer that made (or failed) it
GLOB_CHARS = "*?["
LIST_SUFFIXES = (".txt", ".lst")


class BatchInputError(MgcaError, ValueError):
    """The images to segment cannot be listed (no such file, folder or glob; nothing in it; two with one name)."""


class BatchWriteError(MgcaError):
    """An output could not be written (a full disk, a read-only folder): the run stops; what it wrote is kept."""


def _write_failure(what: str, err: OSError) -> BatchWriteError:
    """One line: which file, why, and the fix (the caller adds what was written and how to resume)."""
    full = err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    locked = err.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
    fix = "free some space" if full else "make it writable" if locked else "fix that"
    return BatchWriteError(f"cannot write {what} ({err.strerror or type(err).__name__}): {fix}")


@dataclass(frozen=True)
class FileKind:
    """Which files an input listing collects (images; `runtime.video_job` lists videos with the same rules) and
    how one task's output is named in a clash message."""

    noun: str
    suffixes: tuple[str, ...]
    output: str  # e.g. "labels/{}.png": the output of the task whose rel fills {}

    def wanted(self, name: str | Path) -> bool:
        """One of these files by its suffix, hidden files (".name", e.g. macOS' "._photo.jpg") excluded."""
        path = Path(name)
        return path.suffix.lower() in self.suffixes and not path.name.startswith(".")


IMAGES = FileKind("image", IMAGE_SUFFIXES, "labels/{}.png")


@dataclass(frozen=True)
class ImageTask:
    """One image to segment: where it is (a path or a filesystem URI) and its place in the output tree."""

    source: str
    rel: str  # relative path without suffix: OUT/labels/<rel>.png


# ------------------------------------------------------------------------------------------------ inputs

def _is_uri(text: str) -> bool:
    return "://" in text


def _rel(path: Path, base: Path) -> str:
    """The output name of `path` (no suffix): its place below `base`, or its bare name when it lies outside. Both are
    normalised first, so `..` in a list line or a glob never reaches the output path."""
    file, folder = Path(os.path.abspath(path)), Path(os.path.abspath(base))
    return (file.relative_to(folder) if file.is_relative_to(folder) else Path(file.name)).with_suffix("").as_posix()


def _list_uri(uri: str, kind: FileKind = IMAGES) -> list[ImageTask]:
    """The images below a pyarrow/fsspec filesystem URI (s3://, gs://, hdfs://, file://), or the one file it names."""
    try:
        from pyarrow import fs
    except ImportError:
        raise BatchInputError(f"{uri} is a filesystem URI; reading one needs pyarrow: pip install 'mgca[ray]'") \
            from None
    try:
        filesystem, base = fs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(base)
        if info.type == fs.FileType.File:
            return [ImageTask(uri, Path(base).stem)]
        entries = filesystem.get_file_info(fs.FileSelector(base, recursive=True))
    except (OSError, ValueError) as err:
        raise BatchInputError(f"{uri} cannot be listed ({type(err).__name__}: {one_line(err)})") from None
    prefix = uri[:len(uri) - len(uri.split("://", 1)[1])]  # scheme:// (the filesystem's paths have none)
    files = sorted(e.path for e in entries if e.type == fs.FileType.File and kind.wanted(e.path))
    return [ImageTask(f"{prefix}{path}", _rel(Path(path), Path(base))) for path in files]


def _photos(files: Iterable[Path], base: Path, kind: FileKind = IMAGES) -> list[Path]:
    """The image (`kind`) files among `files` (found below `base`), less those inside an earlier run's output folder
    below `base` (one holding an output record): its label PNGs and overlays are no photos."""
    outputs: dict[Path, bool] = {}

    def in_output(folder: Path) -> bool:
        if folder not in outputs:
            inside = folder != base and folder != folder.parent and folder.is_relative_to(base)
            outputs[folder] = inside and (is_output_folder(folder) or in_output(folder.parent))
        return outputs[folder]

    return [p for p in files if p.is_file() and kind.wanted(p.name) and not in_output(p.parent)]


def _list_one(item: str, kind: FileKind = IMAGES) -> list[ImageTask]:
    if _is_uri(item):
        return _list_uri(item, kind)
    path = Path(item).expanduser()
    if any(c in item for c in GLOB_CHARS) and not path.exists():
        parts = Path(item).expanduser().parts
        magic = next(i for i, part in enumerate(parts) if any(c in part for c in GLOB_CHARS))
        base = Path(*parts[:magic]) if magic else Path(".")  # the output tree mirrors the tree below it
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(item), recursive=True))
        return [ImageTask(str(p), _rel(p, base)) for p in _photos(files, base, kind)]
    if path.is_dir():
        return [ImageTask(str(p), _rel(p, path)) for p in _photos(files_below(path), path, kind)]  # links followed
    if path.is_file() and kind.wanted(path.name):
        return [ImageTask(str(path), path.stem)]
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:  # one image path a line, relative to the list
        lines = [line.strip() for line in read_text_file(path, "list file", BatchInputError).splitlines()]
        files = [p if Path(p).is_absolute() or _is_uri(p) else str(path.parent / p)
                 for p in lines if p and not p.startswith("#")]
        missing = [p for p in files if not _is_uri(p) and not Path(p).is_file()]
        if missing:
            why = (f"is a folder; a list names {kind.noun} files, one a line (give the folder itself as an input)"
                   if Path(missing[0]).is_dir() else "does not exist")
            raise BatchInputError(f"{missing[0]} (listed in {path}) {why} ({len(missing)} not a file); fix the list")
        return [ImageTask(p, _rel(Path(p), path.parent)) for p in files]
    raise BatchInputError(f"{item} is not an {kind.noun} ({', '.join(kind.suffixes)}), a folder, a glob or a list of "
                          f"{kind.noun}s ({', '.join(LIST_SUFFIXES)}); check the path")


def _why_none(item: str, skip: Path | None, kind: FileKind) -> str:
    """Why an input yielded no `kind` files: it is (or lies in) --out, its files all lie in an earlier run's output
    folder (one holding an output record, perhaps a stray one), or it holds none."""
    path = Path(item).expanduser()
    if skip is not None and not _is_uri(item) and path.exists() and path.resolve().is_relative_to(skip):
        return (f"{item} is the output folder --out {skip} (or inside it), whose files are outputs, not photos; "
                "give the photos' folder and another --out")
    if not _is_uri(item) and path.is_dir():
        images = [p for p in files_below(path) if kind.wanted(p)]
        if images and skip is not None and all(p.resolve().is_relative_to(skip) for p in images):
            return f"{item}: its images all lie in the output folder --out {skip}; choose another --out"
        for folder in [images[0].parent, *images[0].parent.parents] if images else []:
            if is_output_folder(folder):
                return (f"{item}: its images lie in {folder}, which holds {RECORD_NAME}, the mark of an earlier run's "
                        f"output folder, so they are skipped; if it is a photo folder, delete {folder / RECORD_NAME}")
            if folder == path:
                break
    return f"{item} holds no {kind.noun}s ({', '.join(kind.suffixes)})"


def list_tasks(inputs: Sequence[str], exclude: str | Path | None = None, kind: FileKind = IMAGES) -> list[ImageTask]:
    """Every image (every `kind` file) of the inputs (folders recursively, globs, list files, single images, URIs), in
    order, each file once however it is reached (`x/../a.png` and `y/../a.png`, links), less those below `exclude`
    (the output folder, when it lies inside an input folder); two images that would write the same output are an
    error naming both."""
    tasks: list[ImageTask] = []
    skip = Path(exclude).expanduser().resolve() if exclude is not None else None
    seen_files: set[str] = set()
    for item in inputs:
        found = 0
        for task in _list_one(str(item), kind):
            real = task.source if _is_uri(task.source) else str(Path(task.source).resolve())
            if skip is not None and not _is_uri(real) and Path(real).is_relative_to(skip):
                continue
            found += 1
            if real not in seen_files:
                tasks.append(task)
                seen_files.add(real)
        if not found:
            raise BatchInputError(_why_none(str(item), skip, kind))
    seen: dict[str, str] = {}
    for task in tasks:
        if task.rel in seen:
            raise BatchInputError(f"{seen[task.rel]} and {task.source} would both write "
                                  f"{kind.output.format(task.rel)}; segment them in separate runs or give their "
                                  "folders")
        seen[task.rel] = task.source
    return tasks


def read_image(source: str) -> np.ndarray:
    """RGB pixels of a local file (runtime.image_files) or of a pyarrow filesystem URI."""
    if not _is_uri(source):
        return np.asarray(open_rgb(source))
    from pyarrow import fs

    try:
        filesystem, path = fs.FileSystem.from_uri(source)
        with filesystem.open_input_stream(path) as stream:
            data = stream.read()
    except (OSError, ValueError) as err:
        raise RuntimeInputError(f"{source} cannot be read ({type(err).__name__}: {one_line(err)})") from None
    return np.asarray(open_rgb(data, name=source))


# ------------------------------------------------------------------------------------------------ outputs

@dataclass(frozen=True)
class BatchOutput:
    """The output folder of a run and what goes into it."""

    folder: Path
    class_names: tuple[str, ...]  # in label order ("background" first when a threshold decides it)
    overlay: OverlayFn | None = None
    overwrite: bool = False
    producer: dict[str, Any] = field(default_factory=dict)  # what else made the labels: settings, model hashes

    @property
    def record_producer(self) -> dict[str, Any]:
        """The producer the folder's record holds (`runtime.output_record`): the classes and `producer`."""
        return {"classes": list(self.class_names), **self.producer}

    def label_path(self, task: ImageTask) -> Path:
        return self.folder / "labels" / f"{task.rel}.png"

    def overlay_path(self, task: ImageTask) -> Path:
        return self.folder / "overlays" / f"{task.rel}.png"

    def paths(self, task: ImageTask) -> tuple[Path, ...]:
        """Every file a run writes for `task`."""
        return (self.label_path(task),) + ((self.overlay_path(task),) if self.overlay is not None else ())

    def check_targets(self, tasks: Sequence[ImageTask]) -> None:
        """Before any work: every output path of `tasks` resolves (links and `..` followed) inside the output folder
        and to none of the input files, in folders that can be written (a read-only labels/ would fail mid-run);
        else a one-line OutputPathError, with nothing written yet."""
        root = self.folder.resolve()
        inputs = {Path(task.source).resolve(): task.source for task in tasks if not _is_uri(task.source)}
        for task in tasks:
            for path in self.paths(task):
                real = path.resolve()
                if real in inputs:
                    raise OutputPathError(f"the output {path} of {task.source} is the input file {inputs[real]}; it "
                                          "would be overwritten: choose an --out outside the inputs")
                if not real.is_relative_to(root):
                    raise OutputPathError(f"the output of {task.source} would be written to {real}, outside --out "
                                          f"{self.folder} (a link inside it leads out): remove the link or choose "
                                          "another --out")
        folders = {_existing_folder(path.parent, self.folder) for task in tasks for path in self.paths(task)}
        for folder in sorted(folder for folder in folders if folder is not None):
            check_writable_dir(folder, "the output folder")  # after the checks above: never a test file outside

    def done(self, task: ImageTask, row: dict[str, Any] | None, record: OutputRecord) -> bool:
        """Finished under this producer by an earlier run: its label PNG (and overlay, when asked for) exist, written
        atomically, and its last log `row` says ok under this producer; an image with no row counts only when no
        earlier producer's outputs may remain (its log line was lost between the two writes)."""
        if self.overwrite or not all(_is_whole_png(path) for path in self.paths(task)):
            return False  # missing, or damaged since (a copy cut short): redone
        if row is not None:
            return row.get("status") == "ok" and row.get(PRODUCER_KEY) == record.fingerprint
        return not record.mixed

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_NAME


def _is_whole_png(path: Path) -> bool:
    """Whether `path` is a PNG whose every chunk checks out (PIL's verify: CRCs, no decoding)."""
    try:
        with Image.open(path) as picture:
            picture.verify()
        return True
    except DECODE_ERRORS:
        return False


def _existing_folder(folder: Path, top: Path) -> Path | None:
    """`folder`, or its nearest ancestor that exists (where the first missing folder will be made), up to `top`;
    None when not even `top` exists."""
    while not folder.exists():
        if folder == top or folder == folder.parent:
            return None
        folder = folder.parent
    return folder


def label_dtype(num_classes: int) -> type:
    return np.uint8 if num_classes <= 256 else np.uint16


def write_png(path: Path, picture: Image.Image) -> None:
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")


def class_areas(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Share of the image's pixels per class, `area:<name>` -> fraction (6 decimals)."""
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=len(class_names))[:len(class_names)]
    return {f"area:{name}": round(float(c) / max(1, labels.size), 6) for name, c in zip(class_names, counts,
                                                                                        strict=True)}


def summary_columns(output: BatchOutput) -> list[str]:
    return ["image", "labels", "status", "error", "height", "width", "seconds",
            *(f"area:{name}" for name in output.class_names)]


def _row(task: ImageTask, output: BatchOutput, status: str, error: str = "", size: tuple[int, int] = (0, 0),
         seconds: float = math.nan, areas: dict[str, float] | None = None) -> dict[str, Any]:
    areas = areas or {f"area:{name}": 0.0 for name in output.class_names}
    return {"image": task.source, "labels": f"labels/{task.rel}.png" if status == "ok" else "", "status": status,
            "error": error, "height": size[0], "width": size[1], "seconds": round(seconds, 4), **areas}


def segment_file(task: ImageTask, predict: PredictFn, output: BatchOutput) -> dict[str, Any]:
    """Read, segment and write one image; its summary row. A bad image (any MgcaError) is an error row, not a
    crash; an earlier run's outputs of it stay as they were (only a new output replaces one), and its error row
    keeps them from counting as done."""
    start = time.perf_counter()
    try:
        image = read_image(task.source)
        labels = np.asarray(predict(image))
    except MgcaError as err:
        return _row(task, output, "error", one_line(err), seconds=time.perf_counter() - start)
    try:
        write_png(output.label_path(task), Image.fromarray(labels.astype(label_dtype(len(output.class_names)))))
        if output.overlay is not None:
            write_png(output.overlay_path(task), output.overlay(image, labels))
    except OSError as err:
        raise _write_failure(f"the outputs of {task.source} in {output.folder}", err) from None
    return _row(task, output, "ok", size=labels.shape[:2], seconds=time.perf_counter() - start,
                areas=class_areas(labels, output.class_names))


def _row_from_labels(task: ImageTask, output: BatchOutput) -> dict[str, Any]:
    """The row of an image done by an earlier run whose log line was lost (interrupted between the two writes)."""
    with Image.open(output.label_path(task)) as picture:
        labels = np.asarray(picture)
    return _row(task, output, "ok", size=labels.shape[:2], areas=class_areas(labels, output.class_names))


# ------------------------------------------------------------------------------------------------ log and summary

@dataclass
class RunLog:
    """OUT/.segment-log.jsonl: one summary row a line, appended as images finish (a torn last line is ignored); the
    last row of each input (its `key` column: "image", or "video" in `runtime.video_job`'s log) counts."""

    path: Path
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    key: str = "image"

    @classmethod
    def open(cls, path: Path, key: str = "image") -> RunLog:
        log = cls(path, key=key)
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line an interrupted run was writing
                if isinstance(row, dict) and key in row:
                    log.rows[row[key]] = row
        return log

    def append(self, row: dict[str, Any]) -> None:
        self.rows[row[self.key]] = row
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets take for a formula


def _text(value: Any, spreadsheet: bool = False) -> Any:
    """A cell as UTF-8 can store it: a file name's undecodable bytes (surrogate escapes) as \\xNN. For a CSV
    (`spreadsheet`), text a spreadsheet would run as a formula gets a leading ' (as OWASP advises), shown as is."""
    if not isinstance(value, str):
        return value
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return f"'{value}" if spreadsheet and value.startswith(FORMULA_STARTS) else value


def write_summary(path: Path, rows: list[dict[str, Any]]) -> Path:
    """The summary table, CSV or (by suffix) parquet, written atomically; text cells made safe by `_text`."""
    rows = [{key: _text(value, path.suffix != ".parquet") for key, value in row.items()} for row in rows]
    if path.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise OutputPathError(f"{path}: parquet needs pyarrow (pip install 'mgca[ray]'); or write a .csv") from None
        with atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_pylist(rows), tmp)
        return path
    text = io.StringIO()
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(text.getvalue(), encoding="utf-8")
    return path


@dataclass
class BatchReport:
    """What a run did: images (or videos: `noun`) segmented now, skipped as done before, failed; where the summary
    is."""

    done: int
    skipped: int
    failed: list[dict[str, Any]]
    summary: Path
    seconds: float
    noun: str = "images"

    def line(self) -> str:
        return (f"{self.done} {self.noun} segmented, {self.skipped} already done, {len(self.failed)} failed in "
                f"{self.seconds:.1f} s; summary {self.summary}")


def _prepare(tasks: Sequence[ImageTask], output: BatchOutput,
             summary: Path | None) -> tuple[RunLog, list[ImageTask], Path, OutputRecord]:
    """Everything checked before any image is read (the folder, the summary path, the folder's record of what made
    its outputs, where every output goes), then this run's record written: (log, images to do, summary, record)."""
    check_writable_dir(output.folder, "--out")
    summary = summary or output.folder / "summary.csv"
    if summary.suffix not in (".csv", ".parquet"):
        raise OutputPathError(f"summary {summary} must end in .csv or .parquet")
    check_writable_file(summary, "the summary", inputs=tuple(t.source for t in tasks if not _is_uri(t.source)))
    log = RunLog.open(output.log_path)
    has_outputs = bool(log.rows) or any((output.folder / "labels").rglob("*.png"))
    record = check_record(output.folder, output.record_producer, output.overwrite, has_outputs)
    todo = [task for task in tasks if not output.done(task, log.rows.get(task.source), record)]
    output.check_targets(todo)
    remove_temporaries(output.folder, recursive=False)  # what a killed run left: the summary's, the record's
    for kind in ("labels", "overlays"):
        remove_temporaries(output.folder / kind)
    write_record(output.folder, record)
    return log, todo, summary, record


def _settle(output: BatchOutput, log: RunLog, record: OutputRecord) -> None:
    """After an --overwrite with new settings: clear `mixed` once every label and overlay in the folder belongs to
    an ok log row of this producer (no earlier producer's output is left)."""
    if not record.mixed:
        return
    current = {row.get("labels") for row in log.rows.values()
               if row.get("status") == "ok" and row.get(PRODUCER_KEY) == record.fingerprint}
    for kind in ("labels", "overlays"):
        for path in (output.folder / kind).rglob("*.png"):
            if f"labels/{path.relative_to(output.folder / kind).as_posix()}" not in current:
                return
    write_record(output.folder, OutputRecord(record.producer))


def _finish(tasks: Sequence[ImageTask], output: BatchOutput, log: RunLog, summary: Path, record: OutputRecord,
            done: int, skipped: int, failed: list[dict[str, Any]], start: float) -> BatchReport:
    rows, columns = [], summary_columns(output)
    for task in tasks:
        row = log.rows.get(task.source)
        if row is None and output.label_path(task).is_file():  # done, but its log line was lost
            row = _row_from_labels(task, output)
        if row is not None:
            rows.append({key: row.get(key) for key in columns})
    try:
        write_summary(summary, rows)
    except OSError as err:
        raise BatchWriteError(f"{_write_failure(f'the summary {summary}', err)}, then run the same command again to "
                              "write it (every image's outputs are written)") from None
    _settle(output, log, record)
    return BatchReport(done, skipped, failed, summary, time.perf_counter() - start)


def log_row(row: Mapping[str, Any], columns: Sequence[str], log: RunLog, producer: str) -> dict[str, Any]:
    """One finished task's row as plain Python values in the summary's column order, appended to the run log with
    the producer's fingerprint (what a rerun checks before it skips the task)."""
    row = {key: row[key].item() if hasattr(row[key], "item") else row[key] for key in columns}
    try:
        log.append({**row, PRODUCER_KEY: producer})
    except OSError as err:
        raise _write_failure(f"the run log {log.path}", err) from None
    return row


def _consume(rows: Iterable[dict[str, Any]], output: BatchOutput, log: RunLog, total: int, progress: bool,
             desc: str) -> tuple[int, list[dict[str, Any]]]:
    """Log every finished image's row (plain Python values, the summary's column order, and the producer's
    fingerprint); count them."""
    done, failed, columns = 0, [], summary_columns(output)
    producer = fingerprint(output.record_producer)
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, file=sys.stderr) as bar:
        try:
            for row in rows:
                row = log_row(row, columns, log, producer)
                if row["status"] == "ok":
                    done += 1
                else:
                    failed.append(row)
                    bar.write(f"skipped {row['image']}: {row['error']}", file=sys.stderr)
                bar.update()
        except BatchWriteError as err:
            raise BatchWriteError(f"{err}, then run the same command again to resume: the {done} images segmented "
                                  "before are written and kept") from None
    return done, failed


def run_local(tasks: Sequence[ImageTask], predict: PredictFn, output: BatchOutput, summary: Path | None = None,
              progress: bool = True) -> BatchReport:
    """Segment every image not done yet, one after another in this process."""
    start = time.perf_counter()
    with output_lock(output.folder):
        log, todo, summary, record = _prepare(tasks, output, summary)
        done, failed = _consume((segment_file(task, predict, output) for task in todo), output, log, len(todo),
                                progress, "segment")
        return _finish(tasks, output, log, summary, record, done, len(tasks) - len(todo), failed, start)


# ------------------------------------------------------------------------------------------------ Ray Data

class SegmenterActor:
    """A Ray Data actor: one `runtime.Segmenter` (the bundle loaded once), `segment_file` over each batch."""

    def __init__(self, bundle: str, segmenter_args: dict[str, Any], classes: Sequence[str],
                 background_threshold: float | None, output: BatchOutput):
        from .segmenter import Segmenter

        self.segmenter = Segmenter(bundle, **segmenter_args)
        self.classes, self.background_threshold, self.output = list(classes), background_threshold, output

    def predict(self, image: np.ndarray) -> np.ndarray:
        return self.segmenter.segment(image, self.classes, background_threshold=self.background_threshold).labels

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [segment_file(ImageTask(str(source), str(rel)), self.predict, self.output)
                for source, rel in zip(batch["source"], batch["rel"], strict=True)]
        return {key: np.asarray([row[key] for row in rows]) for key in summary_columns(self.output)}


def run_ray(tasks: Sequence[ImageTask], bundle: str, segmenter_args: dict[str, Any], classes: Sequence[str],
            background_threshold: float | None, output: BatchOutput, options: RayOptions | None = None,
            summary: Path | None = None, progress: bool = True) -> BatchReport:
    """The same job as `run_local` as a Ray Data pipeline over an actor pool of Segmenters."""
    options = options or RayOptions()
    try:
        import ray
        import ray.data
    except ImportError:
        raise MgcaError("--ray needs Ray Data: pip install 'mgca[ray]'") from None
    with output_lock(output.folder):
        return _run_ray(tasks, bundle, segmenter_args, classes, background_threshold, output, options, summary,
                        progress, ray)


def _run_ray(tasks: Sequence[ImageTask], bundle: str, segmenter_args: dict[str, Any], classes: Sequence[str],
             background_threshold: float | None, output: BatchOutput, options: RayOptions, summary: Path | None,
             progress: bool, ray: Any) -> BatchReport:
    start = time.perf_counter()
    log, todo, summary, record = _prepare(tasks, output, summary)
    start_ray(ray, options)
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts images, theirs blocks
    actors = options.actors or max(1, int(ray.available_resources().get("CPU", 1) // max(options.num_cpus, 1e-3)))
    actors = max(1, min(actors, len(todo)))  # no idle actors for a short remainder
    args = {**segmenter_args, "num_threads": max(1, int(options.num_cpus))}
    rows: Iterable[dict[str, Any]] = ()
    if todo:
        dataset = ray.data.from_items([{"source": t.source, "rel": t.rel} for t in todo],
                                      override_num_blocks=min(len(todo), actors * 8))
        labelled = dataset.map_batches(SegmenterActor, batch_size=options.batch_size,
                                       compute=ray.data.ActorPoolStrategy(size=actors),
                                       num_cpus=options.num_cpus, num_gpus=options.num_gpus or None,
                                       fn_constructor_args=(bundle, args, list(classes), background_threshold,
                                                            output))
        rows = labelled.iter_rows()
    done, failed = _consume(rows, output, log, len(todo), progress, f"segment (ray, {actors} actors)")
    return _finish(tasks, output, log, summary, record, done, len(tasks) - len(todo), failed, start)


__all__ = ["BatchInputError", "BatchOutput", "BatchReport", "BatchWriteError", "FileKind", "IMAGES", "ImageTask",
           "RayOptions", "RunLog", "SegmenterActor", "class_areas", "label_dtype", "list_tasks", "log_row",
           "read_image", "run_local", "run_ray", "segment_file", "write_summary"]
