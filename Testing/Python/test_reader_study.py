"""mvcf.reader_study without Slicer: the plan (seeded, fully crossed, key apart, nothing leaks), bad input
on the CLI (one line, exit 2, nothing overwritten), collect's refusals, and the Roe–Metz power simulation."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reader_study_cases import reader_study_manifest, sample_ct_manifest

from mvcf.errors import MVCFError
from mvcf.reader_study.blinding import find_leaks
from mvcf.reader_study.packages import open_package
from mvcf.reader_study.plan import PlanSettings, make_plan, parse_groups, parse_readers
from mvcf.reader_study.ratings import RatingsStore


def mvcf_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mvcf", "--progress", "none", *args], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(path.relative_to(folder).as_posix().encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def unaided_study(tmp_path_factory):
    """An unaided-only plan (no model needed): 2 readers x 8 cases."""
    folder = tmp_path_factory.mktemp("rs_core")
    manifest = reader_study_manifest(folder)
    make_plan(manifest, PlanSettings(readers=["r1", "r2"], rounds=["unaided"], seed=5), folder / "plan")
    return folder


def answer_all(package_dir: Path, reader: str, skip: int = 0) -> None:
    store = RatingsStore(open_package(package_dir, reader))
    while (step := store.next_case()) is not None and store.progress()[0] < store.progress()[1] - skip:
        store.submit(step.case, confidence=1 + step.position % 5)


def test_the_plan_is_seeded_fully_crossed_and_keeps_the_key_apart(unaided_study, tmp_path):
    manifest = unaided_study / "study_manifest.csv"
    plan = json.loads((unaided_study / "plan" / "plan.json").read_text(encoding="utf-8"))
    key = json.loads((unaided_study / "plan" / "key.json").read_text(encoding="utf-8"))
    assert plan["fingerprint"] == key["fingerprint"] and plan["n_cases"] == len(key["cases"]) == 8
    assert "cases" not in plan, "the plan names no case"
    orders = []
    for reader in ("r1", "r2"):
        package = open_package(unaided_study / "plan" / "packages" / reader, reader)
        assert sorted(package.rounds[0]["cases"]) == sorted(key["cases"])  # every reader every case
        orders.append(package.rounds[0]["cases"])
        assert not (package.folder / "key.json").exists()
        secrets = {c[k] for c in key["cases"].values() for k in ("case_id", "patient_id", "institution")}
        secrets |= {Path(c["ct"]).name for c in key["cases"].values()}
        assert find_leaks(package.folder, sorted(secrets)) == []
        for ct in (package.folder / "cases").iterdir():  # the NIfTI header (348 bytes + extensions) too
            header = gzip.decompress(ct.read_bytes())[:4096].lower()
            assert not [s for s in secrets if s.lower().encode() in header], ct.name
    assert orders[0] != orders[1]
    make_plan(manifest, PlanSettings(readers=["r1", "r2"], rounds=["unaided"], seed=5), tmp_path / "again")
    again = [json.loads((tmp_path / "again" / "packages" / r / "package.json").read_text(encoding="utf-8"))["rounds"][0]["cases"]
             for r in ("r1", "r2")]
    assert again == orders, "same seed and manifest, same plan"
    make_plan(manifest, PlanSettings(readers=["r1", "r2"], rounds=["unaided"], seed=6), tmp_path / "other")
    assert json.loads((tmp_path / "other" / "plan.json").read_text(encoding="utf-8"))["fingerprint"] != plan["fingerprint"]


def test_the_leak_check_finds_a_planted_case_id(tmp_path):
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / "K7RM3X.nii.gz").write_bytes(b"")
    (tmp_path / "package.json").write_text(json.dumps({"note": "see CASE-1003-QZ", "center": [2024.0]}))
    assert find_leaks(tmp_path, ["CASE-1003-QZ", "2024", "K7RM3X"]) == [
        "cases/K7RM3X.nii.gz: file name contains 'K7RM3X'", "package.json: contains 'CASE-1003-QZ'"]


def test_reader_and_group_specs():
    assert parse_readers("3") == ["reader1", "reader2", "reader3"]
    assert parse_groups(["senior:a,b", "junior:c"], ["a", "b", "c"]) == {"senior": ["a", "b"], "junior": ["c"]}
    for bad, message in (("a,a", "twice"), ("a", "at least two"), ("a,b c", "not allowed"), ("1", "2 to 200")):
        with pytest.raises(MVCFError, match=message):
            parse_readers(bad)
    with pytest.raises(MVCFError, match="two groups"):
        parse_groups(["s:a", "j:a"], ["a", "b"])


def test_bad_plan_input_is_one_line_exit_2_and_overwrites_nothing(unaided_study, tmp_path):
    manifest = str(unaided_study / "study_manifest.csv")
    existing = unaided_study / "plan"
    before = tree_digest(existing)
    for args, message in (
            (["--readers", "2", "--out", str(existing)], "already exists and is not empty"),
            (["--readers", "ann,ann", "--out", str(tmp_path / "p1")], "lists a reader twice"),
            (["--readers", "2", "--group", "senior:nobody", "--out", str(tmp_path / "p2")], "not one of the readers"),
            (["--readers", "2", "--rounds", "aided,aided", "--out", str(tmp_path / "p3")], "each once")):
        result = mvcf_cli("reader-study", "plan", "--manifest", manifest, "--rounds", "unaided", *args) \
            if "--rounds" not in args else mvcf_cli("reader-study", "plan", "--manifest", manifest, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr
        assert "Traceback" not in result.stderr
    assert tree_digest(existing) == before
    assert not any((tmp_path / f"p{i}").exists() for i in (1, 2, 3))


def test_reader_study_outputs_are_placed_by_outputs_guard(unaided_study, tmp_path, capsys):
    """plan / collect / report --out: never inside an input folder, never holding an input, never a folder of
    the user's; collect and report write their own earlier tables again (and only those)."""
    import shutil

    from mvcf.cli.main import main

    manifest = str(unaided_study / "study_manifest.csv")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.json").write_text("{}")
    users = tmp_path / "users"
    users.mkdir()
    (users / "readings.csv").write_text("mine\n")
    plan = tmp_path / "plan"
    shutil.copytree(unaided_study / "plan", plan)
    for reader in ("r1", "r2"):
        answer_all(plan / "packages" / reader, reader)
    cases = [(["plan", "--manifest", manifest, "--readers", "2", "--rounds", "unaided", "--model", str(bundle),
               "--out", str(bundle / "plan")], "lies inside the input folder"),
             (["collect", str(plan), "--out", str(users)], "holds files mvcf did not write"),
             (["report", str(plan), "--out", str(users)], "holds files mvcf did not write"),
             (["report", "--readings", str(plan / "packages" / "r1" / "x.csv"), "--out", str(plan / "packages")],
              "holds the input")]
    for args, message in cases:
        code = main(["--progress", "none", "reader-study", *args])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, (args, err)
    assert not (bundle / "plan").exists() and sorted(p.name for p in users.iterdir()) == ["readings.csv"]
    for _ in range(2):  # collect again into the plan folder (mvcf's own): its tables are replaced
        assert main(["--progress", "none", "reader-study", "collect", str(plan)]) == 0
    assert (plan / "readings.csv").is_file()


