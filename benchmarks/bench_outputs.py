"""Benchmark: what the case report and the DICOM outputs cost per CT, on the shipped sample CT written as a
DICOM series (112 slices) with L1-L5 classified.

Times, in one process after the prediction (model loaded, torch imported): the Grad-CAM heatmaps, the key
images, the report (HTML + PDF), the SR, the Secondary Captures and the Parametric Maps. The SR is also
built the way it first was (image library of every slice, full headers as evidence) as the baseline; the
ratio baseline / now says what leaving the library out saves. Prints (and with --out writes) one JSON object.

    python benchmarks/bench_outputs.py [--vertebrae L1,L2,L3,L4,L5] [--out F]
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

from report import emit, median_time

# The test helper that writes a CTImage as a plain CT series (the benchmark needs the same input the tests use).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing" / "Python"))


def _timed(fn):
    timing = median_time(fn, 1)
    return timing.result, round(timing.median_s, 3)


def _baseline_sr(source, results, model):
    """The SR as first built: TID 1500 with an image library of every source slice, full headers as evidence."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from mvcf.dicom import sr as sr_module

    algorithm = hd.sr.AlgorithmIdentification(name=model["name"], version=model["version"])
    groups = [sr_module._group(hd, codes, r, source, algorithm) for r in results]
    observer = hd.sr.ObserverContext(observer_type=codes.DCM.Device,
                                     observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                                         uid=hd.UID()))
    content = hd.sr.MeasurementReport(observation_context=hd.sr.ObservationContext(observer_device_context=observer),
                                      procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
                                      imaging_measurements=groups, referenced_images=source.datasets)
    return hd.sr.Comprehensive3DSR(evidence=source.datasets, content=content, series_instance_uid=hd.UID(),
                                   series_number=1, sop_instance_uid=hd.UID(), instance_number=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vertebrae", default="L1,L2,L3,L4,L5")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)

    from dicom_fixtures import write_ct_series

    from mvcf.dicom.pm import build_pm
    from mvcf.dicom.sc import build_sc
    from mvcf.dicom.source import load_source
    from mvcf.dicom.sr import build_sr
    from mvcf.explain import explain
    from mvcf.inference import load_model
    from mvcf.locate import VertebraQuery, from_point
    from mvcf.predict import predict_many
    from mvcf.read_ct import read_ct
    from mvcf.report import case_context, source_rows, write_report
    from mvcf.report.images import key_images
    from mvcf.resources import SAMPLE_VERTEBRA_LABELS, sample_ct_paths

    names = [v.strip() for v in args.vertebrae.split(",") if v.strip()]
    paths = sample_ct_paths()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = write_ct_series(read_ct(paths["ct"]), tmp / "ct")
        ct = read_ct(folder)
        source, t_source = _timed(lambda: load_source(folder))
        bundle = load_model(None, "cpu")
        queries = [VertebraQuery(name=n, mask=paths["mask"], label=SAMPLE_VERTEBRA_LABELS[n]) for n in names]
        results, t_predict = _timed(lambda: predict_many(ct, queries, bundle, "cpu"))
        heats, t_heat = _timed(lambda: [explain(ct, from_point(ct, r["center_lps"], "lps"), bundle, "cpu")[0]
                                        for r in results])
        images, t_images = _timed(lambda: [key_images(ct, r["center_lps"], h, r["name"], "Research use only")
                                           for r, h in zip(results, heats)])
        pngs = {f"{r['name']}_{im.plane}.png": im.png for r, ims in zip(results, images) for im in ims}
        shown = {i: [{"src": f"{r['name']}_{im.plane}.png", "caption": im.caption} for im in ims]
                 for i, (r, ims) in enumerate(zip(results, images))}
        context = case_context(results, shown, bundle.card, source_rows(source.identity(), str(folder)))
        _, t_report = _timed(lambda: write_report(tmp / "report", context, pngs, {"results": results}))
        model = bundle.identity()
        _, t_sr = _timed(lambda: build_sr(source, results, model))
        _, t_sr_baseline = _timed(lambda: _baseline_sr(source, results, model))
        _, t_sc = _timed(lambda: build_sc(source, [(im, r["center_lps"]) for r, ims in zip(results, images)
                                                   for im in ims]))
        _, t_pm = _timed(lambda: build_pm(source, [(h, r["name"]) for r, h in zip(results, heats)], model, "bench"))
    emit({"benchmark": "outputs", "vertebrae": names, "source_slices": len(source.datasets),
          "seconds": {"load_source_headers": t_source, "predict_many": t_predict, "grad_cam": t_heat,
                      "key_images": t_images, "report_html_pdf": t_report, "sr": t_sr, "sc": t_sc, "pm": t_pm,
                      "sr_baseline_with_image_library": t_sr_baseline},
          "ratio_sr_baseline_over_now": round(t_sr_baseline / max(t_sr, 1e-9), 2),
          "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()}},
         args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
