"""Training: one network per fold (AdamW, warmup + cosine schedule, class-weighted loss, early stopping on
validation AUC), then the fold models as one ensemble bundle with a Youden threshold frozen from validation.

Reproducible on CPU: the network's initial weights come from (seed, fold), and every epoch reseeds dropout,
shuffling and augmentation from (seed, fold, epoch). A checkpoint written (atomically) after every epoch
therefore resumes to exactly the weights an uninterrupted run reaches. On CUDA the loop uses mixed
precision; with WORLD_SIZE > 1 (started by `torchrun`) it runs PyTorch DDP, one process per GPU, and only
rank 0 writes files.
"""
from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from mvcf.errors import MVCFError
from mvcf.fileio import atomic_open, atomic_path
from mvcf.progress import CancelCheck, ProgressCallback, check_cancel

MetricsCallback = Callable[..., None]
LogCallback = Callable[[str], None]


@dataclass
class TrainConfig:
    arch: str = "resnet10"
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    patience: int = 8
    dropout: float = 0.2
    mil_pooling: str = "mean"
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise MVCFError("--epochs must be at least 1")
        if self.batch_size < 2:
            raise MVCFError("batch size must be at least 2 (batch normalisation)")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise MVCFError(f"--device must be auto, cpu or cuda, got {self.device!r}")


def resolve_device(name: str = "auto") -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MVCFError("--device cuda asked for, but no CUDA device is available (use --device cpu or auto)")
    return name


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None   # "nccl" or "gloo" once the process joined torchrun's group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.backend is not None


def init_distributed(device: str) -> DistInfo:
    """Join the process group torchrun set up (it sets WORLD_SIZE and MASTER_ADDR, also for one process, so a
    one-GPU torchrun launch runs the same DDP code as several); a no-op for a plain process."""
    if "WORLD_SIZE" not in os.environ or "MASTER_ADDR" not in os.environ:
        return DistInfo()
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                    backend=str(dist.get_backend()))


def _seed(*parts: Any) -> int:
    import hashlib

    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16)


@dataclass
class FoldResult:
    fold: int
    model: Any
    best_epoch: int
    best_val_auc: float
    epochs_run: int
    history: list[dict[str, float]]
    val_prob: np.ndarray
    seconds: float


def predict_arrays(model, arrays: Sequence[np.ndarray], device: str = "cpu", batch_size: int = 32,
                   logits: bool = True, should_cancel: Optional[CancelCheck] = None) -> np.ndarray:
    """Probabilities of MVCF for a list of model inputs (a network returning logits, or an Ensemble)."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(arrays), batch_size):
            check_cancel(should_cancel)
            x = torch.as_tensor(np.stack(arrays[start:start + batch_size])).to(device)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=device.startswith("cuda")):
                y = model(x).float()
            out.append((torch.sigmoid(y) if logits else y).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from mvcf.stats import auc

    return float(auc(y, p)) if 0 < y.sum() < y.size else float("nan")


def _write_log(path: Path, history: list[dict[str, float]]) -> None:
    if not history:
        return
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _load_checkpoint(path: Path) -> Optional[dict[str, Any]]:
    import torch

    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is the user's to remove
        raise MVCFError(f"cannot resume: checkpoint {path} is unreadable ({type(exc).__name__})") from None


def changed_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The keys whose values differ between two settings dicts (present in only one counts), sorted."""
    return sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))


#: Settings a resumed run may change: where it runs, not what it computes.
_RESUMABLE_CHANGES = ("device", "num_workers")


def _check_same_run(state: dict[str, Any], config: TrainConfig, network_config: dict[str, Any],
                    path: Path) -> None:
    """Refuse to resume a checkpoint written with other training settings or another network/input shape:
    the result would be neither run."""
    saved = {k: v for k, v in (state.get("config") or {}).items() if k not in _RESUMABLE_CHANGES}
    current = {k: v for k, v in asdict(config).items() if k not in _RESUMABLE_CHANGES}
    changed = changed_settings(saved, current)
    network = changed_settings(state.get("network", network_config), network_config)
    if network:
        changed.append(f"network/view ({', '.join(network)})")
    if changed:
        raise MVCFError(f"cannot resume from {path}: it was written with other settings ({', '.join(changed)}); "
                        "use the same options, or another --out")


