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
from mvcf.inference import check_device_name, forward_arrays, resolve_device
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
        check_device_name(self.device)


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


#: The first file `mvcf train` writes into its --out: what the run folder was run on, and how --resume knows it.
RUN_RECORD = "cohort.json"
#: Settings a resumed run may change: where it runs, not what it computes.
RESUMABLE_CHANGES = ("device", "num_workers")
#: Network description keys that do not change the weights (checkpoints written before they existed resume).
_NETWORK_NOTES = ("gradcam_layer",)


def _check_same_run(state: dict[str, Any], config: TrainConfig, network: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint written with other training settings or another network/view (`network`
    is the network config plus the view mode): the result would be neither run."""
    saved = {k: v for k, v in (state.get("config") or {}).items() if k not in RESUMABLE_CHANGES}
    current = {k: v for k, v in asdict(config).items() if k not in RESUMABLE_CHANGES}
    changed = changed_settings(saved, current)
    network_changes = [k for k in changed_settings(state.get("network", network), network) if k not in _NETWORK_NOTES]
    if network_changes:
        changed.append(f"network/view ({', '.join(network_changes)})")
    if changed:
        raise MVCFError(f"cannot resume from {path}: it was written with other settings ({', '.join(changed)}); "
                        "use the same options, or another --out")


def _fold_device(config: TrainConfig, dist_info: DistInfo) -> str:
    device = resolve_device(config.device)
    return f"cuda:{dist_info.local_rank}" if dist_info.enabled and device == "cuda" else device


@dataclass
class _Batches:
    """How one fold's training set is cut into batches (the same for every epoch)."""

    batch_size: int
    drop_last: bool
    steps_per_epoch: int
    sampler: Any = None   # a DistributedSampler under DDP; None = a fresh seeded RandomSampler per epoch


def _batches(dataset, config: TrainConfig, fold: int, dist_info: DistInfo) -> _Batches:
    from torch.utils.data import DistributedSampler

    batch_size = min(config.batch_size, len(dataset))
    # A last partial batch is dropped unless it is the only one (batch norm needs >= 2 cases per batch).
    drop_last = len(dataset) > batch_size
    sampler = None
    n = len(dataset)
    if dist_info.enabled:
        sampler = DistributedSampler(dataset, num_replicas=dist_info.world_size, rank=dist_info.rank,
                                     shuffle=True, seed=_seed(config.seed, fold, "shuffle"), drop_last=drop_last)
        n = len(sampler)
    steps = n // batch_size if drop_last else math.ceil(n / batch_size)
    return _Batches(batch_size, drop_last, max(1, steps), sampler)


def _lr_schedule(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor per optimisation step: a linear warm-up that reaches 1 at step `warmup`
    ((step + 1) / (warmup + 1), so the very first step already moves the weights), then a half cosine from
    1 down to 0 at the last step."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@dataclass
class _Optimisation:
    optimizer: Any
    scheduler: Any
    scaler: Any
    loss_fn: Any


def _optimisation(model, config: TrainConfig, train_y: np.ndarray, device: str, use_amp: bool,
                  batches: _Batches) -> _Optimisation:
    """AdamW with the warm-up + cosine schedule, the AMP scaler, and the loss weighted by the class ratio."""
    import torch
    import torch.nn as nn

    total_steps = batches.steps_per_epoch * config.epochs
    # At most every step but the last warms up, so a one-epoch run still reaches the cosine part.
    warmup = min(config.warmup_epochs * batches.steps_per_epoch, max(total_steps - 1, 0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_schedule(warmup, total_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    n_pos = float(train_y.sum())
    pos_weight = torch.tensor((train_y.size - n_pos) / n_pos, device=device)
    return _Optimisation(optimizer, scheduler, scaler, nn.BCEWithLogitsLoss(pos_weight=pos_weight))


@dataclass
class _Progress:
    """Where early stopping stands: the best epoch so far, its weights, and the epochs since it."""

    best: dict[str, float]
    best_state: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    bad_epochs: int = 0
    start_epoch: int = 0


def _initial_progress(model) -> _Progress:
    return _Progress(best={"auc": -math.inf, "loss": math.inf, "epoch": 0},
                     best_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})


def _resume(path: Path, model, opt: _Optimisation, use_amp: bool, config: TrainConfig,
            network: dict[str, Any], progress: _Progress) -> _Progress:
    """The progress of an interrupted run in `path` (model/optimiser states restored), or `progress`."""
    state = _load_checkpoint(path)
    if state is None:
        return progress
    _check_same_run(state, config, network, path)
    model.load_state_dict(state["model"])
    opt.optimizer.load_state_dict(state["optimizer"])
    opt.scheduler.load_state_dict(state["scheduler"])
    if use_amp and state.get("scaler"):
        opt.scaler.load_state_dict(state["scaler"])
    start = config.epochs if state.get("done") else int(state["epoch"])
    return _Progress(best=dict(state["best"]), best_state=state["best_state"], history=list(state["history"]),
                     bad_epochs=int(state["bad_epochs"]), start_epoch=start)


def _train_epoch(train_model, dataset, batches: _Batches, opt: _Optimisation, config: TrainConfig, fold: int,
                 epoch: int, device: str, use_amp: bool, on_step, should_cancel) -> list[float]:
    """One pass over the training set; dropout, shuffling and augmentation are reseeded from (seed, fold,
    epoch) first, so the epoch is the same whether or not the run was resumed before it."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    torch.manual_seed(_seed(config.seed, fold, epoch, "dropout"))
    dataset.set_epoch(epoch)
    if batches.sampler is not None:
        batches.sampler.set_epoch(epoch)
        sampler = batches.sampler
    else:
        generator = torch.Generator().manual_seed(_seed(config.seed, fold, epoch, "shuffle"))
        sampler = RandomSampler(dataset, generator=generator)
    loader = DataLoader(dataset, batch_size=batches.batch_size, sampler=sampler, drop_last=batches.drop_last,
                        num_workers=config.num_workers, pin_memory=device.startswith("cuda"))
    total_steps = batches.steps_per_epoch * config.epochs
    train_model.train()
    losses = []
    for step, (x, y) in enumerate(loader):
        check_cancel(should_cancel)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        opt.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
            logits = train_model(x)
        loss = opt.loss_fn(logits.float(), y)
        opt.scaler.scale(loss).backward()
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
        opt.scheduler.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            # Steps count over the whole fold (every epoch), so a caller's bar runs once from 0 to the end.
            on_step(epoch * batches.steps_per_epoch + step + 1, total_steps,
                    f"fold {fold} epoch {epoch + 1}/{config.epochs}")
    return losses


def _validate(model, val_x, val_y: np.ndarray, device: str, batch_size: int) -> tuple[float, float]:
    """(AUC, binary cross-entropy) on the validation cases."""
    import torch
    import torch.nn as nn

    val_prob = forward_arrays(model, val_x, device, batch_size=max(batch_size, 32))
    with torch.no_grad():
        val_loss = float(nn.functional.binary_cross_entropy(
            torch.as_tensor(np.clip(val_prob, 1e-7, 1 - 1e-7)), torch.as_tensor(val_y)))
    from mvcf.stats import auc_or

    return auc_or(val_y, val_prob), val_loss


def _improved(val_auc: float, val_loss: float, best: dict[str, float]) -> bool:
    """Early stopping's rule: a higher validation AUC wins; an equal AUC (within 1e-9; small validation sets
    tie often) wins only with a lower loss; an undefined AUC (one class in validation) falls back to loss."""
    return (val_auc > best["auc"] + 1e-9) or (val_auc >= best["auc"] - 1e-9 and val_loss < best["loss"]) \
        or (math.isnan(val_auc) and val_loss < best["loss"])


def _agree(improved: bool, dist_info: DistInfo) -> bool:
    """Under DDP every process follows rank 0's decision, so the replicas keep the same best weights."""
    if not dist_info.enabled:
        return improved
    import torch.distributed as dist

    decision = [improved]
    dist.broadcast_object_list(decision, src=0)
    return bool(decision[0])


def _mark_done(path: Path, stopped_early: bool) -> None:
    state = _load_checkpoint(path) or {}
    if state and not state.get("done"):
        state["done"] = True
        state["stopped_early"] = stopped_early
        _save_checkpoint(path, state)


def train_fold(train_x: Sequence[np.ndarray], train_y: Sequence[int], val_x: Sequence[np.ndarray],
               val_y: Sequence[int], network_config: dict[str, Any], config: TrainConfig, work_dir: Path,
               fold: int = 0, resume: bool = False, on_step: Optional[Callable[[int, int, str], None]] = None,
               should_cancel: Optional[CancelCheck] = None, on_metrics: Optional[MetricsCallback] = None,
               dist_info: Optional[DistInfo] = None, mode: Optional[str] = None) -> FoldResult:
    """Train one network on views of `mode` (a mvcf.modes name: it decides the augmentation's flip); returns
    the best-validation-AUC weights (on CPU) and its validation probabilities.

    `on_step(step, steps_total, message)` is called after every optimisation step; `should_cancel` is checked
    before every step (raises mvcf.errors.Cancelled); `on_metrics(**row)` once per epoch."""
    import torch

    from mvcf.dataset import CaseDataset
    from mvcf.models.networks import build_network

    if mode is None:
        raise MVCFError("train_fold needs the view mode the arrays were built with")
    dist_info = dist_info or DistInfo()
    device = _fold_device(config, dist_info)
    use_amp = bool(config.amp and device.startswith("cuda"))
    checkpoint_path = Path(work_dir) / "checkpoint.pt"
    train_y = np.asarray(train_y, dtype=np.float32)
    val_y = np.asarray(val_y, dtype=np.float32)
    if train_y.sum() == 0 or train_y.sum() == train_y.size:
        raise MVCFError(f"fold {fold}: the training set holds only one class")
    network = {**network_config, "mode": mode}   # what a resumed run must match

    # Initial weights from (seed, fold), before anything else draws from torch's generator.
    torch.manual_seed(_seed(config.seed, fold, "init"))
    model = build_network(network_config).to(device)
    dataset = CaseDataset(train_x, train_y, mode, augment=config.augment, seed=_seed(config.seed, fold, "aug"))
    batches = _batches(dataset, config, fold, dist_info)
    opt = _optimisation(model, config, train_y, device, use_amp, batches)
    train_model = model
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[dist_info.local_rank] if device.startswith("cuda")
                                              else None)
    progress = _initial_progress(model)
    if resume:
        progress = _resume(checkpoint_path, model, opt, use_amp, config, network, progress)

    stopped_early = False
    for epoch in range(progress.start_epoch, config.epochs):
        if progress.bad_epochs >= config.patience:
            stopped_early = True
            break
        started = time.perf_counter()
        losses = _train_epoch(train_model, dataset, batches, opt, config, fold, epoch, device, use_amp, on_step,
                              should_cancel)
        val_auc, val_loss = _validate(model, val_x, val_y, device, batches.batch_size)
        if _agree(_improved(val_auc, val_loss, progress.best), dist_info):
            progress.best = {"auc": val_auc if not math.isnan(val_auc) else -math.inf, "loss": val_loss,
                             "epoch": epoch + 1}
            progress.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            progress.bad_epochs = 0
        else:
            progress.bad_epochs += 1
        row = {"fold": fold, "epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "val_loss": val_loss, "val_auc": val_auc, "lr": float(opt.optimizer.param_groups[0]["lr"]),
               "seconds": time.perf_counter() - started}
        progress.history.append(row)
        if on_metrics is not None:  # curve values only: the epoch's wall time stays in the CSV log
            on_metrics(**{k: v for k, v in row.items() if k != "seconds"})
        if dist_info.is_main:
            _write_log(Path(work_dir) / "log.csv", progress.history)
            _save_checkpoint(checkpoint_path, {
                "epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.optimizer.state_dict(),
                "scheduler": opt.scheduler.state_dict(), "scaler": opt.scaler.state_dict() if use_amp else {},
                "best_state": progress.best_state, "best": progress.best, "bad_epochs": progress.bad_epochs,
                "history": progress.history, "config": asdict(config), "network": network})

    model.load_state_dict(progress.best_state)
    model.to("cpu").eval()
    val_prob = forward_arrays(model, val_x, "cpu", batch_size=max(batches.batch_size, 32))
    if dist_info.is_main:
        _mark_done(checkpoint_path, stopped_early)
    best = progress.best
    return FoldResult(fold=fold, model=model, best_epoch=int(best["epoch"]),
                      best_val_auc=float(best["auc"]) if best["auc"] > -math.inf else float("nan"),
                      epochs_run=len(progress.history), history=progress.history, val_prob=val_prob,
                      seconds=float(sum(r["seconds"] for r in progress.history)))


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
    from mvcf.manifest import CLASS_NAMES

    per_site: dict[str, dict[str, int]] = {}
    for r in records:
        site = per_site.setdefault(str(r.institution), {CLASS_NAMES[1]: 0, CLASS_NAMES[0]: 0})
        site[CLASS_NAMES[int(r.label)]] += 1
    out: dict[str, Any] = {"cases": len(records), "patients": len({r.patient_id for r in records}),
                           "per_institution": per_site}
    if plan is not None:
        out["external_institution"] = plan.external_institution
        out["n_folds"] = plan.n_folds
        out["folds"] = [{"fold": f.index, "train": len(f.train), "val": len(f.val), "test": len(f.test)}
                        for f in plan.folds]
        out["external_cases"] = len(plan.external)
    return out


@dataclass
class _FoldRuns:
    """The folds of one cohort run: each fold model, its validation predictions (for the threshold) and its
    internal test predictions (out-of-fold: every internal test case scored by the model that never saw it)."""

    results: list[FoldResult] = field(default_factory=list)
    val_truth: list[int] = field(default_factory=list)
    val_prob: list[float] = field(default_factory=list)
    internal_prob: dict[str, float] = field(default_factory=dict)


def _train_folds(plan, views: dict[str, np.ndarray], labels: dict[str, int], mode: str,
                 net_config: dict[str, Any], config: TrainConfig, out: Optional[Path], resume: bool,
                 dist_info: DistInfo, on_progress, should_cancel, on_metrics) -> _FoldRuns:
    runs = _FoldRuns()
    n_folds_run = len(plan.folds)
    for k, fold in enumerate(plan.folds):
        # Each fold reports its own steps; scaled here so the whole run is one bar from 0 to n_folds * steps.
        def step(done: int, total: int, message: str, _k: int = k) -> None:
            if on_progress is not None:
                on_progress(_k * total + done, n_folds_run * total, f"{mode} {message}")

        if out is not None:
            work = out / "folds" / f"fold{fold.index}"
        else:
            import tempfile

            work = Path(tempfile.mkdtemp(prefix="mvcf-fold-"))
        result = train_fold([views[c] for c in fold.train], [labels[c] for c in fold.train],
                            [views[c] for c in fold.val], [labels[c] for c in fold.val], net_config, config,
                            work, fold=fold.index, resume=resume, on_step=step, should_cancel=should_cancel,
                            on_metrics=on_metrics, dist_info=dist_info, mode=mode)
        runs.results.append(result)
        runs.val_truth += [labels[c] for c in fold.val]
        runs.val_prob += list(result.val_prob)
        test_prob = forward_arrays(result.model, [views[c] for c in fold.test])
        runs.internal_prob.update({c: float(p) for c, p in zip(fold.test, test_prob)})
    return runs


def _threshold(truth: np.ndarray, prob: np.ndarray) -> float:
    """Youden's J on the pooled validation cases; 0.5 when they hold one class only."""
    from mvcf.stats import youden_threshold

    return float(youden_threshold(truth, prob)) if 0 < truth.sum() < truth.size else 0.5


def _validation_metrics(runs: _FoldRuns, labels: dict[str, int], plan, ext_prob: np.ndarray,
                        threshold: float) -> dict[str, Any]:
    from mvcf.metrics import summarize

    internal_ids = list(runs.internal_prob)
    metrics = {
        "validation": summarize(np.asarray(runs.val_truth), np.asarray(runs.val_prob), threshold),
        "internal_test": summarize([labels[c] for c in internal_ids],
                                   [runs.internal_prob[c] for c in internal_ids], threshold),
        "external_test": summarize([labels[c] for c in plan.external], ext_prob, threshold),
    }
    metrics["internal_test"]["scope"] = ("out-of-fold: each internal test case predicted by the fold model "
                                         "that never saw it")
    metrics["external_test"]["scope"] = f"fold ensemble on institution {plan.external_institution}"
    return metrics


def _model_card(spec: Any, config: TrainConfig, net_config: dict[str, Any], shape: tuple[int, ...],
                runs: _FoldRuns, parameters: int, threshold: float, metrics: dict[str, Any],
                training_data: dict[str, Any], dist_info: DistInfo, name: str, version: str,
                description: str) -> dict[str, Any]:
    """The model card of a cohort run (mvcf.models.bundle adds the format fields and the weights' hash)."""
    device = resolve_device(config.device)
    return {
        "name": name,
        "version": version,
        "description": description or f"{spec.mode} classifier of vertebral compression fractures (MVCF vs OVCF)",
        "network": net_config,
        "ensemble_size": len(runs.results),
        "parameters": parameters,
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
        "training_data": training_data,
        "validation_metrics": metrics,
        "training": {**{k: v for k, v in asdict(config).items() if k not in RESUMABLE_CHANGES},
                     "folds": [{"fold": r.fold, "best_epoch": r.best_epoch, "best_val_auc": r.best_val_auc,
                                "epochs_run": r.epochs_run, "seconds": round(r.seconds, 2)} for r in runs.results],
                     "device": device, "world_size": dist_info.world_size,
                     "amp": bool(config.amp and device.startswith("cuda")),
                     "distributed_backend": dist_info.backend},
    }


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
    merged into the model card (e.g. {"trained_on_synthetic_data": True}; a `training_scans` entry there is
    used as it is, so a study hashes its cohort once for all modes)."""
    from mvcf import training_scans
    from mvcf.dataset import ViewCache
    from mvcf.manifest import write_predictions
    from mvcf.models.bundle import save_bundle
    from mvcf.models.networks import Ensemble, count_parameters, network_config
    from mvcf.splits import make_splits

    dist_info = init_distributed(resolve_device(config.device))
    out = Path(out_dir) if out_dir is not None else None
    if plan is None:
        plan = make_splits(records, n_folds=n_folds, external=external, seed=config.seed, train_folds=train_folds)
    by_id = {r.case_id: r for r in records}
    extra = dict(card_extra or {})
    if "training_scans" not in extra:   # before the hours of training: a CT gone is told now
        extra["training_scans"] = training_scans.card_entry(records, plan)
    if views is None:
        views = next(iter(ViewCache(cache_dir).views(records, [spec], should_cancel=should_cancel,
                                                     on_progress=on_progress).values()))
    shape = tuple(next(iter(views.values())).shape)
    net_config = network_config(spec.mode, shape, config.arch, config.mil_pooling, config.dropout)
    labels = {c: int(r.label) for c, r in by_id.items()}

    runs = _train_folds(plan, views, labels, spec.mode, net_config, config, out, resume, dist_info, on_progress,
                        should_cancel, on_metrics)
    ensemble = Ensemble([r.model for r in runs.results]).eval()
    threshold = _threshold(np.asarray(runs.val_truth), np.asarray(runs.val_prob))
    started = time.perf_counter()
    ext_prob = forward_arrays(ensemble, [views[c] for c in plan.external], logits=False,
                              should_cancel=should_cancel) if plan.external else np.zeros(0)
    inference_ms = 1000.0 * (time.perf_counter() - started) / max(1, len(plan.external))
    external_prob = {c: float(p) for c, p in zip(plan.external, ext_prob)}

    parameters = count_parameters(ensemble)
    card = _model_card(spec, config, net_config, shape, runs, parameters, threshold,
                       _validation_metrics(runs, labels, plan, ext_prob, threshold), data_summary(records, plan),
                       dist_info, name, version, description)
    card.update(extra)
    bundle_path = None
    if out is not None and write_bundle and dist_info.is_main:
        bundle_path = save_bundle(out / "model", ensemble, card)
        sets = {**{c: "internal_test" for c in runs.internal_prob}, **{c: "external_test" for c in external_prob}}
        write_predictions(out / "predictions.csv", [by_id[c] for c in sets],
                          {"probability_malignant": {**runs.internal_prob, **external_prob}}, sets=sets,
                          threshold=threshold)
        _write_log(out / "log.csv", [row for r in runs.results for row in r.history])
    return TrainRun(mode=spec.mode, bundle_path=bundle_path, card=card, plan=plan, ensemble=ensemble,
                    threshold=threshold, internal_prob=runs.internal_prob, external_prob=external_prob,
                    folds=runs.results, train_seconds=float(sum(r.seconds for r in runs.results)),
                    parameters=parameters, inference_ms=inference_ms)


def is_synthetic_cohort(records: Sequence[Any]) -> bool:
    """True when every row carries the columns `mvcf synth` writes (difficulty, signs)."""
    return bool(records) and all("difficulty" in r.extra and "signs" in r.extra for r in records)
