"""The shared plumbing: atomic writes, CTImage geometry, CLI error contract, child-process protocol."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mvcf.ctimage import CTImage, ras_to_lps
from mvcf.errors import MVCFError
from mvcf.fileio import RunOutputs, atomic_dir, atomic_files, atomic_open, atomic_path, undone_on_failure


def test_atomic_open_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_open(target) as handle:
        handle.write("whole")
    assert target.read_text(encoding="utf-8") == "whole" and len(list(tmp_path.iterdir())) == 1


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    target = tmp_path / "bundle"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(target, overwrite=True) as tmp:
            (tmp / "a.txt").write_text("2")
            raise ValueError
    assert (target / "a.txt").read_text(encoding="utf-8") == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_atomic_files_move_all_or_none(tmp_path):
    (tmp_path / "t.tsv").write_text("old")
    with pytest.raises(MVCFError, match="t.schema.tsv"):
        with atomic_files(tmp_path, ["t.tsv", "t.schema.tsv"]) as tmp:
            (tmp / "t.tsv").write_text("new")      # the writer forgot the schema
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.tsv"] and (tmp_path / "t.tsv").read_text(encoding="utf-8") == "old"
    with atomic_files(tmp_path, ["t.tsv", "t.schema.tsv"]) as tmp:
        (tmp / "t.tsv").write_text("new")
        (tmp / "t.schema.tsv").write_text("schema")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.schema.tsv", "t.tsv"]
    assert (tmp_path / "t.tsv").read_text(encoding="utf-8") == "new"


def _tree(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".mvcf-output"}


def _earlier_run(folder) -> None:
    (folder / "report").mkdir(parents=True)
    for name, text in (("report/report.html", "old report"), ("report/key_L2.txt", "old L2"),
                       ("map.txt", "old map"), ("views/axial.txt", "old view")):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def _rerun(folder, undo: RunOutputs, fail_at_end: bool) -> None:
    """A run over the same outputs (--overwrite): a heatmap, a views folder, a pruned report, then a new folder."""
    with undone_on_failure(undo):
        with atomic_path(folder / "map.txt", undo) as tmp:
            tmp.write_text("new map")
        with atomic_dir(folder / "views", overwrite=True, undo=undo) as tmp:
            (tmp / "axial.txt").write_text("new view")
        with undone_on_failure(undo):   # nested, as predict_many inside the command's run
            with atomic_files(folder / "report", ["report.html"], mark=True, prune=True, undo=undo) as tmp:
                (tmp / "report.html").write_text("new report")
        with atomic_files(folder / "dicom" / "series", ["SR.txt"], mark=True, undo=undo) as tmp:
            (tmp / "SR.txt").write_text("new SR")
        if fail_at_end:
            raise KeyboardInterrupt


def test_an_undone_overwrite_puts_the_earlier_outputs_back(tmp_path, monkeypatch):
    """--overwrite then Cancel: what the run replaced (a heatmap, a views folder, a report file it rewrote
    and one it pruned) is back as it was, the folders it made are gone, and nothing hidden is left."""
    monkeypatch.setattr("mvcf.outputs_guard.check_output", lambda *args, **kwargs: None)   # not the guard's test
    _earlier_run(tmp_path)
    before = _tree(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _rerun(tmp_path, RunOutputs([tmp_path / "dicom" / "series" / "SR.txt"]), fail_at_end=True)
    assert _tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["report", "report.html", "key_L2.txt",
                                                                  "map.txt", "views", "axial.txt"])


def test_a_finished_overwrite_deletes_what_it_set_aside(tmp_path, monkeypatch):
    monkeypatch.setattr("mvcf.outputs_guard.check_output", lambda *args, **kwargs: None)
    _earlier_run(tmp_path)
    _rerun(tmp_path, RunOutputs(), fail_at_end=False)
    assert _tree(tmp_path) == {"map.txt": "new map", "views/axial.txt": "new view",
                               "report/report.html": "new report", "dicom/series/SR.txt": "new SR"}
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob(".*")) == ["dicom/series/.mvcf-output",
                                                                                 "views/.mvcf-output"]


def test_outputs_kept_for_a_send_are_final(tmp_path):
    """keep() (the PACS send starts): a later cancel no longer undoes the run, and the earlier file is gone."""
    (tmp_path / "map.txt").write_text("old map")
    undo = RunOutputs()
    with pytest.raises(KeyboardInterrupt):
        with undone_on_failure(undo):
            with atomic_path(tmp_path / "map.txt", undo) as tmp:
                tmp.write_text("new map")
            undo.keep()
            raise KeyboardInterrupt
    assert _tree(tmp_path) == {"map.txt": "new map"} and len(list(tmp_path.iterdir())) == 1


def test_ctimage_geometry_roundtrip_through_sitk_and_ras():
    direction = np.array([[0, 0, -1], [-1, 0, 0], [0, -1, 0]], dtype=float)  # a PIR-like layout
    image = CTImage(np.zeros((4, 5, 6), np.int16), spacing=[1.5, 2.0, 3.0], origin=[10, -20, 30],
                    direction=direction)
    back = CTImage.from_sitk(image.to_sitk())
    np.testing.assert_allclose(back.direction, direction)
    np.testing.assert_allclose(back.index_to_lps([1, 2, 3]), image.index_to_lps([1, 2, 3]))
    from_ras = CTImage.from_ijk_to_ras(image.voxels, image.ijk_to_ras())
    np.testing.assert_allclose(from_ras.ijk_to_lps_matrix(), image.ijk_to_lps_matrix(), atol=1e-12)
    ras = (image.ijk_to_ras() @ [1, 2, 3, 1])[:3]
    np.testing.assert_allclose(ras_to_lps(ras), image.index_to_lps([1, 2, 3]))
    np.testing.assert_allclose(image.lps_to_index(image.index_to_lps([1, 2, 3])), [1, 2, 3])


def test_cli_usage_error_is_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "mvcf", "no-such-command"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_child_process_events_and_cancel(tmp_path):
    from MVCFClassifierLib.process import ChildProcess

    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from mvcf.progress import JsonLinesReporter
        r = JsonLinesReporter()
        r.progress(1, 3, "one")
        print("plain text line", flush=True)
        r.result({"value": 42})
        if len(sys.argv) > 1:
            time.sleep(60)
    """))
    child = ChildProcess([sys.executable, str(script)]).start()
    events = []
    assert child.wait(on_event=events.append, timeout=60) == 0
    assert [e["event"] for e in events] == ["progress", "log", "result"]
    assert child.result == {"value": 42}

    slow = ChildProcess([sys.executable, str(script), "sleep"]).start()
    import time
    deadline = time.monotonic() + 30
    while slow.result is None and time.monotonic() < deadline:
        time.sleep(0.05)
    slow.cancel(grace_s=1)
    assert slow.cancelled and not slow.running and slow.returncode != 0


