"""The machine's limit for a network's own convolutions, and how close its training steps come.

A stage's training step is mostly convolutions: forward, then the gradient with respect to the
input (``Conv2DBackpropInput``) and to the kernel (``Conv2DBackpropFilter``). This module finds
the network's conv layer shapes (:func:`conv_shapes`), times each alone on this machine
(:func:`time_conv`: ``tf.function``, warm-up calls, then the median of timed repeats) with the
passes a training step runs for it (:func:`step_convs`:
the trainable part's convs forward and backward, without the input gradient where nothing
trainable lies before the conv, since TensorFlow's tape computes only the gradients the weights
need; the frozen prefix's forward only), and combines the measured rates into the FLOP-weighted
limit of a training step (:func:`step_limit`): the rate the step would reach if each of its
convolutions ran as fast as it does alone, and nothing else took time. A step's achieved rate
over that limit (:func:`stage_fraction`), the convs' time alone over the step's time, says how
much of the step goes to everything else (BatchNorm, pooling, the optimizer, the loop) and to the
convolutions running slower in context.

FLOPs of one conv's forward and both backward passes: 3 x 2 x N x Ho x Wo x Cout x Cin/groups x
kh x kw (``ConvShape.train_flops``; each pass is one multiply-accumulate per kernel entry and
output position, the convention of :mod:`layerwise.nn.flops`; the roofline model of Williams, Waterman and
Patterson, "Roofline: an insightful visual performance model", CACM 2009, with the measured
kernel speed as the roof). Output sizes follow ``tf.nn.conv2d``
(https://www.tensorflow.org/api_docs/python/tf/nn/convolution): ``same`` gives ceil(H / s),
``valid`` floor((H - d (k - 1) - 1) / s) + 1.

Example:
    >>> shapes = conv_shapes(problem.trainable, batch=64)
    >>> timing = time_conv(shapes[0].shape, "float32", repeats=3)
    >>> timing["gflop_per_s"]
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import time
from typing import Any, Callable, Iterable, Sequence

import keras
import tensorflow as tf

from layerwise.precision import read_cpu_flags

# /proc/cpuinfo flags that decide the CPU's matrix speed: AVX2 / AVX-512 float32 FMAs, AVX512-BF16
# dot products, AMX tiles (bfloat16 and int8 matrix units)
REPORTED_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
# a dtype policy -> the dtype its convolutions compute in
CONV_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16",
               "bfloat16": "bfloat16", "float16": "float16"}
FORWARD, INPUT_GRADIENT, KERNEL_GRADIENT = "forward", "input_gradient", "kernel_gradient"
ALL_PASSES = (FORWARD, INPUT_GRADIENT, KERNEL_GRADIENT)
PASS_NAMES = {FORWARD: "fwd", INPUT_GRADIENT: "dx", KERNEL_GRADIENT: "dw"}
WARMUP_CALLS = 2  # untimed: the first traces the function, the second settles oneDNN's primitive cache


@dataclasses.dataclass(frozen=True)
class ConvShape:
    """One 2-D convolution at one batch size (NHWC input, ``filters`` output channels)."""

    batch: int
    height: int
    width: int
    in_channels: int
    filters: int
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: str = "same"
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def output_size(self) -> tuple[int, int]:
        """(Ho, Wo), as ``tf.nn.conv2d`` computes them."""
        return tuple(_output_length(n, k, s, d, self.padding)
                     for n, k, s, d in zip((self.height, self.width), self.kernel, self.strides, self.dilation))

    def forward_flops(self) -> int:
        """2 x N x Ho x Wo x Cout x Cin/groups x kh x kw: one forward pass."""
        ho, wo = self.output_size()
        kh, kw = self.kernel
        return 2 * self.batch * ho * wo * self.filters * (self.in_channels // self.groups) * kh * kw

    def train_flops(self) -> int:
        """3 x the forward: the forward pass, the input gradient and the kernel gradient."""
        return 3 * self.forward_flops()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "ConvShape":
        """The inverse of :meth:`to_dict`, also after a JSON round trip (lists for tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()})

    def describe(self) -> str:
        """``64x28x28x64 -> 128, 3x3/1 same``."""
        text = (f"{self.batch}x{self.height}x{self.width}x{self.in_channels} -> {self.filters}, "
                f"{self.kernel[0]}x{self.kernel[1]}/{self.strides[0]} {self.padding}")
        return text + (f" d{self.dilation[0]}" if self.dilation != (1, 1) else "") + (
            f" g{self.groups}" if self.groups != 1 else "")


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """A Conv2D layer of a model: its path (``stage_01/stage_01_conv``), its shape, and whether
    any layer before it has trainable weights (then training needs its input's gradient)."""

    name: str
    shape: ConvShape
    after_trainable: bool = True


