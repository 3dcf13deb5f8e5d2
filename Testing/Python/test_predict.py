"""`mvcf predict` on the shipped real CT (TotalSegmentator example, L1) with the embedded demo bundle."""
import json

import numpy as np
import pytest

pytest.importorskip("torch")

from mvcf.cli.main import main  # noqa: E402
from mvcf.resources import sample_ct_paths  # noqa: E402

FIELDS = {"probability_malignant", "prediction", "threshold", "model", "device", "center_lps", "timing_ms",
          "warnings"}


@pytest.fixture(scope="module")
def sample():
    paths = sample_ct_paths()
    if not paths["ct"].is_file():
        pytest.skip("sample CT not shipped")
    return paths


def test_embedded_demo_bundle_loads_and_says_it_is_synthetic():
    from mvcf.models.bundle import load_bundle
    from mvcf.predict import default_model_path

    bundle = load_bundle(default_model_path())
    assert bundle.card["trained_on_synthetic_data"] is True
    assert "synthetic" in bundle.card["description"].lower()
    assert "research use only" in bundle.card["intended_use"].lower()
    size = sum(p.stat().st_size for p in default_model_path().iterdir())
    assert size < 5_000_000


def test_predict_json_on_L1_of_the_real_ct(sample, capsys):
    from mvcf.locate import from_mask
    from mvcf.read_ct import read_ct, read_mask

    code = main(["--progress", "none", "predict", "--ct", str(sample["ct"]), "--mask", str(sample["mask"]),
                 "--label", "31", "--device", "cpu", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert FIELDS <= set(result)
    assert 0.0 <= result["probability_malignant"] <= 1.0
    assert result["prediction"] == ("MVCF" if result["probability_malignant"] >= result["threshold"] else "OVCF")
    assert set(result["model"]) == {"name", "version", "sha256"} and len(result["model"]["sha256"]) == 64
    assert result["device"] == "cpu"
    assert any("synthetic" in w for w in result["warnings"])
    assert "Research use only" in result["disclaimer"]
    assert result["timing_ms"]["total"] >= result["timing_ms"]["inference"] > 0
    ct = read_ct(sample["ct"])
    centroid = from_mask(ct, read_mask(sample["mask"]), 31).center_lps
    np.testing.assert_allclose(result["center_lps"], centroid, atol=1e-6)


def test_same_point_in_ras_gives_the_same_probability(sample, capsys):
    from mvcf.locate import from_mask
    from mvcf.predict import predict_file
    from mvcf.read_ct import read_ct, read_mask

    ct = read_ct(sample["ct"])
    lps = from_mask(ct, read_mask(sample["mask"]), 31).center_lps
    by_mask = predict_file(sample["ct"], mask_path=sample["mask"], label=31, device="cpu")
    by_ras = predict_file(sample["ct"], point=[-lps[0], -lps[1], lps[2]], unit="ras", device="cpu")
    assert by_ras.probability_malignant == pytest.approx(by_mask.probability_malignant, abs=1e-6)


def test_heatmap_is_written_on_the_ct_lattice_around_the_vertebra(sample, tmp_path, capsys):
    import SimpleITK as sitk

    from mvcf.explain import explain
    from mvcf.locate import from_mask
    from mvcf.read_ct import read_ct, read_mask

    out = tmp_path / "heat.nii.gz"
    code = main(["--progress", "none", "predict", "--ct", str(sample["ct"]), "--mask", str(sample["mask"]),
                 "--label", "31", "--device", "cpu", "--heatmap", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    image = sitk.ReadImage(str(out))
    values = sitk.GetArrayFromImage(image)
    assert np.isfinite(values).all() and values.max() <= 1.0 + 1e-6 and values.min() >= 0.0
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))
    ct = read_ct(sample["ct"])
    np.testing.assert_allclose(centre, result["center_lps"], atol=float(ct.spacing.max()))
    np.testing.assert_allclose(image.GetSpacing(), ct.spacing)          # the CT's own lattice
    np.testing.assert_allclose(np.array(image.GetDirection()).reshape(3, 3), ct.direction)
    start = ct.lps_to_index(image.GetOrigin())
    np.testing.assert_allclose(start, np.round(start), atol=1e-4)
    assert min(image.GetSize()) > 10                                       # a volume, not a plane
    location = from_mask(ct, read_mask(sample["mask"]), 31)
    peaks = [float(explain(ct, location, target=t)[0].voxels.max()) for t in ("MVCF", "OVCF")]
    assert max(peaks) == pytest.approx(1.0)   # evidence for one class or the other, scaled to [0, 1]


def test_bad_model_and_missing_location_fail_cleanly(sample, tmp_path, capsys):
    (tmp_path / "model.json").write_text("{}")
    assert main(["--progress", "none", "predict", "--ct", str(sample["ct"]), "--mask", str(sample["mask"]),
                 "--label", "31", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a model bundle" in err and "Traceback" not in err
    assert main(["--progress", "none", "predict", "--ct", str(sample["ct"]), "--mask", str(sample["mask"])]) == 2
    assert "--label" in capsys.readouterr().err


# Several vertebrae in one run: --locations FILE (JSON or CSV) or --mask with --label repeated.

def run_cli(capsys, *args):
    code = main(["--progress", "none", "predict", *map(str, args), "--device", "cpu"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def single(sample, capsys, *where):
    code, out, _ = run_cli(capsys, "--ct", sample["ct"], *where, "--json")
    assert code == 0
    return json.loads(out)


def l1_point_ras(sample) -> list:
    from mvcf.locate import from_mask
    from mvcf.read_ct import read_ct, read_mask

    lps = from_mask(read_ct(sample["ct"]), read_mask(sample["mask"]), 31).center_lps
    return [-lps[0], -lps[1], lps[2]]


def test_locations_file_gives_the_single_vertebra_results_for_each_entry(sample, tmp_path, capsys):
    import os

    mask = os.path.relpath(sample["mask"], tmp_path)  # relative to the locations file's folder
    ras = l1_point_ras(sample)
    locations = tmp_path / "vertebrae.json"
    locations.write_text(json.dumps([
        {"name": "L1", "mask": mask, "label": 31, "heatmap": "heat/L1.nii.gz"},
        {"name": "L2", "mask": mask, "label": 30},
        {"name": "L1 point", "point_ras": ras}]))
    code, out, _ = run_cli(capsys, "--ct", sample["ct"], "--locations", locations, "--json")
    assert code == 0
    payload = json.loads(out)
    results = payload["results"]
    assert [r["name"] for r in results] == ["L1", "L2", "L1 point"]
    assert "Research use only" in payload["disclaimer"] and payload["timing_ms"]["read_ct"] > 0
    for entry in results:
        assert FIELDS <= set(entry) and "error" not in entry
        assert any("synthetic" in w for w in entry["warnings"])
    assert (tmp_path / "heat" / "L1.nii.gz").is_file() and results[0]["heatmap"] == str(tmp_path / "heat" / "L1.nii.gz")
    assert "heatmap" not in results[1]

    by_labels = json.loads(run_cli(capsys, "--ct", sample["ct"], "--mask", sample["mask"], "--label", 31,
                                   "--label", 30, "--json")[1])["results"]
    assert [r["name"] for r in by_labels] == ["label 31", "label 30"]
    for label, entry, repeated in ((31, results[0], by_labels[0]), (30, results[1], by_labels[1])):
        alone = single(sample, capsys, "--mask", sample["mask"], "--label", label)
        for multi in (entry, repeated):
            assert multi["probability_malignant"] == pytest.approx(alone["probability_malignant"], abs=1e-6)
            assert multi["prediction"] == alone["prediction"] and multi["model"] == alone["model"]
            np.testing.assert_allclose(multi["center_lps"], alone["center_lps"], atol=1e-6)
    assert results[2]["probability_malignant"] == pytest.approx(results[0]["probability_malignant"], abs=1e-6)


def test_a_failing_vertebra_keeps_the_others_and_progress_is_per_vertebra(sample, tmp_path, capsys):
    locations = tmp_path / "vertebrae.csv"
    locations.write_text("name,point_lps,mask,label\n"
                         f"absent,,{sample['mask']},99\n"
                         f"L1,,{sample['mask']},31\n"
                         'outside,"5000,0,0",,\n')
    code = main(["--progress", "jsonl", "predict", "--ct", str(sample["ct"]), "--locations", str(locations),
                 "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]   # the protocol: nothing else on stdout
    assert all(isinstance(e, dict) and "event" in e for e in events)
    progress = [(e["done"], e["total"], e["message"]) for e in events if e["event"] == "progress"]
    assert [m for _, _, m in progress] == ["reading CT", "loading the model", "absent (1/3)", "L1 (2/3)",
                                           "outside (3/3)", "done"]
    assert [d for d, _, _ in progress] == list(range(6)) and {t for _, t, _ in progress} == {5}
    (result,) = [e for e in events if e["event"] == "result"]
    absent, l1, outside = result["results"]
    assert "label 99 is absent" in absent["error"] and "probability_malignant" not in absent
    assert "outside the CT" in outside["error"] and "probability_malignant" not in outside
    assert 0.0 <= l1["probability_malignant"] <= 1.0 and "error" not in l1
    main(["predict", "--ct", str(sample["ct"]), "--locations", str(locations), "--device", "cpu"])
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("absent: error: label 99 is absent")
    assert text[1].startswith(f"L1: probability_malignant {l1['probability_malignant']:.3f}")
    assert text[2].startswith("outside: error: ") and "Research use only" in text[-1]


def test_all_vertebrae_failing_is_exit_2_with_their_errors(sample, capsys):
    code, out, err = run_cli(capsys, "--ct", sample["ct"], "--mask", sample["mask"], "--label", 98, "--label", 99,
                             "--json")
    assert code == 2
    assert err.startswith("error: none of the 2 vertebrae") and err.count("\n") == 1 and "Traceback" not in err
    assert [r["error"].split(" (")[0] for r in json.loads(out)["results"]] == [
        f"label {v} is absent from the mask {sample['mask']}" for v in (98, 99)]
    # The protocol the Slicer module reads: the result with each vertebra's reason, then the error event.
    code = main(["--progress", "jsonl", "predict", "--ct", str(sample["ct"]), "--mask", str(sample["mask"]),
                 "--label", "98", "--label", "99", "--device", "cpu"])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 2 and [e["event"] for e in events[-2:]] == ["result", "error"]
    assert len(events[-2]["results"]) == 2 and events[-1]["message"].startswith("none of the 2 vertebrae")


@pytest.mark.parametrize("content, message", [
    ("[{\"name\": \"L1\", \"label\": 31", "not valid JSON"),
    ("{\"name\": \"L1\"}", "JSON list"),
    ("[]", "names no vertebra"),
    ("[{\"name\": \"L1\", \"point_lps\": [1, 2]}]", "three finite numbers"),
    ("[{\"name\": \"L1\", \"point_lps\": [1, 2, 3], \"mask\": \"m.nii.gz\", \"label\": 1}]", "exactly one"),
    ("[{\"name\": \"L1\", \"mask\": \"m.nii.gz\"}]", "no label"),
    ("[{\"name\": \"L1\", \"point_lps\": [1, 2, 3], \"lable\": 3}]", "unknown field"),
    ("[{\"point_lps\": [1, 2, 3]}]", "needs a name"),
    ("[{\"name\": \"L1\", \"point_lps\": [1, 2, 3], \"heatmap\": \"h.png\"}]", "heatmap must name"),
    ("[{\"name\": \"a\", \"point_lps\": [1, 2, 3], \"heatmap\": \"h.nii.gz\"}, "
     "{\"name\": \"b\", \"point_lps\": [1, 2, 3], \"heatmap\": \"./h.nii.gz\"}]", "write the same file"),
    ("vertebra,point_lps\nL1,\"1,2,3\"\n", "header row naming 'name'"),
    ("name,point_lps\nL1,1,2,3\n", "line 2: 4 cells under a header of 2 columns (quote a cell"),
    # taken in silence before: the last of a key given twice, the last of a column named twice, a list or a
    # number as a name, a newline in a name (it split the error line), label 0 (failed only at run time)
    ("[{\"name\": \"L1\", \"point_lps\": [1, 2, 3], \"point_lps\": [4, 5, 6]}]",
     "the key 'point_lps' appears twice in one object"),
    ("name,point_lps,name\nL1,\"1,2,3\",X\n", "names the column 'name' twice"),
    ("[{\"name\": [\"a\"], \"point_lps\": [1, 2, 3]}]", "name must be text, got ['a']"),
    ("[{\"name\": \"L1\\nerror: fake\", \"point_lps\": [1, 2, 3]}]", "holds a control character"),
    ("[{\"name\": \"L1\", \"mask\": \"m.nii.gz\", \"label\": 0}]", "label 0 is not a vertebra's label"),
    ("[{\"name\": \"L1\", \"mask\": \"m.nii.gz\", \"label\": 99999999999999999999999}]", "is not a vertebra's"),
    # a views folder is written as a whole: another entry's heatmap or views inside it were lost or refused
    ("[{\"name\": \"B\", \"point_lps\": [1, 2, 3], \"heatmap\": \"v/h.nii.gz\"}, "
     "{\"name\": \"A\", \"point_lps\": [1, 2, 3], \"views\": \"v\"}]", "lies inside vertebrae.txt entry 2 (A) views"),
    ("[{\"name\": \"B\", \"point_lps\": [1, 2, 3], \"views\": \"w/sub\"}, "
     "{\"name\": \"A\", \"point_lps\": [1, 2, 3], \"views\": \"w\"}]", "which this run writes as a whole"),
    ("[{\"name\": \"a\", \"point_lps\": [1, 2, 3], \"heatmap\": \"L1.nii.gz\"}, "
     "{\"name\": \"b\", \"point_lps\": [1, 2, 3], \"heatmap\": \"l1.nii.gz\"}]", "differ only by letter case"),
    ("[{\"name\": \"L1\", \"box_lps\": [[1, 2, 3]]}]", "box_lps must be two corners"),
    ("[{\"name\": \"L1\", \"box_lps\": [[1, 2, 3], [4, 5]]}]", "box_lps corner must be three finite"),
    ("[{\"name\": \"L1\", \"box_lps\": [[1, 2, 3], [4, 5, 6]], \"point_lps\": [1, 2, 3]}]", "exactly one"),
    # two results named L1, one MVCF and one OVCF, could not be told apart
    ("[{\"name\": \"L1\", \"point_lps\": [1, 2, 3]}, {\"name\": \"l1 \", \"point_lps\": [4, 5, 6]}]",
     "entries 1 and 2 are both named 'L1' / 'l1': their results could not be told apart"),
])
def test_a_bad_locations_file_is_one_error_line_and_writes_nothing(sample, tmp_path, capsys, content, message):
    locations = tmp_path / "vertebrae.txt"
    locations.write_text(content)
    before = sorted(tmp_path.iterdir())
    code, out, err = run_cli(capsys, "--ct", sample["ct"], "--locations", locations, "--json")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert sorted(tmp_path.iterdir()) == before


def test_several_vertebra_options_that_do_not_fit_together(sample, tmp_path, capsys):
    locations = tmp_path / "v.json"
    locations.write_text(json.dumps([{"name": "L1", "mask": str(sample["mask"]), "label": 31}]))
    for args, message in ((["--locations", tmp_path / "missing.json"], "not found"),
                          (["--locations", locations, "--label", 31], "--label applies only with --mask"),
                          (["--locations", locations, "--heatmap", tmp_path / "h.nii.gz"], "--heatmap names one"),
                          (["--mask", sample["mask"], "--label", 31, "--label", 30, "--heatmap",
                            tmp_path / "h.nii.gz"], "--heatmap names one")):
        code, out, err = run_cli(capsys, "--ct", sample["ct"], *args)
        assert code == 2 and out == "" and message in err and err.count("\n") == 1, (args, err)
    code, _, err = run_cli(capsys, "--ct", sample["ct"], "--locations", locations, "--mask", sample["mask"])
    assert code == 2 and "not allowed with" in err   # argparse: the vertebra options exclude each other
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.json"]


def test_too_many_locations_and_a_label_twice_are_refused(sample, tmp_path, capsys, monkeypatch):
    """200,000 entries ran to 7 GB and did not end; `--label 31 --label 31` classified L1 twice under one name;
    `views --label 31 --label 30` took the last in silence."""
    locations = tmp_path / "v.json"
    locations.write_text(json.dumps([{"name": f"v{i}", "point_lps": [1, 2, 3]} for i in range(4)]))
    monkeypatch.setenv("MVCF_MAX_LOCATIONS", "3")
    code, out, err = run_cli(capsys, "--ct", sample["ct"], "--locations", locations)
    assert code == 2 and "lists 4 vertebrae" in err and "MVCF_MAX_LOCATIONS" in err and err.count("\n") == 1
    code, out, err = run_cli(capsys, "--ct", sample["ct"], "--mask", sample["mask"], "--label", 31, "--label", 31)
    assert code == 2 and "--label 31 is given twice" in err
    code = main(["--progress", "none", "views", "--ct", str(sample["ct"]), "--mask", str(sample["mask"]),
                 "--label", "31", "--label", "30", "--out", str(tmp_path / "views")])
    assert code == 2 and "--label is given 2 times; this command reads one vertebra" in capsys.readouterr().err
    assert not (tmp_path / "views").exists()


def test_a_mask_with_the_cts_grid_but_a_moved_header_is_said(sample, tmp_path, capsys):
    """The sample mask with its origin moved 30 mm (a lost header) put L1's centroid on T12 and flipped the
    call with no word; now a warning says so, and a centroid outside the CT says why it may be."""
    import SimpleITK as sitk

    mask = sitk.ReadImage(str(sample["mask"]))
    mask.SetOrigin(tuple(np.asarray(mask.GetOrigin()) + [0.0, 0.0, 30.0]))
    sitk.WriteImage(mask, str(tmp_path / "moved.nii.gz"))
    code, out, err = run_cli(capsys, "--ct", sample["ct"], "--mask", tmp_path / "moved.nii.gz", "--label", 31,
                             "--json")
    assert code == 0, err
    assert any("moved.nii.gz has the CT's size and spacing but an origin 30.0 mm away" in w
               for w in json.loads(out)["warnings"])
    half = sitk.ReadImage(str(sample["mask"]))   # half a 3 mm voxel: the docs promise it is said; it was not
    half.SetOrigin(tuple(np.asarray(half.GetOrigin()) + [0.0, 0.0, 1.5]))
    sitk.WriteImage(half, str(tmp_path / "half.nii.gz"))
    code, out, err = run_cli(capsys, "--ct", sample["ct"], "--mask", tmp_path / "half.nii.gz", "--label", 31,
                             "--json")
    assert code == 0 and any("half.nii.gz has the CT's size and spacing but an origin 1.5 mm away" in w
                             for w in json.loads(out)["warnings"]), err
    mask.SetOrigin(tuple(np.asarray(mask.GetOrigin()) + [0.0, 0.0, 3000.0]))
    sitk.WriteImage(mask, str(tmp_path / "far.nii.gz"))
    code, out, err = run_cli(capsys, "--ct", sample["ct"], "--mask", tmp_path / "far.nii.gz", "--label", 31)
    assert code == 2 and "is outside the CT" in err and "its header was lost or rewritten" in err
    code, out, err = run_cli(capsys, "--ct", sample["ct"], "--mask", sample["mask"], "--label", 31, "--json")
    assert not any("size and spacing" in w for w in json.loads(out)["warnings"])
    reference = json.loads(out)
    sitk.WriteImage(sitk.DICOMOrient(sitk.ReadImage(str(sample["mask"])), "LPS"), str(tmp_path / "lps.nii.gz"))
    code, out, err = run_cli(capsys, "--ct", sample["ct"], "--mask", tmp_path / "lps.nii.gz", "--label", 31,
                             "--json")   # the same voxels in LPS order (a RAS CT): not a moved header
    result = json.loads(out)
    assert code == 0 and not any("size and spacing" in w for w in result["warnings"]), result["warnings"]
    assert result["probability_malignant"] == pytest.approx(reference["probability_malignant"], abs=1e-6)


def test_predict_many_reports_each_vertebra_and_stops_when_asked(sample):
    from mvcf.errors import Cancelled
    from mvcf.locations_file import VertebraQuery
    from mvcf.predict import predict_many
    from mvcf.read_ct import read_ct

    ct = read_ct(sample["ct"])
    queries = [VertebraQuery(name=n, mask=sample["mask"], label=v) for n, v in (("L1", 31), ("L2", 30), ("L3", 29))]
    calls = []

    def on_progress(done, total, message):
        calls.append((done, total, message))

    with pytest.raises(Cancelled):
        predict_many(ct, queries, device="cpu", on_progress=on_progress, should_cancel=lambda: len(calls) >= 2)
    assert calls == [(0, 3, "L1 (1/3)"), (1, 3, "L2 (2/3)")]


def test_location_warnings_come_first_in_the_prediction(sample):
    from dataclasses import replace

    from mvcf.locate import from_mask
    from mvcf.predict import predict_ct
    from mvcf.read_ct import read_ct, read_mask

    ct = read_ct(sample["ct"])
    location = replace(from_mask(ct, read_mask(sample["mask"]), 31), warnings=["refine: location kept"])
    warnings = predict_ct(ct, location, device="cpu").warnings
    assert warnings[0] == "refine: location kept" and any("synthetic" in w for w in warnings[1:])


@pytest.mark.parametrize("several", [False, True])
def test_an_interrupted_report_takes_the_finished_heatmaps_away_too(sample, tmp_path, monkeypatch, capsys, several):
    """Ctrl-C while the case report is written, after the heatmaps (and views) were: exit 130 and nothing of
    the run is left, neither the heatmaps nor the folders made for them (the sweep found them left)."""
    from mvcf.cli import outputs as case_outputs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(case_outputs, "_write", interrupted)
    (tmp_path / "mine.txt").write_text("mine", encoding="utf-8")
    if several:
        locations = tmp_path / "vertebrae.csv"
        locations.write_text("name,mask,label,heatmap,views\n"
                             f"L1,{sample['mask']},31,{tmp_path / 'new' / 'L1.nii.gz'},{tmp_path / 'v' / 'L1'}\n"
                             f"L2,{sample['mask']},30,{tmp_path / 'new' / 'L2.nii.gz'},{tmp_path / 'v' / 'L2'}\n")
        where = ["--locations", str(locations)]
        left = ["mine.txt", "vertebrae.csv"]
    else:
        where = ["--mask", str(sample["mask"]), "--label", "31", "--heatmap", str(tmp_path / "new" / "h.nii.gz")]
        left = ["mine.txt"]
    code = main(["--progress", "none", "predict", "--ct", str(sample["ct"]), *where, "--device", "cpu",
                 "--report", str(tmp_path / "report")])
    assert code == 130 and capsys.readouterr().err.strip().splitlines()[-1] == "error: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == left


def test_a_locations_heatmap_that_names_the_ct_is_called_an_input(sample, tmp_path, capsys):
    """It was refused as 'not written by mvcf', true but beside the point: it is this run's input."""
    locations = tmp_path / "v.csv"
    locations.write_text(f"name,mask,label,heatmap\nL1,{sample['mask']},31,{sample['ct']}\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "--ct", sample["ct"], "--locations", locations)
    assert code == 2 and out == "" and "is an input of this run" in err and err.count("\n") == 1, err


def test_a_prediction_on_a_scan_the_model_was_trained_on_says_so(sample, tmp_path, capsys):
    """The card lists the scans the model learned from (training_scans); evaluate refused to call such a test
    independent, but predict, a locations file and screen gave the remembered probability as an estimate
    without a word. A copy of the CT under another name is the same scan; an edited copy is not."""
    import shutil

    from mvcf.predict import default_model_path
    from mvcf.training_scans import scan_digest

    model = tmp_path / "model"
    shutil.copytree(default_model_path(), model)
    card = json.loads((model / "model.json").read_text(encoding="utf-8"))
    assert "this CT" not in json.dumps(card)
    copy = tmp_path / "copy_of_the_ct.nii.gz"
    shutil.copyfile(sample["ct"], copy)
    card["training_scans"]["digests"] = sorted([*card["training_scans"]["digests"], scan_digest(sample["ct"])])
    (model / "model.json").write_text(json.dumps(card), encoding="utf-8")
    said = "this CT is one the model was trained on"
    base = ["--progress", "none", "predict", "--mask", str(sample["mask"]), "--label", "31", "--device", "cpu",
            "--json"]
    for ct, model_dir, expected in ((copy, model, True), (sample["ct"], default_model_path(), False)):
        assert main([*base, "--ct", str(ct), "--model", str(model_dir)]) == 0
        warnings = json.loads(capsys.readouterr().out)["warnings"]
        assert any(said in w for w in warnings) is expected, warnings
    locations = tmp_path / "locations.json"
    locations.write_text(json.dumps([{"name": "L1", "mask": str(sample["mask"]), "label": 31},
                                     {"name": "L2", "mask": str(sample["mask"]), "label": 30}]))
    assert main(["--progress", "none", "predict", "--ct", str(copy), "--locations", str(locations), "--model",
                 str(model), "--device", "cpu", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [any(said in w for w in r["warnings"]) for r in results] == [True, True]
    assert main(["--progress", "none", "screen", "--ct", str(copy), "--seg", str(sample["mask"]), "--model",
                 str(model), "--device", "cpu", "--json"]) == 0
    assert any(said in w for w in json.loads(capsys.readouterr().out)["warnings"])
    import SimpleITK as sitk

    sitk.WriteImage(sitk.ReadImage(str(sample["ct"])), str(tmp_path / "exported.nrrd"))   # other bytes
    assert main([*base, "--ct", str(tmp_path / "exported.nrrd"), "--model", str(model)]) == 0
    assert said not in capsys.readouterr().out


def test_a_locations_file_takes_a_box_as_a_slicer_roi_gives_it(sample, tmp_path, capsys):
    """VertebraQuery wrote a box as `box_lps`, which no locations file could hold (unknown field), so the
    Slicer panel sent an ROI's centre alone. A box in JSON or CSV is the vertebra at its centre, with the box
    as its extent."""
    from mvcf.locate import from_mask
    from mvcf.locations_file import read_locations
    from mvcf.read_ct import read_ct, read_mask

    ct = read_ct(sample["ct"])
    centre = from_mask(ct, read_mask(sample["mask"]), 31).center_lps
    low, high = centre - [20.0, 20.0, 15.0], centre + [20.0, 20.0, 15.0]
    (tmp_path / "boxes.json").write_text(json.dumps([{"name": "L1", "box_lps": [low.tolist(), high.tolist()]}]))
    (tmp_path / "boxes.csv").write_text("name,box_lps\nL1,\"" + ",".join(f"{v:.6f}" for v in [*low, *high]) +
                                        "\"\n")
    for name in ("boxes.json", "boxes.csv"):
        (query,) = read_locations(tmp_path / name)
        np.testing.assert_allclose(query.box, (low, high), atol=1e-5)
    code = main(["--progress", "none", "predict", "--ct", str(sample["ct"]), "--locations",
                 str(tmp_path / "boxes.json"), "--device", "cpu", "--json"])
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert code == 0 and result["center_lps"] == pytest.approx(centre.tolist(), abs=1e-6)
