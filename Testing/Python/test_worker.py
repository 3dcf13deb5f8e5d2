"""The warm worker: `mvcf worker` answers several requests in one process, survives bad requests with an
error event, exits when idle, and dies on cancel; the Slicer client keeps it between Applies, reports a
crash and starts a fresh one on the next Apply."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mvcf.resources import sample_ct_paths
from mvcf.worker import Worker
from MVCFClassifierLib.worker import WarmWorker

PATHS = sample_ct_paths()
ENV = {"OMP_NUM_THREADS": "1"}


def _entries(*labels: int) -> list[dict]:
    return [{"name": f"label {label}", "mask": str(PATHS["mask"]), "label": label} for label in labels]


def _predict(*labels: int) -> dict:
    return {"command": "predict", "ct": str(PATHS["ct"]), "locations": _entries(*labels), "device": "cpu"}


def _wait(request, timeout: float = 120.0) -> list[dict]:
    events = []
    deadline = time.monotonic() + timeout
    while not request.finished():
        events += request.poll()
        assert time.monotonic() < deadline, "the worker did not answer"
        time.sleep(0.02)
    return events + request.poll()


@pytest.fixture
def worker():
    client = WarmWorker(sys.executable, args=["--device", "cpu"], env=ENV)
    yield client
    client.stop()


def test_the_worker_answers_two_requests_in_one_process(worker):
    first = worker.submit(_predict(31))
    events = _wait(first)
    pid = worker.pid
    assert first.returncode == 0 and first.error is None, first.error
    assert any(e["event"] == "progress" for e in events) and all(e.get("id") == first.id for e in events)
    (l1,) = first.result["results"]
    assert l1["name"] == "label 31" and l1["backend"] == "onnxruntime" and 0 <= l1["probability_malignant"] <= 1
    second = worker.submit(_predict(30, 31))
    _wait(second)
    assert second.returncode == 0 and worker.pid == pid and worker.starts == 1
    l2, again = second.result["results"]
    assert again["probability_malignant"] == pytest.approx(l1["probability_malignant"], abs=1e-7)
    assert l2["probability_malignant"] != pytest.approx(l1["probability_malignant"], abs=1e-4)
    assert worker.ready["backend"] == "onnxruntime" and worker.ready["pid"] == pid


def test_the_worker_writes_an_occlusion_heatmap(worker, tmp_path):
    heat = tmp_path / "l1.nii.gz"
    request = {**_predict(), "locations": [{**_entries(31)[0], "heatmap": str(heat)}], "heatmap_method": "occlusion"}
    done = worker.submit(request)
    events = _wait(done)
    assert done.returncode == 0, done.error
    assert done.result["results"][0]["heatmap"] == str(heat) and heat.is_file()
    assert any("occlusion heatmap" in e.get("message", "") for e in events if e["event"] == "progress")
    bad = worker.submit({**request, "heatmap_method": "lime"})
    _wait(bad)
    assert "unknown heatmap method 'lime'" in bad.error and worker.starts == 1


def test_a_bad_request_gives_an_error_event_and_the_worker_lives_on(worker, tmp_path):
    bad = worker.submit({"command": "predict", "ct": str(tmp_path / "missing.nii.gz"), "locations": _entries(31)})
    _wait(bad)
    pid = worker.pid
    assert bad.returncode == 2 and "missing.nii.gz" in bad.error and bad.result is None
    unknown = worker.submit({"command": "segment"})
    _wait(unknown)
    assert "unknown command 'segment'" in unknown.error
    worker.child.send("not json")  # type: ignore[union-attr]
    good = worker.submit(_predict(31))
    _wait(good)
    assert good.returncode == 0 and good.result["results"][0]["prediction"] in ("MVCF", "OVCF")
    assert worker.pid == pid and worker.starts == 1


def test_cancel_kills_the_worker_and_the_next_request_starts_a_fresh_one(worker):
    request = worker.submit(_predict(31, 30, 29))
    deadline = time.monotonic() + 60
    while worker.ready is None and time.monotonic() < deadline:
        request.poll()
        time.sleep(0.02)
    pid = worker.pid
    assert pid is not None
    request.cancel()
    assert request.finished() and request.returncode == 130 and not worker.alive
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    after = worker.submit(_predict(31))
    _wait(after)
    assert after.returncode == 0 and worker.starts == 2 and worker.pid != pid


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL")
def test_a_crashed_worker_is_reported_and_the_next_request_starts_fresh(worker):
    _wait(worker.submit({"command": "ping"}))
    crashed = worker.submit(_predict(31, 30, 29))
    os.kill(worker.pid, signal.SIGKILL)  # dies under the request (a segfault, the OOM killer...)
    _wait(crashed)
    assert crashed.returncode not in (None, 0) and "stopped unexpectedly" in crashed.error
    assert not worker.alive
    fresh = worker.submit(_predict(31))
    _wait(fresh)
    assert fresh.returncode == 0 and worker.starts == 2


def test_in_process_bad_lines_idle_exit_and_shutdown():
    out = io.StringIO()
    lines = io.StringIO("\n".join(["garbage", json.dumps([1]), json.dumps({"id": 7, "command": "ping"}),
                                   json.dumps({"id": 8, "command": "predict", "ct": "x"}),
                                   json.dumps({"id": 9, "command": "predict", "ct": "x", "locations": [],
                                               "colour": "red"}),
                                   json.dumps({"command": "shutdown"}), json.dumps({"id": 10, "command": "ping"})]))
    assert Worker(out, idle_exit_s=30).serve(lines) == "shutdown"
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["error", "error", "pong", "error", "error", "exit"]
    assert "not valid JSON" in events[0]["message"] and events[2]["id"] == 7
    assert events[3]["id"] == 8 and "'locations'" in events[3]["message"]
    assert "colour" in events[4]["message"]

    idle = io.StringIO()
    read, write = os.pipe()  # a channel on which nothing comes until the worker has given up
    never = os.fdopen(read)
    try:
        started = time.monotonic()
        assert Worker(idle, idle_exit_s=0.3).serve(never) == "idle"
        assert time.monotonic() - started < 10
    finally:
        os.close(write)  # the reading thread sees the end and lets go of the file before it is closed
        time.sleep(0.1)
        never.close()
    assert json.loads(idle.getvalue())["reason"] == "idle"


def test_a_worker_that_exited_when_idle_is_started_again():
    client = WarmWorker(sys.executable, args=["--device", "cpu"], idle_exit_s=0.5, env=ENV)
    try:
        first = client.submit(_predict(31))
        _wait(first)
        assert first.returncode == 0
        deadline = time.monotonic() + 30
        while client.alive and time.monotonic() < deadline:
            client.pump()
            time.sleep(0.05)
        assert not client.alive
        again = client.submit(_predict(31))
        _wait(again)
        assert again.returncode == 0 and client.starts == 2
    finally:
        client.stop()


def test_the_classifier_logic_keeps_one_worker_between_applies(tmp_path):
    slicer = pytest.importorskip("slicer")
    from test_slicer_logic import scene_with_sample  # the same scene as the logic's own tests

    from mvcf.read_ct import read_ct, read_mask
    from MVCFClassifierLib import logic

    scene = slicer.vtkMRMLScene()
    ct_node, points = scene_with_sample(scene, (read_ct(PATHS["ct"]), read_mask(PATHS["mask"])))
    lg = logic.PredictionLogic(python_executable=sys.executable, temp_root=str(tmp_path), warm_worker=True)
    lg.worker.env = ENV
    try:
        rows = []
        for _ in range(2):
            outputs = lg.process(ct_node, points=points, device="cpu", views=False, heatmap=False)
            rows.append(outputs.rows[0])
        assert [r["status"] for r in rows] == ["ok", "ok"] and lg.worker.starts == 1 and lg.worker.alive
        assert rows[0]["probability_malignant"] == rows[1]["probability_malignant"]
        pid = lg.worker.pid
        run = lg.start(ct_node, lg.targets(ct_node, points=points), device="cpu", views=False, heatmap=False)
        run.poll()
        run.cancel()  # Cancel ends the worker
        assert not lg.worker.alive
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        outputs = lg.process(ct_node, points=points, device="cpu", views=False, heatmap=False)
        assert outputs.rows[0]["status"] == "ok" and lg.worker.starts == 2
        lg.close_worker()  # scene close
        assert not lg.worker.alive
    finally:
        lg.close_worker()
    assert not list(Path(tmp_path).iterdir())


def test_a_changed_volume_is_written_again_and_the_worker_reads_the_new_voxels(tmp_path):
    """The warm path writes the CT once per volume state (CTFileCache) and the worker reads each file once
    (Worker.read_ct): a second Apply reuses both, an edit of the voxels or of the geometry does not."""
    slicer = pytest.importorskip("slicer")
    from slicer.util import arrayFromVolume, arrayFromVolumeModified
    from test_slicer_logic import scene_with_sample

    from mvcf.read_ct import read_ct, read_mask
    from MVCFClassifierLib import logic

    scene = slicer.vtkMRMLScene()
    ct_node, points = scene_with_sample(scene, (read_ct(PATHS["ct"]), read_mask(PATHS["mask"])))
    lg = logic.PredictionLogic(python_executable=sys.executable, temp_root=str(tmp_path), warm_worker=True)
    lg.worker.env = ENV

    def apply() -> tuple[float, dict]:
        outputs = lg.process(ct_node, points=points, device="cpu", views=False, heatmap=False)
        assert outputs.rows[0]["status"] == "ok", outputs.rows[0]
        return outputs.rows[0]["probability_malignant"], lg.worker.current.result

    try:
        first, _ = apply()
        path = lg.ct_files.path
        again, _ = apply()
        assert again == first and lg.ct_files.writes == 1 and lg.ct_files.path == path
        arrayFromVolume(ct_node)[:] += 300  # brighter bone everywhere: a different probability
        arrayFromVolumeModified(ct_node)
        brighter, _ = apply()
        assert lg.ct_files.writes == 2 and lg.ct_files.path != path and not path.exists()
        assert brighter != pytest.approx(first, abs=1e-6)
        assert read_ct(lg.ct_files.path).voxels.max() == arrayFromVolume(ct_node).max()
        ct_node.SetSpacing(*[2 * s for s in ct_node.GetSpacing()])  # geometry alone also counts
        apply()
        assert lg.ct_files.writes == 3 and lg.worker.starts == 1
    finally:
        lg.close_worker()
    assert not list(Path(tmp_path).iterdir())


def test_the_worker_reads_a_ct_file_once_until_it_changes(tmp_path):
    import shutil

    copy = tmp_path / "ct.nii.gz"
    shutil.copy(PATHS["ct"], copy)
    worker = Worker(io.StringIO())
    first = worker.read_ct(str(copy))
    assert worker.read_ct(str(copy)) is first
    os.utime(copy, ns=(time.time_ns(), time.time_ns() + 10**9))  # the same bytes, but touched: read again
    second = worker.read_ct(str(copy))
    assert second is not first and (second.voxels == first.voxels).all()
    import SimpleITK as sitk   # rewritten in place with other voxels, the same size and the old mtime put back

    image = sitk.ReadImage(str(copy))
    brighter = sitk.Cast(image + 300, image.GetPixelID())
    brighter.CopyInformation(image)
    other = tmp_path / "other.nii"
    sitk.WriteImage(brighter, str(other))
    raw = tmp_path / "raw.nii"
    sitk.WriteImage(image, str(raw))
    assert raw.stat().st_size == other.stat().st_size
    before = worker.read_ct(str(raw))
    mtime = raw.stat().st_mtime_ns
    raw.write_bytes(other.read_bytes())                          # as cp -p or rsync -t do
    os.utime(raw, ns=(mtime, mtime))
    assert raw.stat().st_mtime_ns == mtime
    assert worker.read_ct(str(raw)).voxels.max() == before.voxels.max() + 300
    with pytest.raises(Exception, match="missing"):
        worker.read_ct(str(tmp_path / "missing.nii.gz"))


def test_bad_evaluate_requests_give_one_line_errors_and_write_nothing(tmp_path):
    """The evaluate request is checked like predict's: each bad one is an error event naming what is wrong,
    the worker serves the next line, and no output folder is left behind."""
    out = io.StringIO()
    folder = tmp_path / "out"
    requests = [{"id": 1, "command": "evaluate", "manifest": "m.csv", "out": str(folder)},
                {"id": 2, "command": "evaluate", "model": "b", "manifest": "m.csv", "out": str(folder),
                 "colour": "red"},
                {"id": 3, "command": "evaluate", "model": "b", "manifest": "m.csv", "out": str(folder),
                 "device": "tpu"},
                {"id": 4, "command": "evaluate", "model": str(tmp_path / "no_bundle"),
                 "manifest": str(tmp_path / "missing.csv"), "out": str(folder), "device": "cpu"},
                {"id": 5, "command": "ping"}, {"command": "shutdown"}]
    lines = io.StringIO("\n".join(json.dumps(r) for r in requests))
    assert Worker(out, idle_exit_s=30).serve(lines) == "shutdown"
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["error", "error", "error", "error", "pong", "exit"]
    assert "'model'" in events[0]["message"]
    assert "colour" in events[1]["message"]
    assert "tpu" in events[2]["message"]
    assert events[3]["id"] == 4 and "model bundle not found" in events[3]["message"] and "no_bundle" in events[3]["message"]
    assert all("\n" not in e.get("message", "") for e in events)
    assert not folder.exists()


def test_a_core_warning_during_a_request_is_that_requests_log_event(monkeypatch):
    """What the core logs while a request runs (an empty heatmap, a view too large for overlapping occlusion
    blocks, a CUDA fallback) reaches the panel as that request's warning, not a bare line on stderr."""
    import logging

    import mvcf.predict

    def fake(*_args, **_kwargs):
        logging.getLogger("mvcf.occlusion").warning("occlusion: too many blocks, overlap dropped")
        return {"results": []}, None, None

    monkeypatch.setattr(mvcf.predict, "predict_ct_file", fake)
    out = io.StringIO()
    lines = io.StringIO("\n".join([json.dumps({"id": 4, "command": "predict", "ct": "x", "locations": _entries(31)}),
                                   json.dumps({"command": "shutdown"})]))
    handlers = list(logging.getLogger("mvcf").handlers)
    assert Worker(out, idle_exit_s=30).serve(lines) == "shutdown"
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert events[0] == {"event": "log", "id": 4, "level": "warning",
                         "message": "occlusion: too many blocks, overlap dropped"}
    assert events[1]["event"] == "result" and events[1]["id"] == 4
    assert logging.getLogger("mvcf").handlers == handlers


