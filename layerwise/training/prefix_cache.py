"""Cached frozen prefix: compute the frozen stages' output once per stage, train on it.

In layerwise training stage j's input is a pure function of the image when there is no random
augmentation (the prefix is frozen, BatchNorm in inference mode). Computing it once per stage
(inference mode, batched, no tape) and training on the cached tensors makes the epoch cost that
of the new stage and its head alone. The batches follow exactly the order of the uncached
pipeline: ``DataSource.train_order(seed, epoch)`` gives the permutation that
``train_batches`` applies, and the cache gathers the same examples in the same batches.

Caching costs one pass of the prefix plus a gather of the features every epoch; recomputing costs
a forward pass of the prefix every epoch. ``auto`` measures both on the running machine before a
stage trains (:func:`measure_costs`: the prefix's forward pass on one batch of training images and
a gather of its features, a few milliseconds), caches when one pass and ``E`` gathers cost at most
half of ``E`` epochs of recomputing (:meth:`CacheCosts.worth_caching`), and logs the measured costs
with its choice. On the default network stage 1's prefix (one 3x3 conv on one channel) is
recomputed and stage 2's is cached. Features are stored in the prefix's output dtype (bfloat16
under ``mixed_bfloat16``: half the bytes, and exactly what the uncached path feeds the stage).

Where the training split is cached, the test and validation splits are too (with ``auto``, when
all of them fit in the budget): the evaluation after each epoch then runs the new stage and its
head on the cached features (:meth:`PrefixCache.eval_batches`) instead of the whole classifier on
the images, the same probabilities without the prefix's pass per evaluation.

Modes: ``memory`` (a tensor in RAM), ``disk`` (a memory-mapped float32 ``.npy`` per output under
``workdir/cache/<problem>``, deleted after the stage), ``auto`` (memory when the prefix is worth
caching, the features fit in the budget and there is no augmentation, else off), ``off``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from layerwise.data.base import DataSource, in_memory_pipeline
from layerwise.errors import ConfigError

EVAL_BATCH = 256
TIMED_CALLS = 3  # after one untimed call (tracing): the median is taken
MAX_CACHED_SHARE = 0.5  # auto caches where that saves at least half of the prefix's time
EVAL_SPLITS = ("test", "val")  # cached beside the training split, for the epochs' evaluations


def feature_bytes(frozen: keras.Model, num_examples: int) -> int:
    """Bytes of the prefix's outputs for ``num_examples`` examples, in their dtype."""
    total = 0
    for t in tf.nest.flatten(frozen.outputs):
        total += int(np.prod(t.shape[1:])) * tf.as_dtype(t.dtype).size
    return total * num_examples


@dataclasses.dataclass(frozen=True)
class CacheCosts:
    """Measured seconds per training example: the prefix's forward pass, and gathering its
    features from memory; ``epochs`` of the stage.

    Example:
        >>> CacheCosts(forward_s=5e-4, gather_s=2e-5, epochs=3).worth_caching()
        True
    """

    forward_s: float
    gather_s: float
    epochs: int

    def worth_caching(self) -> bool:
        """One forward pass and ``epochs`` gathers cost at most :data:`MAX_CACHED_SHARE` of
        ``epochs`` forward passes (the features held in memory cost too, and a close call
        is within the measurement's noise)."""
        return self.forward_s + self.epochs * self.gather_s <= MAX_CACHED_SHARE * self.epochs * self.forward_s

    def describe(self, num_examples: int) -> str:
        per_pass = num_examples * self.forward_s
        cached = per_pass + self.epochs * num_examples * self.gather_s
        return (f"measured: the prefix's forward pass {1e3 * self.forward_s:.3f} ms/example, a gather of "
                f"its features {1e3 * self.gather_s:.3f}; {self.epochs} epoch(s) recomputed "
                f"~{self.epochs * per_pass:.1f} s, cached ~{cached:.1f} s")


def _median_seconds(fn) -> tuple[float, object]:
    """The median seconds of :data:`TIMED_CALLS` calls of ``fn`` after an untimed one, and its result."""
    result = fn()
    times = []
    for _ in range(TIMED_CALLS):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def measure_costs(forward, data: DataSource, batch_size: int, epochs: int) -> CacheCosts:
    """Times ``forward`` (the prefix, a ``tf.function``) on one batch of training images and a
    gather of ``batch_size`` rows of its features, on this machine."""
    x, _ = next(iter(data.eval_batches("train", EVAL_BATCH)))
    n = int(x.shape[0])

    def features():
        outputs = tf.nest.flatten(forward(x))
        for output in outputs:
            output.numpy()  # waits for the result: the time is the pass's
        return outputs

    forward_s, outputs = _median_seconds(features)
    rows = np.random.default_rng(0).integers(0, n, batch_size)
    gather_s, _ = _median_seconds(lambda: [tf.gather(f, rows).numpy() for f in outputs])
    return CacheCosts(forward_s / n, gather_s / batch_size, epochs)


