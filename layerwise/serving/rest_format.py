"""The TF Serving REST API's JSON: the predict request body, the predictions, the model metadata.

See https://www.tensorflow.org/tfx/serving/api_rest: ``POST /v1/models/NAME[/versions/N]:predict``
takes ``{"signature_name": ..., "instances": [...]}`` (row format) and answers ``{"predictions": ...}``
(or ``{"outputs": ...}``, columnar); ``GET /v1/models/NAME[/versions/N]/metadata`` gives each
signature's inputs and outputs (``signature_def``), sizes sometimes as JSON strings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from layerwise.errors import ModelServerError
from layerwise.serving.answers import check_outputs, rest_columns
from layerwise.serving.inputs import InputSpec

def rest_request_body(signature: str, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The TF Serving REST row-format body: one instance per example.

    One input gives ``{"signature_name": s, "instances": [image, ...]}``; several give
    ``"instances": [{"images": image, "threshold": t}, ...]``.
    """
    if len(inputs) == 1:
        instances = next(iter(inputs.values())).tolist()
    else:
        columns = {k: v.tolist() for k, v in inputs.items()}
        instances = [dict(zip(columns, row)) for row in zip(*columns.values())]
    return {"signature_name": signature, "instances": instances}


def parse_rest_predictions(
    response: Any, rows: int | None = None, expected: dict[str, tuple] | None = None, server: str = "the server"
) -> dict[str, np.ndarray]:
    """``{"predictions": [...]}`` (row format) or ``{"outputs": ...}`` (columnar) -> ``{output: array}``,
    checked by :func:`layerwise.serving.answers.check_outputs`; one unnamed output is ``outputs``.

    Args:
        rows: the number of images sent (default: as many as the answer has).
        expected: ``{output: shape}`` of the signature called (:func:`parse_rest_output_shapes`).
    """
    columns = rest_columns(response, server)
    if rows is None:
        rows = len(next(iter(columns.values()), []))
    return check_outputs(columns, rows, expected, server)


def _dims(info: dict[str, Any]) -> tuple:
    dims = info.get("tensor_shape", {}).get("dim", [])
    return tuple(None if int(d.get("size", -1)) < 0 else int(d["size"]) for d in dims)


_DTYPES = {"DT_UINT8": "uint8", "DT_FLOAT": "float32", "DT_HALF": "float16", "DT_DOUBLE": "float64", "DT_INT32": "int32", "DT_INT64": "int64"}


def parse_rest_metadata(metadata: dict[str, Any]) -> dict[str, dict[str, InputSpec]]:
    """Input specs from ``GET /v1/models/NAME/metadata`` (sizes may be JSON strings)."""
    try:
        signature_defs = metadata["metadata"]["signature_def"]["signature_def"]
    except (KeyError, TypeError):
        raise ModelServerError(f"unexpected metadata from the server: {str(metadata)[:200]}") from None
    specs = {}
    for name, sig in signature_defs.items():
        if name.startswith("__"):  # __saved_model_init_op
            continue
        specs[name] = {}
        for key, info in sig.get("inputs", {}).items():
            specs[name][key] = InputSpec(key, _DTYPES.get(info.get("dtype"), info.get("dtype", "?")), _dims(info))
    return specs


def parse_rest_output_shapes(metadata: dict[str, Any]) -> dict[str, dict[str, tuple]]:
    """``{signature: {output: shape}}`` from ``GET /v1/models/NAME/metadata`` (empty when the
    server lists no outputs: then answers are checked by their names' rules only)."""
    try:
        signature_defs = metadata["metadata"]["signature_def"]["signature_def"]
        return {
            name: {key: _dims(info) for key, info in sig.get("outputs", {}).items()}
            for name, sig in signature_defs.items()
            if not name.startswith("__")
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ModelServerError(f"unexpected metadata from the server: {str(metadata)[:200]}") from None
