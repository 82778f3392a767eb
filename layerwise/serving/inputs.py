"""What a client sends: images checked against a signature's input spec, and images read from files.

Every client (:mod:`layerwise.serving.clients`) checks the images against the signature's input
spec before sending anything (size, channels, dtype; :func:`check_images`) and raises
:class:`~layerwise.errors.ServingInputError` with what to change. A cascade's signatures without
a threshold input have a twin that takes one (``THRESHOLD_SIGNATURES``; the signatures are
written by :mod:`layerwise.serving.servables`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from layerwise.errors import ServingInputError

DEFAULT_SIGNATURE = "serving_default"
# A cascade signature without a threshold input -> the one that takes it (see layerwise.serving.servables).
THRESHOLD_SIGNATURES = {"serving_default": "serving_threshold", "serving_float": "serving_float_threshold"}


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One named input of a signature: ``dtype`` a NumPy dtype name, ``shape`` with ``None``s."""

    name: str
    dtype: str
    shape: tuple


def check_images(images: Any, spec: InputSpec, signature: str = DEFAULT_SIGNATURE) -> np.ndarray:
    """Validates (and if lossless, converts) a batch of images for the ``images`` input ``spec``.

    A single image (no batch dimension) becomes a batch of one; an empty batch passes (the
    servables answer it with empty outputs). Integer pixels in 0..255 are accepted for a uint8
    input; float64 becomes float32 for a float input, which must be finite.

    Raises:
        ServingInputError: a ragged list or non-numeric values, wrong rank, size, channels or dtype,
            or floats that are not finite in the input's dtype (``1e300`` is finite in float64
            and infinite in float32), with what to do instead.
    """
    images = as_image_array(images, signature)
    want = tuple(spec.shape)
    if images.ndim == len(want) - 1:
        images = images[None]
    if images.ndim != len(want):
        raise ServingInputError(
            f"{signature} takes a batch of images shaped {_shape(want)}; got an array shaped {images.shape}"
        )
    *size, channels = want[1:]
    got_size, got_channels = list(images.shape[1:-1]), images.shape[-1]
    if channels is not None and got_channels != channels:
        kind = {1: "grayscale", 3: "RGB"}.get(channels, f"{channels}-channel")
        raise ServingInputError(
            f"images have {got_channels} channel(s) but the model takes {channels} ({kind}); "
            f"convert them to {kind} first"
        )
    if any(w is not None and g != w for g, w in zip(got_size, size)):
        raise ServingInputError(
            f"images are {'x'.join(map(str, got_size))} pixels but the model takes "
            f"{'x'.join(str(s) for s in size)}; resize them first"
        )
    if spec.dtype == "uint8":
        if images.dtype == np.uint8 or images.size == 0:
            return images.astype(np.uint8)
        if np.issubdtype(images.dtype, np.integer) and images.min() >= 0 and images.max() <= 255:
            return images.astype(np.uint8)
        alternative = "serving_float" if signature == DEFAULT_SIGNATURE else "a float signature"
        raise ServingInputError(
            f"{signature} takes raw uint8 pixels (0..255); got {images.dtype} "
            f"(range {images.min()}..{images.max()}); send raw pixels, or normalised float32 images "
            f"to {alternative}"
        )
    if spec.dtype in ("float32", "float16", "float64"):
        if not np.issubdtype(images.dtype, np.floating):
            raise ServingInputError(
                f"{signature} takes normalised {spec.dtype} images; got {images.dtype} raw pixels: "
                "send them to serving_default instead"
            )
        with np.errstate(over="ignore"):  # an overflow is what the check below reports
            cast = images.astype(spec.dtype)
        if not np.all(np.isfinite(cast)):
            held = "NaN or infinite values" if not np.all(np.isfinite(images)) else (
                f"values too large for {spec.dtype} (largest magnitude {np.max(np.abs(images)):.3g}, "
                f"{spec.dtype} holds up to {np.finfo(spec.dtype).max:.3g})")
            raise ServingInputError(f"{signature} takes finite normalised pixels; the images hold {held}")
        return cast
    raise ServingInputError(f"{signature} input {spec.name!r} has dtype {spec.dtype}, which this client cannot feed")


