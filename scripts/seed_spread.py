#!/usr/bin/env python
"""How the synthetic study's external AUCs spread over generator seeds, against issue 16's windows.

    python scripts/seed_spread.py [--work W ...] [--no-docs] [--fresh] [--json docs/synthetic_seeds.json]
                                  [--plot docs/images/synth_seed_spread.png]

Reads the two-mode studies (2D, 2.5D-orthogonal and the baseline) that `scripts/synthetic_study.py` wrote:
the committed ones in docs/study_synthetic_standard/ (seed 0) and its seedN/ folders (unless --no-docs), and
every `study_seed<N>_2d+2.5d-orthogonal/study.json` under each --work folder (a seed found in both: the
--work run, named as such). Seeds already in --json that no study folder here holds are kept as they are
(unless --fresh): the seeds run elsewhere are recorded only there. Writes one record per seed (internal and external AUC with DeLong CIs per
model, the best CNN externally, whether each window holds) and a dot plot of the external AUCs with the
windows shaded, so the seed-to-seed spread can be seen next to the window's width.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "study_synthetic_standard"
STUDY = "study_seed{}_2d+2.5d-orthogonal"
#: issue 16's windows for the external AUC: the best CNN's and the transparent baseline's
CNN_WINDOW = (0.80, 0.92)
BASELINE_WINDOW = (0.65, 0.80)
BASELINE = "baseline-logistic"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def find_studies(works: list[Path], docs: bool) -> dict[int, tuple[Path, str]]:
    """{seed: (study.json, where it came from)}; a --work run replaces the committed one of its seed."""
    found: dict[int, tuple[Path, str]] = {}
    if docs:
        if (DOCS / "study.json").is_file():
            found[0] = (DOCS / "study.json", "docs (committed)")
        for folder in DOCS.glob("seed*"):
            match = re.fullmatch(r"seed(\d+)", folder.name)
            if match and (folder / "study.json").is_file():
                found[int(match.group(1))] = (folder / "study.json", "docs (committed)")
    for work in works:
        for path in work.glob(STUDY.format("*") + "/study.json"):
            match = re.fullmatch(re.escape(STUDY).replace(r"\{\}", r"(\d+)"), path.parent.name)
            if match:
                found[int(match.group(1))] = (path, f"run on {_cpu()}")
    return dict(sorted(found.items()))


def _auc(test: dict) -> dict:
    return {"auc": test.get("auc"), "ci_delong": test.get("auc_ci_delong"), "n": test.get("n")}


def seed_record(seed: int, path: Path, origin: str) -> dict:
    """One seed's AUCs, its best CNN externally and the two windows' verdicts."""
    study = json.loads(path.read_text(encoding="utf-8"))
    models = {m["name"]: {"internal": _auc(m["internal_test"]), "external": _auc(m["external_test"])}
              for m in study["models"]}
    if BASELINE not in models or len(models) < 2:
        raise SystemExit(f"{path}: not a study of CNNs and the baseline (models: {', '.join(models)})")
    cnns = {name: m for name, m in models.items() if name != BASELINE}
    best = max(cnns, key=lambda name: cnns[name]["external"]["auc"])
    best_auc, base_auc = cnns[best]["external"]["auc"], models[BASELINE]["external"]["auc"]
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else Path("WORK", *path.parts[-2:])
    return {"seed": seed, "source": origin, "study": shown.as_posix(),
            "models": models, "best_cnn": best, "best_cnn_external_auc": best_auc,
            "baseline_external_auc": base_auc,
            "external_below_internal_every_model": all(m["external"]["auc"] < m["internal"]["auc"]
                                                       for m in models.values()),
            "best_cnn_in_window": CNN_WINDOW[0] <= best_auc <= CNN_WINDOW[1],
            "baseline_in_window": BASELINE_WINDOW[0] <= base_auc <= BASELINE_WINDOW[1]}


def summarise(records: list[dict]) -> dict:
    """Mean and SD of the two external AUCs and how many seeds meet each criterion."""
    def spread(key: str) -> dict:
        values = [r[key] for r in records]
        return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
                "min": min(values), "max": max(values)}

    return {"seeds": len(records), "best_cnn_external_auc": spread("best_cnn_external_auc"),
            "baseline_external_auc": spread("baseline_external_auc"),
            "both_windows": sum(r["best_cnn_in_window"] and r["baseline_in_window"] for r in records),
            "external_below_internal_every_model": sum(r["external_below_internal_every_model"] for r in records),
            "windows": {"best_cnn": CNN_WINDOW, "baseline": BASELINE_WINDOW}}


def plot(records: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.6), dpi=110)
    for (lo, hi), colour, label in ((CNN_WINDOW, "tab:blue", "best CNN window"),
                                    (BASELINE_WINDOW, "tab:orange", "baseline window")):
        ax.axhspan(lo, hi, color=colour, alpha=0.12, label=label)
    for offset, key, model_of, colour, label in (
            (-0.12, "best_cnn_external_auc", lambda r: r["best_cnn"], "tab:blue", "best CNN (DeLong 95% CI)"),
            (0.12, "baseline_external_auc", lambda r: BASELINE, "tab:orange", "baseline (DeLong 95% CI)")):
        xs = [r["seed"] + offset for r in records]
        ys = [r[key] for r in records]
        cis = [r["models"][model_of(r)]["external"]["ci_delong"] or [y, y] for r, y in zip(records, ys)]
        ax.errorbar(xs, ys, yerr=[[y - c[0] for y, c in zip(ys, cis)], [c[1] - y for y, c in zip(ys, cis)]],
                    fmt="o", color=colour, ms=5, capsize=2, lw=1, label=label)
    for r in records:
        if not (r["best_cnn_in_window"] and r["baseline_in_window"]):
            ax.annotate("out", (r["seed"], 0.985), ha="center", va="top", fontsize=8, color="firebrick")
    ax.set_xticks([r["seed"] for r in records],
                  [f"{r['seed']}\n(standard)" if r["seed"] == 0 else str(r["seed"]) for r in records], fontsize=8)
    ax.set_xlabel("generator seed (320 cases: 160 internal, 160 external)")
    ax.set_ylabel("external AUC")
    ax.set_ylim(0.55, 1.0)
    ax.set_title("Synthetic study, external site: one point per generator seed (synthetic data, not clinical)",
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, frameon=False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, action="append", default=[],
                        help="a scripts/synthetic_study.py --work folder (repeatable)")
    parser.add_argument("--no-docs", action="store_true", help="leave out the studies committed in docs/")
    parser.add_argument("--fresh", action="store_true", help="drop the seeds of --json that no study here holds")
    parser.add_argument("--json", type=Path, default=REPO / "docs" / "synthetic_seeds.json")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "images" / "synth_seed_spread.png")
    args = parser.parse_args(argv)
    studies = find_studies(args.work, not args.no_docs)
    if not studies:
        print("error: no study found (give --work folders of scripts/synthetic_study.py)", file=sys.stderr)
        return 2
    found = {seed: seed_record(seed, path, origin) for seed, (path, origin) in studies.items()}
    kept = {} if args.fresh or not args.json.is_file() else {   # seeds whose work folder is not at hand
        r["seed"]: r for r in json.loads(args.json.read_text(encoding="utf-8"))["seeds"] if r["seed"] not in found}
    records = [r for _, r in sorted({**kept, **found}.items())]
    summary = summarise(records)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"summary": summary, "seeds": records}, indent=1) + "\n", encoding="utf-8")
    plot(records, args.plot)
    s = summary
    print(f"{s['seeds']} seeds: both windows on {s['both_windows']}, every model worse externally on "
          f"{s['external_below_internal_every_model']}; best CNN external {s['best_cnn_external_auc']['mean']:.3f} "
          f"(SD {s['best_cnn_external_auc']['sd'] or 0:.3f}), baseline {s['baseline_external_auc']['mean']:.3f} "
          f"(SD {s['baseline_external_auc']['sd'] or 0:.3f}); wrote {args.json} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
