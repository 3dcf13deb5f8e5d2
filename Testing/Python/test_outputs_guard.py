"""Output placement: never an input, never a foreign file, complete-then-rename, umask, OS errors as one line."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mvcf.errors import MVCFError
from mvcf.fileio import atomic_dir, atomic_path
from mvcf.outputs_guard import (MARKER, check_cache_folder, check_output, check_outputs_distinct, inside_folder,
                                is_own_output, tag_image)


def _image(path):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32))
    sitk.WriteImage(image, str(path))
    return path


def test_an_input_is_never_an_output(tmp_path):
    ct = _image(tmp_path / "ct.nii.gz")
    with pytest.raises(MVCFError, match="is an input of this run"):
        check_output(ct, [ct], kind="file", overwrite=True)
    os.link(ct, tmp_path / "hard.nii.gz")                     # same inode under another name
    with pytest.raises(MVCFError, match="is an input of this run"):
        check_output(tmp_path / "hard.nii.gz", [ct], kind="file", overwrite=True)
    (tmp_path / "link.nii.gz").symlink_to(ct)
    with pytest.raises(MVCFError, match="is an input of this run"):
        check_output(tmp_path / "link.nii.gz", [ct], kind="file", overwrite=True)
    with pytest.raises(MVCFError, match="holds the input"):
        check_output(tmp_path, [ct], kind="folder", overwrite=True)
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(MVCFError, match="inside the input folder"):
        check_output(model / "eval", [model], kind="folder")
    assert ct.exists() and (tmp_path / "hard.nii.gz").exists()


def test_overwrite_replaces_only_mvcf_output(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("years of work")
    with pytest.raises(MVCFError, match="already exists and was not written by mvcf") as refused:
        check_output(foreign, overwrite=False)
    assert "use --overwrite" not in str(refused.value)   # it was suggested, and then refused in turn
    with pytest.raises(MVCFError, match="not written by mvcf"):
        with atomic_dir(foreign, overwrite=True) as tmp:
            (tmp / "a").write_text("x")
    assert (foreign / "thesis.docx").read_text(encoding="utf-8") == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    out = tmp_path / "out"
    for text in ("1", "2"):                                    # a re-run replaces its own earlier output
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "a.txt").write_text(text)
    assert (out / "a.txt").read_text(encoding="utf-8") == "2" and (out / MARKER).is_file() and is_own_output(out)
    with pytest.raises(MVCFError, match=r"already exists \(use --overwrite to replace this earlier output"):
        check_output(out, overwrite=False)
    with pytest.raises(MVCFError, match="is an existing file"):
        check_output(out / "a.txt", kind="folder", overwrite=True)
    heat = tmp_path / "heat.nii.gz"
    _image(heat)
    with pytest.raises(MVCFError, match="not written by mvcf"):
        check_output(heat, kind="file", overwrite=True)


def test_an_empty_folder_made_for_the_run_is_taken(tmp_path):
    """`mkdir out && mvcf views ... --out out` was refused ("already exists") by every command but synth and
    reader-study plan. An empty real folder is taken and becomes the run's folder; a link to one, or a folder
    with anything in it (a hidden file included), is not."""
    out = tmp_path / "out"
    out.mkdir()
    assert check_output(out, kind="folder") == out
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("x")
    assert (out / "a.txt").read_text(encoding="utf-8") == "x" and is_own_output(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".keep").write_text("")
    with pytest.raises(MVCFError, match="already exists and was not written by mvcf"):
        check_output(hidden, kind="folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "link").symlink_to(empty)
    with pytest.raises(MVCFError, match="already exists"):
        check_output(tmp_path / "link", kind="folder")
    with pytest.raises(MVCFError, match="is an existing folder"):
        check_output(empty, kind="file", overwrite=True)


def test_overwrite_never_deletes_a_file_the_user_added_to_mvcf_output(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "views").mkdir()
        (tmp / "views" / "a.txt").write_text("1")
        (tmp / "report.md").write_text("1")
    (out / "report.md").write_text("edited by the user")        # mvcf's own file, changed: still replaced
    (out / ".DS_Store").write_text("")                          # a file browser's, not the user's data
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "report.md").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "report.md"]
    (out / "notes").mkdir()
    (out / "notes" / "reading.txt").write_text("mine")
    with pytest.raises(MVCFError, match=r"holds files mvcf did not write there \(notes/reading.txt\); "
                                        "--overwrite would delete them"):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "report.md").write_text("3")
    assert (out / "notes" / "reading.txt").read_text() == "mine" and (out / "report.md").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (out / MARKER).write_text('{"program": "mvcf"}\n')          # an earlier mvcf's marker: no list to go by
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "report.md").write_text("4")
    assert not (out / "notes").exists()


def test_overwrite_refusal_on_the_command_line_comes_before_any_work(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "mvcf", "synth", "--out", str(tmp_path / "c"), "--cases", "2", "--seed", "1"]
    subprocess.run(command, check=True, capture_output=True, env=env)
    (tmp_path / "c" / "cases" / "my_segmentation.nii.gz").write_bytes(b"hand-drawn")
    done = subprocess.run([*command, "--overwrite"], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: output {tmp_path / 'c'} holds files mvcf did not write there (cases/my_segmentation.nii.gz); "
        "--overwrite would delete them: move them out, or choose another path"]
    assert (tmp_path / "c" / "cases" / "my_segmentation.nii.gz").read_bytes() == b"hand-drawn"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_own_image_and_png_are_recognised(tmp_path):
    import SimpleITK as sitk

    for suffix in (".nii.gz", ".nrrd", ".mha"):
        image = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32))
        tag_image(image)
        sitk.WriteImage(image, str(tmp_path / f"h{suffix}"))
        assert is_own_output(tmp_path / f"h{suffix}")
        assert check_output(tmp_path / f"h{suffix}", kind="file", overwrite=True)


def test_locations_heatmap_paths(tmp_path):
    with pytest.raises(MVCFError, match="points outside the folder"):
        inside_folder("../escape.nii.gz", tmp_path, "heatmap")
    assert inside_folder("sub/h.nii.gz", tmp_path, "heatmap") == tmp_path / "sub" / "h.nii.gz"
    mask = _image(tmp_path / "seg.nii.gz")
    with pytest.raises(MVCFError, match="is an input of this run"):
        check_outputs_distinct([("L1 heatmap", tmp_path / "h.nii.gz"), ("L2 heatmap", mask)], [mask])
    with pytest.raises(MVCFError, match="write the same file"):
        check_outputs_distinct([("L1 heatmap", tmp_path / "h.nii.gz"), ("L2 heatmap", tmp_path / "h.nii.gz")], [])


def test_os_errors_are_one_line_and_leave_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MVCFError, match=r"is a file, not a folder"):
        check_output(tmp_path / "file" / "out", kind="folder")
    with pytest.raises(MVCFError, match=r"cannot write .*file/out.json: (File exists|Not a directory)"):
        with atomic_path(tmp_path / "file" / "out.json") as tmp:
            tmp.write_text("{}")
    with pytest.raises(MVCFError, match="is an existing file"):
        check_cache_folder(tmp_path / "file")
    with pytest.raises(MVCFError, match="root folder"):
        check_output("/", kind="folder", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_read_only_folder_is_named_with_its_cause(tmp_path, monkeypatch):
    """As root a chmod'ed folder stays writable, so the permission answer is simulated."""
    import mvcf.outputs_guard as guard

    monkeypatch.setattr(guard.os, "access", lambda path, mode: False)
    with pytest.raises(MVCFError, match=r"the folder .* is not writable \(Permission denied\)"):
        check_output(tmp_path / "out", kind="folder")