def test_collect_refuses_a_missing_case_a_foreign_key_and_bad_ratings(unaided_study, tmp_path):
    import shutil

    plan = tmp_path / "plan"
    shutil.copytree(unaided_study / "plan", plan)
    answer_all(plan / "packages" / "r1", "r1")
    answer_all(plan / "packages" / "r2", "r2", skip=1)  # r2 has not rated the last case
    result = mvcf_cli("reader-study", "collect", str(plan))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    missing = open_package(plan / "packages" / "r2", "r2").rounds[0]["cases"][-1]
    assert f"reader r2 unaided: 1 of 8 cases not rated ({missing})" in result.stderr
    assert not (plan / "readings.csv").exists()

    answer_all(plan / "packages" / "r2", "r2")
    # a key from another plan (other seed) does not match
    other = tmp_path / "other"
    make_plan(unaided_study / "study_manifest.csv", PlanSettings(readers=["r1", "r2"], rounds=["unaided"], seed=9),
              other)
    result = mvcf_cli("reader-study", "collect", str(plan), "--key", str(other / "key.json"))
    assert result.returncode == 2 and "the key does not match the plan: key study_id" in result.stderr
    assert not (plan / "readings.csv").exists()

    # a rating edited out of range after the fact, and a duplicated reading, are named
    answers = plan / "packages" / "r1" / "answers.json"
    original = answers.read_text(encoding="utf-8")
    data = json.loads(original)
    data["readings"][0]["confidence"] = 7
    data["readings"].append(dict(data["readings"][1]))
    answers.write_text(json.dumps(data))
    result = mvcf_cli("reader-study", "collect", str(plan))
    assert result.returncode == 2 and "out of range" in result.stderr and "rated twice" in result.stderr
    answers.write_text(original)

    result = mvcf_cli("reader-study", "collect", str(plan))
    assert result.returncode == 0, result.stderr
    import pandas as pd

    frame = pd.read_csv(plan / "readings.csv")
    assert len(frame) == 16 and set(frame["modality"]) == {"unaided"}
    assert list(frame.columns[:5]) == ["reader", "modality", "case", "truth", "rating"]
    assert not (plan / "model_scores.csv").exists(), "no model ran for an unaided-only study"
    # an unaided-only study still gets its report (single-modality CIs)
    report = mvcf_cli("reader-study", "report", str(plan), "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["modalities"] == ["unaided"]
    bad = mvcf_cli("reader-study", "report", str(plan), "--group", "senior:r1,zed", "--out", str(tmp_path / "rep2"))
    assert bad.returncode == 2 and "not one of the readers" in bad.stderr and not (tmp_path / "rep2").exists()
    # readings that contradict the plan folder were reported, the AUC moved, without a word
    for change, message in ((lambda f: f.assign(reader=f.reader.replace("r2", "R2")), "reader 'R2', which the plan"),
                            (lambda f: f.assign(truth=1 - f.truth), "the truth 1, the plan's key 0"),
                            (lambda f: f.assign(rating=f.rating.astype(float) + 0.5), "off the plan's scale")):
        edited = tmp_path / "edited.csv"
        change(frame).to_csv(edited, index=False)
        bad = mvcf_cli("reader-study", "report", str(plan), "--readings", str(edited), "--out", str(tmp_path / "rep3"))
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and message in bad.stderr, bad.stderr
        assert not (tmp_path / "rep3").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda d: d.update(readings={"a": 1}), "'readings' is not a list"),
    (lambda d: d["readings"].__setitem__(0, 5), "reading 1 is not an object with a round and a case"),
    (lambda d: d["readings"][2].update(case=[1]), "reading 3 is not an object with a round and a case"),
    (lambda d: d["readings"][0].update(confidence=True), "confidence rating True is not a number"),
    (lambda d: d["readings"][0].update(reading_time_s="slow"), "reading_time_s 'slow' is not seconds"),
    (lambda d: d["readings"][0].update(confidence=10 ** 400), "is out of range (1-5)"),   # was an OverflowError
    (lambda d: d["readings"][0].update(reading_time_s=-50), "reading_time_s -50 is not seconds"),   # entered the median
    (lambda d: d["readings"][0].update(note={"a": [1]}), "the note is not text"),   # reached the CSV as a repr
], ids=["readings-object", "entry-number", "case-list", "rating-true", "time-word", "rating-huge", "time-negative",
        "note-object"])
