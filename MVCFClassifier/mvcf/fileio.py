"""Atomic file and folder writes: a reader never sees a half-written output, a failure leaves none.

Every write is completed, flushed to disk (fsync) and read back before the rename that makes it visible: a
full disk or a writer that ignores its own write errors (ITK's zlib stream does) gives an MVCFError naming the
file, never a truncated output with exit code 0. Temporary files get the permissions a plain open() would
give under the process's umask before the rename (mkstemp/mkdtemp would leave 0600/0700). A folder mvcf
writes carries the marker of mvcf.outputs_guard, and an existing folder is replaced only when it has one.
"""
from __future__ import annotations

import contextlib
import glob
import gzip
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

from mvcf.errors import MVCFError
from mvcf.signals import raise_swallowed

PathLike = Union[str, os.PathLike]

#: Outputs up to this size are read back whole (images, tables); larger ones only get their size and fsync.
READBACK_MAX_BYTES = 256 << 20


def _split_suffix(name: str) -> tuple[str, str]:
    for double in (".nii.gz", ".tar.gz"):
        if name.endswith(double):
            return name[: -len(double)], double
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if dot and stem else (name, "")


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: Path, folder: bool = False) -> None:
    """Give `path` the mode open()/mkdir() would have given it (0666/0777 less the umask)."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_back(path: Path) -> None:
    """Raise ValueError/OSError/RuntimeError when `path` is not a complete file of its kind."""
    name = path.name.lower()
    if name.endswith(".gz"):
        with gzip.open(path, "rb") as handle:  # reading to the end checks the CRC and the length
            while handle.read(1 << 20):
                pass
    if name.endswith((".nii", ".nrrd", ".mha", ".mhd")):
        import SimpleITK as sitk

        sitk.ReadImage(str(path))
    elif name.endswith(".npy"):
        import numpy as np

        np.load(path, mmap_mode="r")
    elif name.endswith(".json"):
        import json

        json.loads(path.read_text(encoding="utf-8"))
    elif name.endswith(".png"):
        from PIL import Image

        with Image.open(path) as image:
            image.verify()


def verify_written(path: Path, shown: PathLike) -> None:
    """fsync `path` and check it is complete (non-empty, and readable back as its kind when small)."""
    _fsync(path)
    size = path.stat().st_size
    if size == 0:
        raise MVCFError(f"cannot write {shown}: the file came out empty (disk full?)")
    if size <= READBACK_MAX_BYTES:
        try:
            _read_back(path)
        except (OSError, EOFError, ValueError, RuntimeError, zlib.error, SyntaxError) as exc:
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise MVCFError(f"cannot write {shown}: the file came out incomplete or corrupt (disk full?): "
                            f"{reason}") from None


def _verify_tree(folder: Path, shown: PathLike) -> None:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            verify_written(Path(root) / name, Path(shown) / Path(root).relative_to(folder) / name)


#: What the NIfTI library prints straight to the process's stderr when a write comes out short (a full disk):
#: the read-back of every written file says it in one line instead (verify_written).
_SHORT_WRITE_NOTES = ("** ERROR: NWAD", "** ERROR: nifti_image_write", "** ERROR: nifti_write")
#: One image read or write at a time swaps the process's stderr (two threads swapping it would leave it swapped).
_STDERR_SWAP = threading.Lock()


@contextlib.contextmanager
def c_stderr_held() -> Iterator[list[str]]:
    """The process's stderr (descriptor 2) held in a temporary file while the block runs, since the C libraries
    below ITK print there themselves, past Python; its lines are in the yielded list once the block has ended.
    A process without a stderr descriptor (a GUI) keeps its stderr and gets no lines."""
    lines: list[str] = []
    with _STDERR_SWAP, tempfile.TemporaryFile() as held:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            yield lines
            return
        os.dup2(held.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines.extend(held.read().decode("utf-8", "replace").splitlines(keepends=True))


def write_image_file(image, path: PathLike) -> None:
    """Write a SimpleITK image, compressed, into a temporary place of an atomic writer (which reads it back).
    The C library's notes on a short write are held back; anything else it prints goes on to stderr."""
    import SimpleITK as sitk

    notes: list[str] = []
    try:
        with c_stderr_held() as notes:
            sitk.WriteImage(image, str(path), True)
    finally:
        rest = "".join(line for line in notes if not line.startswith(_SHORT_WRITE_NOTES))
        if rest:
            sys.stderr.write(rest)
            sys.stderr.flush()


