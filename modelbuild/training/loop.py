"""loop.fit: train a task with Lightning so that the same key gives the same bytes, and a killed build resumes.

What `fit(ctx, task, params)` does, in order:

1. Seeds: `lightning.seed_everything((recipe_seed * 1000003 + params.seed) mod 2**32, workers=True)`;
   `torch.use_deterministic_algorithms(deterministic)` with `CUBLAS_WORKSPACE_CONFIG=:4096:8`;
   `torch.set_num_threads(num_threads)` and `OMP_NUM_THREADS` (DDP ranks inherit it, and Lightning's
   launcher then keeps its hands off the thread count). Then `task.setup()`, so weights start alike.
2. A `lightning.Trainer` from `params.trainer`, unchanged, plus what the loop owns: its logger and
   callbacks, no progress bar, no model summary table unless `enable_model_summary` is set (one line counts
   the parameters instead), `default_root_dir` = the work area, and a checkpoint plugin that writes
   `last.ckpt.part` and renames it (a kill mid-write never leaves a torn `last.ckpt`).
3. Checkpoints: `ctx.work/checkpoints/last.ckpt`, saved at the start of the first batch after every
   `checkpoint_every_n_steps` optimizer steps (then everything about the steps before it, their logging,
   validation and epoch ends included, is done), and, in a single process, only once at least
   `MODELBUILD_CHECKPOINT_SECONDS` (default 30) of training and 20 times the last save's duration have
   passed since the last one: saving stays under 5% of the training time, so a short run saves little and
   a long one still loses at most a few minutes to a kill. (Under DDP every rank must agree, so only the
   step count decides.) Where the checkpoints fall never changes the artifact, as resuming is exact. `ctx.work` is the step's work area (`tmp/work/<key>`): it
   survives a killed build of the same key and is deleted after a successful commit, so checkpoints are never
   part of the artifact. If `last.ckpt` is there at the start, training resumes from it
   (`trainer.fit(ckpt_path=...)`) and the lineage records `resumed_from_step`. Resuming is exact: a resumed
   build gives the same bytes as an uninterrupted one. The checkpoint carries Lightning's loop, optimizer
   and scheduler state plus this loop's own (position in the epoch, sample counts, metric history, and
   Lightning's running sums of epoch-level values, which Lightning itself does not keep); the training order
   is a function of (seed, epoch) and restarts mid-epoch where it stopped (`_EpochSampler`); and torch's
   generator is reseeded before every batch from (seed, epoch, batch, rank), so dropout does not depend on
   what ran before. (Under DDP the order is Lightning's DistributedSampler's, which restarts an epoch from
   its beginning: a resume there is exact only from a checkpoint at an epoch boundary.)
4. Logs, written into the artifact after training from the history kept in memory (and in checkpoints):
   `logs/metrics.csv` (like Lightning's CSVLogger: a `step` and `epoch` column, then one column per logged
   name, one row per logging call; the learning rate from Lightning's LearningRateMonitor) and, when
   tensorboard is installed, `logs/tensorboard/events.out.tfevents.modelbuild` with the params as hparams,
   written with wall_time 0 and no host name, so it is byte-reproducible; the same events with real times go
   live to `ctx.live_logs`, outside the artifact (training/events.py).
5. After fit, on global rank 0: `task.export(ctx.out)`, then `metrics.json` with results only (train_loss,
   val_loss, val_* metrics, steps, epochs, samples, seed, num_threads, device, precision, world_size,
   deterministic, reproducibility: "bit-identical" on CPU with deterministic algorithms, else "tolerance"
   plus `tolerance`). Facts of the run (wall_seconds, fit_seconds, samples_per_second, tokens_per_second
   (time inside training batches only), peak_memory_mb, gpu_peak_memory_mb, resumed_from_step) go to
   `ctx.record_facts`: the lineage shows them, the artifact does not contain them.

Failures become `BuildError`s that name the step: a loss that is NaN or infinite (with the training step and
what to change), too little memory (torch.OutOfMemoryError, MemoryError, CPU allocation failures).

Distributed training: `strategy: ddp` works from inside the worker (fsdp, whose launcher is the same, should
too; only ddp is tested, on CPU). Lightning's launcher re-runs the worker's command line
(`python -m modelbuild.worker JOB`) for the other local ranks; `fit` marks them (`RANK_OF_ENV`, and the
work area and checkpoint to use in `_RANKS_ENV`), so the worker runs them as extra ranks that never lock,
keep their own log or commit; their output goes to the step log. Only rank 0 exports and writes metrics.
`ddp_spawn`/`ddp_fork` are refused by the builder's check: they train in processes the loop's callbacks
cannot follow. Ranks started outside the build (torchrun, `srun`, other nodes) each run `modelbuild build`
against one shared store: rank 0 builds as usual, the worker of every other rank trains beside it without
the lock and answers with rank 0's commit (worker._run_launched_rank; tested on CPU with torchrun).

Reproducibility is promised for the same machine type: CPU kernels differ between instruction sets (AVX2,
AVX-512), so another CPU may give other bits for the same key.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import resource
import time
import zipfile
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from ..builders.base import RANK_OF_ENV
from ..derivation import split_unkeyed
from ..errors import BuildError
from ..table import rounded
from . import events
from .params import UNKEYED_LOOP_PARAMS, check_epoch_batches

CHECKPOINTS, LAST = "checkpoints", "last.ckpt"
CHECKPOINT_SECONDS_ENV = "MODELBUILD_CHECKPOINT_SECONDS"  # least training seconds between two checkpoints
_RANKS_ENV = "MODELBUILD_TRAIN_RANKS"  # {"work": ..., "ckpt": ...} of rank 0, for the ranks it launches


def fit(ctx, task, params: dict) -> dict:
    """Train `task` as `params` say; export it and write metrics into `ctx.out`. Returns the metrics
    (an empty dict on ranks other than 0)."""
    started = time.perf_counter()
    p = params  # complete: the builder's normalise filled every default (training/params.py)
    seed = combined_seed(ctx.seed, p["seed"])
    _set_determinism(p["deterministic"], p["num_threads"])
    pl.seed_everything(seed, workers=True, verbose=False)
    if task.module is None:
        with _memory_errors(ctx):
            task.setup()
    work, ckpt = _work_and_checkpoint(ctx)
    recorder = _Recorder(ctx, task, seed)
    trainer = _trainer(p, work, recorder)
    train_loader = task.train_dataloader()
    _check_epoch(ctx, p, train_loader)
    if trainer.world_size == 1:
        train_loader = _resumable(train_loader, seed, recorder)
    val_loader = task.val_dataloader()
    _check_early_stopping(ctx, p, val_loader)
    _install_optimizer(task.module, p)
    if trainer.is_global_zero:
        _log_start(ctx, trainer, p, seed, ckpt, task.module)
        hparams = split_unkeyed(p, UNKEYED_LOOP_PARAMS)[0]  # the params that make the model, as its key holds them
        recorder.history.start_live(ctx.live_logs, events.flat_params({**hparams, "seed": seed}))
    fit_started = time.perf_counter()
    ok = False
    try:
        with _ranks_launched_from(work, ckpt):
            _run(ctx, trainer, task.module, train_loader, val_loader, ckpt)
        ok = True
    finally:
        recorder.history.close_live(ok)
    fit_seconds = time.perf_counter() - fit_started
    if not trainer.is_global_zero:
        return {}
    task.export(ctx.out)
    recorder.history.write(ctx.out / "logs")
    metrics = _metrics(trainer, p, seed, recorder)
    ctx.write_metrics(metrics)
    facts = _facts(recorder, time.perf_counter() - started, fit_seconds, trainer.world_size)
    ctx.record_facts(facts)
    ctx.log.info("metrics %s", json.dumps(metrics, sort_keys=True))
    ctx.log.info("run %s", json.dumps(facts, sort_keys=True))
    return metrics


def combined_seed(recipe_seed: int, seed: int) -> int:
    """The seed training uses: the recipe's and the step's, so changing either changes the model."""
    return (int(recipe_seed) * 1_000_003 + int(seed)) % 2**32


def _mix(*numbers: int) -> int:
    """A 63-bit seed from several integers (blake2b: stable across Python versions and processes)."""
    digest = hashlib.blake2b(",".join(map(str, numbers)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _reseed(seed: int, mps: bool) -> None:
    """torch.manual_seed without its cost: for a device that is not initialised (CUDA on a CPU run) it
    records the call with a formatted stack, up to milliseconds per batch. Seeds the CPU generator and those
    of initialised CUDA devices and of MPS, which is where dropout draws from."""
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
    if mps:
        torch.mps.manual_seed(seed)


def _set_determinism(deterministic: bool, num_threads: int) -> None:
    torch.set_num_threads(num_threads)
    os.environ["OMP_NUM_THREADS"] = str(num_threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)


# ---- the work area: checkpoints and resuming ------------------------------------------------------------
def _work_and_checkpoint(ctx) -> tuple[Path, Path | None]:
    """The work area and the checkpoint to resume from. Ranks launched by rank 0 take rank 0's answer,
    so that every rank resumes from the same place (and a `build --check` rank uses its own work area)."""
    if os.environ.get(RANK_OF_ENV) == str(os.getppid()) and _RANKS_ENV in os.environ:
        shared = json.loads(os.environ[_RANKS_ENV])
        return Path(shared["work"]), Path(shared["ckpt"]) if shared["ckpt"] else None
    work = Path(ctx.work) if ctx.work is not None else ctx.out.parent / "work"
    return work, _resume_point(work / CHECKPOINTS, ctx.log)


def _resume_point(folder: Path, log) -> Path | None:
    """`last.ckpt` if a killed build of this key left one; unfinished `.part` files are removed."""
    for part in folder.glob("*.part"):
        part.unlink()
    last = folder / LAST
    if not last.exists():
        return None
    if last.is_file() and not zipfile.is_zipfile(last):  # torch.save writes a zip archive; this one is torn
        log.warning("checkpoint %s is unreadable; training from the start", last)
        last.unlink()
        return None
    return last


@contextlib.contextmanager
def _ranks_launched_from(work: Path, ckpt: Path | None):
    """While training, processes started from here (Lightning's DDP ranks) know they are extra ranks of
    this build, and where its work area and checkpoint are."""
    saved = {k: os.environ.get(k) for k in (RANK_OF_ENV, _RANKS_ENV)}
    if saved[RANK_OF_ENV] != str(os.getppid()):  # rank 0: mark the ranks it launches
        os.environ[RANK_OF_ENV] = str(os.getpid())
        os.environ[_RANKS_ENV] = json.dumps({"work": str(work), "ckpt": str(ckpt) if ckpt else None})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _AtomicCheckpointIO(TorchCheckpointIO):
    """Write `<path>.part`, then rename: a build killed while saving leaves the previous checkpoint whole."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        part = Path(f"{path}.part")
        super().save_checkpoint(checkpoint, part, storage_options)
        os.replace(part, path)


# ---- the Trainer ----------------------------------------------------------------------------------------
def _trainer(p: dict, work: Path, recorder) -> pl.Trainer:
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor

    callbacks = [recorder, LearningRateMonitor()]
    every = p["checkpoint_every_n_steps"]
    recorder.checkpoint_every, recorder.checkpoint = every, work / CHECKPOINTS / LAST
    if p["early_stopping"]:
        callbacks.append(EarlyStopping(**p["early_stopping"]))
    trainer = {"enable_model_summary": False, **p["trainer"]}  # _log_start counts the parameters in one line
    return pl.Trainer(**trainer, logger=recorder.history, callbacks=callbacks, enable_progress_bar=False,
                      enable_checkpointing=False, default_root_dir=str(work),
                      deterministic=p["deterministic"], plugins=[_AtomicCheckpointIO()] if every else None)


def _run(ctx, trainer, module, train_loader, val_loader, ckpt) -> None:
    """trainer.fit, with memory and determinism failures turned into BuildErrors that say what to change."""
    import warnings

    with _memory_errors(ctx), warnings.catch_warnings():
        if isinstance(getattr(train_loader, "sampler", None), _EpochSampler):  # it does resume mid-epoch
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
        try:
            trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader,
                        ckpt_path=str(ckpt) if ckpt else None)
        except RuntimeError as e:
            if "does not have a deterministic implementation" not in str(e):
                raise
            raise BuildError(f"step '{ctx.step}': {str(e).splitlines()[0]} Set `deterministic: false` for this "
                             f"step (then `build --check` compares metrics within `tolerance`)") from None