def _output_length(n: int, k: int, s: int, d: int, padding: str) -> int:
    if padding == "same":
        return math.ceil(n / s)
    if padding == "valid":
        return (n - d * (k - 1) - 1) // s + 1
    raise ValueError(f"padding {padding!r}: the roofline knows 'same' and 'valid' convolutions")


def conv_shapes(model: keras.Model, batch: int) -> list[ConvLayer]:
    """Every ``keras.layers.Conv2D`` of ``model`` (nested models included, in layer order) at
    ``batch`` examples, from the shape each was called on (``layer.input``: the model must be
    built, as a functional model is). ``after_trainable``: a layer before it in that order (a
    topological order: every layer that feeds it among them) has trainable weights."""
    found: list[ConvLayer] = []
    _walk(model, batch, "", [False], found)
    return found


def _walk(model: keras.Model, batch: int, prefix: str, seen_trainable: list[bool], found: list[ConvLayer]) -> None:
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _walk(layer, batch, f"{prefix}{layer.name}/", seen_trainable, found)
            continue
        if isinstance(layer, keras.layers.Conv2D):
            if layer.data_format != "channels_last":
                raise ValueError(f"{layer.name}: the roofline times channels_last (NHWC) convolutions, "
                                 f"this layer is {layer.data_format}")
            _, height, width, channels = layer.input.shape
            found.append(ConvLayer(prefix + layer.name, ConvShape(
                batch=batch, height=int(height), width=int(width), in_channels=int(channels),
                filters=int(layer.filters), kernel=tuple(layer.kernel_size), strides=tuple(layer.strides),
                padding=layer.padding, dilation=tuple(layer.dilation_rate), groups=int(layer.groups)),
                after_trainable=seen_trainable[0]))
        seen_trainable[0] = seen_trainable[0] or bool(layer.trainable_weights)


def step_convs(trainable: keras.Model, frozen: keras.Model | None, batch: int) -> list[dict[str, Any]]:
    """The convolutions of one training step of ``trainable`` on top of ``frozen`` (``None``,
    or a prefix cached once, runs no conv per step), as JSON-ready records: ``name``, ``shape``
    (:meth:`ConvShape.to_dict`), ``passes`` (the trainable part's: forward, the input gradient
    where a trainable layer lies before the conv, the kernel gradient; the frozen prefix's:
    forward only) and ``step_flops``, what it computes in the step (forward FLOPs per pass)."""
    convs = []
    for part, model in (("trainable", trainable), ("frozen", frozen)):
        for c in conv_shapes(model, batch) if model is not None else []:
            if part == "frozen":
                passes = [FORWARD]
            else:
                passes = [FORWARD, INPUT_GRADIENT, KERNEL_GRADIENT] if c.after_trainable else [FORWARD, KERNEL_GRADIENT]
            convs.append(dict(name=c.name, shape=c.shape.to_dict(), passes=passes,
                              step_flops=len(passes) * c.shape.forward_flops()))
    return convs


