"""Custom training loops for a :class:`StagedNetwork`: layerwise (Algorithm 1) and end to end.

Belilovsky, Eickenberg & Oyallon, "Greedy Layerwise Learning Can Scale to ImageNet", ICML 2019.
Layerwise: for j = 0..J-1, freeze stages 0..j-1 (``trainable=False``, BatchNorm in inference
mode), train stage j with a fresh auxiliary head, a fresh optimizer and a freshly traced step,
evaluate its head and the 2^j-weighted ensemble of all heads so far, checkpoint and export.
End to end: the stages and the last head trained together for the same total epochs, the
baseline the paper compares with.

Every epoch is checkpointed (crash-safe, see ``layerwise.run.checkpoints``): rerunning the same
configuration on the same workdir loads finished stages and continues the unfinished one from
its last epoch, with the same numbers an uninterrupted run gives.

Example:
    >>> trainer = GreedyTrainer(network, data, config, workdir="runs/demo")
    >>> records = trainer.run()   # one dict per stage: accuracies, params, seconds
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from layerwise.run import checkpoints as ckpt
from layerwise.run.config import RunOptions, TrainConfig
from layerwise.distribute import synchronize_batchnorm
from layerwise.data.base import DataSource, derive_seed
from layerwise.errors import ConfigError, DatasetUnavailableError, NonFiniteLossError
from layerwise.training.evaluation import ten_crop_probabilities, top_k_error
from layerwise.serving.export import export_classifier, versions, write_models_config
from layerwise.analysis.flops import count_flops
from layerwise.training.heads import HeadSpec, build_aux_head
from layerwise.analysis.memory import peak_memory_mb, reset_peak_memory
from layerwise.training.optim import dtype_policy, make_optimizer
from layerwise.training.schedules import Plateau, make_schedule
from layerwise.training.prefix_cache import PrefixCache, check_option, choose_mode
from layerwise.run.runlog import RunLog
from layerwise.training.network import StagedNetwork, primary, symbolic_inputs_like
from layerwise.training.steps import make_predict_step, make_train_step


@dataclasses.dataclass
class Problem:
    """One optimisation problem: a trainable part on top of an optional frozen prefix."""

    name: str  # "stage_03" or "end_to_end"
    stage: int  # index of the last stage the problem's head reads
    trainable: keras.Model  # stage j + its head, or the whole network
    frozen: keras.Model | None  # images -> input of the trainable part
    epochs: int
    stretch: int = 1  # LR-schedule stretch (end to end trains J times longer)

    def classifier(self, image_input: keras.KerasTensor) -> keras.Model:
        x = image_input if self.frozen is None else self.frozen(image_input)
        return keras.Model(image_input, self.trainable(x), name=f"{self.name}_classifier")


def ensemble_probabilities(per_stage: list[np.ndarray]) -> np.ndarray:
    """The paper's ensemble Z = sum_j 2^j z_j / sum_j 2^j over stage probabilities.

    Averaging probabilities (rather than logits) keeps every member on the same scale; the
    weights favour deeper, more accurate stages.
    """
    weights = np.array([2.0**j for j in range(len(per_stage))])
    weights /= weights.sum()
    return sum(w * p for w, p in zip(weights, per_stage))


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Fraction of rows whose label is among the ``k`` highest probabilities."""
    top = np.argsort(-probs, axis=-1)[:, :k]
    return float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=-1)))