@contextlib.contextmanager
def _memory_errors(ctx):
    """Out-of-memory failures (torch's, Python's, the CPU allocator's) as a BuildError saying what to lower."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError) as e:
        raise _out_of_memory(ctx, e) from None
    except RuntimeError as e:
        if "can't allocate memory" in str(e) or "out of memory" in str(e).lower():
            raise _out_of_memory(ctx, e) from None
        raise


def _out_of_memory(ctx, e) -> BuildError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return BuildError(f"step '{ctx.step}': too little memory to train ({first[:300]}). Lower `batch_size`, use "
                      f"a smaller precision (`trainer.precision: bf16-mixed`), a smaller model, or spread it over "
                      f"more devices (`trainer.devices`, `trainer.strategy: fsdp`)")


def _check_epoch(ctx, p: dict, train_loader) -> None:
    """The task's setup should have checked the trainer settings against the data (Task.check_epoch); this
    catches a task that did not, before Lightning's own error from inside fit."""
    dataset = getattr(train_loader, "dataset", None)
    if hasattr(dataset, "__len__") and not isinstance(dataset, torch.utils.data.IterableDataset):
        check_epoch_batches(p, len(dataset), step=ctx.step)


def _check_early_stopping(ctx, p: dict, val_loader) -> None:
    stopping = p["early_stopping"]
    if stopping and val_loader is None and stopping["monitor"].startswith("val_"):
        raise BuildError(f"step '{ctx.step}': early_stopping watches {stopping['monitor']}, but there is no "
                         f"validation data. Give a split with a validation table as input `data`, or watch "
                         f"train_loss")