def test_cli_parser_and_core_import_do_not_load_heavy_libraries():
    """`mvcf --help` and `import mvcf` must stay fast: torch/monai/matplotlib/pandas only on heavy paths."""
    code = ("import sys, mvcf; from mvcf.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'monai', 'matplotlib', 'pandas', 'sklearn') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_an_ascii_terminal_gets_escapes_not_a_crash():
    """A summary with an en dash (format_auc's intervals) on an ASCII stdout ended a finished `mvcf train` with
    UnicodeEncodeError; main() lets such streams print escapes."""
    code = ("from mvcf.cli.main import _never_fail_on_encoding\n"
            "_never_fail_on_encoding()\n"
            "print('AUC 0.912 (0.861\\u20130.963)')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          env={**os.environ, "PYTHONIOENCODING": "ascii", "PYTHONUTF8": "0"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode("ascii").strip() == "AUC 0.912 (0.861\\u20130.963)"


def test_a_log_gets_an_error_line_of_its_own(tmp_path, shared_data):
    """stderr redirected to a file (nohup, a Slurm log) held tqdm's carriage-return redraws, and the final
    `error:` line was glued to them, so `grep '^error:' log` found nothing. Off a terminal there is no bar."""
    ct = shared_data("totalsegmentator/example_ct.nii.gz")
    log = tmp_path / "run.log"
    with open(log, "w") as err:
        code = subprocess.run([sys.executable, "-m", "mvcf", "predict", "--ct", str(ct), "--point-ras",
                               "900,900,900"], stdout=subprocess.DEVNULL, stderr=err).returncode
    raw = log.read_text()
    assert code == 2 and raw.startswith("error: ") and "outside the CT" in raw and raw.count("\n") == 1, raw


def test_long_work_in_a_log_writes_a_progress_line_per_interval(monkeypatch):
    """Off a terminal a long run says how far it is once per interval (the first after one interval of work),
    one `progress:` line each, so a 10,000-case screen neither floods its log nor stays silent for hours."""
    import io

    import mvcf.progress as progress

    clock = iter(float(t) for t in range(1000))
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 10.0)
    stream = io.StringIO()
    reporter = progress.TqdmReporter(stream)
    for done in range(1, 101):
        reporter.progress(done, 100, f"case {done}\nnext")
    reporter.log("a warning", "warning")
    assert stream.getvalue().splitlines() == [f"progress: {n}/100 case {n} next" for n in range(10, 101, 10)] + [
        "warning: a warning"]


def test_what_a_killed_run_left_is_cleaned_up_by_the_next_one(tmp_path, monkeypatch):
    """SIGKILL leaves an earlier output under its hidden name and half-written temporary files and folders
    (nothing can run then); the next run that writes the same file or folder deletes them once they are
    STALE_AGE_S old, but not those of a run still alive, nor young ones (a live run on another machine)."""
    import subprocess

    import mvcf.fileio

    dead = subprocess.Popen(["true"])
    dead.wait()   # its pid no longer exists (unless reused, which would only keep the files)
    (tmp_path / "map.txt").write_text("current")
    (tmp_path / "report").mkdir()
    left = [tmp_path / f".map.txt.old-{dead.pid}-0", tmp_path / f".map.tmp-{dead.pid}-abc.txt",
            tmp_path / "report" / f".files.tmp-{dead.pid}-xyz", tmp_path / f".views.tmp-{dead.pid}-q",
            tmp_path / f".views.old-{dead.pid}-0"]
    kept = [tmp_path / f".map.txt.old-{os.getppid()}-0", tmp_path / "report" / f".files.tmp-{os.getppid()}-k"]
    for path in left + kept:
        path.mkdir() if "files" in path.name or "views" in path.name else path.write_text("left")

    def write_all(undo: RunOutputs) -> None:
        with undone_on_failure(undo):
            with atomic_path(tmp_path / "map.txt", undo) as tmp:
                tmp.write_text("new")
            with atomic_files(tmp_path / "report", ["r.txt"], undo=undo) as tmp:
                (tmp / "r.txt").write_text("r")
            with atomic_dir(tmp_path / "views", overwrite=True) as tmp:
                (tmp / "v.txt").write_text("v")

    write_all(RunOutputs())   # all of them just made, as a live run's on another machine may be: none is taken
    assert all(p.exists() for p in left + kept)
    monkeypatch.setattr(mvcf.fileio, "STALE_AGE_S", 0.0)
    (tmp_path / "map.txt").write_text("current")
    write_all(RunOutputs())
    assert not any(p.exists() for p in left) and all(p.exists() for p in kept)


def test_a_view_cache_deletes_what_a_killed_training_left_in_its_folder(tmp_path, monkeypatch):
    """A training run killed while it cached a view leaves `.CASE-KEY.tmp-<pid>-*.npy`; the next run's cache
    deletes such files of any case in a folder it writes to (one scan per folder), once STALE_AGE_S old and
    not a live run's."""
    from types import SimpleNamespace

    import mvcf.fileio
    from mvcf.dataset import ViewCache, spec_key
    from mvcf.views import ViewSpec

    dead = subprocess.Popen(["true"])
    dead.wait()
    spec = ViewSpec(mode="2d", size_px=8)
    folder = tmp_path / "cache" / spec_key(spec)
    folder.mkdir(parents=True)
    left = folder / f".other-case-0123.tmp-{dead.pid}-abc.npy"
    kept = [folder / f".another-case-4567.tmp-{os.getppid()}-def.npy", folder / "done-case-89ab.npy"]
    for path in [left, *kept]:
        path.write_bytes(b"x")
    monkeypatch.setattr(mvcf.fileio, "STALE_AGE_S", 0.0)
    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes(b"ct")
    cache = ViewCache(tmp_path / "cache")
    cache._store(spec, SimpleNamespace(case_id="c1", ct=ct, center_lps=(0.0, 0.0, 0.0)),
                 np.zeros(spec.output_shape(), np.float32))
    assert not left.exists() and all(p.exists() for p in kept)
    left.write_bytes(b"x")   # the same cache sweeps a folder once, not per file
    cache._store(spec, SimpleNamespace(case_id="c2", ct=ct, center_lps=(0.0, 0.0, 0.0)),
                 np.zeros(spec.output_shape(), np.float32))
    assert left.exists() and len(list(folder.glob("c*.npy"))) == 2


def test_a_case_id_never_leads_its_cached_view_out_of_the_cache(tmp_path):
    """A manifest's case_id named the cache file: `../../../escaped` wrote a view (and made folders) outside
    the cache, `sub/dir` made a folder in it, a 300-byte id failed the training after `--out` was made. Such an
    id now leaves the name, the key alone names the file; a plain id still names it."""
    from types import SimpleNamespace

    from mvcf.dataset import ViewCache, spec_key
    from mvcf.views import ViewSpec

    spec = ViewSpec(mode="2d", size_px=8)
    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes(b"ct")
    cache = ViewCache(tmp_path / "run" / "cache")
    for case_id in ("../../../escaped", "sub/dir", "x" * 300, "a,b \"q\" \u00fc", "case0001"):
        cache._store(spec, SimpleNamespace(case_id=case_id, ct=ct, center_lps=(0.0, 0.0, 0.0)),
                     np.zeros(spec.output_shape(), np.float32))
    folder = tmp_path / "run" / "cache" / spec_key(spec)
    names = sorted(p.name for p in tmp_path.rglob("*.npy"))
    assert all((folder / name).is_file() for name in names) and len(names) == 5
    assert [n for n in names if n.startswith("case0001-")] and not (tmp_path / "escaped").exists()


def test_two_runs_started_with_the_same_new_folder_never_mix_their_files(tmp_path):
    """Two `predict --report R` started at once both found R new, and the second to finish put its key images
    beside the first run's and replaced its report (a hostile sweep: a report folder of two runs). A `fresh`
    write now refuses once another run's files are there, before placing any of its own."""
    folder = tmp_path / "report"
    with pytest.raises(MVCFError, match="another run put files there while this one ran"):
        with atomic_files(folder, ["report.html", "key_label_29.txt"], mark=True, fresh=True) as tmp:
            (tmp / "report.html").write_text("second")
            (tmp / "key_label_29.txt").write_text("second")
            for name in ("report.html", "key_label_31.txt"):   # the first run finishes in the meantime
                (folder / name).write_text("first")
    assert sorted(p.name for p in folder.iterdir()) == [".mvcf-output", "key_label_31.txt", "report.html"]
    assert (folder / "report.html").read_text() == "first"
    with atomic_files(tmp_path / "again", ["a.txt"], mark=True, fresh=True) as tmp:   # alone: as before
        (tmp / "a.txt").write_text("a")
    assert (tmp_path / "again" / "a.txt").read_text() == "a"


@pytest.mark.parametrize("writer", ["dir", "files"])
def test_a_write_error_inside_a_folder_write_names_the_users_folder(tmp_path, writer):
    """`evaluate --out fe` on a full disk said `cannot write .fe.tmp-8862-uvzrsr8g/roc.png` (the hidden
    temporary folder, a hostile sweep); it names fe/roc.png."""
    import errno

    target = tmp_path / "fe"
    folder = atomic_dir(target) if writer == "dir" else atomic_files(target, ["roc.png"])
    with pytest.raises(MVCFError) as caught:
        with folder as tmp:
            with atomic_path(tmp / "roc.png"):
                raise OSError(errno.ENOSPC, "No space left on device")
    assert str(caught.value) == f"cannot write {target / 'roc.png'}: No space left on device"


def test_every_json_mvcf_writes_is_standard_json():
    """A constant model's calibration slope (NaN) went into metrics.json and --json stdout as `NaN`, and a
    zero-variance DeLong pair into study.json as `Infinity`: tokens that strict parsers, mvcf's own among
    them, refuse. progress.dumps (used by every writer) gives null for them."""
    import json

    import numpy as np

    from mvcf.json_input import loads
    from mvcf.progress import dumps

    text = dumps({"slope": float("nan"), "z": [np.float32("inf"), -np.inf], "n": np.int64(3),
                  "a": np.array([1.5, np.nan])})
    assert json.loads(text) == {"slope": None, "z": [None, None], "n": 3, "a": [1.5, None]}
    assert loads(text)["n"] == 3


def test_a_damaged_cached_view_is_a_miss_not_a_traceback(tmp_path):
    """A truncated .npy, text in its place, or a view of NaN: evaluate and train raised ValueError tracebacks
    (or blamed the model for the NaN). Each is now a miss (the view is built again and the file replaced)."""
    from types import SimpleNamespace

    from mvcf.dataset import ViewCache
    from mvcf.views import ViewSpec

    spec = ViewSpec(mode="2d", size_px=8)
    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes(b"ct")
    record = SimpleNamespace(case_id="c1", ct=ct, center_lps=(0.0, 0.0, 0.0))
    ViewCache(tmp_path / "cache")._store(spec, record, np.ones(spec.output_shape(), np.float32))
    path = ViewCache(tmp_path / "cache")._file(spec, record)
    assert ViewCache(tmp_path / "cache")._lookup(spec, record) is not None
    good = path.read_bytes()
    for damage in (good[:100], b"not an array at all", None):
        if damage is None:
            np.save(path, np.full(spec.output_shape(), np.nan, np.float32))
        else:
            path.write_bytes(damage)
        assert ViewCache(tmp_path / "cache")._lookup(spec, record) is None