def test_an_edited_answers_file_is_one_line_not_a_traceback(unaided_study, tmp_path, damage, message):
    """An answers file edited by hand: 'readings' an object, an entry a number, a case a list (AttributeError /
    TypeError tracebacks in collect and in the reading panel); a rating `true` (taken as 1) and a reading time
    'slow' (collected, then a traceback in the report)."""
    import shutil

    plan = tmp_path / "plan"
    shutil.copytree(unaided_study / "plan", plan)
    for reader in ("r1", "r2"):
        answer_all(plan / "packages" / reader, reader)
    answers = plan / "packages" / "r1" / "answers.json"
    data = json.loads(answers.read_text(encoding="utf-8"))
    damage(data)
    answers.write_text(json.dumps(data), encoding="utf-8")
    edited = answers.read_bytes()
    result = mvcf_cli("reader-study", "collect", str(plan))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (plan / "readings.csv").exists()
    if "not a list" in message or "not an object" in message:
        with pytest.raises(MVCFError, match="is damaged"):
            RatingsStore(open_package(plan / "packages" / "r1", "r1"))
    assert answers.read_bytes() == edited


def test_out_of_range_ratings_are_refused_and_nothing_is_saved(unaided_study, tmp_path):
    import shutil

    shutil.copytree(unaided_study / "plan" / "packages" / "r1", tmp_path / "r1")
    store = RatingsStore(open_package(tmp_path / "r1", "r1"))
    case = store.next_case().case
    for bad in (0, 6, 3.5, "high", None):
        with pytest.raises(MVCFError):
            store.submit(case, confidence=bad)
    with pytest.raises(MVCFError, match="does not ask for a probability"):
        store.submit(case, confidence=3, probability=40)
    with pytest.raises(MVCFError, match="planned order"):
        store.submit(store.package.rounds[0]["cases"][1], confidence=3)
    assert not (tmp_path / "r1" / "answers.json").exists()