def check_option(option: str, data: DataSource, workdir: str | None) -> None:
    """Up-front check of an explicit cache option (before anything is trained or written).

    Raises:
        ConfigError: ``memory``/``disk`` with random augmentation or an unknown example order;
            ``disk`` without a workdir.
    """
    if option in ("auto", "off"):
        return
    if data.augment != "none":
        raise ConfigError(
            f"--cache_prefix={option} needs data without random augmentation (augment is "
            f"{data.augment!r}); use --cache_prefix=off or --augment=none"
        )
    if data.train_order(0, 0) is None:
        raise ConfigError(f"dataset {data.name!r} cannot be cached (unknown example order); use --cache_prefix=off")
    if option == "disk" and workdir is None:
        raise ConfigError("--cache_prefix=disk needs a --workdir to write the cache to")


def choose_mode(option: str, data: DataSource, frozen: keras.Model | None, budget_mb: float,
                costs: Callable[[], CacheCosts] | None = None) -> str:
    """``memory``, ``disk`` or ``off`` for the cache option ``option`` and this problem; ``auto``
    caches in memory where it is exact, possible and fits the budget, and ``costs()`` (when given:
    :func:`measure_costs`) says it pays.

    Raises:
        ConfigError: caching was asked for where it is not exact (random augmentation) or not
            possible (the data source cannot give its example order).
    """
    if frozen is None or option == "off":
        return "off"
    order_known = data.train_order(0, 0) is not None
    if option == "auto":
        fits = feature_bytes(frozen, data.num_train) <= budget_mb * 2**20
        possible = order_known and data.augment == "none" and fits
        return "memory" if possible and (costs is None or costs().worth_caching()) else "off"
    check_option(option, data, "-")
    return option


def prefix_forward(frozen: keras.Model, jit_compile: bool = False):
    """The frozen prefix's inference pass as a ``tf.function``."""
    return tf.function(lambda x: frozen(x, training=False), jit_compile=jit_compile, reduce_retracing=True)


def _fill(forward, data: DataSource, split: str, write: Callable[[int, list[tf.Tensor]], None]) -> None:
    """Runs the prefix over ``split`` batch by batch, in the split's order, handing each batch's
    outputs and its first example's index to ``write``."""
    start = 0
    for x, _ in data.eval_batches(split, EVAL_BATCH):
        outputs = tf.nest.flatten(forward(x))
        write(start, outputs)
        start += int(outputs[0].shape[0])
    if start != data.num_examples(split):
        raise RuntimeError(f"the {split} split gave {start} examples, expected {data.num_examples(split)}")


def _memory_arrays(frozen: keras.Model, data: DataSource, forward, split: str) -> list[tf.Variable]:
    """``split``'s features as one variable per output, written in place batch by batch: no NumPy
    copy and no initial value to copy (a captured constant would be copied into every tf.data
    function; a variable is captured by its handle)."""
    with tf.init_scope(), tf.device("/CPU:0"):
        arrays = [tf.Variable(tf.zeros((data.num_examples(split), *t.shape[1:]), t.dtype), trainable=False)
                  for t in tf.nest.flatten(frozen.outputs)]

    def write(start, outputs):
        rows = tf.range(start, start + outputs[0].shape[0])
        for array, output in zip(arrays, outputs):  # a scatter writes in place; a slice assign is ~20x slower
            array.scatter_update(tf.IndexedSlices(output, rows))

    _fill(forward, data, split, write)
    return arrays