def train_fold(train_x: Sequence[np.ndarray], train_y: Sequence[int], val_x: Sequence[np.ndarray],
               val_y: Sequence[int], network_config: dict[str, Any], config: TrainConfig, work_dir: Path,
               fold: int = 0, resume: bool = False, on_step: Optional[Callable[[int, int, str], None]] = None,
               should_cancel: Optional[CancelCheck] = None, on_metrics: Optional[MetricsCallback] = None,
               dist_info: Optional[DistInfo] = None) -> FoldResult:
    """Train one network; returns the best-validation-AUC weights (on CPU) and its validation probabilities.

    `on_step(step, steps_total, message)` is called after every optimisation step; `should_cancel` is checked
    before every step (raises mvcf.errors.Cancelled); `on_metrics(**row)` once per epoch."""
    import torch
    import torch.nn as nn
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    from mvcf.dataset import CaseDataset
    from mvcf.models.networks import build_network

    dist_info = dist_info or DistInfo()
    device = resolve_device(config.device)
    if dist_info.enabled and device == "cuda":
        device = f"cuda:{dist_info.local_rank}"
    use_amp = bool(config.amp and device.startswith("cuda"))
    work_dir = Path(work_dir)
    checkpoint_path = work_dir / "checkpoint.pt"
    train_y = np.asarray(train_y, dtype=np.float32)
    val_y = np.asarray(val_y, dtype=np.float32)
    if train_y.sum() == 0 or train_y.sum() == train_y.size:
        raise MVCFError(f"fold {fold}: the training set holds only one class")

    torch.manual_seed(_seed(config.seed, fold, "init"))
    model = build_network(network_config).to(device)
    mode = network_config["mode"]
    dataset = CaseDataset(train_x, train_y, mode, augment=config.augment, seed=_seed(config.seed, fold, "aug"))
    batch_size = min(config.batch_size, len(dataset))
    drop_last = len(dataset) > batch_size
    if dist_info.enabled:
        sampler = DistributedSampler(dataset, num_replicas=dist_info.world_size, rank=dist_info.rank,
                                     shuffle=True, seed=_seed(config.seed, fold, "shuffle"), drop_last=drop_last)
        steps_per_epoch = len(sampler) // batch_size if drop_last else math.ceil(len(sampler) / batch_size)
    else:
        sampler = None
        steps_per_epoch = len(dataset) // batch_size if drop_last else math.ceil(len(dataset) / batch_size)
    steps_per_epoch = max(1, steps_per_epoch)
    total_steps = steps_per_epoch * config.epochs
    warmup = min(config.warmup_epochs * steps_per_epoch, max(total_steps - 1, 0))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    n_pos = float(train_y.sum())
    pos_weight = torch.tensor((train_y.size - n_pos) / n_pos, device=device)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    train_model = model
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[dist_info.local_rank] if device.startswith("cuda")
                                              else None)

    start_epoch, history, bad_epochs = 0, [], 0
    best = {"auc": -math.inf, "loss": math.inf, "epoch": 0}
    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if resume:
        state = _load_checkpoint(checkpoint_path)
        if state is not None:
            _check_same_run(state, config, network_config, checkpoint_path)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if use_amp and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            best_state = state["best_state"]
            best = dict(state["best"])
            start_epoch, history, bad_epochs = int(state["epoch"]), list(state["history"]), int(state["bad_epochs"])
            if state.get("done"):
                start_epoch = config.epochs

    stopped_early = False
    for epoch in range(start_epoch, config.epochs):
        if bad_epochs >= config.patience:
            stopped_early = True
            break
        started = time.perf_counter()
        torch.manual_seed(_seed(config.seed, fold, epoch, "dropout"))
        dataset.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
            loader_sampler = sampler
        else:
            generator = torch.Generator().manual_seed(_seed(config.seed, fold, epoch, "shuffle"))
            loader_sampler = RandomSampler(dataset, generator=generator)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=loader_sampler, drop_last=drop_last,
                            num_workers=config.num_workers, pin_memory=device.startswith("cuda"))
        train_model.train()
        losses = []
        for step, (x, y) in enumerate(loader):
            check_cancel(should_cancel)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                logits = train_model(x)
            loss = loss_fn(logits.float(), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(epoch * steps_per_epoch + step + 1, total_steps,
                        f"fold {fold} epoch {epoch + 1}/{config.epochs}")
        val_prob = predict_arrays(model, val_x, device, batch_size=max(batch_size, 32))
        with torch.no_grad():
            val_loss = float(nn.functional.binary_cross_entropy(
                torch.as_tensor(np.clip(val_prob, 1e-7, 1 - 1e-7)), torch.as_tensor(val_y)))
        val_auc = _auc(val_y, val_prob)
        improved = (val_auc > best["auc"] + 1e-9) or (val_auc >= best["auc"] - 1e-9 and val_loss < best["loss"]) \
            or (math.isnan(val_auc) and val_loss < best["loss"])
        if dist_info.enabled:
            import torch.distributed as dist

            decision = [improved]
            dist.broadcast_object_list(decision, src=0)
            improved = bool(decision[0])
        if improved:
            best = {"auc": val_auc if not math.isnan(val_auc) else -math.inf, "loss": val_loss, "epoch": epoch + 1}
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            bad_epochs = 0
        else:
            bad_epochs += 1
        row = {"fold": fold, "epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "val_loss": val_loss, "val_auc": val_auc, "lr": float(optimizer.param_groups[0]["lr"]),
               "seconds": time.perf_counter() - started}
        history.append(row)
        if on_metrics is not None:  # curve values only: the epoch's wall time stays in the CSV log
            on_metrics(**{k: v for k, v in row.items() if k != "seconds"})
        if dist_info.is_main:
            _write_log(work_dir / "log.csv", history)
            _save_checkpoint(checkpoint_path, {
                "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if use_amp else {},
                "best_state": best_state, "best": best, "bad_epochs": bad_epochs, "history": history,
                "config": asdict(config), "network": dict(network_config)})

    model.load_state_dict(best_state)
    model.to("cpu").eval()
    val_prob = predict_arrays(model, val_x, "cpu", batch_size=max(batch_size, 32))
    if dist_info.is_main:
        state = _load_checkpoint(checkpoint_path) or {}
        if state and not state.get("done"):
            state["done"] = True
            state["stopped_early"] = stopped_early
            _save_checkpoint(checkpoint_path, state)
    return FoldResult(fold=fold, model=model, best_epoch=int(best["epoch"]),
                      best_val_auc=float(best["auc"]) if best["auc"] > -math.inf else float("nan"),
                      epochs_run=len(history), history=history, val_prob=val_prob,
                      seconds=float(sum(r["seconds"] for r in history)))


@dataclass
class TrainRun:
    """What a cohort training run produced; `bundle_path` is None when no bundle was written."""

    mode: str
    bundle_path: Optional[Path]
    card: dict[str, Any]
    plan: Any
    ensemble: Any
    threshold: float
    internal_prob: dict[str, float]
    external_prob: dict[str, float]
    folds: list[FoldResult] = field(default_factory=list)
    train_seconds: float = 0.0
    parameters: int = 0
    inference_ms: float = 0.0


def data_summary(records: Sequence[Any], plan: Any = None) -> dict[str, Any]:
    """Counts per institution and class, patients, and the split sizes (for the model card)."""
    per_site: dict[str, dict[str, int]] = {}
    for r in records:
        site = per_site.setdefault(str(r.institution), {"MVCF": 0, "OVCF": 0})
        site["MVCF" if int(r.label) == 1 else "OVCF"] += 1
    out: dict[str, Any] = {"cases": len(records), "patients": len({r.patient_id for r in records}),
                           "per_institution": per_site}
    if plan is not None:
        out["external_institution"] = plan.external_institution
        out["n_folds"] = plan.n_folds
        out["folds"] = [{"fold": f.index, "train": len(f.train), "val": len(f.val), "test": len(f.test)}
                        for f in plan.folds]
        out["external_cases"] = len(plan.external)
    return out


def train_cohort(records: Sequence[Any], spec: Any, config: TrainConfig, out_dir: Optional[os.PathLike] = None,
                 n_folds: int = 5, train_folds: Optional[int] = None, external: Optional[str] = None,
                 views: Optional[dict[str, np.ndarray]] = None, cache_dir: Optional[os.PathLike] = None,
                 plan: Any = None, resume: bool = False, name: str = "mvcf-model", version: str = "1",
                 description: str = "", on_progress: Optional[ProgressCallback] = None,
                 should_cancel: Optional[CancelCheck] = None, on_metrics: Optional[MetricsCallback] = None,
                 write_bundle: bool = True, card_extra: Optional[dict[str, Any]] = None) -> TrainRun:
    """Train `spec.mode` on a cohort: patient-level folds (external site held out), one network per fold,
    out-of-fold internal predictions, the fold ensemble on the external site, a bundle under out_dir/model.

    `views` ({case_id: array}) skips view building (the study builds all modes' views once); `card_extra` is
    merged into the model card (e.g. {"trained_on_synthetic_data": True})."""
    import torch

    from mvcf.dataset import ViewCache
    from mvcf.metrics import summarize
    from mvcf.models.bundle import save_bundle
    from mvcf.models.networks import Ensemble, count_parameters, network_config
    from mvcf.splits import make_splits
    from mvcf.stats import youden_threshold

    dist_info = init_distributed(resolve_device(config.device))
    out = Path(out_dir) if out_dir is not None else None
    if plan is None:
        plan = make_splits(records, n_folds=n_folds, external=external, seed=config.seed, train_folds=train_folds)
    by_id = {r.case_id: r for r in records}
    if views is None:
        views = ViewCache(cache_dir).views(records, [spec], should_cancel=should_cancel,
                                           on_progress=on_progress)
        views = next(iter(views.values()))
    shape = tuple(next(iter(views.values())).shape)
    net_config = network_config(spec.mode, shape, config.arch, config.mil_pooling, config.dropout)
    labels = {c: int(r.label) for c, r in by_id.items()}

    fold_results: list[FoldResult] = []
    internal_prob: dict[str, float] = {}
    val_truth, val_prob = [], []
    n_folds_run = len(plan.folds)
    for k, fold in enumerate(plan.folds):
        def step(done: int, total: int, message: str, _k: int = k) -> None:
            if on_progress is not None:
                on_progress(_k * total + done, n_folds_run * total, f"{spec.mode} {message}")

        if out is not None:
            work = out / "folds" / f"fold{fold.index}"
        else:
            import tempfile

            work = Path(tempfile.mkdtemp(prefix="mvcf-fold-"))
        result = train_fold([views[c] for c in fold.train], [labels[c] for c in fold.train],
                            [views[c] for c in fold.val], [labels[c] for c in fold.val], net_config, config,
                            work, fold=fold.index, resume=resume, on_step=step, should_cancel=should_cancel,
                            on_metrics=on_metrics, dist_info=dist_info)
        fold_results.append(result)
        val_truth += [labels[c] for c in fold.val]
        val_prob += list(result.val_prob)
        test_prob = predict_arrays(result.model, [views[c] for c in fold.test])
        internal_prob.update({c: float(p) for c, p in zip(fold.test, test_prob)})

    ensemble = Ensemble([r.model for r in fold_results]).eval()
    val_truth_arr, val_prob_arr = np.asarray(val_truth), np.asarray(val_prob)
    threshold = float(youden_threshold(val_truth_arr, val_prob_arr)) if 0 < val_truth_arr.sum() < val_truth_arr.size \
        else 0.5
    started = time.perf_counter()
    ext_prob = predict_arrays(ensemble, [views[c] for c in plan.external], logits=False,
                              should_cancel=should_cancel) if plan.external else np.zeros(0)
    inference_ms = 1000.0 * (time.perf_counter() - started) / max(1, len(plan.external))
    external_prob = {c: float(p) for c, p in zip(plan.external, ext_prob)}

    internal_ids = list(internal_prob)
    metrics = {
        "validation": summarize(val_truth_arr, val_prob_arr, threshold),
        "internal_test": summarize([labels[c] for c in internal_ids], [internal_prob[c] for c in internal_ids],
                                   threshold),
        "external_test": summarize([labels[c] for c in plan.external], ext_prob, threshold),
    }
    metrics["internal_test"]["scope"] = ("out-of-fold: each internal test case predicted by the fold model "
                                         "that never saw it")
    metrics["external_test"]["scope"] = f"fold ensemble on institution {plan.external_institution}"
    card = {
        "name": name,
        "version": version,
        "description": description or f"{spec.mode} classifier of vertebral compression fractures (MVCF vs OVCF)",
        "network": net_config,
        "ensemble_size": len(fold_results),
        "parameters": count_parameters(ensemble),
        "view_spec": spec.to_dict(),
        "preprocessing": {
            "location": "centroid of the vertebra's mask label, or the given point (LPS mm)",
            "resampling": f"region around the vertebra only, {spec.spacing_mm} mm, fixed LPS orientation "
                          "(mvcf.views.build_views)",
            "intensity": "HU windows mapped linearly to [0, 1] and clipped, one channel per window",
            "input_shape": list(shape),
        },
        "threshold": threshold,
        "threshold_method": "Youden's J on the validation cases (each fold model on its own validation set)",
        "training_data": data_summary(records, plan),
        "validation_metrics": metrics,
        "training": {**{k: v for k, v in asdict(config).items() if k not in ("device", "num_workers")},
                     "folds": [{"fold": r.fold, "best_epoch": r.best_epoch, "best_val_auc": r.best_val_auc,
                                "epochs_run": r.epochs_run, "seconds": round(r.seconds, 2)} for r in fold_results],
                     "device": resolve_device(config.device), "world_size": dist_info.world_size,
                     "amp": bool(config.amp and resolve_device(config.device).startswith("cuda")),
                     "distributed_backend": dist_info.backend},
    }
    card.update(card_extra or {})
    bundle_path = None
    if out is not None and write_bundle and dist_info.is_main:
        bundle_path = save_bundle(out / "model", ensemble, card)
        _write_predictions(out / "predictions.csv", by_id, internal_prob, external_prob, threshold)
        _write_log(out / "log.csv", [row for r in fold_results for row in r.history])
    return TrainRun(mode=spec.mode, bundle_path=bundle_path, card=card, plan=plan, ensemble=ensemble,
                    threshold=threshold, internal_prob=internal_prob, external_prob=external_prob,
                    folds=fold_results, train_seconds=float(sum(r.seconds for r in fold_results)),
                    parameters=count_parameters(ensemble), inference_ms=inference_ms)


def _write_predictions(path: Path, records: dict[str, Any], internal: dict[str, float],
                       external: dict[str, float], threshold: float) -> None:
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["case_id", "patient_id", "institution", "set", "label", "probability_malignant",
                         "prediction"])
        for group, probs in (("internal_test", internal), ("external_test", external)):
            for case_id, p in probs.items():
                r = records[case_id]
                writer.writerow([case_id, r.patient_id, r.institution, group, "MVCF" if int(r.label) else "OVCF",
                                 f"{p:.6f}", "MVCF" if p >= threshold else "OVCF"])


def is_synthetic_cohort(records: Sequence[Any]) -> bool:
    """True when every row carries the columns `mvcf synth` writes (difficulty, signs)."""
    return bool(records) and all("difficulty" in r.extra and "signs" in r.extra for r in records)