def conv_dtype(precision: str) -> str:
    """The dtype a dtype policy's convolutions compute in (``mixed_bfloat16`` -> ``bfloat16``)."""
    if precision not in CONV_DTYPES:
        raise ValueError(f"precision {precision!r}: expected one of {sorted(CONV_DTYPES)}")
    return CONV_DTYPES[precision]


def time_conv(shape: ConvShape, precision: str = "float32", repeats: int = 3,
              passes: Sequence[str] = ALL_PASSES) -> dict[str, Any]:
    """Seconds of ``passes`` of ``shape`` (by default the forward pass and both gradients) in
    ``precision``'s compute dtype: ``WARMUP_CALLS`` untimed calls of the ``tf.function``, then the
    median of ``repeats`` timed ones (each waits for its results).

    Returns:
        ``seconds`` (median), ``seconds_range`` ([min, max]), ``flops`` (forward FLOPs per pass:
        :meth:`ConvShape.train_flops` for all three), ``gflop_per_s`` (flops / median seconds / 1e9),
        ``dtype`` and ``passes``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if FORWARD not in passes or not set(passes) <= set(ALL_PASSES):
        raise ValueError(f"passes {list(passes)}: the forward pass and any of {ALL_PASSES[1:]}")
    with_input, with_kernel = INPUT_GRADIENT in passes, KERNEL_GRADIENT in passes
    dtype = conv_dtype(precision)
    ho, wo = shape.output_size()
    kh, kw = shape.kernel
    x = tf.cast(tf.random.normal((shape.batch, shape.height, shape.width, shape.in_channels), seed=1), dtype)
    kernel = tf.cast(tf.random.normal((kh, kw, shape.in_channels // shape.groups, shape.filters), seed=2) * 0.05, dtype)
    dy = tf.cast(tf.random.normal((shape.batch, ho, wo, shape.filters), seed=3), dtype)

    @tf.function
    def forward_backward(x, kernel, dy):
        sources = [x] * with_input + [kernel] * with_kernel
        with tf.GradientTape() as tape:
            tape.watch(sources)
            y = tf.nn.conv2d(x, kernel, shape.strides, shape.padding.upper(), dilations=shape.dilation)
        # y returned too: the gradients do not need it, and the function would prune it
        return [y] + (tape.gradient(y, sources, output_gradients=dy) if sources else [])

    seconds = []
    for call in range(WARMUP_CALLS + repeats):
        start = time.perf_counter()
        outputs = forward_backward(x, kernel, dy)
        outputs[-1].numpy()  # waits for the device (a GPU runs asynchronously)
        if call >= WARMUP_CALLS:
            seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    flops = len(passes) * shape.forward_flops()
    return dict(seconds=median, seconds_range=[min(seconds), max(seconds)], flops=flops,
                gflop_per_s=flops / median / 1e9, dtype=dtype, passes=list(passes))


def step_limit(convs: Sequence[dict[str, Any]], seconds: dict[tuple[ConvShape, tuple[str, ...]], float]) -> float | None:
    """The FLOP-weighted limit of a step, GFLOP/s: its convolutions' FLOPs (``step_convs``'s
    records) over the time they take alone, each as measured for its shape and passes
    (``seconds``, keyed by ``(shape, tuple(passes))``): sum(F_i) / sum(T_i), the harmonic mean of
    the rates weighted by FLOPs (a slow shape weighs by the time it takes). ``None`` where the
    step has no convolution."""
    flops = sum(c["step_flops"] for c in convs)
    if not flops:
        return None
    return flops / 1e9 / sum(seconds[conv_key(c)] for c in convs)


def conv_key(conv: dict[str, Any]) -> tuple[ConvShape, tuple[str, ...]]:
    """A ``step_convs`` record's shape and passes: what :func:`time_conv` measures once."""
    return ConvShape.from_dict(conv["shape"]), tuple(conv["passes"])


