"""One markdown table from the JSON in benchmarks/results/ (what the README quotes): each row a figure,
the baseline it is compared with (measured in the same run), the ratio, the target and whether it is met.

    python benchmarks/summary.py            # writes benchmarks/results/summary.md, the README's copy, prints it

The README holds the table between the lines `<!-- bench-table -->` and `<!-- /bench-table -->`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
MARKERS = ("<!-- bench-table -->", "<!-- /bench-table -->")
Row = tuple[str, str, str, str, str, str]


def _s(value: float) -> str:
    return f"{value:.3g} s" if value < 10 else f"{value:.0f} s"


def _met(ok: Optional[bool]) -> str:
    return "–" if ok is None else ("yes" if ok else "**no**")


def _cold(d: dict) -> list[Row]:
    p = d["processes"]
    ours, base, torch_ = (p[k]["median_s"] for k in ("predict_onnxruntime", "import_torch_monai", "predict_torch"))
    return [("cold `mvcf predict`, L1 (ONNX Runtime)", f"{_s(ours)}, {p['predict_onnxruntime']['peak_rss_mib']:.0f} MiB",
             f"`import torch, monai` {_s(base)}", f"{ours / base:.2f}×", "≤ 0.5×", _met(ours / base <= 0.5)),
            ("cold `mvcf predict --backend torch`, L1", f"{_s(torch_)}, {p['predict_torch']['peak_rss_mib']:.0f} MiB",
             f"ONNX Runtime path {_s(ours)}", f"{torch_ / ours:.1f}× slower", "–", "–")]


def _worker(d: dict) -> list[Row]:
    rows = []
    for name, label in (("classify_only", "classification only"), ("views_and_heatmap", "+ views and Grad-CAM")):
        a = d["applies"].get(name)
        if isinstance(a, dict):
            r = a["ratio_second_over_first"]
            rows.append((f"warm worker: second Apply, L1, {label}", _s(a["second_apply_s"]),
                         f"first Apply {_s(a['first_apply_s'])}", f"{r:.3f}×", "≤ 0.1×", _met(r <= 0.1)))
    e = d.get("training_evaluation")
    if isinstance(e, dict):
        rows.append((f"warm worker: Training module's second Evaluate model ({e['cases']} cases)",
                     _s(e["second_evaluation_s"]), f"first evaluation {_s(e['first_evaluation_s'])}",
                     f"{e['ratio_second_over_first']:.2f}×", "–", "–"))
    m = d["seventeen_vertebrae"]
    rows.append(("warm worker: 17 vertebrae, one request", _s(m["warm_request_s"]),
                 f"1 vertebra {_s(m['one_vertebra_warm_request_s'])}",
                 f"{m['warm_request_s'] / m['one_vertebra_warm_request_s']:.1f}×", "≤ 1 s", _met(m["meets_target"])))
    return rows


def _batched(d: dict) -> list[Row]:
    return [(f"17 vertebrae batched ({name})", _s(b["batched_s"]), f"one by one {_s(b['one_by_one_s'])}",
             f"{b['ratio_one_by_one_over_batched']:.2f}× (forward alone {b['ratio_forward']:.2f}×)", "–", "–")
            for name, b in d["backends"].items()]


def _views(d: dict) -> list[Row]:
    rows = []
    for slices, v in d["sizes"].items():
        worst = min(v["modes"], key=lambda m: v["modes"][m]["ratio"])
        mem = v["memory"]
        rows.append((f"views, 512×512×{slices} CT (slowest mode: {worst})",
                     f"{v['modes'][worst]['ours_ms']:.0f} ms; views +{mem['views_extra_mib']:.0f} MiB over the "
                     f"{mem['ct_mib']:.0f} MiB CT", f"MONAI whole volume {v['modes'][worst]['baseline_ms'] / 1000:.1f} s",
                     f"{v['min_ratio']:.0f}×", "≥ 20×, ≤ tens of MB", _met(v["min_ratio"] >= 20 and mem["views_extra_mib"] < 100)))
    return rows


#: bf16 autocast would be worth its risk to the AUC only if it were clearly faster in every mode.
BF16_WORTH = 1.2


def _train(d: dict) -> list[Row]:
    rows = []
    for mode, m in d["modes"].items():
        bf = f"; bf16 {m['ratio_bf16_over_fp32']:.2f}× fp32" if "ratio_bf16_over_fp32" in m else ""
        rows.append((f"training throughput {mode}", f"{m['fp32_samples_per_s']:.1f} samples/s fp32",
                     "2.5d-orthogonal fp32", f"{m['ratio_fp32_over_2.5d_orthogonal']:.2f}×{bf}", "–", "–"))
    return rows


def bf16_decision(d: dict) -> str:
    """Whether CPU training should use bf16 autocast, from the interleaved fp32/bf16 throughput figures."""
    ratios = [m["ratio_bf16_over_fp32"] for m in d.get("modes", {}).values() if "ratio_bf16_over_fp32" in m]
    if not ratios:
        return "bf16 autocast: not measured (this CPU has no bf16 instructions); CPU training is float32."
    verdict = (f"worth an AUC check (every mode ≥ {BF16_WORTH}×)" if min(ratios) >= BF16_WORTH else
               f"CPU training stays float32: bf16 is not clearly faster in every mode (needs ≥ {BF16_WORTH}×), so "
               "it is not worth a change in the AUC, and `mvcf train` has no bf16 option")
    return f"bf16 autocast vs float32, same run, interleaved steps: {min(ratios):.2f}–{max(ratios):.2f}×; {verdict}."


def _demo(d: dict) -> list[Row]:
    cpu = f", {d['cpu_s'][0] / 60:.1f} CPU-min" if d.get("cpu_s") else ""
    stages = (d.get("stages_s") or [{}])[0]
    split = "; " + ", ".join(f"{k.replace('_s', '').replace('_', ' ')} {_s(v)}" for k, v in stages.items()) \
        if stages else ""
    return [("`mvcf demo`", f"{_s(d['median_s'])}{cpu}, {d.get('peak_rss_mib', 0):.0f} MiB{split}", "budget 300 s",
             f"{d['ratio_to_budget']:.2f}×", "≤ 5 min", _met(d["meets_target"]))]


def _delong(d: dict) -> list[Row]:
    return [(f"DeLong {d['cases']:,} cases × {d['models']} models", _s(d["ours_s"]),
             f"per-model structural components {_s(d['baseline_searchsorted_s'])}",
             f"{d['ratio_baseline_over_ours']:.1f}×", "< 1 s", _met(d["meets_target"]))]


def _mrmc(d: dict) -> list[Row]:
    return [(f"MRMC jackknife {d['readers']} readers × {d['modalities']} modalities × {d['cases']} cases",
             _s(d["ours_s"]), f"textbook jackknife {_s(d['baseline_textbook_jackknife_s'])}", f"{d['ratio']:.0f}×",
             "–", "–")]


def _heatmap(d: dict) -> list[Row]:
    return [(f"occlusion heatmap, L1, {name} ({r['occlusion_blocks']} blocks)", f"{r['occlusion_ms'] / 1000:.3g} s",
             f"Grad-CAM {r['gradcam_ms']:.0f} ms", f"{r['ratio_occlusion_over_gradcam']:.0f}× slower", "–", "–")
            for name, r in d["results"].items() if "gradcam_ms" in r]


def _overview(d: dict) -> list[Row]:
    t = d["seconds"]
    return [(f"whole-spine overview picture, sample CT ({d['located']} vertebrae)", _s(t["overview"]["median_s"]),
             f"the screen itself {_s(t['screen_baseline']['median_s'])}", f"{d['ratio_overview_over_screen']:.2f}×",
             "–", "–")]


FORMATTERS: dict[str, Callable[[dict], list[Row]]] = {
    "bench_cold_predict": _cold, "bench_worker": _worker, "bench_batched": _batched, "bench_views": _views,
    "bench_train_throughput": _train, "bench_demo": _demo, "bench_delong": _delong, "bench_mrmc": _mrmc,
    "bench_heatmap": _heatmap, "bench_overview": _overview}


def table(results: Path = RESULTS) -> str:
    lines = ["| figure | ours | baseline (same run) | ratio | target | met |", "|---|---|---|---|---|---|"]
    loads = []
    for name, formatter in FORMATTERS.items():
        path = results / f"{name}.json"
        if not path.is_file():
            continue
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        try:
            rows = formatter(data)
        except KeyError:  # a result file of an older layout
            continue
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        load = data.get("load_average_1min", data.get("load_average_1min_at_end"))
        if load is not None:
            loads.append(float(load))
    train = results / "bench_train_throughput.json"
    if train.is_file():
        lines += ["", bf16_decision(json.loads(train.read_text(encoding="utf-8")))]
    if loads:
        lines.append("")
        lines.append(f"1-minute load average when the benchmarks ended: {min(loads):.1f}–{max(loads):.1f} "
                     f"(other processes shared the cores; every ratio compares figures taken in the same run).")
    return "\n".join(lines) + "\n"


def quote_in_readme(text: str, readme: Path = README) -> bool:
    """Replace the README's copy of the table; False when the README has no markers."""
    if not readme.is_file():
        return False
    body = readme.read_text(encoding="utf-8")
    start, end = body.find(MARKERS[0]), body.find(MARKERS[1])
    if start < 0 or end < start:
        return False
    readme.write_text(body[:start + len(MARKERS[0])] + "\n" + text + body[end:], encoding="utf-8")
    return True


def main() -> int:
    text = table()
    (RESULTS / "summary.md").write_text(text, encoding="utf-8")
    quote_in_readme(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