def test_roe_metz_readers_have_the_planned_auc_and_the_test_its_size():
    from mvcf.reader_study.simulate import RoeMetz, power
    from mvcf.stats import auc

    model = RoeMetz()
    truth = np.r_[np.ones(400, bool), np.zeros(600, bool)]
    latent = model.ratings(truth, 40, [model.mu_for_auc(0.8), model.mu_for_auc(0.9)], np.random.default_rng(0))
    for modality, target in enumerate((0.8, 0.9)):
        assert np.mean([auc(truth, latent[modality, j]) for j in range(40)]) == pytest.approx(target, abs=0.015)
    null = power([4], [80], 0.8, 0.8, n_sim=300, seed=1)["grid"][0]
    assert 0.01 <= null["power"] <= 0.10, "under the null the ORH test rejects at about alpha"
    grid = power([3, 8], [120], 0.78, 0.88, n_sim=150, seed=2)["grid"]
    assert grid[1]["power"] > grid[0]["power"] > 0.2


def test_simulate_cli(tmp_path):
    result = mvcf_cli("reader-study", "simulate", "--readers", "3,5", "--cases", "40", "--simulations", "40",
                      "--auc-unaided", "0.8", "--auc-aided", "0.9", "--plot", str(tmp_path / "power.png"), "--json")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "power.png").stat().st_size > 5000
    payload = json.loads(result.stdout)
    assert [(g["readers"], g["cases"], g["n_pos"]) for g in payload["grid"]] == [(3, 40, 16), (5, 40, 16)]
    assert payload["model"].startswith("Roe-Metz")
    bad = mvcf_cli("reader-study", "simulate", "--auc-unaided", "1.2")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "[0.5, 1)" in bad.stderr
    again = mvcf_cli("reader-study", "simulate", "--readers", "3", "--cases", "20", "--simulations", "10",
                     "--plot", str(tmp_path / "power.png"))
    assert again.returncode == 0, again.stderr           # its own earlier plot is replaced
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG not mvcf's")
    refused = mvcf_cli("reader-study", "simulate", "--readers", "3", "--cases", "20", "--simulations", "10",
                       "--plot", str(photo))
    assert refused.returncode == 2 and "was not written by mvcf" in refused.stderr
    assert photo.read_bytes() == b"\x89PNG not mvcf's"     # a file of the user's is never replaced


def test_cropped_packages_of_a_real_ct_keep_the_vertebra_where_it_was(tmp_path):
    from mvcf.dataset import locate_record
    from mvcf.manifest import read_manifest
    from mvcf.read_ct import read_ct

    manifest = sample_ct_manifest(tmp_path)
    make_plan(manifest, PlanSettings(readers=["r1", "r2"], rounds=["unaided"], crop_mm=100,
                                     allow_outside_root=True), tmp_path / "plan")
    key = json.loads((tmp_path / "plan" / "key.json").read_text(encoding="utf-8"))["cases"]
    package = open_package(tmp_path / "plan" / "packages" / "r1", "r1")
    records = {r.case_id: r for r in read_manifest(manifest, allow_outside_root=True)}
    original = read_ct(records["SAMPLE-L1"].ct)
    for opaque, case in key.items():
        location = locate_record(original, records[case["case_id"]])
        cropped = read_ct(package.ct_path(opaque))
        assert all(c < o for c, o in zip(cropped.voxels.shape, original.voxels.shape))
        assert package.center_lps(opaque) == pytest.approx(location.center_lps, abs=1e-3)
        ijk = np.round(original.lps_to_index(location.center_lps)).astype(int)
        cropped_ijk = np.round(cropped.lps_to_index(original.index_to_lps(ijk))).astype(int)
        assert cropped.voxels[tuple(cropped_ijk[::-1])] == original.voxels[tuple(ijk[::-1])]
        extent = (np.array(cropped.size_ijk) - 1) * cropped.spacing  # first to last voxel centre
        assert np.all(extent <= 100 + 2 * cropped.spacing + 1e-6)
    assert find_leaks(package.folder, ["SAMPLE-L1", "example_ct", "totalseg", "Totalseg Example"]) == []