def stage_fraction(gflop_per_step: float, seconds_per_step: float, limit: float | None) -> dict[str, Any]:
    """A stage's achieved GFLOP/s (its training step's conv FLOPs over the step's time) and its
    fraction of ``limit`` (``None`` without a limit): the time its convs take alone over the step's."""
    achieved = gflop_per_step / seconds_per_step
    return dict(achieved_gflop_per_s=achieved, fraction=achieved / limit if limit else None)


def cpu_model_name() -> str:
    """The CPU's ``model name`` in ``/proc/cpuinfo`` with its ``cpu family`` and ``model`` numbers
    (a VM may show only "AMD EPYC"; family 25 model 17 says Zen 4), ``platform.processor()`` elsewhere."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not line.strip():
                    break  # the first processor's block is enough
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or "unknown CPU"
    numbers = [f"{key} {fields[key]}" for key in ("cpu family", "model") if key in fields]
    return fields["model name"] + (f" ({', '.join(numbers)})" if numbers else "")


def machine_description(flags: Iterable[str] | None = None) -> dict[str, Any]:
    """The CPU (model name, core count, which of ``REPORTED_CPU_FLAGS`` it has) and the GPUs
    TensorFlow sees (their ``device_name``)."""
    present = set(read_cpu_flags() if flags is None else flags)
    gpus = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
            for g in tf.config.list_physical_devices("GPU")]
    return dict(cpu=cpu_model_name(), cpu_count=os.cpu_count(),
                cpu_flags={flag: flag in present for flag in REPORTED_CPU_FLAGS}, gpus=gpus)



def measure(stages: Sequence[dict[str, Any]], precision: str, batch: int, repeats: int = 3,
            log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Times every distinct conv shape and passes of ``stages`` (each with ``stage``, ``convs``
    from :func:`step_convs`, ``train_gflop_per_image`` and ``images_per_s``, as
    ``apps.throughput.run_case`` measures them) in ``precision`` and sets each stage's achieved
    GFLOP/s beside its limit.

    The achieved rate counts the convs' FLOPs as the step computes them (``conv_gflop_per_step``);
    ``train_gflop_per_step`` is :func:`layerwise.nn.flops.count_flops`'s count as the
    benchmark makes it (3x the trainable part's forward, dense layers included, plus the prefix's
    forward), which also counts an input gradient the step's first conv does not compute.

    Returns:
        ``precision``, ``dtype``, ``shapes`` (one row per distinct shape and passes: its layers,
        FLOPs, seconds, GFLOP/s) and ``stages`` (``limit_gflop_per_s``, ``achieved_gflop_per_s``,
        ``fraction``, ``ms_per_step``, ``conv_gflop_per_step``, ``train_gflop_per_step``).
    """
    layers: dict[tuple[ConvShape, tuple[str, ...]], list[str]] = {}
    for stage in stages:
        for conv in stage["convs"]:
            names = layers.setdefault(conv_key(conv), [])
            if conv["name"] not in names:
                names.append(conv["name"])
    rows, seconds = [], {}
    for (shape, passes), names in layers.items():
        timing = time_conv(shape, precision, repeats, passes)
        seconds[(shape, passes)] = timing["seconds"]
        rows.append(dict(shape=shape.to_dict(), conv=shape.describe(), layers=names, **timing))
        log(f"{precision} {shape.describe()} {'+'.join(passes)}: {timing['gflop_per_s']:.1f} GFLOP/s "
            f"({', '.join(names)})")
    stage_rows = []
    for stage in stages:
        conv_gflop = sum(c["step_flops"] for c in stage["convs"]) / 1e9
        step_s = batch / stage["images_per_s"]
        stage_rows.append(dict(stage=stage["stage"], limit_gflop_per_s=step_limit(stage["convs"], seconds),
                               ms_per_step=1000 * step_s, conv_gflop_per_step=conv_gflop,
                               train_gflop_per_step=stage["train_gflop_per_image"] * batch))
        stage_rows[-1].update(stage_fraction(conv_gflop, step_s, stage_rows[-1]["limit_gflop_per_s"]))
    return dict(precision=precision, dtype=conv_dtype(precision), shapes=rows, stages=stage_rows)


