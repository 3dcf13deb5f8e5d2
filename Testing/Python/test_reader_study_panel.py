"""The reading panel's logic (MVCFReaderStudyLib.session) on slicer-core's real MRML, and the full loop
plan -> simulated readers answering through the panel -> collect -> report, checked against `mvcf stats
mrmc` and against the published Van Dyke results."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from conftest import shared  # noqa: E402
from reader_study_cases import reader_study_manifest, sample_ct_manifest, van_dyke_manifest  # noqa: E402

from mvcf.errors import MVCFError  # noqa: E402
from mvcf.reader_study.plan import PlanSettings, make_plan  # noqa: E402
from MVCFReaderStudyLib.session import CT_NODE_NAME, HEATMAP_NODE_NAME, ReadingSession, panel_state  # noqa: E402


def mvcf_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mvcf", "--progress", "none", *args], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def ticking_clock(start: float = 1.8e9, step: float = 7.0):
    counter = itertools.count()
    return lambda: start + step * next(counter)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A planned 3-reader study of 8 tiny cases, aided round with the real demo model and heatmaps."""
    folder = tmp_path_factory.mktemp("reader_study")
    manifest = reader_study_manifest(folder)
    settings = PlanSettings(readers=["ann", "ben", "cy"], groups={"senior": ["ann", "ben"], "junior": ["cy"]},
                            seed=3, device="cpu")
    make_plan(manifest, settings, folder / "plan")
    key = json.loads((folder / "plan" / "key.json").read_text(encoding="utf-8"))
    return {"folder": folder, "plan": folder / "plan", "key": key, "manifest": manifest}


def fresh_copy(study, tmp_path) -> Path:
    """A copy of the plan folder, so that each test reads from the start."""
    import shutil

    target = tmp_path / "plan"
    shutil.copytree(study["plan"], target)
    return target


def scene_texts(scene) -> list[str]:
    """Every name, attribute (name and value) and storage file name in the scene, and its URL."""
    texts = [scene.GetURL() or ""]
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        texts.append(node.GetName() or "")
        for name in node.GetAttributeNames() or ():
            texts += [name, node.GetAttribute(name) or ""]
        if node.IsA("vtkMRMLStorageNode"):
            texts.append(node.GetFileName() or "")
        if node.IsA("vtkMRMLStorableNode") and node.GetStorageNode() is not None:
            texts.append(node.GetStorageNode().GetFileName() or "")
    return texts


def test_a_package_loads_its_cases_in_the_planned_order(study, tmp_path):
    plan = fresh_copy(study, tmp_path)
    scene = slicer.vtkMRMLScene()
    session = ReadingSession(scene, plan / "packages" / "ben", "ben", clock=ticking_clock())
    planned = [(r["name"], c) for r in session.package.rounds for c in r["cases"]]
    seen = []
    while (shown := session.show_next()) is not None:
        seen.append((shown.step.round_name, shown.step.case))
        assert shown.progress_text.endswith(f"case {shown.step.position} of 8")
        assert scene.GetFirstNodeByName(CT_NODE_NAME) is shown.ct_node
        session.submit(confidence=1 + len(seen) % 5)
    assert seen == planned and len(seen) == 16
    assert session.finished and scene.GetFirstNodeByName(CT_NODE_NAME) is None
    others = [(r["name"], c) for r in json.loads((plan / "packages" / "ann" / "package.json").read_text(encoding="utf-8"))["rounds"]
              for c in r["cases"]]
    assert others != planned and sorted(others) == sorted(planned), "own order per reader, same cases"


def test_nothing_in_the_scene_reveals_case_id_file_name_label_or_institution(study, tmp_path):
    plan = fresh_copy(study, tmp_path)
    scene = slicer.vtkMRMLScene()
    scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    secrets = set()
    for case in study["key"]["cases"].values():
        secrets |= {case["case_id"], case["patient_id"], case["institution"], Path(case["ct"]).name,
                    Path(case["ct"]).name.split(".")[0]}
    session = ReadingSession(scene, plan / "packages" / "cy", "cy", clock=ticking_clock())
    checked_rounds = set()
    while (shown := session.show_next()) is not None:
        texts = [t.lower() for t in scene_texts(scene)]
        assert not [s for s in secrets if any(s.lower() in t for t in texts)]
        assert not [t for t in texts if any(w in t for w in ("label", "truth", "mvcf", "ovcf", "malignant"))]
        truth = study["key"]["cases"][shown.step.case]["label"]
        assert shown.ct_node.GetName() == CT_NODE_NAME and not shown.ct_node.GetAttributeNames()
        assert shown.step.case not in " ".join(scene_texts(scene)), "not even the opaque ID is in the scene"
        checked_rounds.add(shown.step.round_name)
        session.submit(confidence=4 if truth else 2)
    assert checked_rounds == {"unaided", "aided"}