def test_outputs_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.json") as tmp:
            tmp.write_text("{}")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x.txt").write_text("1")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_full_disk_never_leaves_a_truncated_gz(tmp_path):
    """ITK's zlib writer ignores write errors: a file-size limit (what a full disk looks like to the writer)
    gave a truncated .nii.gz and no error. The read-back before the rename catches it."""
    code = textwrap.dedent(f"""
        import resource, signal, sys
        import numpy as np, SimpleITK as sitk
        from mvcf.errors import MVCFError
        from mvcf.fileio import atomic_path
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        image = sitk.GetImageFromArray(np.random.default_rng(0).random((40, 40, 40)).astype(np.float32))
        try:
            with atomic_path({str(tmp_path / 'heat.nii.gz')!r}) as tmp:
                sitk.WriteImage(image, str(tmp), True)
        except MVCFError as exc:
            print(exc)
            sys.exit(2)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "heat.nii.gz" in proc.stdout and "incomplete" in proc.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("writer", ["atomic_path", "atomic_files", "atomic_dir"])
@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_a_failed_or_cancelled_write_leaves_no_folder_it_made(tmp_path, writer, failure):
    """A write that fails or is cancelled leaves the disk as it was: none of the folders it created (here two
    levels), no marker in an empty folder it started (a cancelled report left an empty marked folder)."""
    from mvcf import fileio

    nested = tmp_path / "a" / "b"
    target = {"atomic_path": nested / "x.txt", "atomic_files": nested / "report", "atomic_dir": nested / "d"}[writer]
    with pytest.raises(failure):
        if writer == "atomic_files":
            with fileio.atomic_files(target, ["x.txt"], mark=True) as tmp:
                (tmp / "x.txt").write_text("x", encoding="utf-8")
                raise failure
        else:
            with getattr(fileio, writer)(target) as tmp:
                (tmp / "x.txt" if writer == "atomic_dir" else tmp).write_text("x", encoding="utf-8")
                raise failure
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()                   # a folder that was there before stays, empty or not
    with pytest.raises(failure):
        with fileio.atomic_files(tmp_path / "mine", ["x.txt"], mark=True):
            raise failure
    assert [p.name for p in tmp_path.iterdir()] == ["mine"] and list((tmp_path / "mine").iterdir()) == []


@pytest.mark.parametrize("command", ["train", "study"])
def test_resume_never_writes_into_a_folder_mvcf_did_not_start(tmp_path, capsys, command):
    """`--resume` with a user's own non-empty folder as --out trained into it and replaced its log.csv and
    predictions.csv (a hostile sweep); a folder without the run's first file (cohort.json, study_config.json)
    holds nothing to resume and is refused before anything is read or written."""
    from mvcf.cli.main import main

    out = tmp_path / "mine"
    out.mkdir()
    for name in ("log.csv", "predictions.csv", "report.md"):
        (out / name).write_text("the user's")
    code = main(["--progress", "none", command, "--manifest", str(tmp_path / "manifest.csv"), "--out", str(out),
                 "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "holds no run of mvcf to resume" in err and "\n" not in err
    assert sorted(p.name for p in out.iterdir()) == ["log.csv", "predictions.csv", "report.md"]
    assert all(p.read_text() == "the user's" for p in out.iterdir())


def test_a_second_train_or_study_in_the_same_folder_is_refused_while_or_after_the_first_runs(tmp_path):
    """Two `train --out K` started at once both trained into K and both printed `model bundle: K/model`,
    one of which did not exist (a hostile sweep). The run folder is held with an OS lock while a run writes
    there and checked again under it: a second run is refused while the first works, and after it finished."""
    from mvcf.fileio import run_folder_lock
    from mvcf.outputs_guard import RUN_LOCK, check_run_folder

    out = tmp_path / "k"
    with run_folder_lock(out, "cohort.json"):
        (out / "cohort.json").write_text("{}")
        with pytest.raises(MVCFError, match=rf"another mvcf run \(pid {os.getpid()} on .+\) is working in"):
            with run_folder_lock(out, "cohort.json"):
                pass
    with pytest.raises(MVCFError, match="is not empty; use --resume"):   # it started when k was new
        with run_folder_lock(out, "cohort.json"):
            pass
    with run_folder_lock(out, "cohort.json", resume=True):
        pass
    assert sorted(p.name for p in out.iterdir()) == [RUN_LOCK, "cohort.json"]
    with run_folder_lock(tmp_path / "a" / "b", "cohort.json"):   # nothing written: no folder stays
        with pytest.raises(MVCFError, match="another mvcf run"):   # ...and a refused run takes nothing away
            with run_folder_lock(tmp_path / "a" / "b", "cohort.json"):
                pass
        assert (tmp_path / "a" / "b" / RUN_LOCK).is_file()
    assert not (tmp_path / "a").exists()
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / RUN_LOCK).write_text("pid 1 on elsewhere")   # a killed run holds no lock
    check_run_folder(tmp_path / "killed", "cohort.json")