def test_hostile_request_lines_are_one_line_errors_and_the_worker_serves_on(tmp_path):
    """NaN, a 5000-digit id, 100,000-deep nesting (in the request or in its locations file), a number where a
    path goes (were internal errors with a traceback; `mvcf predict --locations` a traceback), and "false" as a flag (was read as true: `refine` ran and gave another probability)."""
    out = io.StringIO()
    good = {"command": "predict", "ct": str(PATHS["ct"]), "locations": _entries(31), "device": "cpu"}
    lines = ['{"id": NaN, "command": "ping"}', '{"id": ' + "1" * 5000 + ', "command": "ping"}',
             "[" * 100_000 + "]" * 100_000,
             *(json.dumps({**good, "id": name, name: value})
               for name, value in (("base", 5), ("model", 5), ("refine", "false"), ("refine", 0))),
             *(json.dumps({"id": name, "command": "evaluate", "model": "b", "manifest": "m.csv",
                           "out": str(tmp_path / "out"), name: value})
               for name, value in (("overwrite", "false"), ("allow_outside_root", "no"), ("cache", 5))),
             *(json.dumps({**good, "id": name, "locations": str(tmp_path / f"{name}.json")}) for name in ("deep", "digits")),
             json.dumps({"id": "last", "command": "ping"}), json.dumps({"command": "shutdown"})]
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)   # a locations file, as the CLI reads it
    (tmp_path / "digits.json").write_text('[{"name": "a", "point_lps": [' + "1" * 5000 + ", 0, 0]}]")
    assert Worker(out, idle_exit_s=30).serve(io.StringIO("\n".join(lines))) == "shutdown"
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    errors = [e for e in events if e["event"] == "error"]
    assert [e["event"] for e in events][-2:] == ["pong", "exit"] and len(errors) == 12, events
    assert "NaN, which is not a number JSON allows" in errors[0]["message"]
    assert "4300 digits" in errors[1]["message"] and "nested too deeply" in errors[2]["message"]
    assert [e["id"] for e in errors[3:]] == ["base", "model", "refine", "refine", "overwrite",
                                             "allow_outside_root", "cache", "deep", "digits"]
    assert "'refine' must be true or false, got 'false'" in errors[5]["message"]
    assert "nested too deeply" in errors[10]["message"] and "4300 digits" in errors[11]["message"]
    assert all("internal error" not in e["message"] for e in errors)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["byte in a string", "bytes alone", "path as bytes", "path as escapes"])