def test_a_rating_is_saved_after_each_case_and_survives_a_crash(study, tmp_path, monkeypatch):
    plan = fresh_copy(study, tmp_path)
    package = plan / "packages" / "ann"
    answers = package / "answers.json"
    session = ReadingSession(slicer.vtkMRMLScene(), package, "ann", clock=ticking_clock())
    order = session.package.rounds[0]["cases"]
    for k in range(3):
        shown = session.show_next()
        session.submit(confidence=k + 1, note=f"note {k}")
        saved = json.loads(answers.read_text(encoding="utf-8"))["readings"]
        assert [r["case"] for r in saved] == order[:k + 1], "saved before the next case loads"
        assert saved[-1]["reading_time_s"] == pytest.approx(7.0)
    shown = session.show_next()  # the reader is looking at case 4 when Slicer dies
    assert shown.step.case == order[3]

    # a crash in the middle of saving case 4 leaves the file of 3 readings intact (atomic rename)
    def crash(*args):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises((OSError, MVCFError), match="power cut"):
        session.submit(confidence=5)
    monkeypatch.undo()
    assert [r["case"] for r in json.loads(answers.read_text(encoding="utf-8"))["readings"]] == order[:3]
    assert not [p for p in package.iterdir() if p.name.startswith(".answers")], "no temporary file left"

    resumed = ReadingSession(slicer.vtkMRMLScene(), package, "ann", clock=ticking_clock())
    shown = resumed.show_next()
    assert (shown.step.round_name, shown.step.position, shown.step.case) == ("unaided", 4, order[3])
    with pytest.raises(MVCFError, match="does not allow changing"):
        resumed.store.revise("unaided", order[0], confidence=5)


def test_the_aided_round_shows_the_model_output_and_the_unaided_does_not(study, tmp_path):
    from mvcf.manifest import read_manifest
    from mvcf.predict import predict_file

    plan = fresh_copy(study, tmp_path)
    scene = slicer.vtkMRMLScene()
    session = ReadingSession(scene, plan / "packages" / "ben", "ben", clock=ticking_clock())
    records = {r.case_id: r for r in read_manifest(study["manifest"])}
    for _ in range(8):
        shown = session.show_next()
        assert shown.step.round_name == "unaided" and shown.model is None and shown.model_text == ""
        assert scene.GetFirstNodeByName(HEATMAP_NODE_NAME) is None
        session.submit(confidence=3)
    shown = session.show_next()
    assert shown.step.round_name == "aided" and shown.step.position == 1
    record = records[study["key"]["cases"][shown.step.case]["case_id"]]
    direct = predict_file(record.ct, mask_path=record.mask, label=record.vertebra_label, device="cpu")
    assert shown.model["probability"] == pytest.approx(direct.probability_malignant, abs=1e-6)
    assert shown.model["prediction"] == direct.prediction
    assert "Research use only" in shown.model_text and f"{100 * direct.probability_malignant:.0f}%" in shown.model_text
    heat = slicer.util.arrayFromVolume(shown.heatmap_node)
    assert scene.GetFirstNodeByName(HEATMAP_NODE_NAME) is shown.heatmap_node
    # the map shown is the model's own Grad-CAM of this case, computed here independently through the core
    from mvcf.dataset import locate_record
    from mvcf.explain import heatmap_for
    from mvcf.inference import load_model
    from mvcf.read_ct import read_ct

    ct = read_ct(record.ct)
    location = locate_record(ct, record)
    expected = heatmap_for(load_model(None, "cpu"), direct.view, "cpu", probability=direct.probability_malignant,
                           ct=ct, location=location)
    expected = np.asarray(expected.voxels if hasattr(expected, "voxels") else expected, dtype=np.float32)
    assert heat.shape == expected.shape and heat.min() >= 0.0 and heat.max() <= 1.0
    np.testing.assert_allclose(heat, expected, atol=1e-5)


