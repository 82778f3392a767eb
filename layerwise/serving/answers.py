"""Checks a model server's answer against the signature that was called, before anyone uses it.

A client that hands back whatever arrived turns a broken or hostile server into wrong results
that look right: a string where probabilities belong, one row for two images, NaN scores. Every
answer here must hold the signature's outputs (the names in its metadata when the server gave
them), each a numeric array with one row per image and the metadata's shape; ``probabilities``
must be finite, in [0, 1] and sum to 1 per row; class indices must be integers in range.
Anything else raises :class:`~layerwise.errors.ModelServerError` in one line.

TF Serving's REST answer formats (row ``predictions`` and columnar ``outputs``):
https://www.tensorflow.org/tfx/serving/api_rest#response_format_4.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from layerwise.errors import ModelServerError

# Outputs of the layerwise classifier signatures (layerwise.serving.servables) and what they hold.
PROBABILITY_OUTPUTS = ("probabilities",)  # rows sum to 1
SCORE_OUTPUTS = ("probabilities", "top_k_scores")  # each value in [0, 1]
CLASS_OUTPUTS = ("classes", "top_k_classes")  # integer class indices
INTEGER_OUTPUTS = CLASS_OUTPUTS + ("exit_stage",)
# float32 softmax rows sum to 1 within ~1e-6; an ensemble's weighted average within ~1e-5.
SUM_TOLERANCE = 1e-3
SINGLE_OUTPUT = "outputs"  # TF Serving's name for the one unnamed output (bare rows)


def _short(value: Any) -> str:
    return " ".join(repr(value)[:120].split())


def rest_columns(response: Any, server: str) -> dict[str, Any]:
    """``{output: rows}`` from a REST answer: ``{"predictions": [...]}`` (rows, each a dict of
    outputs or one bare value) or ``{"outputs": ...}`` (columnar)."""
    if not isinstance(response, dict):
        raise ModelServerError(f"{server} answered {_short(response)}, not a JSON object with 'predictions'")
    if "predictions" in response:
        rows = response["predictions"]
        if not isinstance(rows, list):
            raise ModelServerError(f"{server} answered 'predictions': {_short(rows)}, not a list of rows")
        dict_rows = [isinstance(row, dict) for row in rows]
        if not any(dict_rows):
            return {SINGLE_OUTPUT: rows} if rows else {}
        if not all(dict_rows) or len({tuple(sorted(row)) for row in rows}) != 1:
            raise ModelServerError(f"{server} answered rows with different outputs: {_short(rows)}")
        return {key: [row[key] for row in rows] for key in rows[0]}
    if "outputs" in response:
        outputs = response["outputs"]
        return dict(outputs) if isinstance(outputs, dict) else {SINGLE_OUTPUT: outputs}
    raise ModelServerError(f"{server} answered without 'predictions' or 'outputs': {_short(response)}")


def _numeric(name: str, value: Any, server: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):  # ragged rows
        raise ModelServerError(f"{server} answered output {name!r} with rows of different lengths") from None
    if array.dtype.kind not in "iuf":
        raise ModelServerError(f"{server} answered output {name!r} as {array.dtype} values, not numbers: {_short(value)}")
    return array


def _check_shape(name: str, array: np.ndarray, rows: int, shape: tuple | None, server: str) -> None:
    if array.ndim == 0 or array.shape[0] != rows:
        got = "a single value" if array.ndim == 0 else f"{array.shape[0]} row(s)"
        raise ModelServerError(f"{server} answered output {name!r} with {got} for {rows} image(s)")
    if shape is not None and (
        len(shape) != array.ndim or any(want is not None and got != want for got, want in zip(array.shape[1:], shape[1:]))
    ):
        want = "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"
        raise ModelServerError(f"{server} answered output {name!r} shaped {list(array.shape)}; the signature says {want}")


def _check_values(name: str, array: np.ndarray, num_classes: int | None, server: str) -> None:
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ModelServerError(f"{server} answered output {name!r} with NaN or infinite values")
    if name in SCORE_OUTPUTS and array.size and (array.min() < -SUM_TOLERANCE or array.max() > 1 + SUM_TOLERANCE):
        raise ModelServerError(f"{server} answered {name!r} outside [0, 1] (range {array.min()}..{array.max()})")
    if name in PROBABILITY_OUTPUTS:
        if array.ndim != 2:
            raise ModelServerError(f"{server} answered {name!r} shaped {list(array.shape)}, not [images, classes]")
        sums = array.sum(axis=1)
        if sums.size and np.max(np.abs(sums - 1.0)) > SUM_TOLERANCE:
            raise ModelServerError(f"{server} answered {name!r} rows that do not sum to 1 (sums {_short(sums.tolist())})")
    if name in INTEGER_OUTPUTS:
        if array.dtype.kind not in "iu":
            raise ModelServerError(f"{server} answered {name!r} as {array.dtype} values, not integers")
        if array.size and array.min() < 0:
            raise ModelServerError(f"{server} answered negative {name!r}")
    if name in CLASS_OUTPUTS and num_classes is not None and array.size and array.max() >= num_classes:
        raise ModelServerError(f"{server} answered {name!r} up to {array.max()} for a model of {num_classes} classes")


def check_outputs(
    outputs: Mapping[str, Any], rows: int, expected: Mapping[str, tuple] | None, server: str
) -> dict[str, np.ndarray]:
    """The checked ``{output: array}`` of an answer for ``rows`` images.

    Args:
        outputs: ``{output name: values}`` as the server sent them.
        rows: how many images were sent (each output must have as many rows).
        expected: ``{output name: shape with None for unknown sizes}`` from the signature's
            metadata; ``None`` or empty when unknown (then only the names' own rules apply).
        server: how to name the server in messages.

    Raises:
        ModelServerError: in one line, for any answer that is not the signature's.
    """
    outputs = dict(outputs)
    if expected and len(expected) == 1 and set(outputs) == {SINGLE_OUTPUT}:
        outputs = {next(iter(expected)): outputs[SINGLE_OUTPUT]}
    if rows == 0 and not outputs:  # an empty batch: the row format has no row to name the outputs
        return {name: np.zeros((0,) + tuple(d or 0 for d in shape[1:])) for name, shape in (expected or {}).items()}
    if expected and set(outputs) != set(expected):
        missing, extra = sorted(set(expected) - set(outputs)), sorted(set(outputs) - set(expected))
        raise ModelServerError(
            f"{server} answered outputs {sorted(outputs)}; the signature has {sorted(expected)}"
            + (f" (missing {missing})" if missing else "") + (f" (unexpected {extra})" if extra else "")
        )
    arrays = {name: _numeric(name, value, server) for name, value in outputs.items()}
    num_classes = None
    for name in PROBABILITY_OUTPUTS:
        shape = (expected or {}).get(name)
        if shape is not None and len(shape) == 2 and shape[1] is not None:
            num_classes = shape[1]
        elif name in arrays and arrays[name].ndim == 2:
            num_classes = arrays[name].shape[1]
    for name, array in arrays.items():
        _check_shape(name, array, rows, (expected or {}).get(name), server)
        _check_values(name, array, num_classes, server)
    if {"classes", "probabilities"} <= set(arrays) and arrays["classes"].size:
        if not np.array_equal(arrays["classes"], np.argmax(arrays["probabilities"], axis=-1)):
            raise ModelServerError(f"{server} answered 'classes' that are not the most probable classes")
    return arrays
