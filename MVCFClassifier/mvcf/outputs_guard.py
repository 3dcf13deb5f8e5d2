"""Where a command may write: the one check behind every output path of every command.

An output is never an input of the same run (the same resolved path or the same file by device and inode, a
folder holding an input, or a place inside an input folder) and never a foreign file or folder: `--overwrite`
(and a heatmap written again) replaces only an earlier output of mvcf, recognised by what mvcf writes into
it: the marker file `MARKER` in a folder, the `OUTPUT_TAG` in an image header or a PNG's text, or the card of
a model bundle. OS errors while checking become one MVCFError line naming the path and the cause.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from mvcf.errors import MVCFError

PathLike = Union[str, os.PathLike]

#: Written into every output folder (atomic_dir) so a later --overwrite can tell mvcf's output from the user's.
MARKER = ".mvcf-output"
#: The file a train or study run holds an OS lock on while it works in its folder (run_folder_lock).
RUN_LOCK = ".mvcf-run.lock"
#: The file the shards of a `screen --manifest` run take turns on to write the archive's index.
INDEX_LOCK = ".mvcf-index.lock"
#: Lock files hold no output: a folder with only these is as good as empty.
LOCK_FILES = frozenset({RUN_LOCK, INDEX_LOCK})
#: Written into the header of every image (ITK_FileNotes) and PNG (Software) mvcf writes.
OUTPUT_TAG = "mvcf output"
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def describe_os_error(exc: OSError) -> str:
    """The cause of an OS error in words ('Permission denied', 'No space left on device', ...)."""
    return exc.strerror or type(exc).__name__


def os_error(path: PathLike, exc: OSError, action: str = "write") -> MVCFError:
    """One line naming the path and the cause."""
    where = exc.filename if exc.filename and action == "access" else path
    return MVCFError(f"cannot {action} {where}: {describe_os_error(exc)}")


def file_identity_key(path: PathLike) -> Optional[tuple[int, int]]:
    """(device, inode) of a file or folder, the same through a symlink or hard link; None when it cannot be
    stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def content_stamp(path: PathLike) -> tuple[int, ...]:
    """What changes whenever a file's bytes may have: (device, inode, size, mtime, ctime in ns). The ctime
    moves with every write and cannot be set back, so a file rewritten with its old size and modification
    time put back (cp -p, rsync -t, tar) is still told apart. Raises OSError when it cannot be stat'ed."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _resolved(path: PathLike) -> Path:
    try:
        return Path(os.path.abspath(Path(path).expanduser())).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop on older Pythons
        raise MVCFError(f"cannot resolve the path {path}: {exc}") from None


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


#: Files an operating system's file browser leaves in a folder it shows: not the user's data.
BROWSER_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
#: A marker larger than this is not read (a folder of mvcf's holds at most some 100,000 files).
MARKER_MAX_BYTES = 64 << 20


def marker_text(files: Optional[Sequence[str]] = None) -> str:
    from mvcf import __version__

    record = {"program": "mvcf", "version": __version__,
              "note": "written by mvcf; mvcf --overwrite may replace this folder"}
    if files is not None:
        record["files"] = sorted(files)
    return json.dumps(record) + "\n"


def write_marker(folder: Path, files: Optional[Sequence[str]] = None) -> None:
    """Mark `folder` as mvcf's output; `files` (paths relative to it) is all it holds, for a folder written
    in one piece (fileio.atomic_dir), so that a later --overwrite can tell a file the user added since."""
    (Path(folder) / MARKER).write_text(marker_text(files), encoding="utf-8")


def files_below(folder: Path) -> list[str]:
    """Every file under `folder` (symlinks included, folders not), as POSIX paths relative to it."""
    found = []
    for root, dirs, files in os.walk(folder):
        base = Path(root).relative_to(folder)
        found.extend((base / name).as_posix() for name in files)
        found.extend((base / name).as_posix() for name in dirs if (Path(root) / name).is_symlink())
    return found


def _written_files(folder: Path) -> Optional[list[str]]:
    """The files its marker says the run wrote into `folder`; None without such a list (a folder written file
    by file, or by an earlier mvcf)."""
    try:
        marker = folder / MARKER
        if marker.stat().st_size > MARKER_MAX_BYTES:
            return None
        written = json.loads(marker.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(f) for f in written] if isinstance(written, list) else None


def added_files(folder: Path) -> list[str]:
    """The files in mvcf's output `folder` that its run did not write (the user's, added since), by the list
    its marker holds; [] for a folder whose marker has no list."""
    written = _written_files(folder)
    if written is None:
        return []
    known = set(written) | {MARKER}
    return sorted(f for f in files_below(folder) if f not in known and Path(f).name not in BROWSER_FILES)


def missing_files(folder: Path) -> list[str]:
    """The files its marker lists that are no longer in mvcf's output `folder` (deleted since); [] for a
    folder whose marker has no list."""
    return sorted(f for f in _written_files(folder) or [] if not (folder / f).is_file())


def _image_tagged(path: Path) -> bool:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return False
    return reader.HasMetaDataKey("ITK_FileNotes") and reader.GetMetaData("ITK_FileNotes").startswith(OUTPUT_TAG)


def _png_tagged(path: Path) -> bool:
    try:
        from PIL import Image

        with Image.open(path) as image:
            return str(image.info.get("Software", "")).startswith(OUTPUT_TAG)
    except Exception:  # not a PNG, or unreadable: not ours
        return False


def is_own_output(path: PathLike) -> bool:
    """True when `path` is something mvcf wrote earlier (its marker or tag is there)."""
    path = Path(path)
    if path.is_symlink():
        return False
    if path.is_dir():
        if (path / MARKER).is_file():
            return True
        card = path / "model.json"
        if card.is_file() and card.stat().st_size < (1 << 20):
            try:
                return json.loads(card.read_text(encoding="utf-8")).get("format") == "mvcf-model-bundle"
            except (ValueError, OSError, AttributeError):
                return False
        return False
    name = path.name.lower()
    if name.endswith(IMAGE_SUFFIXES):
        return _image_tagged(path)
    if name.endswith(".png"):
        return _png_tagged(path)
    return False


def tag_image(image) -> None:
    """Mark a SimpleITK image about to be written as mvcf's output (NIfTI descrip, NRRD/MHA field)."""
    image.SetMetaData("ITK_FileNotes", OUTPUT_TAG)