def test_the_panel_state_follows_the_session(study, tmp_path):
    plan = fresh_copy(study, tmp_path)
    assert not panel_state(None, ".", "ben").open_enabled  # the parameter node's unset Path is "."
    assert not panel_state(None, str(plan), " ").open_enabled
    closed = panel_state(None, str(plan / "packages" / "ben"), "ben")
    assert closed.open_enabled and not closed.rating_enabled and "Open your package" in closed.status_text
    session = ReadingSession(slicer.vtkMRMLScene(), plan / "packages" / "ben", "ben", clock=ticking_clock())
    session.show_next()
    state = panel_state(session, str(plan / "packages" / "ben"), "ben")
    assert state.rating_enabled and state.confidence_enabled and not state.probability_enabled
    assert state.progress_text == "unaided round: case 1 of 8" and not state.model_visible
    assert not state.revise_visible, "this plan does not allow revision"
    session.pause()
    assert not panel_state(session, str(plan), "ben").rating_enabled
    for _ in range(8):
        session.show_next()
        session.submit(confidence=3)
    session.show_next()
    aided = panel_state(session, str(plan), "ben")
    assert aided.model_visible and aided.model_text.startswith("Model: probability of malignancy")
    assert aided.status_text == "8 of 16 readings done; next: aided round, case 1 of 8"


def test_wrong_reader_washout_and_out_of_range_ratings_are_refused(study, tmp_path):
    plan = fresh_copy(study, tmp_path)
    with pytest.raises(MVCFError, match="this package is for reader 'ann', not 'ben'"):
        ReadingSession(slicer.vtkMRMLScene(), plan / "packages" / "ann", "ben")
    # answers written for another reader's package are refused, not overwritten
    stray = json.loads((plan / "packages" / "ann" / "package.json").read_text(encoding="utf-8"))
    (plan / "packages" / "cy" / "answers.json").write_text(json.dumps(
        {"study_id": stray["study_id"], "fingerprint": stray["fingerprint"], "reader": "ann", "readings": []}))
    before = (plan / "packages" / "cy" / "answers.json").read_bytes()
    with pytest.raises(MVCFError, match="reader 'ann'"):
        ReadingSession(slicer.vtkMRMLScene(), plan / "packages" / "cy", "cy")
    assert (plan / "packages" / "cy" / "answers.json").read_bytes() == before

    session = ReadingSession(slicer.vtkMRMLScene(), plan / "packages" / "ben", "ben", clock=ticking_clock())
    session.show_next()
    for bad, message in ((0, "out of range"), (6, "out of range"), (2.5, "whole number"), ("x", "not a number"),
                         (None, "required")):
        with pytest.raises(MVCFError, match=message):
            session.submit(confidence=bad)
    assert not (plan / "packages" / "ben" / "answers.json").exists(), "nothing saved for a refused rating"


def test_the_views_are_centred_on_the_vertebra_of_a_real_ct(tmp_path):
    from mvcf.ctimage import ras_to_lps
    from mvcf.dataset import locate_record
    from mvcf.manifest import read_manifest
    from mvcf.read_ct import read_ct

    manifest = sample_ct_manifest(tmp_path)
    make_plan(manifest, PlanSettings(readers=["r1", "r2"], rounds=["unaided"], crop_mm=120,
                                     allow_outside_root=True), tmp_path / "plan")
    key = json.loads((tmp_path / "plan" / "key.json").read_text(encoding="utf-8"))["cases"]
    records = {r.case_id: r for r in read_manifest(manifest, allow_outside_root=True)}
    scene = slicer.vtkMRMLScene()
    views = [scene.AddNewNodeByClass("vtkMRMLSliceNode", name) for name in ("Red", "Yellow", "Green")]
    session = ReadingSession(scene, tmp_path / "plan" / "packages" / "r2", "r2", clock=ticking_clock())
    shown = session.show_next()
    record = records[key[shown.step.case]["case_id"]]
    center_lps = locate_record(read_ct(record.ct), record).center_lps
    np.testing.assert_allclose(ras_to_lps(shown.center_ras), center_lps, atol=1e-3)
    for view in views:
        matrix = view.GetSliceToRAS()
        np.testing.assert_allclose([matrix.GetElement(i, 3) for i in range(3)], shown.center_ras, atol=1e-3)
    display = shown.ct_node.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == (1800.0, 400.0)
    # the vertebra's centre is inside the loaded (cropped) volume, on its bone
    from MVCFClassifierLib.volumes import world_ijk_to_ras

    ijk = np.linalg.inv(world_ijk_to_ras(shown.ct_node)) @ np.append(shown.center_ras, 1.0)
    array = slicer.util.arrayFromVolume(shown.ct_node)
    k, j, i = np.round(ijk[2::-1]).astype(int)
    assert 0 <= k < array.shape[0] and 0 <= j < array.shape[1] and 0 <= i < array.shape[2]
    assert array[k, j, i] > 50, "the centre lies in the vertebral body (cancellous bone), not in fat or air"