def test_a_request_that_is_not_utf8_is_an_error_and_the_next_one_is_served(tmp_path, kind):
    """Under a strict UTF-8 stdin (a UTF-8 locale) a byte 0xff killed the reading thread: a traceback, and every
    later request waited for the idle exit; a path that is not UTF-8 made ITK abort the whole worker (SIGABRT)."""
    ct = tmp_path / "ct\udcff.nii.gz"   # a file name in another encoding (byte 0xff)
    ct.write_bytes(PATHS["ct"].read_bytes())
    predict = {"id": 1, "command": "predict", "ct": str(ct), "locations": _entries(31), "device": "cpu"}
    line = {"byte in a string": b'{"id": 1, "command": "ping", "x": "\xff"}', "bytes alone": b"\xff\xfe",
            "path as bytes": json.dumps(predict, ensure_ascii=False).encode("utf-8", "surrogateescape"),
            "path as escapes": json.dumps(predict).encode()}[kind]
    ping = json.dumps({"id": "after", "command": "ping"}).encode()
    done = subprocess.run([sys.executable, "-m", "mvcf", "worker", "--device", "cpu", "--idle-exit", "60"],
                          input=line + b"\n" + ping + b"\n", capture_output=True, timeout=120,
                          env={**os.environ, **ENV, "PYTHONIOENCODING": "utf-8:strict"})
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr[-2000:]
    events = [json.loads(text) for text in done.stdout.splitlines()]
    assert [e["event"] for e in events if e["event"] != "progress"] == ["ready", "error", "pong"], events
    assert "not UTF-8" in events[1]["message"] or "not JSON" in events[1]["message"]


def test_an_oversized_request_line_is_skipped_with_one_error(monkeypatch):
    """A 600 MB request line was parsed whole (1.9 GB of memory); a line past MAX_REQUEST_BYTES is now
    skipped to its end with one error event, and the worker answers the next request."""
    import mvcf.worker

    monkeypatch.setattr(mvcf.worker, "MAX_REQUEST_BYTES", 64)
    out = io.StringIO()
    lines = io.StringIO("\n".join([json.dumps({"id": 1, "command": "ping", "pad": "x" * 500}),
                                   json.dumps({"id": 2, "command": "ping"}), json.dumps({"command": "shutdown"})]))
    assert mvcf.worker.Worker(out, idle_exit_s=30).serve(lines) == "shutdown"
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["error", "pong", "exit"] and events[1]["id"] == 2
    assert "request line longer than" in events[0]["message"]