def test_a_study_rated_on_both_scales_collects_the_confidence_as_rating(tmp_path):
    from mvcf.reader_study.collect import collect_readings
    from mvcf.reader_study.scale import Scale

    manifest = reader_study_manifest(tmp_path, n_per_site=2)
    make_plan(manifest, PlanSettings(readers=["r1", "r2"], rounds=["unaided"], scale=Scale("both")), tmp_path / "plan")
    for reader in ("r1", "r2"):
        store = RatingsStore(open_package(tmp_path / "plan" / "packages" / reader, reader))
        with pytest.raises(MVCFError, match=r"a probability \(0-100\) is required"):
            store.submit(store.next_case().case, confidence=3)
        while (step := store.next_case()) is not None:
            store.submit(step.case, confidence=step.position % 5 + 1, probability=12.5 * step.position)
    readings, model, summary = collect_readings(tmp_path / "plan")
    assert model is None and summary["ratings"] == 8
    assert (readings["rating"] == readings["confidence"]).all()
    assert set(readings["probability"]) <= {12.5, 25.0, 37.5, 50.0}


def _readings(seed: int = 3):
    """3 readers x 2 rounds x 8 cases rated 1-5, with reading times, and a model whose scores invert the truth."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    truth = np.array([0, 1] * 4)
    rows = [{"reader": r, "modality": m, "case": f"C{c}", "truth": int(truth[c]),
             "rating": int(np.clip(truth[c] * 2 + rng.integers(1, 4), 1, 5)), "reading_time_s": 10.0 + c}
            for r in ("ann", "ben", "cy") for m in ("unaided", "aided") for c in range(8)]
    model = pd.DataFrame({"case": [f"C{c}" for c in range(8)], "score": 1.0 - truth * 0.8, "threshold": 0.5})
    return pd.DataFrame(rows), model


def test_a_model_that_separates_perfectly_gets_newcombes_interval_not_a_point(tmp_path):
    """The table read 'Model alone 0.000 (0.000 to 0.000)': DeLong's interval collapsed, without a word."""
    from mvcf.reader_study.report import build_report, table_rows

    readings, model = _readings()
    payload = build_report(readings, tmp_path / "rep", model=model)
    assert payload["model"]["auc"] == 0.0 and payload["model"]["ci_method"] == "newcombe"
    low, high = payload["model"]["ci"]
    assert low == 0.0 < high < 1.0 and "perfect separation" in payload["model"]["note"]
    assert table_rows(payload)[1][3] == f"0.000 (0.000 to {high:.3f}, Newcombe)"
    assert "Newcombe" in (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")


def test_a_round_every_reader_reads_perfectly_gets_newcombes_interval_not_a_point(tmp_path):
    """Every reader separating the cases in the aided round: the ORH interval of that round collapsed to
    '1.000 (1.000 to 1.000)' in the table, without a word."""
    from mvcf.reader_study.report import build_report, table_rows

    readings, _ = _readings()
    aided = readings.modality == "aided"
    readings.loc[aided, "rating"] = np.where(readings.truth[aided] == 1, 4, 2) + (readings.reader[aided] == "ben")
    payload = build_report(readings, tmp_path / "rep")
    unaided_row, aided_row = payload["table"]
    assert unaided_row["ci_method"] == "orh" and unaided_row["ci"][1] - unaided_row["ci"][0] > 0.05
    assert aided_row["auc"] == 1.0 and aided_row["ci_method"] == "newcombe" and "perfect separation" in aided_row["note"]
    low, high = aided_row["ci"]
    assert 0.0 < low < high == 1.0
    assert table_rows(payload)[2][3] == f"1.000 ({low:.3f} to 1.000, Newcombe)"


def test_report_inputs_that_gave_silent_calls_or_tracebacks_are_one_line_and_write_nothing(tmp_path):
    """--positive-at nan, inf or past the scale (every reader: sensitivity 0, specificity 1, reported as a
    finding), a rating outside the plan's scale, a model table without its score column or with words in it
    (KeyError / ValueError tracebacks) and a reading time 'slow' (a traceback)."""
    from mvcf.reader_study.report import build_report

    readings, model = _readings()
    plan = {"scale": {"kind": "confidence"}}
    bad = [({"positive_at": float("nan")}, "does not split the plan's confidence scale (1 to 5)"),
           ({"positive_at": 7.0}, "does not split"), ({"positive_at": 1.0}, "does not split"),
           ({"readings": readings.assign(rating=readings.rating.where(readings.index != 5, 70))},
            "1 rating(s) outside the plan's confidence scale 1-5 (first: 70)"),
           ({"model": model.drop(columns="score")}, "model scores CSV is missing column(s): score"),
           ({"model": model.assign(score="x")}, "column 'score' must be finite numbers"),
           ({"model": model.assign(threshold="x")}, "column 'threshold' must be finite numbers"),
           ({"model": model.assign(threshold=np.where(model.index == 0, 0.9, 0.5))},   # the first row's was used
            "column 'threshold' holds 2 different values (0.9, 0.5, ...)"),
           ({"model": model.drop(columns="threshold").assign(score=model.score * 100)},   # calls at 0.5 of 0-100
            "has no 'threshold' column and its scores are not probabilities (20 to 100)"),
           ({"readings": readings.assign(reading_time_s=readings.reading_time_s.astype(object)
                                         .where(readings.index != 2, "slow"))}, "row 4 holds 'slow'")]
    for change, message in bad:
        arguments = {"readings": readings, "model": model, "plan": plan, **change}
        with pytest.raises(MVCFError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
            build_report(arguments.pop("readings"), tmp_path / "rep", **arguments)
        assert "\n" not in str(info.value)
    assert not (tmp_path / "rep").exists()
    readings.to_csv(tmp_path / "readings.csv", index=False)
    result = mvcf_cli("reader-study", "report", "--readings", str(tmp_path / "readings.csv"), "--positive-at", "nan",
                      "--out", str(tmp_path / "rep"))
    assert result.returncode == 2 and "must be a finite number" in result.stderr and not (tmp_path / "rep").exists()
    build_report(readings.assign(reading_time_s=np.nan), tmp_path / "rep", model=model, plan=plan, positive_at=4.5)


def test_model_scores_without_their_threshold_are_said(tmp_path, caplog):
    """Probabilities without a threshold column are called at 0.5, which the report used to do without a word."""
    from mvcf.reader_study.report import build_report

    readings, model = _readings()
    build_report(readings, tmp_path / "rep", model=model.drop(columns="threshold"),
                 plan={"scale": {"kind": "confidence"}}, positive_at=4.5)
    assert "no 'threshold' column" in caplog.text and "at 0.5, not at its frozen threshold" in caplog.text


@pytest.mark.parametrize("args, message", [
    (["--readers", "1000000"], "--readers: each must be a whole number in [2, 200], got 1000000"),
    (["--cases", "100000000"], "--cases: each must be a whole number in [1, 100,000]"),
    (["--readers", ",".join(map(str, range(2, 80)))], "takes at most 64 numbers"),
])
def test_simulate_refuses_a_design_too_large_at_parse_time(args, message, capsys):
    """A million readers asked numpy for 29 TiB (a MemoryError traceback after 12 s and 4.6 GB); 10^8 cases ran
    for minutes before anything said why."""
    from mvcf.cli.main import main

    assert main(["--progress", "none", "reader-study", "simulate", *args, "--simulations", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument ") and message in err and err.count("\n") == 1


def test_aided_outputs_say_when_the_model_was_trained_on_study_cases(tmp_path, caplog):
    """A model trained on some of the study's CTs helps the aided round on exactly those cases, and the
    comparison of rounds would credit it; the plan's model identity now counts them and the log names them."""
    import logging
    import shutil

    from mvcf.manifest import read_manifest
    from mvcf.predict import default_model_path
    from mvcf.reader_study.model_outputs import compute_model_outputs
    from mvcf.training_scans import METHOD, scan_digest

    records = read_manifest(reader_study_manifest(tmp_path, n_per_site=2))
    bundle = shutil.copytree(default_model_path(), tmp_path / "bundle")
    card = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
    names = [f"X{i}" for i in range(len(records))]
    _, identity = compute_model_outputs(records, None, names, str(bundle), "cpu")
    assert identity["training_overlap"] == {"checked": True, "cases": 0}
    card["training_scans"] = {"method": METHOD, "count": 1, "digests": [scan_digest(records[2].ct)]}
    (bundle / "model.json").write_text(json.dumps(card), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="mvcf.reader_study"):
        _, identity = compute_model_outputs(records, None, names, str(bundle), "cpu")
    assert identity["training_overlap"] == {"checked": True, "cases": 1}
    assert (f"1 of 4 cases have a CT the model was trained on ({records[2].case_id}): the aided round's model "
            "outputs are not an independent test") in caplog.text


def test_simulated_studies_without_a_test_count_as_no_rejection(capsys):
    """Pilot sizes with near-perfect readers (AUC 0.95 -> 0.99, 10 cases) simulate studies in which every
    reader is perfect in both rounds: the ORH test then has no variance (p None) and the power loop raised a
    TypeError. Such studies reject nothing and are counted."""
    from mvcf.cli.main import main

    code = main(["--progress", "none", "reader-study", "simulate", "--simulations", "200", "--auc-unaided", "0.95",
                 "--auc-aided", "0.99", "--cases", "10", "--readers", "3", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    row = json.loads(out)["grid"][0]
    assert row["no_test"] > 0 and 0.0 <= row["power"] <= 1.0 - row["no_test"] / 200


def test_package_files_keep_no_manifest_order_and_plans_differing_in_settings_differ(tmp_path):
    """Blinded CTs were copied in manifest order, so inode numbers and mtimes (ls -i, ls -tr) sorted the
    opaque ids as the manifest's rows: a manifest sorted by label gave the labels away. Plans differing only
    in washout (or crop, revision, heatmaps, scale, groups, model) shared one study id and fingerprint, so one
    plan's answers were collected by the other; Ann and ann were two package folders."""
    import shutil

    manifest = reader_study_manifest(tmp_path, n_per_site=3)
    plan = make_plan(manifest, PlanSettings(readers=["r1", "r2"], rounds=["unaided"], seed=5), tmp_path / "a")
    cases = tmp_path / "a" / "packages" / "r1" / "cases"
    files = sorted(cases.iterdir(), key=lambda f: f.stat().st_ino)
    assert [f.name for f in files] == sorted(f.name for f in files)
    assert len({f.stat().st_mtime_ns for f in (tmp_path / "a" / "packages" / "r1").rglob("*")}) == 1
    other = make_plan(manifest, PlanSettings(readers=["r1", "r2"], rounds=["unaided"], seed=5, washout_days=30),
                      tmp_path / "b")
    assert other["study_id"] != plan["study_id"] and other["fingerprint"] != plan["fingerprint"]
    with pytest.raises(MVCFError, match="lists a reader twice"):
        parse_readers("Ann,ann")
    shutil.rmtree(tmp_path / "b")


def test_collect_refuses_an_edited_key_or_plan_and_another_readers_answers(unaided_study, tmp_path):
    """A key with a label flipped or case ids swapped was collected into wrong truth; a label 'MVCF', a
    missing label or a plan without readers was a traceback; ann's answers saved as ben's were taken."""
    import shutil

    plan = tmp_path / "plan"
    shutil.copytree(unaided_study / "plan", plan)
    answer_all(plan / "packages" / "r1", "r1")
    answer_all(plan / "packages" / "r2", "r2")
    key_file, plan_file = plan / "key.json", plan / "plan.json"
    key_text, plan_text = key_file.read_text(), plan_file.read_text()
    key = json.loads(key_text)
    first = sorted(key["cases"])[0]
    for edit, message in ((lambda k: k["cases"][first].update(label=1 - k["cases"][first]["label"]),
                           "was changed after the plan was made"),
                          (lambda k: k["cases"][first].update(label="MVCF"), "has truth 'MVCF'; it must be 0 or 1")):
        edited = json.loads(key_text)
        edit(edited)
        key_file.write_text(json.dumps(edited))
        if "truth" in message:   # a plan written before the key digest: the key's own fields are checked
            plan_file.write_text(json.dumps({k: v for k, v in json.loads(plan_text).items() if k != "key_sha256"}))
        result = mvcf_cli("reader-study", "collect", str(plan))
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    key_file.write_text(key_text)
    plan_file.write_text(json.dumps({k: v for k, v in json.loads(plan_text).items() if k != "readers"}))
    result = mvcf_cli("reader-study", "collect", str(plan))
    assert result.returncode == 2 and "the study plan is damaged" in result.stderr and "Traceback" not in result.stderr
    plan_file.write_text(plan_text)
    ann = json.loads((plan / "packages" / "r1" / "answers.json").read_text())
    (plan / "packages" / "r2" / "answers.json").write_text(json.dumps({**ann, "reader": "r2"}))
    result = mvcf_cli("reader-study", "collect", str(plan))
    assert result.returncode == 2 and "is not where r2's package puts it (another reader's answers?)" in result.stderr


def test_collect_says_where_the_answers_times_break_the_plan():
    """collect ignored the times: aided readings an hour after the unaided round despite a 28-day washout, or
    dated before the plan or in 2100, were collected without a word. They are still collected, and said."""
    import time as _time

    from mvcf.reader_study.collect import protocol_deviations

    plan = {"created": _time.strftime("%Y-%m-%dT%H:%M:%S%z", _time.localtime(1.7e9)), "washout_days": 28,
            "rounds": [{"name": "unaided"}, {"name": "aided"}]}
    unaided = [{"round": "unaided", "case": "A", "submitted_at": 1.7e9 + 100}]
    ok = unaided + [{"round": "aided", "case": "A", "submitted_at": 1.7e9 + 100 + 29 * 86400}]
    assert protocol_deviations(plan, {"r1": ok}) == []
    early = unaided + [{"round": "aided", "case": "A", "submitted_at": 1.7e9 + 3700}]
    assert protocol_deviations(plan, {"r1": early}) == [
        "reader r1: round aided began 0.0 days after unaided ended; the plan's washout is 28 days"]
    odd = [{"round": "unaided", "case": "A", "submitted_at": 1.0e9}, {"round": "aided", "case": "A",
                                                                        "submitted_at": 4.1e9}]
    lines = protocol_deviations(plan, {"r1": odd, "r2": [{"round": "unaided", "case": "B", "submitted_at": "x"}]})
    assert any("dated before the plan was made" in line for line in lines)
    assert any("dated in the future" in line for line in lines) and any("has no time ('x')" in line for line in lines)


def test_a_bar_in_a_group_name_stays_inside_its_markdown_cell(monkeypatch):
    """A group named 'a|b' split its row of the report's summary table into one cell too many."""
    import mvcf.reader_study.report as report

    header = ["Readers", "n", "Round", "AUC (95% CI)", "Sensitivity", "Specificity", "Δ AUC (95% CI)", "F (df)", "p"]
    monkeypatch.setattr(report, "table_rows", lambda payload: [header, ["a|b", "2", "unaided", *[""] * 6]])
    text = report.render_markdown({"title": "t", "disclaimer": "d", "modalities": [], "sections": {},
                                   "model": None, "table": []})
    row = next(line for line in text.splitlines() if line.startswith("| a"))
    assert row.count(" | ") == len(header) - 1 and "a\\|b" in row


def test_reading_with_the_model_first_is_taken_but_said():
    """`--rounds aided,unaided` planned a study whose readers saw the model's output before reading the same
    cases without it, without a word (and the --rounds error did not list that order at all)."""
    from mvcf.reader_study.plan import aided_first_warning, parse_rounds

    assert parse_rounds("aided,unaided") == ["aided", "unaided"]
    caveat = aided_first_warning(["aided", "unaided"], 28)
    assert "before reading the same cases without it" in caveat and "washout 28 days" in caveat
    assert aided_first_warning(["unaided", "aided"], 28) is None and aided_first_warning(["aided"], 0) is None
    with pytest.raises(MVCFError, match="both in reading order"):
        parse_rounds("aided,aided")


def test_a_plan_takes_an_empty_folder_made_for_it(tmp_path):
    """`mkdir plan && mvcf reader-study plan --out plan`: the empty folder becomes the plan (it was removed
    before the plan was written, so a plan that failed half-way took the user's folder with it)."""
    manifest = reader_study_manifest(tmp_path, n_per_site=2)
    out = tmp_path / "plan"
    out.mkdir()
    make_plan(manifest, PlanSettings(readers=["r1", "r2"], rounds=["unaided"], seed=5), out)
    assert (out / "plan.json").is_file() and (out / "packages" / "r1").is_dir()