def png_metadata() -> dict:
    """matplotlib savefig(metadata=...) that marks a PNG as mvcf's output."""
    return {"Software": OUTPUT_TAG}


def check_not_input(output: PathLike, inputs: Iterable[PathLike], what: str = "output") -> None:
    """Refuse an output that is, holds, or lies inside one of `inputs`."""
    out = _resolved(output)
    out_id = file_identity_key(out)
    for given in inputs:
        if given is None:
            continue
        source = _resolved(given)
        if source == out or (out_id is not None and file_identity_key(source) == out_id):
            raise MVCFError(f"{what} {output} is an input of this run ({given}); choose another path")
        if _is_within(source, out):
            raise MVCFError(f"{what} {output} holds the input {given}; replacing it would destroy that input; "
                            "choose another path")
        if source.is_dir() and _is_within(out, source):
            raise MVCFError(f"{what} {output} lies inside the input folder {given}; mvcf does not write into "
                            "its inputs; choose another path")


def _check_parent(target: Path, what: str) -> None:
    """The nearest existing folder above `target` must be a folder we may write into."""
    parent = target.parent
    while not parent.exists():
        if parent.is_symlink():
            raise MVCFError(f"cannot write {what} {target}: {parent} is a broken symbolic link")
        parent = parent.parent
    if not parent.is_dir():
        raise MVCFError(f"cannot write {what} {target}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MVCFError(f"cannot write {what} {target}: the folder {parent} is not writable (Permission denied)")


def empty_folder(path: Path) -> bool:
    """A real folder with nothing in it: made for the run (`mkdir out && mvcf ... --out out`), so taken and
    replaced by the run's folder, as synth and reader-study plan always did."""
    try:
        if not path.is_dir() or path.is_symlink():
            return False
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def check_output(path: PathLike, inputs: Iterable[PathLike] = (), *, kind: str = "folder",
                 overwrite: bool = False, what: str = "output") -> Path:
    """Check that a run may create `path` (a 'folder' or a 'file') before any work starts; return it.

    An existing `path` is refused unless it is an empty folder (for a folder), or `overwrite` and it is mvcf's
    own earlier output of the same kind."""
    if kind not in ("folder", "file"):
        raise ValueError(kind)
    if not str(path).strip():
        raise MVCFError(f"{what} is an empty path")
    target = Path(path)
    check_not_input(target, inputs, what)
    resolved = _resolved(target)
    if resolved == resolved.parent:
        raise MVCFError(f"{what} {path} is the root folder; choose a new folder")
    if (target.exists() or target.is_symlink()) and not (kind == "folder" and empty_folder(target)):
        if kind == "folder" and not target.is_dir():
            raise MVCFError(f"{what} {path} is an existing file; a folder is needed here")
        if kind == "file" and target.is_dir():
            raise MVCFError(f"{what} {path} is an existing folder; a file name is needed here")
        if not overwrite and not is_own_output(target):
            raise MVCFError(f"{what} {path} already exists and was not written by mvcf, so --overwrite would "
                            "not replace it either; choose another path")
        if not overwrite:
            raise MVCFError(f"{what} {path} already exists (use --overwrite to replace this earlier output of "
                            "mvcf, or choose another path)")
        if not is_own_output(target):
            raise MVCFError(f"{what} {path} exists and was not written by mvcf; it is never replaced (remove "
                            "it yourself or choose another path)")
        added = added_files(target) if kind == "folder" else []
        if added:
            more = f" and {len(added) - 1} more" if len(added) > 1 else ""
            raise MVCFError(f"{what} {path} holds files mvcf did not write there ({added[0]}{more}); "
                            "--overwrite would delete them: move them out, or choose another path")
    try:
        _check_parent(resolved, what)
    except OSError as exc:
        raise os_error(path, exc, "access") from None
    return target


def check_cache_folder(path: Optional[PathLike], inputs: Iterable[PathLike] = (),
                       what: str = "--cache") -> Optional[Path]:
    """A folder that may exist and is written into (a view cache reused across runs, screen's --out): it
    must be a folder and no input's place; what is written inside goes through fileio's atomic writes."""
    if path is None:
        return None
    target = Path(path)
    check_not_input(target, inputs, what)
    if target.exists() and not target.is_dir():
        raise MVCFError(f"{what} {path} is an existing file; a folder is needed here")
    _check_parent(_resolved(target), what)
    return target


def check_output_folder(path: Optional[PathLike], inputs: Iterable[PathLike] = (), names: Iterable[str] = (),
                        *, overwrite: bool = False, what: str = "output folder") -> Optional[Path]:
    """A folder a command writes named files into (a case report, DICOM objects, screen.tsv, a reader study's
    tables), through fileio.atomic_files, which marks a folder it starts. It is never an input's place; an
    existing one is empty or mvcf's own (marked), and files of an earlier run in it (`names`, or any file
    when `names` is empty) are replaced only with `overwrite`."""
    if path is None:
        return None
    if not str(path).strip():
        raise MVCFError(f"{what} is an empty path")
    target = Path(path)
    check_not_input(target, inputs, what)
    if _resolved(target) == _resolved(target).parent:
        raise MVCFError(f"{what} {path} is the root folder; choose a new folder")
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise MVCFError(f"{what} {path}: exists and is not a folder")
        try:
            entries = [e.name for e in os.scandir(target) if e.name not in LOCK_FILES]
        except OSError as exc:
            raise os_error(path, exc, "read") from None
        if entries and MARKER not in entries:
            ours = [n for n in entries[:200] if (target / n / MARKER).is_file()]
            hint = (f"; its own {MARKER} marker is missing though folders in it carry theirs ({ours[0]}): a copy "
                    "that left hidden files out? (cp -a SRC/. DST keeps them)") if ours else ""
            raise MVCFError(f"{what} {path} holds files mvcf did not write; they are never replaced (choose a new "
                            f"or empty folder){hint}")
        wanted = set(names)
        earlier = [n for n in entries if n != MARKER and (not wanted or n in wanted)]
        if earlier and not overwrite:
            raise MVCFError(f"{what} {path} already holds an earlier output of mvcf ({earlier[0]}); use "
                            "--overwrite to replace it, or choose another folder")
    try:
        _check_parent(_resolved(target), what)
    except OSError as exc:
        raise os_error(path, exc, "access") from None
    return target


def check_outputs_distinct(outputs: Sequence[tuple[str, PathLike]], inputs: Iterable[PathLike]) -> None:
    """Several outputs of one run (e.g. the heatmaps of a locations file): none is an input of the run, none
    is written twice."""
    inputs = [i for i in inputs if i is not None]
    seen: dict[Path, str] = {}
    folded: dict[str, tuple[str, PathLike]] = {}
    for what, path in outputs:
        check_not_input(path, inputs, what)
        key = _resolved(path)
        if key in seen:
            raise MVCFError(f"{what} and {seen[key]} write the same file {path}")
        seen[key] = what
        earlier = folded.setdefault(str(key).casefold(), (what, path))
        if earlier[0] != what:   # L1.nii.gz and l1.nii.gz: one file on macOS and Windows, or a share of theirs
            raise MVCFError(f"{what} {path} and {earlier[0]} {earlier[1]} differ only by letter case; on a file "
                            "system that ignores it one would replace the other")


def check_outside_folders(outputs: Sequence[tuple[str, Optional[PathLike]]],
                          folders: Sequence[tuple[str, Optional[PathLike]]]) -> None:
    """No output of a run lies inside a folder that the same run writes as a whole (a report or DICOM folder is
    replaced in one step, so a heatmap written into it first would be lost)."""
    for folder_what, folder in folders:
        if folder is None:
            continue
        base = _resolved(folder)
        for what, path in outputs:
            if path is not None and _is_within(_resolved(path), base):
                raise MVCFError(f"{what} {path} lies inside {folder_what} {folder}, which this run writes as a "
                                "whole; put it outside that folder")


def inside_folder(path: PathLike, folder: PathLike, what: str) -> Path:
    """Refuse a relative path that escapes `folder` with '..' (or a symlink); return the joined path."""
    base = _resolved(folder)
    joined = Path(folder) / path
    if not _is_within(_resolved(joined), base):
        raise MVCFError(f"{what} {path} points outside the folder {folder}; write outputs inside it or give "
                        "an absolute path")
    return joined


def check_run_folder(path: PathLike, record: str, inputs: Iterable[PathLike] = (), resume: bool = False,
                     what: str = "--out") -> Path:
    """The working folder of train / study: new or empty, or (with `resume`) one mvcf was working in, known
    by `record`, the first file such a run writes (mvcf.cohort_checks.resume_record): a user's own folder is
    never written into, since the run would replace files of the same names (log.csv, predictions.csv)."""
    target = Path(path)
    check_not_input(target, inputs, what)
    if target.exists() and not target.is_dir():
        raise MVCFError(f"{what} {path} is an existing file; a folder is needed here")
    try:
        busy = target.is_dir() and any(p.name not in LOCK_FILES for p in target.iterdir())
    except OSError as exc:
        raise os_error(path, exc, "read") from None
    if busy and not resume:
        raise MVCFError(f"{target} is not empty; use --resume to continue a run there, or another {what}")
    if busy and not (target / record).is_file():
        raise MVCFError(f"{target} holds no run of mvcf to resume ({record} is missing), so nothing there is "
                        f"overwritten; choose another {what}")
    _check_parent(_resolved(target), what)
    return target


def run_inputs(records: Sequence, *others: Optional[PathLike]) -> list[Path]:
    """Every file a cohort run reads: the manifest rows' CTs and masks and the given others."""
    paths = [Path(p) for p in others if p is not None]
    for record in records:
        paths.append(Path(record.ct))
        if getattr(record, "mask", None) is not None:
            paths.append(Path(record.mask))
    return list(dict.fromkeys(paths))