def test_the_washout_keeps_the_aided_round_closed(tmp_path):
    manifest = reader_study_manifest(tmp_path, n_per_site=2)
    make_plan(manifest, PlanSettings(readers=["r1", "r2"], washout_days=14, heatmaps=False, device="cpu"),
              tmp_path / "plan")
    now = [1.8e9]
    session = ReadingSession(slicer.vtkMRMLScene(), tmp_path / "plan" / "packages" / "r1", "r1",
                             clock=lambda: now[0])
    for _ in range(4):
        session.show_next()
        session.submit(confidence=2)
    now[0] += 13 * 86400
    with pytest.raises(MVCFError, match=r"aided round opens on .*\(washout of 14 days; 1\.0 days to go\)"):
        session.show_next()
    now[0] += 86400
    assert session.show_next().step.round_name == "aided"


def test_revision_only_when_the_plan_allows_it_and_within_the_round(tmp_path):
    manifest = reader_study_manifest(tmp_path, n_per_site=2)
    make_plan(manifest, PlanSettings(readers=["r1", "r2"], rounds=["unaided"], allow_revision=True),
              tmp_path / "plan")
    session = ReadingSession(slicer.vtkMRMLScene(), tmp_path / "plan" / "packages" / "r1", "r1",
                             clock=ticking_clock())
    assert not session.can_revise
    session.show_next()
    session.submit(confidence=2)
    assert session.can_revise
    assert session.revise_last(confidence=4)["confidence"] == 4
    answers = json.loads((tmp_path / "plan" / "packages" / "r1" / "answers.json").read_text(encoding="utf-8"))
    assert answers["readings"][0]["confidence"] == 4 and "revised_at" in answers["readings"][0]
    with pytest.raises(MVCFError, match="out of range"):
        session.revise_last(confidence=9)
    for _ in range(3):
        session.show_next()
        session.submit(confidence=3)
    assert not session.can_revise
    with pytest.raises(MVCFError, match="round is complete"):
        session.store.revise("unaided", answers["readings"][0]["case"], confidence=1)


def read_through_panel(scene, package: Path, reader: str, answer) -> int:
    """A simulated reader: opens the package in the panel logic and answers every case it shows."""
    session = ReadingSession(scene, package, reader, clock=ticking_clock())
    count = 0
    while (shown := session.show_next()) is not None:
        session.submit(confidence=answer(reader, shown))
        count += 1
    return count


def test_full_loop_plan_panel_collect_report_equals_stats_mrmc(study, tmp_path):
    from mvcf.reader_study.simulate import RoeMetz, to_confidence

    plan = fresh_copy(study, tmp_path)
    key = study["key"]["cases"]
    opaque = sorted(key)
    truth = np.array([key[c]["label"] for c in opaque], bool)
    rm = RoeMetz()
    latent = rm.ratings(truth, 3, [rm.mu_for_auc(0.75), rm.mu_for_auc(0.9)], np.random.default_rng(11))
    ratings = to_confidence(latent, truth)
    readers = ["ann", "ben", "cy"]

    def answer(reader, shown):
        return int(ratings[int(shown.step.aided), readers.index(reader), opaque.index(shown.step.case)])

    scene = slicer.vtkMRMLScene()
    assert sum(read_through_panel(scene, plan / "packages" / r, r, answer) for r in readers) == 48

    collected = mvcf_cli("reader-study", "collect", str(plan))
    assert collected.returncode == 0, collected.stderr
    reported = mvcf_cli("reader-study", "report", str(plan), "--json")
    assert reported.returncode == 0, reported.stderr
    report = json.loads(reported.stdout)
    mrmc = mvcf_cli("stats", "mrmc", "--csv", str(plan / "readings.csv"), "--unaided", "unaided", "--aided", "aided",
                    "--model-csv", str(plan / "model_scores.csv"), "--model-modality", "unaided", "--json")
    assert mrmc.returncode == 0, mrmc.stderr
    expected = json.loads(mrmc.stdout)
    overall = report["sections"]["all readers"]["analysis"]
    for key_ in ("F", "df1", "df2", "p", "diff", "ci"):
        assert overall["rrrc"][key_] == pytest.approx(expected["rrrc"][key_], rel=1e-12)
    for modality in ("unaided", "aided"):
        assert overall["reader_auc"][modality] == pytest.approx(expected["reader_auc"][modality], rel=1e-12)
    assert report["model"]["vs_readers"]["unaided"]["rrrc"]["diff"] == pytest.approx(
        expected["model_vs_readers"]["rrrc"]["diff"])
    # the readings really are what the simulated readers entered through the panel
    import pandas as pd

    frame = pd.read_csv(plan / "readings.csv")
    by_id = {key[c]["case_id"]: i for i, c in enumerate(opaque)}
    for row in frame.itertuples():
        assert row.rating == ratings[int(row.modality == "aided"), readers.index(row.reader), by_id[row.case]]
    assert set(frame["group"].fillna("")) == {"senior", "junior"}
    assert {"senior", "junior"} <= set(report["sections"]) and "analysis" in report["sections"]["senior"]
    assert report["reading_time"]["aided"]["median_s"] == pytest.approx(7.0)  # the ticking clock's step
    for name in ("report.md", "report.html", "report.json", "roc_readers.png"):
        assert (plan / "report" / name).stat().st_size > 0