def roofline_report(cases: Sequence[dict[str, Any]], run_case: Callable[[dict[str, Any]], dict[str, Any]],
                    repeats: int = 3, log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """For each case (one precision each), ``run_case(case)`` trains every stage briefly and
    times it (``apps.throughput.run_case``: ``precision``, ``batch`` and ``per_stage`` with
    ``convs``, ``train_gflop_per_image`` and ``images_per_s``); then :func:`measure` times the
    stages' conv shapes in that precision. The report names the machine
    (:func:`machine_description`) and the TensorFlow and Keras versions.

    Raises:
        RuntimeError: a case's training failed (its error).
    """
    parts, batch = [], None
    for case in cases:
        result = run_case(case)
        if "error" in result:
            raise RuntimeError(f"timing the stages of {case}: {result['error']}")
        batch = result["batch"]
        log(f"{result['precision']}: stages timed, " + ", ".join(
            f"stage {s['stage']} {1000 * batch / s['images_per_s']:.0f} ms/step" for s in result["per_stage"]))
        parts.append(measure(result["per_stage"], result["precision"], batch, repeats, log))
    return dict(machine=machine_description(), tensorflow=tf.__version__, keras=keras.__version__,
                batch=batch, repeats=repeats, precisions=parts)


def _machine_line(machine: dict[str, Any]) -> str:
    flags = ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in machine["cpu_flags"].items())
    gpus = f"; GPUs: {', '.join(machine['gpus'])}" if machine.get("gpus") else ""
    return f"{machine['cpu']}, {machine['cpu_count']} cores ({flags}){gpus}"


def _cell(value: float | None, spec: str = "{:.1f}") -> str:
    return "-" if value is None else spec.format(value)


def markdown(report: dict[str, Any]) -> str:
    """Per precision: each conv shape's measured GFLOP/s, then each stage's limit, achieved
    GFLOP/s and fraction; the machine named first (these are its figures, no other's)."""
    lines = [f"Machine: {_machine_line(report['machine'])}; TensorFlow {report['tensorflow']}, Keras "
             f"{report['keras']}; batch {report['batch']}, median of {report['repeats']} timed repeats per conv "
             "shape.", ""]
    for part in report["precisions"]:
        lines += [f"### {part['precision']} (convolutions in {part['dtype']})", "",
                  "| conv (NxHxWxCin -> Cout, kernel/stride padding) | passes | layers | GFLOP | ms | GFLOP/s |",
                  "|---|---|---|---:|---:|---:|"]
        for row in part["shapes"]:
            passes = " + ".join(PASS_NAMES[p] for p in row["passes"])
            lines.append(f"| {row['conv']} | {passes} | {', '.join(row['layers'])} | {row['flops'] / 1e9:.2f} | "
                         f"{1000 * row['seconds']:.1f} | {row['gflop_per_s']:.1f} |")
        lines += ["", "| stage | conv GFLOP/step | count_flops GFLOP/step | ms/step | achieved conv GFLOP/s | "
                      "limit GFLOP/s | fraction of limit |", "|---:|---:|---:|---:|---:|---:|---:|"]
        for row in part["stages"]:
            lines.append(f"| {row['stage']} | {row['conv_gflop_per_step']:.2f} | {row['train_gflop_per_step']:.2f} | "
                         f"{row['ms_per_step']:.1f} | {row['achieved_gflop_per_s']:.1f} | "
                         f"{_cell(row['limit_gflop_per_s'])} | {_cell(row['fraction'], '{:.0%}')} |")
        lines.append("")
    return "\n".join(lines)
