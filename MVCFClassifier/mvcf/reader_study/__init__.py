"""Run a reader study, not only analyse it: plan -> blinded reader packages -> reading (Slicer panel) ->
collect -> ORH report, plus a Roe–Metz simulation to size the study beforehand.

One step per file, in the order of the work:
    scale.py         the rating scale a study uses (1–5 confidence and/or 0–100 probability) and its checks
    blinding.py      opaque case IDs, de-identified CT copies, and the check that nothing leaks into a package
    model_outputs.py the model's probability, call and heatmap for the aided round (real model, plan time)
    plan.py          who reads which case in which round, in which order; key file kept apart
    packages.py      the reader package on disk: write, open (for the right reader only), verify
    ratings.py       the reader's answers, saved atomically after every case; resume after a crash
    collect.py       answers + key -> the long format `mvcf stats mrmc` reads
    report.py        ORH analysis (mvcf.stats), per-reader ROC curves, the paper-style table
    simulate.py      Roe–Metz readers and the power of a planned readers x cases design

The core never imports slicer/qt; the reading panel (MVCFReaderStudy module) drives packages + ratings.
"""