def test_a_van_dyke_shaped_study_through_the_panel_gives_the_published_table(tmp_path):
    import pandas as pd

    vandyke = shared("reader_study/vandyke_dataset02.csv")
    manifest = van_dyke_manifest(tmp_path, vandyke)
    readers = ["0", "1", "2", "3", "4"]
    make_plan(manifest, PlanSettings(readers=readers, groups={"seniors": ["0", "1"], "juniors": ["2", "3", "4"]},
                                     seed=7, heatmaps=False, device="cpu"), tmp_path / "plan")
    plan = tmp_path / "plan"
    key = json.loads((plan / "key.json").read_text(encoding="utf-8"))["cases"]
    published = pd.read_csv(vandyke).set_index(["reader", "modality", "case"])["rating"]

    def answer(reader, shown):
        case = int(key[shown.step.case]["case_id"].split("-")[1])
        return int(published[(int(reader), int(shown.step.aided), case)])

    scene = slicer.vtkMRMLScene()
    assert sum(read_through_panel(scene, plan / "packages" / r, r, answer) for r in readers) == 1140
    assert mvcf_cli("reader-study", "collect", str(plan)).returncode == 0
    result = mvcf_cli("reader-study", "report", str(plan), "--title", "Van Dyke-shaped study")
    assert result.returncode == 0, result.stderr
    report = json.loads((plan / "report" / "report.json").read_text(encoding="utf-8"))
    rrrc = report["sections"]["all readers"]["analysis"]["rrrc"]
    # Published (OR-DBM MRMC / RJafroc / MRMCaov): F = 4.46 on (1, 15.26) df, p = 0.0517, difference 0.0438
    assert rrrc["F"] == pytest.approx(4.456, abs=5e-3)
    assert rrrc["df2"] == pytest.approx(15.26, abs=5e-3)
    assert rrrc["p"] == pytest.approx(0.0517, abs=5e-4)
    assert rrrc["diff"] == pytest.approx(0.04380032, abs=1e-7)
    assert rrrc["ci"] == pytest.approx([-0.00036, 0.08796], abs=1e-5)
    table = {(row["readers"], row["modality"]): row for row in report["table"]}
    assert set(table) == {(g, m) for g in ("all readers", "seniors", "juniors") for m in ("unaided", "aided")}
    assert table[("all readers", "unaided")]["auc"] == pytest.approx(0.89703704, abs=1e-7)
    assert table[("all readers", "aided")]["auc"] == pytest.approx(0.94083736, abs=1e-7)
    assert table[("all readers", "unaided")]["ci"] == pytest.approx([0.82522360, 0.96885048], abs=1e-6)
    assert table[("seniors", "unaided")]["auc"] == pytest.approx((0.91964573 + 0.85877617) / 2, abs=1e-7)
    assert table[("juniors", "aided")]["auc"] == pytest.approx((0.92173913 + 0.99935588 + 0.92995169) / 3, abs=1e-7)
    markdown = (plan / "report" / "report.md").read_text(encoding="utf-8")
    assert "| seniors | 2 | aided |" in markdown and "| juniors | 3 | unaided |" in markdown
    assert "F = 4.456 on (1, 15.26) df" in markdown
