"""Atomic file and folder writes: a reader never sees a half-written output, a failure leaves none."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


def _split_suffix(name: str) -> tuple[str, str]:
    for double in (".nii.gz", ".tar.gz"):
        if name.endswith(double):
            return name[: -len(double)], double
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if dot and stem else (name, "")


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same extension, so writers that pick a format by name work);
    rename it onto `path` on success, delete it on any error."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    stem, ext = _split_suffix(target.name)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.tmp-", suffix=ext, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


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
def atomic_files(folder: PathLike, names: list[str]) -> Iterator[Path]:
    """Yield a temporary folder beside `folder`'s files; on success each of `names` written there is moved
    into `folder` (for writers that produce several files at once, e.g. a table and its schema); on error
    none is."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".files.tmp-", dir=target))
    try:
        yield tmp
        missing = [name for name in names if not (tmp / name).is_file()]
        if missing:
            raise FileNotFoundError(f"not written: {', '.join(missing)}")
        for name in names:
            os.replace(tmp / name, target / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it becomes `path` on success and disappears on error.
    With overwrite=True an existing `path` is replaced only once the new one is complete."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            if not overwrite:
                raise FileExistsError(f"{target} already exists")
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