def _disk_arrays(frozen: keras.Model, data: DataSource, forward, split: str, directory: str) -> list[np.ndarray]:
    """``split``'s features as one memory-mapped float32 ``.npy`` file per output under ``directory``."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, f"{split}_features_{i}.npy") for i in range(len(tf.nest.flatten(frozen.outputs)))]
    files = [np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(data.num_examples(split), *t.shape[1:]))
             for path, t in zip(paths, tf.nest.flatten(frozen.outputs))]

    def write(start, outputs):
        for file, output in zip(files, outputs):
            file[start: start + output.shape[0]] = output.numpy()

    _fill(forward, data, split, write)
    for file in files:
        file.flush()
    del files
    return [np.load(path, mmap_mode="r") for path in paths]


class PrefixCache:
    """The frozen prefix's outputs for the whole training split, in its stored order, and with
    ``eval_splits`` for those evaluation splits too (in their order: :meth:`eval_batches`).

    Args:
        frozen: image -> stage input (a structure of tensors).
        data: the data source (normalised images of each split via ``eval_batches``).
        mode: ``memory`` or ``disk``.
        directory: where ``disk`` writes (created, and deleted by :meth:`close`).
        jit_compile: XLA-compile the prefix's forward pass.
        forward: the prefix's forward pass, if one was traced already (:func:`prefix_forward`).
        eval_splits: evaluation splits (``test``, ``val``) to cache as well; those without
            examples are left out.
    """

    def __init__(self, frozen: keras.Model, data: DataSource, mode: str, directory: str | None = None,
                 jit_compile: bool = False, forward=None, eval_splits: tuple[str, ...] = ()):
        if mode == "disk" and directory is None:
            raise ConfigError("--cache_prefix=disk needs a --workdir to write the cache to")
        self.mode = mode
        self.directory = directory if mode == "disk" else None
        forward = forward or prefix_forward(frozen, jit_compile)
        self.dtypes = [tf.as_dtype(t.dtype) for t in tf.nest.flatten(frozen.outputs)]
        self._structure = frozen.outputs
        self.labels = data.labels("train").astype(np.int32)
        splits = ["train"] + [split for split in eval_splits if data.num_examples(split)]
        if mode == "disk":
            self._splits = {split: _disk_arrays(frozen, data, forward, split, self.directory) for split in splits}
        else:
            self._splits = {split: _memory_arrays(frozen, data, forward, split) for split in splits}
        self.nbytes = sum(int(np.prod(a.shape)) * tf.as_dtype(a.dtype).size
                          for arrays in self._splits.values() for a in arrays)

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """The evaluation splits held (:meth:`eval_batches` reads them)."""
        return tuple(split for split in self._splits if split != "train")

    def eval_batches(self, split: str, batch_size: int):
        """``split``'s features in its order, in batches of ``batch_size`` (the last one smaller),
        as ``(features, None)`` pairs: what ``DataSource.eval_batches`` gives for the images.

        Raises:
            KeyError: ``split`` is not held (:attr:`eval_splits`).
        """
        arrays = self._splits.get(split) if split != "train" else None
        if arrays is None:
            raise KeyError(f"the prefix cache holds no {split!r} split for evaluation (it holds {self.eval_splits})")
        for start in range(0, int(arrays[0].shape[0]), batch_size):
            features = [tf.cast(a[start: start + batch_size], d) for a, d in zip(arrays, self.dtypes)]
            yield (tf.nest.pack_sequence_as(self._structure, features) if len(features) > 1 else features[0]), None

    def batches(self, order: np.ndarray, batch_size: int) -> tf.data.Dataset:
        """Batches of (features, labels) in ``order``, ``drop_remainder`` like ``train_batches``."""
        steps = len(order) // batch_size
        index = order[: steps * batch_size].reshape(steps, batch_size).astype(np.int64)
        labels = tf.constant(self.labels)
        arrays = self._splits["train"]
        if self.mode == "memory":
            def gather(i):
                return [tf.gather(a, i) for a in arrays]
        else:
            shapes = [a.shape[1:] for a in arrays]
            dtypes = self.dtypes

            def gather(i):
                out = tf.numpy_function(lambda j: [np.asarray(a[j]) for a in arrays],
                                        [i], [tf.float32] * len(arrays))
                return [tf.cast(tf.ensure_shape(t, (batch_size, *s)), d) for t, s, d in zip(out, shapes, dtypes)]

        def pair(i):
            features = gather(i)
            features = tf.nest.pack_sequence_as(self._structure, features) if len(features) > 1 else features[0]
            return features, tf.gather(labels, i)

        return in_memory_pipeline(tf.data.Dataset.from_tensor_slices(index).map(pair))

    def close(self) -> None:
        """Frees the features; deletes the disk cache."""
        self._splits = {}
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def cached_eval_splits(option: str, frozen: keras.Model, data: DataSource, budget_mb: float) -> tuple[str, ...]:
    """The evaluation splits cached beside the training split: :data:`EVAL_SPLITS`, or none where
    ``auto``'s budget holds the training split's features but not the evaluation splits' too."""
    everything = feature_bytes(frozen, data.num_train + data.num_test + data.num_val)
    return EVAL_SPLITS if option != "auto" or everything <= budget_mb * 2**20 else ()


def problem_cache(name: str, frozen: keras.Model | None, needs_images: bool, data: DataSource, option: str,
                  budget_mb: float, workdir: str | None, *, jit_compile: bool, batch_size: int = 64, epochs: int = 1,
                  log: Callable[[str], None] | None = None) -> PrefixCache | None:
    """The cached outputs of problem ``name``'s frozen prefix, or ``None`` (not cached, or a local
    loss that reads the images, which the cache does not hold); ``auto`` measures the costs for
    training ``epochs`` epochs in batches of ``batch_size``. ``log`` (when given) hears how much
    was cached and how long it took, and what ``auto`` measured."""
    if needs_images or frozen is None:
        return None
    forward = prefix_forward(frozen, jit_compile)
    measured: list[CacheCosts] = []

    def costs() -> CacheCosts:
        measured.append(measure_costs(forward, data, batch_size, epochs))
        return measured[-1]

    mode = choose_mode(option, data, frozen, budget_mb, costs)
    why = f"; {measured[0].describe(data.num_train)}" if measured else ""
    if mode == "off":
        if measured and log is not None:
            log(f"{name}: the frozen prefix is recomputed every batch (--cache_prefix=auto{why})")
        return None
    directory = os.path.join(workdir, "cache", name) if workdir else None
    start = time.perf_counter()
    cache = PrefixCache(frozen, data, mode, directory, jit_compile=jit_compile, forward=forward,
                        eval_splits=cached_eval_splits(option, frozen, data, budget_mb))
    if log is not None:
        log(f"{name}: cached the frozen prefix ({mode}, {cache.nbytes / 2**20:.0f} MiB: "
            f"{' + '.join(('train',) + cache.eval_splits)}, {time.perf_counter() - start:.1f} s{why})")
    return cache