@contextlib.contextmanager
def write_errors(path: PathLike) -> Iterator[None]:
    """OS errors (and ITK's write errors) inside the block become one MVCFError naming `path` and the cause."""
    try:
        yield
    except MVCFError:
        raise
    except OSError as exc:
        raise MVCFError(f"cannot write {path}: {exc.strerror or exc}") from None
    except RuntimeError as exc:
        if "ITK" not in str(exc) and "itk" not in str(exc):
            raise
        raise MVCFError(f"cannot write {path}: the image writer failed (disk full or not writable?)") from None


@contextlib.contextmanager
def _named_as(tmp: Path, target: Path) -> Iterator[None]:
    """An error of a write into the temporary folder `tmp` names the place the user chose, `target`, not the
    hidden folder (`cannot write .out.tmp-8862-uvzrsr8g/roc.png` on a full disk)."""
    try:
        yield
    except MVCFError as exc:
        if type(exc) is MVCFError and str(tmp) in str(exc):
            raise MVCFError(str(exc).replace(str(tmp), str(target))) from None
        raise


def missing_folders(folder: PathLike) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first: what a write that fails or is
    cancelled must take away again (remove_empty_folders), so it leaves no empty folder behind."""
    missing, current = [], Path(os.path.abspath(folder))
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    return missing


def remove_empty_folders(folders: Sequence[Path]) -> None:
    """Remove `folders` (deepest first) as long as they are empty; stop at the first that is not."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


class RunOutputs:
    """The files and folders one run writes one after another (a heatmap and views per vertebra), so that a
    cancelled run takes away those it had finished too, with the folders it created for them. Name every
    path before the run starts (the folders missing then are the run's), tell each one once it is written;
    `remove()` deletes only what this run wrote, never an earlier file it did not get to replace. An earlier
    output the run replaces (--overwrite) is set aside, not deleted: `remove()` puts it back, and it is
    deleted only when the run's outermost `undone_on_failure` block ends well (or at `keep()`)."""

    def __init__(self, paths: Sequence[PathLike] = ()) -> None:
        self._created: list[list[Path]] = [missing_folders(Path(p).parent) for p in paths if p is not None]
        self._written: list[Path] = []
        self._aside: list[tuple[Path, Path]] = []
        self._depth = 0

    def wrote(self, path: PathLike) -> None:
        self._written.append(Path(path))

    def made(self, folders: Sequence[Path]) -> None:
        """Folders (deepest first) a write of this run created, removed again when the run is undone."""
        self._created.append(list(folders))

    def set_aside(self, path: PathLike) -> None:
        """Move the earlier output at `path`, which this run is about to replace or prune, to a hidden name
        beside it (same folder, so a rename), where it waits until the run is undone or done."""
        target = Path(path)
        if not os.path.lexists(target):
            return
        aside = target.with_name(f"{_aside_prefix(target)}{os.getpid()}-{len(self._aside)}")
        self._aside.append((target, aside))   # first: a cancel between the two lines leaves nothing unrecorded
        os.replace(target, aside)

    def is_aside(self, path: PathLike) -> bool:
        return any(aside == Path(path) for _, aside in self._aside)

    def keep(self) -> None:
        """From here on what the run wrote stays, cancelled or not (it is being sent to a PACS, which keeps
        what it received: the local files are the record of it)."""
        self._written.clear()
        self._created.clear()
        self.done()

    def done(self) -> None:
        """The run's outputs are final: delete the earlier ones it set aside, and those an earlier run killed
        with SIGKILL left beside the same files (a process of this machine that no longer exists)."""
        for target, aside in self._aside:
            _delete(aside)
            remove_stale(target.parent, _aside_prefix(target))
        self._aside.clear()

    def remove(self) -> None:
        for path in reversed(self._written):
            _delete(path)
        self._written.clear()
        for target, aside in reversed(self._aside):
            with contextlib.suppress(OSError):
                os.replace(aside, target)
        self._aside.clear()
        for folders in self._created:
            remove_empty_folders(folders)