def as_image_array(images: Any, signature: str = DEFAULT_SIGNATURE) -> np.ndarray:
    """``images`` as one numeric NumPy array.

    Raises:
        ServingInputError: a ragged list (images of different sizes: NumPy cannot stack them) or
            values that are not numbers (strings, ``None``, objects).
    """
    try:
        array = np.asarray(images)
    except (ValueError, TypeError) as e:  # NumPy >= 1.24: "inhomogeneous shape"
        raise ServingInputError(
            f"{signature} takes a batch of images of one size; got a ragged list that is not one array "
            f"({str(e).splitlines()[0][:160]}): resize the images to one size, or send them in separate calls"
        ) from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ServingInputError(
            f"{signature} takes numeric pixels; got an array of {array.dtype} "
            f"({'a ragged list or None values' if array.dtype == object else 'not numbers'})"
        )
    return array


def _shape(shape: Sequence) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def prepare_inputs(
    specs: dict[str, dict[str, InputSpec]], images: Any, signature: str, threshold: float | None
) -> tuple[str, dict[str, np.ndarray]]:
    """Checks ``images`` (and ``threshold``) against ``specs``; returns (signature, inputs).

    With a ``threshold``, ``serving_default``/``serving_float`` of a cascade are swapped for the
    signature that takes one (``serving_threshold``/``serving_float_threshold``).
    """
    if threshold is not None and signature in THRESHOLD_SIGNATURES and THRESHOLD_SIGNATURES[signature] in specs:
        signature = THRESHOLD_SIGNATURES[signature]
    if signature not in specs:
        raise ServingInputError(f"the model has no signature {signature!r}; it has: {', '.join(sorted(specs))}")
    inputs_spec = specs[signature]
    if "images" not in inputs_spec:
        raise ServingInputError(f"signature {signature!r} has no 'images' input (inputs: {sorted(inputs_spec)})")
    images = check_images(images, inputs_spec["images"], signature)
    inputs = {"images": images}
    if "threshold" in inputs_spec:
        value = 0.9 if threshold is None else float(threshold)
        if not 0.0 < value <= 1.0:
            raise ServingInputError(f"the cascade threshold must be in (0, 1], got {value}")
        inputs["threshold"] = np.full(len(images), value, np.float32)
    elif threshold is not None:
        raise ServingInputError(
            f"signature {signature!r} takes no threshold; only the cascade servable's "
            "serving_threshold / serving_float_threshold do"
        )
    return signature, inputs


def _unchecked_inputs(images: Any, signature: str, threshold: float | None) -> tuple[str, dict[str, np.ndarray]]:
    """Inputs sent as given (``check=False``): the server validates them."""
    inputs = {"images": as_image_array(images, signature)}
    if threshold is not None:
        signature = THRESHOLD_SIGNATURES.get(signature, signature)
        inputs["threshold"] = np.full(len(inputs["images"]), threshold, np.float32)
    return signature, inputs


def client_inputs(client, images: Any, signature: str, threshold: float | None):
    """A remote client's request inputs: checked against the served signature when
    ``client.check`` (one metadata call, cached), else sent as given."""
    if client.check:
        return prepare_inputs(client.input_specs(), images, signature, threshold)
    return _unchecked_inputs(images, signature, threshold)


def load_image_files(paths: Sequence[str]) -> np.ndarray:
    """PNG/JPEG/BMP/GIF files -> a uint8 batch ``[N, H, W, C]`` in their own channels.

    Raises:
        ServingInputError: a file is missing or undecodable, or the files differ in size.
    """
    import tensorflow as tf

    images = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
            images.append(tf.io.decode_image(data, expand_animations=False).numpy())
        except OSError as e:
            raise ServingInputError(f"cannot read image {path}: {e}") from None
        except (tf.errors.InvalidArgumentError, ValueError):
            raise ServingInputError(f"cannot decode {path} as PNG/JPEG/BMP/GIF") from None
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ServingInputError(f"the images differ in size/channels {sorted(shapes)}; send one size per batch")
    return np.stack(images)


def load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ServingInputError(f"cannot load {path} as a .npy array: {e}") from None