def top5_fields(probs: np.ndarray, ensemble: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``test_top5`` and ``ensemble_top5`` for problems with at least 100 classes (ImageNet)."""
    if probs.shape[-1] < 100:
        return {}
    return {"test_top5": top_k_accuracy(probs, labels), "ensemble_top5": top_k_accuracy(ensemble, labels)}


def readable(batches, where: str):
    """Iterates ``batches``, turning a dataset that vanished mid-run into a clear error.

    Raises:
        DatasetUnavailableError: files behind the pipeline were deleted, truncated or made
            unreadable while training; the checkpoints written so far are intact.
    """
    try:
        yield from batches
    except (tf.errors.NotFoundError, tf.errors.DataLossError, tf.errors.PermissionDeniedError) as e:
        first_line = (e.message or str(e)).splitlines()[0]
        raise DatasetUnavailableError(
            f"the training data became unreadable during {where} ({first_line}); the checkpoints so far "
            "are intact: restore the files and rerun the same command to resume"
        ) from e


class GreedyTrainer:
    """Trains a staged network layerwise or end to end with custom loops.

    Args:
        network: the model as a list of stages (from ``models.build_model``).
        data: the dataset (normalised tf.data batches).
        config: validated run configuration (mode, heads, optimiser, epochs, seed, ...).
        workdir: run directory for checkpoints, logs and SavedModels; ``None`` keeps
            everything in memory (no resume, no export).
        strategy: a ``tf.distribute.Strategy``; the default strategy when ``None``. The network
            must have been built under its scope.
        options: execution options that do not change results (XLA, prefix cache).
        verbose: 1 shows a Keras progress bar per epoch, 0 is silent.
        log: where one-line messages go.
    """

    def __init__(
        self,
        network: StagedNetwork,
        data: DataSource,
        config: TrainConfig,
        workdir: str | None = None,
        *,
        strategy: tf.distribute.Strategy | None = None,
        options: RunOptions | None = None,
        verbose: int = 1,
        log: Callable[[str], None] = print,
    ):
        self.network = network
        self.data = data
        self.config = config.validate()
        self.workdir = workdir
        self.strategy = strategy or tf.distribute.get_strategy()
        self._distributed = strategy is not None
        self.options = (options or RunOptions()).validate()
        check_option(self.options.cache_prefix, data, workdir)
        self.verbose = verbose
        self.log = log
        self.runlog = RunLog(workdir)
        self.records: list[dict[str, Any]] = []
        self.heads: dict[int, keras.Model] = {}
        self._test_probs: list[np.ndarray] = []
        if getattr(data, "crop_size", 0) != config.crop_size:
            raise ConfigError(
                f"config.crop_size is {config.crop_size} but the data gives "
                f"{getattr(data, 'crop_size', 0) or 'whole images'}: pass it through "
                "layerwise.data.crops.with_crops(data, config.crop_size)"
            )
        self.steps_per_epoch = data.num_train // config.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"batch_size {config.batch_size} is larger than the training set "
                f"({data.num_train} examples); use a smaller --batch_size"
            )
        self._check_heads()

    # ----------------------------------------------------------------------------- problems
    def _head_spec(self, j: int) -> HeadSpec | None:
        """Stage j's auxiliary head; ``None`` where the model brings its own final head."""
        last = j == self.network.num_stages - 1
        if last and self.network.final_head is not None:
            return None
        return self.config.final_head_spec() if last else self.config.head_spec()

    def _check_heads(self) -> None:
        """Every head this run will build fits its stage's features (before anything trains)."""
        last = self.network.num_stages - 1
        for j in [last] if self.config.mode == "end_to_end" else range(last + 1):
            spec = self._head_spec(j)
            if spec is not None:
                spec.check_fits(self.network.output_shape(j), f"stage {j}")

    def _make_head(self, j: int) -> keras.Model:
        shape = self.network.output_shape(j)
        spec = self._head_spec(j)
        if spec is None:
            head = self.network.final_head(shape, self.network.num_classes)
        else:
            head = build_aux_head(shape, self.network.num_classes, spec, name=f"head_{j:02d}")
        if self.config.sync_batchnorm:
            synchronize_batchnorm(head)
        return head

    def stage_problem(self, j: int) -> Problem:
        """Stage j with a fresh head on top of the frozen stages 0..j-1."""
        self.network.freeze_below(j)
        keras.utils.set_random_seed(derive_seed(self.config.seed, 1, j))
        with self.strategy.scope():
            stage = self.network.stages[j]
            head = self._make_head(j)
            inputs = symbolic_inputs_like(stage, f"stage_{j:02d}_input")
            trainable = keras.Model(inputs, head(primary(stage(inputs))), name=f"stage_{j:02d}_problem")
            frozen = self.network.prefix(j)
        self.heads[j] = head
        return Problem(f"stage_{j:02d}", j, trainable, frozen, self.config.epochs_per_stage)

    def end_to_end_problem(self) -> Problem:
        """All stages and the last head, trained together for J x epochs_per_stage epochs."""
        last = self.network.num_stages - 1
        self.network.freeze_below(0)
        keras.utils.set_random_seed(derive_seed(self.config.seed, 1, last))
        with self.strategy.scope():
            head = self._make_head(last)
            trainable = self.network.compose(head=head)
        self.heads[last] = head
        epochs = self.config.epochs_per_stage * self.network.num_stages
        return Problem("end_to_end", last, trainable, None, epochs, stretch=self.network.num_stages)

    # ----------------------------------------------------------------------------- running
    def run(self) -> list[dict[str, Any]]:
        """Trains every problem of the configured mode; returns one record per problem."""
        with dtype_policy(self.config.precision):
            if self.config.mode == "layerwise":
                for j in range(self.network.num_stages):
                    self.run_problem(self.stage_problem(j))
                    if self.config.prune_to_width:
                        from layerwise.training.compression import prune_after_stage

                        prune_after_stage(self, j)
                if self.config.refit_head_epochs:
                    from layerwise.training.compression import refit_final_head

                    refit_final_head(self)
            elif self.config.mode == "decoupled":
                from layerwise.training.decoupled import run_decoupled

                run_decoupled(self)
            else:
                self.run_problem(self.end_to_end_problem())
        if self.workdir:
            write_models_config(os.path.join(self.workdir, "export"))
        return self.records

    def _checkpoints(self, problem: Problem) -> ckpt.ProblemCheckpoints | None:
        if self.workdir is None:
            return None
        return ckpt.ProblemCheckpoints(os.path.join(self.workdir, "checkpoints"), problem.name, warn=self.log)

    def run_problem(self, problem: Problem) -> dict[str, Any]:
        checkpoints = self._checkpoints(problem)
        if checkpoints is not None and checkpoints.has_final():
            try:
                return self._load_finished(problem, checkpoints)
            except ckpt.CorruptCheckpointError as e:
                checkpoints.quarantine_final()
                self.log(f"warning: {e}; retraining {problem.name} (the bad file is kept as final.npz.corrupt)")
        with self.strategy.scope():
            schedule = make_schedule(self.config, self.steps_per_epoch, problem.epochs, problem.stretch)
            optimizer = make_optimizer(
                self.config, self.steps_per_epoch, problem.epochs, problem.stretch, schedule=schedule
            )
            optimizer.build(problem.trainable.trainable_variables)
        history = self.restore_epoch(
            problem.name, problem.epochs, problem.trainable.variables, optimizer.variables, checkpoints
        )
        best = self._best_so_far(problem, checkpoints, history)
        plateau = self._plateau_so_far(schedule, checkpoints, history)
        cache = self.prefix_cache(problem) if len(history) < problem.epochs else None
        step = self.train_step(problem, optimizer, cached=cache is not None)
        classifier = problem.classifier(self.network.image_input())
        predict = make_predict_step(classifier)
        try:
            for epoch in range(len(history), problem.epochs):
                batches = self.train_batches(problem, epoch, cache)
                record = self._train_epoch(problem, step, predict, optimizer, epoch, batches)
                history.append(record)
                if self.config.keep_best and (not best or record["val_acc"] > history[best["epoch"]]["val_acc"]):
                    best = {"epoch": epoch, **ckpt.variables_to_arrays("best", problem.trainable.variables)}
                if plateau is not None and plateau.update(record["val_acc"]):
                    schedule.set_scale(plateau.scale)
                    self.log(f"{problem.name}: validation accuracy has not improved for {plateau.patience} "
                             f"epoch(s); lr x{self.config.lr_decay_factor:g} (scale now {plateau.scale:g})")
                if checkpoints is not None:
                    arrays = {
                        **ckpt.variables_to_arrays("model", problem.trainable.variables),
                        **ckpt.variables_to_arrays("optimizer", optimizer.variables),
                        **{k: v for k, v in best.items() if k != "epoch"},
                    }
                    meta = {"history": history, "best_epoch": best.get("epoch")}
                    if plateau is not None:
                        meta["plateau"] = plateau.state()
                    checkpoints.save_epoch(epoch, arrays, meta)
        finally:
            if cache is not None:
                cache.close()
        if best:  # Prop. 3.1: keep the best point of the trajectory (chosen on validation data)
            ckpt.assign_arrays("best", problem.trainable.variables, best, f"best epoch of {problem.name}")
            self.log(f"{problem.name}: keeping epoch {best['epoch'] + 1} (val acc {history[best['epoch']]['val_acc']:.2%})")
        return self._finish(problem, predict, classifier, history, checkpoints, best.get("epoch"))

    def _best_so_far(self, problem, checkpoints, history) -> dict[str, Any]:
        """The best-validation weights saved with the newest epoch checkpoint (keep_best)."""
        if not self.config.keep_best or not history or checkpoints is None:
            return {}
        restored = checkpoints.latest_epoch()
        if restored is None:
            return {}
        arrays, meta = restored
        if meta.get("best_epoch") is None:
            return {}
        return {"epoch": meta["best_epoch"], **{k: v for k, v in arrays.items() if k.startswith("best/")}}

    def _plateau_so_far(self, schedule, checkpoints, history) -> Plateau | None:
        """The reduce-on-plateau controller (``lr_schedule=plateau``), as the newest epoch
        checkpoint left it, with ``schedule``'s scale set to match; ``None`` for other schedules."""
        if self.config.lr_schedule != "plateau":
            return None
        state = None
        if history and checkpoints is not None:
            restored = checkpoints.latest_epoch()
            state = restored[1].get("plateau") if restored is not None else None
        plateau = Plateau.from_config(self.config, state)
        schedule.set_scale(plateau.scale)
        return plateau

    def prefix_cache(self, problem: Problem) -> PrefixCache | None:
        """The cached outputs of ``problem``'s frozen prefix, or ``None`` (not cached)."""
        mode = choose_mode(self.options.cache_prefix, self.data, problem.frozen, self.options.cache_budget_mb)
        if mode == "off":
            return None
        directory = os.path.join(self.workdir, "cache", problem.name) if self.workdir else None
        start = time.perf_counter()
        cache = PrefixCache(problem.frozen, self.data, mode, directory, jit_compile=self.options.jit_compile)
        if self.verbose:
            self.log(f"{problem.name}: cached the frozen prefix ({mode}, {cache.nbytes / 2**20:.0f} MiB, "
                     f"{time.perf_counter() - start:.1f} s)")
        return cache

    def train_step(self, problem: Problem, optimizer, cached: bool = False):
        """The compiled step of ``problem`` (on cached features when ``cached``)."""
        return make_train_step(
            problem.trainable,
            optimizer,
            frozen=None if cached else problem.frozen,
            weight_decay=self.config.weight_decay,
            global_batch_size=self.config.batch_size,
            strategy=self.strategy,
            jit_compile=self.options.jit_compile,
            prefix_mode=self.options.prefix_mode,
        )

    def train_batches(self, problem: Problem, epoch: int, cache: PrefixCache | None = None):
        """One epoch of (distributed) training batches: images, or cached prefix features."""
        seed = derive_seed(self.config.seed, 2, problem.stage)
        if cache is not None:
            batches = cache.batches(self.data.train_order(seed, epoch), self.config.batch_size)
        else:
            batches = self.data.train_batches(self.config.batch_size, seed, epoch)
        if self._distributed:
            batches = self.strategy.experimental_distribute_dataset(batches)
        return batches

    def restore_epoch(self, name, epochs, model_variables, optimizer_variables, checkpoints) -> list[dict[str, Any]]:
        """Loads problem ``name``'s newest good epoch checkpoint; returns its metric history.

        Also drops the ``metrics.jsonl`` records of epochs after that checkpoint (an interrupted
        epoch is retrained, and logged again).
        """
        restored = checkpoints.latest_epoch() if checkpoints is not None else None
        if restored is None:
            self.runlog.keep_only(lambda r: r.get("problem") != name)
            return []
        arrays, meta = restored
        source = f"checkpoint of {name} epoch {meta['epoch']}"
        ckpt.assign_arrays("model", model_variables, arrays, source)
        ckpt.assign_arrays("optimizer", optimizer_variables, arrays, source)
        history = meta["history"]
        self.runlog.keep_only(
            lambda r: r.get("problem") != name or (r["event"] == "epoch" and r["epoch"] < len(history))
        )
        self.log(f"{name}: resuming after epoch {len(history)} of {epochs}")
        return history

    def _train_epoch(self, problem, step, predict, optimizer, epoch, batches) -> dict[str, Any]:
        start = time.perf_counter()
        # A live bar only on a terminal: in logs and CI the per-epoch summary line is enough.
        live = self.verbose and sys.stdout.isatty()
        bar = keras.utils.Progbar(self.steps_per_epoch, stateful_metrics=["loss", "acc"]) if live else None
        loss_sum = correct = seen = skipped = 0.0
        reset_peak_memory()
        for i, (x, y) in enumerate(readable(batches, f"{problem.name} epoch {epoch + 1}")):
            lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))  # for this batch
            loss, batch_correct, finite = step(x, y)
            loss = float(loss)
            if not bool(finite):
                if self.config.on_nan == "stop":
                    raise NonFiniteLossError(
                        f"{problem.name} epoch {epoch + 1} batch {i + 1}: the loss became {loss}; "
                        f"the last good checkpoint is kept; lower --lr (now {lr:g}) "
                        "or pass --on_nan=skip to skip such batches"
                    )
                skipped += 1
                continue
            loss_sum += loss
            correct += float(batch_correct)
            seen += self.config.batch_size
            if bar is not None:
                bar.update(i + 1, [("loss", loss_sum / (i + 1 - skipped)), ("acc", correct / seen)])
        if seen == 0:
            raise NonFiniteLossError(
                f"{problem.name} epoch {epoch + 1}: every batch had a non-finite loss; lower --lr (now {lr:g})"
            )
        train_peak = peak_memory_mb()  # the training steps' peak, before evaluation's batches
        test_acc = self._accuracy(predict, "test")
        val_acc = self._accuracy(predict, "val") if self.data.num_val else None
        record = {
            "event": "epoch",
            "problem": problem.name,
            "stage": problem.stage,
            "epoch": epoch,
            "loss": loss_sum / (self.steps_per_epoch - skipped),
            "train_acc": correct / seen,
            "test_acc": test_acc,
            "val_acc": val_acc,
            "lr": lr,
            "skipped_batches": int(skipped),
            "seconds": time.perf_counter() - start,
            "peak_memory_mb": train_peak,
        }
        if self.verbose:
            self.log(
                f"{problem.name} epoch {epoch + 1}/{problem.epochs}: loss {record['loss']:.4f}, "
                f"train acc {record['train_acc']:.2%}, test acc {test_acc:.2%}, lr {lr:.3g} "
                f"({record['seconds']:.1f} s)"
            )
        self.runlog.write(record)
        step_index = problem.stage * self.config.epochs_per_stage + epoch if problem.name.startswith("stage") else epoch
        self.runlog.scalars(step_index, problem.name, {k: record[k] for k in ("loss", "train_acc", "test_acc", "lr")})
        return record

    def _probabilities(self, predict, split: str) -> np.ndarray:
        batches = self.data.eval_batches(split, max(self.config.batch_size, 256))
        return np.concatenate([predict(x).numpy() for x, _ in batches])

    def _accuracy(self, predict, split: str) -> float:
        probs = self._probabilities(predict, split)
        return float(np.mean(np.argmax(probs, -1) == self.data.labels(split)))

    def test_evaluation(self, predict) -> tuple[np.ndarray, dict[str, Any]]:
        """A finished problem's test probabilities, and the record fields of ``eval_crops``.

        ``eval_crops=1``: one pass over the test images (their centre crop with ``crop_size``).
        ``eval_crops=10``: the softmax averaged over the ten crops of each whole test image
        (Krizhevsky et al. 2012, Sec. 4.1), with its top-1 and top-5 error
        (``layerwise.training.evaluation``) and the centre-crop accuracy for comparison.
        """
        probs = self._probabilities(predict, "test")
        if self.config.eval_crops != 10:
            return probs, {}
        labels = self.data.labels("test")
        size = (self.config.crop_size, self.config.crop_size)
        batch = max(self.config.batch_size, 256) // 10 or 1
        relaxed = tf.function(predict.python_function, reduce_retracing=True)  # 10 x batch crops
        ten = np.concatenate([
            ten_crop_probabilities(relaxed, x.numpy(), size, batch_size=batch, from_logits=False)
            for x, _ in self.data.full_eval_batches("test", batch)
        ])
        return ten, {
            "eval_crops": 10,
            "centre_crop_acc": float(np.mean(np.argmax(probs, -1) == labels)),
            "test_top1_error": top_k_error(ten, labels, 1),
            "test_top5_error": top_k_error(ten, labels, min(5, ten.shape[-1])),
        }

    def _finish(self, problem, predict, classifier, history, checkpoints, best_epoch=None) -> dict[str, Any]:
        probs, crops = self.test_evaluation(predict)
        self._test_probs.append(probs)
        labels = self.data.labels("test")
        kept = history[-1] if best_epoch is None else history[best_epoch]
        record = {
            "event": "stage",
            "problem": problem.name,
            "stage": problem.stage,
            "params": int(classifier.count_params()),
            "trainable_params": int(problem.trainable.count_params()),
            "train_acc": kept["train_acc"],
            "val_acc": kept.get("val_acc"),
            "test_acc": float(np.mean(np.argmax(probs, -1) == labels)),
            "ensemble_acc": float(np.mean(np.argmax(ensemble_probabilities(self._test_probs), -1) == labels)),
            **top5_fields(probs, ensemble_probabilities(self._test_probs), labels),
            **crops,
            "kept_epoch": best_epoch,
            "flops": count_flops(classifier),
            "epochs": problem.epochs,
            "seconds": float(sum(r["seconds"] for r in history)),
            "epoch_seconds": float(np.mean([r["seconds"] for r in history])),
            "peak_memory_mb": max((r.get("peak_memory_mb", 0.0) for r in history), default=0.0),
        }
        if checkpoints is not None:
            arrays = {**ckpt.variables_to_arrays("model", problem.trainable.variables), "test_probs": probs}
            checkpoints.save_final(arrays, {"record": record})
            checkpoints.clear_epochs()
        return self._complete(problem, classifier, record)

    def _load_finished(self, problem, checkpoints) -> dict[str, Any]:
        arrays, meta = checkpoints.load_final()
        ckpt.assign_arrays("model", problem.trainable.variables, arrays, checkpoints.final_path)
        self._test_probs.append(arrays["test_probs"])
        self.log(f"{problem.name}: finished earlier, loaded from {checkpoints.final_path}")
        return self._complete(problem, problem.classifier(self.network.image_input()), meta["record"])

    def _complete(self, problem, classifier, record) -> dict[str, Any]:
        """Freezes the stage, exports it (once) and records it (once)."""
        if problem.name != "end_to_end":
            self.network.stages[problem.stage].trainable = False
        if self.workdir is not None:
            servable = os.path.join(self.workdir, "export", f"{self.network.name}_{problem.name}")
            if not versions(servable):
                export_classifier(classifier, servable, self.data.mean, self.data.std)
            if not any(r.get("event") == "stage" and r["problem"] == problem.name for r in self.runlog.records):
                self.runlog.write(record)
        else:
            self.runlog.records.append(record)
        self.records.append(record)
        return record