def _aside_prefix(target: Path) -> str:
    return f".{target.name}.old-"


#: A leftover younger than this is never taken for stale: on a share, the pid may be a live run's on another
#: machine (shards of one `screen --manifest` write the index into the same folder).
STALE_AGE_S = 600.0


def remove_stale(folder: Path, prefix: str) -> None:
    """Delete what killed runs left in `folder` under `prefix` + "<pid>-...": earlier outputs set aside, temporary
    files and folders of an unfinished write (a SIGKILL runs no cleanup). Only entries untouched for STALE_AGE_S
    whose process does not exist on this machine; a run still going keeps its own."""
    for stale in folder.glob(f"{glob.escape(prefix)}*-*"):
        _delete_if_stale(stale, stale.name[len(prefix):])


def remove_stale_temporaries(folder: Path) -> None:
    """remove_stale for every entry's leftovers in `folder` at once (the `.NAME.tmp-<pid>-...` of atomic_path
    and atomic_dir, the `.NAME.old-<pid>-...` set aside): one scan of a folder of many files or case folders
    written one by one (a view cache, a screening archive), instead of one per entry; an entry a killed run
    left is swept even when nothing writes that entry again."""
    for kind in (".tmp-", ".old-"):
        for stale in folder.glob(f".*{kind}*-*"):
            _delete_if_stale(stale, stale.name.rpartition(kind)[2])


def _delete_if_stale(entry: Path, pid_and_rest: str) -> None:
    pid = pid_and_rest.split("-")[0]
    try:
        info = entry.lstat()
    except OSError:
        return
    if pid.isdigit() and int(pid) != os.getpid() and time.time() - max(info.st_mtime, info.st_ctime) >= STALE_AGE_S \
            and not _alive(int(pid)):
        _delete(entry)