def _log_start(ctx, trainer, p, seed, ckpt, module) -> None:
    ctx.log.info("training on %s (%s), %d process(es), precision %s, seed %d, %d threads, deterministic %s",
                 trainer.strategy.root_device, type(trainer.strategy).__name__, trainer.world_size,
                 trainer.precision, seed, p["num_threads"], p["deterministic"])
    sizes = [(q.numel(), q.requires_grad) for q in module.parameters()]
    ctx.log.info("model %s: %s parameters, %s trainable", type(module).__name__, f"{sum(n for n, _ in sizes):,}",
                 f"{sum(n for n, grad in sizes if grad):,}")
    if ckpt:
        ctx.log.info("resuming from %s", ckpt)
    ctx.log.info("metric history goes to logs/metrics.csv%s in the artifact%s",
                 " and logs/tensorboard/" if events.available() else "",
                 f"; live TensorBoard events to {ctx.live_logs}" if ctx.live_logs and events.available() else "")


# ---- optimizer and scheduler ----------------------------------------------------------------------------
def _install_optimizer(module, p: dict) -> None:
    """Give the module `configure_optimizers` from params, unless it defines its own."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    if is_overridden("configure_optimizers", module):
        return

    def configure_optimizers():
        optimizer = make_optimizer([q for q in module.parameters() if q.requires_grad], p["optimizer"])
        scheduler = make_scheduler(optimizer, p["scheduler"], module.trainer.estimated_stepping_batches)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    module.configure_optimizers = configure_optimizers


def make_optimizer(parameters, config: dict):
    options = {k: v for k, v in config.items() if k != "name"}
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[config["name"]]
    return cls(parameters, **options)


def make_scheduler(optimizer, config: dict, total_steps):
    """Linear warmup over `warmup_steps`, then constant (none), linear decay or cosine decay to 0."""
    name, warmup = config["name"], config["warmup_steps"]
    if name == "none" and not warmup:
        return None
    if name != "none" and not math.isfinite(total_steps):
        raise BuildError(f"scheduler {name} decays over the whole training, which has no known length; "
                         f"set trainer.max_steps or trainer.max_epochs")
    total = int(total_steps) if math.isfinite(total_steps) else 0

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        if name == "none":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 - progress if name == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---- the training order ---------------------------------------------------------------------------------
class _EpochSampler(torch.utils.data.Sampler):
    """Indices in an order that depends on (seed, epoch) only, like DistributedSampler's, and that can
    start `skip` samples into an epoch: what a resumed build needs to see the same batches again."""

    def __init__(self, n: int, seed: int, shuffle: bool):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before every epoch
        self.epoch = epoch

    def resume(self, epoch: int, skip: int) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        skip, self.skip = self.skip, 0
        if not self.shuffle:
            return iter(range(skip, self.n))
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=generator)[skip:].tolist())


_LOADER_OPTIONS = ("num_workers", "collate_fn", "pin_memory", "drop_last", "timeout", "worker_init_fn",
                   "multiprocessing_context", "generator", "prefetch_factor", "persistent_workers",
                   "pin_memory_device", "in_order")


def _resumable(loader, seed: int, recorder):
    """The task's DataLoader with its plain random or sequential sampler replaced by an `_EpochSampler`;
    other loaders (custom samplers, iterable datasets) are returned as they are."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

    if not isinstance(loader, DataLoader) or type(loader.batch_sampler) is not BatchSampler:
        return loader
    sampler = loader.sampler
    plain_random = type(sampler) is RandomSampler and not sampler.replacement and sampler._num_samples is None
    if not (plain_random or type(sampler) is SequentialSampler):
        return loader
    recorder.sampler = _EpochSampler(len(loader.dataset), seed, shuffle=plain_random)
    recorder.loader_batch_size = loader.batch_size
    options = {k: getattr(loader, k) for k in _LOADER_OPTIONS if hasattr(loader, k)}
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=recorder.sampler, **options)