def _alive(pid: int) -> bool:
    """Whether process `pid` of this machine exists (always True on Windows, where os.kill(pid, 0) would send
    a Ctrl-C instead of asking)."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # it exists, owned by someone else
        return True
    return True


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def run_folder_lock(path: PathLike, record: str, resume: bool = False, what: str = "--out") -> Iterator[Path]:
    """Hold the working folder of a train or study run while it writes there, then check it again
    (check_run_folder): a second run started with the same folder (a double launch, a requeued job while the
    first still runs) is refused with one line instead of writing into the first one's files, whether it
    comes while that run works or after it finished. An OS lock (flock; msvcrt on Windows) on RUN_LOCK
    inside the folder, so a killed run holds nothing; a folder left with only that file counts as empty."""
    from mvcf.outputs_guard import RUN_LOCK, check_run_folder, os_error

    target = Path(path)
    created = missing_folders(target)
    try:
        target.mkdir(parents=True, exist_ok=True)
        handle = open(target / RUN_LOCK, "a+", encoding="utf-8")
    except OSError as exc:
        remove_empty_folders(created)
        raise os_error(path, exc, "write") from None
    held = False
    try:
        try:
            handle.seek(0)   # msvcrt locks from the position; "a+" opens at the end
            _lock(handle)
            held = True
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise MVCFError(f"another mvcf run ({holder}) is working in {target}; wait for it to end, or choose "
                            f"another {what}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        check_run_folder(target, record, resume=resume, what=what)
        yield target
    finally:
        handle.close()   # releases the lock
        with contextlib.suppress(OSError):
            if held and [e.name for e in os.scandir(target)] == [RUN_LOCK]:   # nothing written: leave no folder
                (target / RUN_LOCK).unlink()
                remove_empty_folders(created)


def _lock(handle, wait: bool = False) -> None:
    """An exclusive lock on `handle`; without `wait`, OSError when another process holds it (with it,
    msvcrt gives up after about 10 s)."""
    if os.name == "nt":
        import msvcrt

        msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))


@contextlib.contextmanager
def one_at_a_time(lock_file: PathLike) -> Iterator[None]:
    """Wait for, then hold, an OS lock on `lock_file` (created when missing): processes that read a folder
    and write a summary of it (shards ending together) do so one after the other, each seeing the other's
    files. A killed holder holds nothing. Where the file system has no locks (some network shares: ENOLCK)
    it goes on without one, as before there was one."""
    with open(lock_file, "a+", encoding="utf-8") as handle:
        handle.seek(0)   # msvcrt locks from the position; "a+" opens at the end
        with contextlib.suppress(OSError):
            _lock(handle, wait=True)
        yield


@contextlib.contextmanager
def undone_on_failure(outputs: RunOutputs) -> Iterator[RunOutputs]:
    """A run's block whose outputs come all or none: a cancel, Ctrl-C or error that leaves the block removes
    what `outputs` was told of and puts back what it set aside (a failure the block handles itself, such as
    one vertebra's, does not). Blocks may nest (a command around the core's predict_many); the earlier
    outputs set aside are deleted when the outermost one ends well."""
    outputs._depth += 1
    try:
        yield outputs
    except BaseException:
        outputs.remove()
        raise
    finally:
        outputs._depth -= 1
    if outputs._depth == 0:
        outputs.done()


@contextlib.contextmanager
def atomic_path(path: PathLike, undo: Optional[RunOutputs] = None) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same extension, so writers that pick a format by name work);
    once the block is done it is verified and renamed onto `path`; on any error it is deleted. `undo` (a
    run's RunOutputs) is told of the file and the folders made for it, and keeps an earlier `path`."""
    if undo is not None:
        raise_swallowed()   # each write of a run, before it places anything, is where a swallowed cancel acts
    target = Path(path)
    tmp, done = None, False
    created = missing_folders(target.parent)
    try:
        with write_errors(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            stem, ext = _split_suffix(target.name)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.tmp-{os.getpid()}-", suffix=ext, dir=target.parent)
            os.close(fd)
            tmp = Path(tmp_name)
            yield tmp
            verify_written(tmp, target)
            apply_umask(tmp)
            if undo is not None:
                undo.set_aside(target)
            os.replace(tmp, target)
            done = True
            if undo is not None:
                undo.made(created)
                undo.wrote(target)
                # a run's outputs only: a view cache's folder holds thousands of files (a scan per file)
                remove_stale(target.parent, f".{stem}.tmp-")
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
        if not done:   # failed or cancelled: no folder this write made stays behind
            remove_empty_folders(created)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", **kwargs) -> Iterator:
    """open() for writing through atomic_path."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as handle:
            yield handle


def write_text(path: PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


@contextlib.contextmanager
def atomic_files(folder: PathLike, names: list[str], mark: bool = False, prune: bool = False,
                 undo: Optional[RunOutputs] = None, fresh: bool = False,
                 prunable: Optional[Callable[[Path], bool]] = None) -> Iterator[Path]:
    """Yield a temporary folder beside `folder`'s files; on success each of `names` written there is verified
    and moved into `folder` (for writers that produce several files at once, e.g. a table and its schema); on
    error none is. With `mark`, a new or empty `folder` gets mvcf's output marker (outputs_guard.check_output_folder);
    with `prune` (--overwrite of a folder that guard found to be mvcf's own) the earlier files not written again
    are removed once the new ones are in place, those `prunable` says the writer makes (a file the user added
    there stays; None: any file). `undo` (a run's RunOutputs) is told what the write put there:
    the files, the marker when it made one, the folders it created; the earlier files it replaces or prunes
    are set aside with it, not deleted. `fresh`: the command found `folder` new or empty (no --overwrite), so
    files another run put there in the meantime (two runs started with the same folder) refuse the write
    before any of this run's files is placed, instead of mixing the two runs' files."""
    from mvcf.outputs_guard import LOCK_FILES, MARKER, write_marker

    if undo is not None:
        raise_swallowed()
    target = Path(folder)
    tmp, marked, done = None, False, False
    created = missing_folders(target)
    try:
        with write_errors(target):
            target.mkdir(parents=True, exist_ok=True)
            # a folder this write starts is mvcf's (outputs_guard)
            if mark and not any(e.name not in LOCK_FILES for e in os.scandir(target)):
                write_marker(target)
                apply_umask(target / MARKER)
                marked = True
            tmp = Path(tempfile.mkdtemp(prefix=f".files.tmp-{os.getpid()}-", dir=target))
            with _named_as(tmp, target):
                yield tmp
            missing = [name for name in names if not (tmp / name).is_file()]
            if missing:
                raise MVCFError(f"cannot write {target}: not written: {', '.join(missing)}")
            for name in names:
                verify_written(tmp / name, target / name)
            if fresh:
                others = sorted(e.name for e in os.scandir(target)
                                if e.name != MARKER and not e.name.startswith(".files.tmp-"))
                if others:
                    raise MVCFError(f"cannot write {target}: another run put files there while this one ran "
                                    f"({others[0]}); nothing of this run was placed there. Run it again with "
                                    "--overwrite, or choose another folder")
            for name in names:
                if undo is not None:
                    undo.set_aside(target / name)
                os.replace(tmp / name, target / name)
            if prune:
                keep = set(names) | {MARKER, tmp.name}
                for entry in os.scandir(target):
                    if entry.name not in keep and entry.is_file(follow_symlinks=False) \
                            and not (undo is not None and undo.is_aside(entry.path)) \
                            and (prunable is None or prunable(Path(entry.path))):
                        if undo is not None:
                            undo.set_aside(entry.path)
                        else:
                            os.unlink(entry.path)
            done = True
            if undo is not None:
                undo.made(created)
                for name in [*names, *([MARKER] if marked else [])]:
                    undo.wrote(target / name)
            remove_stale(target, ".files.tmp-")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if not done:   # failed or cancelled: the folder is as it was (a folder it started is gone)
            if marked and {e.name for e in os.scandir(target)} == {MARKER}:
                (target / MARKER).unlink()
            remove_empty_folders(created)


@contextlib.contextmanager
def atomic_dir(path: PathLike, overwrite: bool = False, undo: Optional[RunOutputs] = None) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it becomes `path` (with mvcf's output marker) on success and
    disappears on error. With overwrite=True an existing `path` is replaced once the new one is complete and
    verified, but only when it is mvcf's own earlier output (outputs_guard.check_output). `undo` (a run's
    RunOutputs) is told of the folder and keeps the earlier one."""
    from mvcf.outputs_guard import check_output, files_below, write_marker

    if undo is not None:
        raise_swallowed()
    target = Path(path)
    check_output(target, kind="folder", overwrite=overwrite)
    tmp, done = None, False
    created = missing_folders(target.parent)
    try:
        with write_errors(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
            with _named_as(tmp, target):
                yield tmp
            write_marker(tmp, files_below(tmp))
            _verify_tree(tmp, target)
            apply_umask(tmp, folder=True)
            if target.exists():
                check_output(target, kind="folder", overwrite=overwrite)
            outputs = undo if undo is not None else RunOutputs()
            replaced = os.path.lexists(target)
            outputs.set_aside(target)
            os.replace(tmp, target)
            if undo is not None:
                undo.made(created)
                undo.wrote(target)
            else:
                outputs.done()   # the earlier folder is gone once the new one is in place
            done = True
            remove_stale(target.parent, f".{target.name}.tmp-")
            if not replaced:   # else done() sweeps the killed runs' earlier folders beside it
                remove_stale(target.parent, _aside_prefix(target))
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            remove_empty_folders(created)