# ---- what happens around every batch ------------------------------------------------------------------
class _History(Logger):
    """Every value Lightning logs, kept in memory (and in checkpoints, through `_Recorder`), so a resumed
    build's logs are whole; written at the end as CSV and TensorBoard events with no times or host."""

    def __init__(self):
        super().__init__()
        self.rows: list[dict] = []
        self.hparams: dict = {}
        self.live: events.Live | None = None  # the live event file outside the artifact (training/events.py)

    @property
    def name(self) -> str:
        return "modelbuild"

    @property
    def version(self) -> int:
        return 0

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    @rank_zero_only
    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        row = {"step": step}
        for key, value in metrics.items():
            value = value.item() if isinstance(value, torch.Tensor) else value
            row[key] = value if isinstance(value, int) else float(value)
        self.rows.append(row)
        if self.live is not None:
            self.live.log(row)

    def start_live(self, folder: Path | None, hparams: dict) -> None:
        self.hparams = hparams
        if folder is not None and events.available():
            self.live = events.Live(folder, hparams)

    def close_live(self, ok: bool) -> None:
        if self.live is not None:
            self.live.close(ok)
            self.live = None

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        names = sorted({k for row in self.rows for k in row} - {"step", "epoch"})
        with open(folder / "metrics.csv", "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["step", "epoch", *names])
            for row in self.rows:
                writer.writerow([_cell(row.get(k)) for k in ("step", "epoch", *names)])
        if events.available():
            # the params go to the live copy only: the artifact's file holds what the rebuild compares, the values
            events.write_reproducible(self.rows, folder / "tensorboard", {})


def _cell(value) -> str:
    return "" if value is None else repr(value)


class _Recorder(pl.Callback):
    """Progress, throughput, the NaN check and per-batch reseeding; its state (position in the epoch,
    counters, metric history) is saved in every checkpoint so that resuming is exact."""

    def __init__(self, ctx, task, seed: int):
        self.ctx, self.task, self.seed = ctx, task, seed
        self.history = _History()
        self.sampler: _EpochSampler | None = None
        self.loader_batch_size = 0
        self.position = {"epoch": 0, "batches": 0, "step": 0}  # batches done in the current epoch
        self.samples = self.tokens = 0  # over the whole training, resumed parts included
        self.resumed_from_step: int | None = None
        self.run = {"seconds": 0.0, "samples": 0, "tokens": 0}  # this process's training batches only
        self.total, self.every, self._started, self._printed = None, 50, 0.0, -1
        self.trainer, self._sums_to_restore = None, None
        self.checkpoint_every, self.checkpoint, self._saved_step = 0, None, 0
        self.checkpoint_seconds = float(os.environ.get(CHECKPOINT_SECONDS_ENV, 30))
        self._saved_at, self._save_cost = time.perf_counter(), 0.0
        self._reported, self._mps = 0.0, torch.backends.mps.is_available()

    def state_dict(self) -> dict:
        return {"position": dict(self.position), "samples": self.samples, "tokens": self.tokens,
                "history": list(self.history.rows), "epoch_sums": self._epoch_sums()}

    def load_state_dict(self, state: dict) -> None:
        self.position, self.samples, self.tokens = dict(state["position"]), state["samples"], state["tokens"]
        self.history.rows = list(state["history"])
        self.resumed_from_step = self._saved_step = self.position["step"]
        self._sums_to_restore = state["epoch_sums"]
        if self.sampler is not None:
            self.sampler.resume(self.position["epoch"], self.position["batches"] * self.loader_batch_size)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # Lightning adds one to its logging step when it restarts, since it expects checkpoints taken at the
        # end of a batch; this one is taken at the start of the next, after that step was counted.
        if not trainer.fit_loop.epoch_loop._should_accumulate():
            checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1

    def setup(self, trainer, pl_module, stage) -> None:
        self.trainer = trainer

    def on_train_start(self, trainer, pl_module) -> None:
        self.total = trainer.estimated_stepping_batches
        self.every = max(1, trainer.log_every_n_steps)
        self._saved_at = time.perf_counter()

    def _epoch_sums(self) -> dict:
        """Lightning's running sums of the values logged with `on_epoch=True` in this epoch. Lightning does
        not checkpoint them, so a build resumed mid-epoch would average only the batches it ran itself."""
        results = self.trainer.fit_loop.epoch_loop._results if self.trainer is not None else {}
        sums = {}
        for key, metric in results.items():
            if metric.is_tensor and metric.meta.on_epoch:
                count = getattr(metric, "cumulated_batch_size", None)
                sums[key] = {"value": metric.value.detach().cpu().clone(),
                             "count": count.detach().cpu().clone() if count is not None else None}
        return sums

    def _restore_epoch_sums(self, trainer) -> None:
        """After the first batch of a resumed epoch, add the sums from before the checkpoint: `saved + new`
        is the very addition an uninterrupted run makes, so the epoch means come out bit-identical."""
        sums, self._sums_to_restore = self._sums_to_restore, None
        results = trainer.fit_loop.epoch_loop._results
        for key, saved in sums.items():
            metric = results.get(key)
            if metric is None:
                continue
            value = saved["value"].to(metric.value.device, metric.value.dtype)
            if metric.meta.is_max_reduction:
                metric.value = torch.maximum(value, metric.value)
            elif metric.meta.is_min_reduction:
                metric.value = torch.minimum(value, metric.value)
            else:
                metric.value = value + metric.value
            if saved["count"] is not None:
                metric.cumulated_batch_size = saved["count"].to(metric.cumulated_batch_size.device) + \
                    metric.cumulated_batch_size

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.position = {"epoch": trainer.current_epoch, "batches": batch_idx, "step": trainer.global_step}
        step, every = trainer.global_step, self.checkpoint_every
        if every and step and step % every == 0 and step != self._saved_step and self._checkpoint_due(trainer):
            self._saved_step, started = step, time.perf_counter()
            trainer.save_checkpoint(self.checkpoint, weights_only=False)
            self._saved_at = time.perf_counter()
            self._save_cost = self._saved_at - started
        _reseed(_mix(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank), self._mps)
        self._started = time.perf_counter()

    def _checkpoint_due(self, trainer) -> bool:
        """Time enough since the last save (see the module docstring); always so under DDP."""
        if trainer.world_size > 1 or self.checkpoint_seconds <= 0:
            return True
        return time.perf_counter() - self._saved_at >= max(self.checkpoint_seconds, 20 * self._save_cost)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.run["seconds"] += time.perf_counter() - self._started
        if self._sums_to_restore is not None:
            if trainer.current_epoch == self.position["epoch"]:  # resumed mid-epoch
                self._restore_epoch_sums(trainer)
            self._sums_to_restore = None
        samples, tokens = self.task.batch_size(batch), self.task.tokens(batch)
        self.samples, self.tokens = self.samples + samples, self.tokens + tokens
        self.run["samples"] += samples
        self.run["tokens"] += tokens
        loss = _loss_value(outputs)
        if loss is not None and not math.isfinite(loss):
            self._fail_on_loss(trainer, loss)
        if trainer.is_global_zero:
            self._report(trainer, loss)

    def _report(self, trainer, loss) -> None:
        step, total = trainer.global_step, self.total if self.total and math.isfinite(self.total) else None
        message = f"epoch {trainer.current_epoch} loss {loss:.4g}" if loss is not None else f"epoch {trainer.current_epoch}"
        if time.monotonic() - self._reported > 0.2:  # the build view redraws a few times a second
            self._reported = time.monotonic()
            self.ctx.progress(step, total, message, unit="steps")
        if step % self.every == 0 and step != self._printed:
            self._printed = step
            self.ctx.log.info("step %d/%s %s", step, total or "?", message)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        values = {k: round(float(v), 6) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("val_")}
        self.ctx.log.info("epoch %d step %d: %s", trainer.current_epoch, trainer.global_step,
                          ", ".join(f"{k} {v}" for k, v in values.items()))

    def _fail_on_loss(self, trainer, loss) -> None:
        import shutil

        folder = Path(trainer.default_root_dir) / CHECKPOINTS
        if trainer.is_global_zero:
            shutil.rmtree(folder, ignore_errors=True)  # resuming this key would only fail again
        raise BuildError(
            f"step '{self.ctx.step}': the training loss became {loss} at training step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}). Lower `optimizer.lr`, clip gradients (`trainer.gradient_clip_val: "
            f"1.0`), or train in a wider precision (`trainer.precision: 32-true`); also check the inputs for "
            f"extreme values")


def _loss_value(outputs) -> float | None:
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else None


# ---- results and facts ----------------------------------------------------------------------------------
def _metrics(trainer, p: dict, seed: int, recorder: _Recorder) -> dict:
    """Results only: everything here is the same for the same key on CPU."""
    logged = {k: rounded(float(v), 8) for k, v in trainer.callback_metrics.items()}
    out = {}
    train_loss = logged.get("train_loss_epoch", logged.get("train_loss"))
    if train_loss is not None:
        out["train_loss"] = train_loss
    out.update({k: v for k, v in logged.items() if k.startswith("val_") and not k.endswith("_step")})
    device = trainer.strategy.root_device.type
    exact = device == "cpu" and p["deterministic"]
    # every rank sees as many samples (DistributedSampler pads), so rank 0's count times the ranks is the total
    out.update(steps=trainer.global_step, epochs=trainer.current_epoch, samples=recorder.samples * trainer.world_size,
               seed=seed,
               num_threads=p["num_threads"], device=device, precision=str(trainer.precision),
               world_size=trainer.world_size, deterministic=p["deterministic"],
               reproducibility="bit-identical" if exact else "tolerance")
    if recorder.tokens:
        out["tokens"] = recorder.tokens * trainer.world_size
    if not exact:
        out["tolerance"] = p["tolerance"]
    if p["early_stopping"]:
        stopper = next(c for c in trainer.callbacks if type(c).__name__ == "EarlyStopping")
        out["stopped_early"] = bool(stopper.stopped_epoch)
    return out


def _facts(recorder: _Recorder, wall: float, fit_seconds: float, world_size: int) -> dict:
    """Facts of this run (not results): timings and throughput (all ranks: rank 0's times the ranks)."""
    run = recorder.run
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024  # KiB on Linux
    facts = {"wall_seconds": round(wall, 3), "fit_seconds": round(fit_seconds, 3),
             "samples_per_second": round(world_size * run["samples"] / run["seconds"], 1) if run["seconds"] else None,
             "peak_memory_mb": round(peak, 1)}
    if run["tokens"]:
        facts["tokens_per_second"] = round(world_size * run["tokens"] / run["seconds"], 1)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        facts["gpu_peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if recorder.resumed_from_step is not None:
        facts["resumed_from_step"] = recorder.resumed_from_step
    return facts
