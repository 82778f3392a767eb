"""Clients for the exported classifiers: a local SavedModel, TF Serving REST and TF Serving gRPC.

All three check the images against the signature's input spec before sending anything (size,
channels, dtype; see :func:`layerwise.serving.inputs.check_images`) and raise :class:`~layerwise.errors.ServingInputError`
with what to change; an unreachable server, a timeout (a total deadline per request), an unknown
model/version or an answer that is not the signature's (:mod:`layerwise.serving.answers`) raises
:class:`~layerwise.errors.ModelServerError`. Results are ``{output name: np.ndarray}``, checked.

REST (``tensorflow_model_server --rest_api_port=8501``): ``GET /v1/models/NAME[/versions/N]/metadata``
for the input spec, then ``POST /v1/models/NAME[/versions/N]:predict`` with
``{"signature_name": ..., "instances": [...]}`` (row format, :mod:`layerwise.serving.rest_format`). gRPC
(``--port=8500``) needs the ``[serving]`` extra (``tensorflow-serving-api``), imported lazily.

Example:
    >>> client = RestClient("http://localhost:8501", "layerwise_cnn_cascade", timeout=5)
    >>> client.predict(images_uint8, threshold=0.95)["exit_stage"]
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import numpy as np

from layerwise.errors import ConfigError, ModelServerError, ServingInputError
from layerwise.serving.answers import check_outputs
from layerwise.serving.deadline import DeadlineExceeded, DeadlineHTTPHandler, DeadlineHTTPSHandler, DeadlineRequest, fetch
from layerwise.serving.inputs import DEFAULT_SIGNATURE, InputSpec, client_inputs, prepare_inputs
from layerwise.serving.rest_format import (
    parse_rest_metadata,
    parse_rest_output_shapes,
    parse_rest_predictions,
    rest_request_body,
)


# ------------------------------------------------------------------------------------ local
def resolve_saved_model(path: str) -> str:
    """A version directory, or a servable directory (its newest integer version)."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    if os.path.isdir(path):
        found = sorted(int(d) for d in os.listdir(path) if d.isdigit())
        if found:
            return os.path.join(path, str(found[-1]))
    raise ServingInputError(
        f"{path} is neither a SavedModel (no saved_model.pb) nor a servable directory with integer "
        "versions; pass e.g. runs/demo/export/layerwise_cnn_stage_02"
    )


def _saved_model_damage(path: str, error: Exception) -> str:
    """What is wrong with the SavedModel at ``path`` that failed to load with ``error``: the
    layout of ``tf.saved_model.save`` (saved_model.pb, variables/variables.index and its data
    shards) first, then the loader's own first line."""
    index = os.path.join(path, "variables", "variables.index")
    if not os.path.exists(index):
        return "variables/variables.index is missing"
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


class LocalModel:
    """A SavedModel loaded in this process (``tf.saved_model.load``).

    Raises:
        ServingInputError: ``path`` is not a SavedModel, or a damaged one (a truncated
            ``saved_model.pb``, deleted or truncated variables).
    """

    def __init__(self, path: str):
        import tensorflow as tf

        self.path = resolve_saved_model(path)
        try:
            self._model = tf.saved_model.load(self.path)
        except MemoryError:
            raise
        except Exception as e:  # a damaged SavedModel is data: protobuf, TF and Python raise many types
            raise ServingInputError(
                f"{self.path} is a damaged SavedModel ({_saved_model_damage(self.path, e)}); export it again "
                "(python -m apps.export WORKDIR), or pass another version"
            ) from None

    def input_specs(self) -> dict[str, dict[str, InputSpec]]:
        specs = {}
        for name, fn in self._model.signatures.items():
            _, kwargs = fn.structured_input_signature
            specs[name] = {
                k: InputSpec(k, v.dtype.name, tuple(v.shape.as_list())) for k, v in kwargs.items()
            }
        return specs

    def predict(self, images: Any, signature: str = DEFAULT_SIGNATURE, threshold: float | None = None):
        import tensorflow as tf

        signature, inputs = prepare_inputs(self.input_specs(), images, signature, threshold)
        out = self._model.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out.items()}


# ------------------------------------------------------------------------------------- REST
# Model names enter URLs (``/v1/models/NAME``): letters, digits, ``_ . -``, no leading dot, so no
# name can climb out of ``/v1/models/`` or add a query.
MODEL_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def check_model_name(model: Any) -> str:
    """``model`` if it is a valid servable name.

    Raises:
        ConfigError: naming the ``model`` argument.
    """
    if not isinstance(model, str) or not MODEL_NAME.fullmatch(model):
        raise ConfigError(
            f"model must be a servable name of letters, digits, '_', '.' and '-' not starting with '.' "
            f"(as in models.config), got {model!r}"
        )
    return model


HTTP_SCHEMES = ("http", "https")

# Only the HTTP handlers, and no redirect handler: a request can never read file:// or ftp:// URLs,
# and never goes anywhere but the given server. TF Serving never redirects, so a 3xx answer is an
# error (:meth:`RestClient._refuse`), whatever scheme or host it points at (urllib's default
# redirect handler follows http, https and ftp to any host).
_OPENER = urllib.request.OpenerDirector()
for _handler in (urllib.request.ProxyHandler(), DeadlineHTTPHandler(), DeadlineHTTPSHandler(),
                 urllib.request.HTTPErrorProcessor(), urllib.request.HTTPDefaultErrorHandler()):
    _OPENER.add_handler(_handler)


class RestClient:
    """TF Serving's REST API.

    Args:
        server: ``http://HOST:8501`` (or https; no other scheme is accepted).
        model: servable name (``layerwise_cnn_stage_02``, ``..._ensemble``, ``..._cascade``).
        version: a specific integer version; ``None`` for the server's default (newest).
        timeout: seconds for each whole request (connecting, sending, and the answer to its
            last byte): a total deadline, not a limit per read.
        check: fetch the signature metadata once and check inputs before sending.
    """

    def __init__(self, server: str, model: str, version: int | None = None, timeout: float = 10.0, check: bool = True):
        if "://" not in server:
            server = "http://" + server
        scheme = urllib.parse.urlsplit(server).scheme.lower()
        if scheme not in HTTP_SCHEMES:
            raise ConfigError(
                f"the REST server address must be http:// or https://, got {server!r}; TF Serving's REST API "
                "is HTTP (e.g. http://localhost:8501)"
            )
        self.server = server.rstrip("/")
        self.model = check_model_name(model)
        self.version = version
        self.timeout = timeout
        self.check = check
        self._specs: dict[str, dict[str, InputSpec]] | None = None
        self._output_shapes: dict[str, dict[str, tuple]] = {}

    @property
    def _what(self) -> str:
        return f"model {self.model!r}" + ("" if self.version is None else f" version {self.version}")

    def url(self, suffix: str = "") -> str:
        version = "" if self.version is None else f"/versions/{int(self.version)}"
        return f"{self.server}/v1/models/{self.model}{version}{suffix}"

    def _request(self, url: str, body: dict | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = DeadlineRequest(url, self.timeout, data=data, headers={"Content-Type": "application/json"})
        try:
            answer = fetch(_OPENER, request)
        except DeadlineExceeded:
            raise ModelServerError(f"{self.server} did not answer within {self.timeout:g} s") from None
        except (socket.timeout, TimeoutError):
            raise ModelServerError(f"{self.server} did not answer within {self.timeout:g} s") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (socket.timeout, TimeoutError)):
                raise ModelServerError(f"{self.server} did not answer within {self.timeout:g} s") from None
            raise ModelServerError(
                f"cannot reach {self.server} ({e.reason}); is tensorflow_model_server running with "
                "--rest_api_port on that port?"
            ) from None
        except ConnectionError as e:
            raise ModelServerError(f"lost the connection to {self.server} ({e})") from None
        except (http.client.HTTPException, OSError) as e:  # IncompleteRead, a malformed status line...
            raise ModelServerError(f"{self.server} sent a broken HTTP answer ({type(e).__name__}: {_line(e)})") from None
        if answer.status != 200:
            self._refuse(answer)
        try:
            return json.loads(answer.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ModelServerError(f"{self.server} answered something that is not JSON") from None

    def _refuse(self, answer) -> None:
        message = _error_text(answer.body, answer.reason)
        if answer.status == 404:
            raise ModelServerError(
                f"{self.server} does not serve {self._what} ({message}); check the name and "
                "version against models.config"
            )
        if answer.status == 400:
            raise ServingInputError(f"{self.server} rejected the request for {self._what}: {message}")
        if 300 <= answer.status < 400:
            raise ModelServerError(
                f"{self.server} answered HTTP {answer.status} for {self._what}, a redirect to "
                f"{_line(answer.headers.get('Location', '?'))}; TF Serving never redirects, so the client follows "
                "none: give the model server's own address"
            )
        raise ModelServerError(f"{self.server} answered HTTP {answer.status} for {self._what}: {message}")

    def _metadata(self) -> None:
        metadata = self._request(self.url("/metadata"))
        self._specs = parse_rest_metadata(metadata)
        self._output_shapes = parse_rest_output_shapes(metadata)

    def input_specs(self) -> dict[str, dict[str, InputSpec]]:
        if self._specs is None:
            self._metadata()
        return self._specs

    def predict(self, images: Any, signature: str = DEFAULT_SIGNATURE, threshold: float | None = None):
        signature, inputs = client_inputs(self, images, signature, threshold)
        answer = self._request(self.url(":predict"), rest_request_body(signature, inputs))
        return parse_rest_predictions(answer, _rows(inputs), self._output_shapes.get(signature), self.server)


def _rows(inputs: dict[str, np.ndarray]) -> int:
    images = inputs["images"]
    return images.shape[0] if images.ndim else 1


def _line(value: Any) -> str:
    return " ".join(str(value).split())[:200]


def _error_text(body: bytes, reason: str) -> str:
    """The ``error`` of a TF Serving error answer in one line; the status reason when the body is
    not a JSON object."""
    try:
        payload = json.loads(body.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        payload = None
    if not isinstance(payload, dict):
        return _line(reason)
    return _line(payload.get("error", body.decode("utf-8", "replace")))


# ------------------------------------------------------------------------------------- gRPC
def _grpc_modules():
    try:
        import grpc
        from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc
    except ImportError as e:
        raise ModelServerError(
            f"the gRPC client needs tensorflow-serving-api ({e}); install it with "
            "pip install 'layerwise[serving]' or use the REST client (--server)"
        ) from None
    return grpc, get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc


class GrpcClient:
    """TF Serving's gRPC API (``PredictionService``); same arguments as :class:`RestClient`.

    Args:
        target: ``HOST:8500``.
    """

    def __init__(self, target: str, model: str, version: int | None = None, timeout: float = 10.0, check: bool = True):
        grpc, self._meta_pb2, self._predict_pb2, services = _grpc_modules()
        self._grpc = grpc
        self.target = target
        self.model = check_model_name(model)
        self.version = version
        self.timeout = timeout
        self.check = check
        self._channel = grpc.insecure_channel(target)
        self._stub = services.PredictionServiceStub(self._channel)
        self._specs = None
        self._output_shapes: dict[str, dict[str, tuple]] = {}

    def _spec(self, request) -> None:
        request.model_spec.name = self.model
        if self.version is not None:
            request.model_spec.version.value = int(self.version)

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except self._grpc.RpcError as e:
            code, details = e.code(), e.details()
            what = f"model {self.model!r}" + ("" if self.version is None else f" version {self.version}")
            codes = self._grpc.StatusCode
            if code == codes.NOT_FOUND:
                raise ModelServerError(f"{self.target} does not serve {what} ({details})") from None
            if code == codes.INVALID_ARGUMENT:
                raise ServingInputError(f"{self.target} rejected the request for {what}: {details}") from None
            if code == codes.DEADLINE_EXCEEDED:
                raise ModelServerError(f"{self.target} did not answer within {self.timeout:g} s") from None
            if code == codes.UNAVAILABLE:
                raise ModelServerError(
                    f"cannot reach {self.target} ({details}); is tensorflow_model_server running with --port?"
                ) from None
            raise ModelServerError(f"{self.target}: {code.name}: {details}") from None

    def input_specs(self) -> dict[str, dict[str, InputSpec]]:
        if self._specs is None:
            import tensorflow as tf

            request = self._meta_pb2.GetModelMetadataRequest()
            self._spec(request)
            request.metadata_field.append("signature_def")
            response = self._call(self._stub.GetModelMetadata, request)
            signature_map = self._meta_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_map)
            signatures = {name: sig for name, sig in signature_map.signature_def.items() if not name.startswith("__")}
            self._specs = {
                name: {k: InputSpec(k, tf.dtypes.as_dtype(info.dtype).name, _proto_dims(info)) for k, info in sig.inputs.items()}
                for name, sig in signatures.items()
            }
            self._output_shapes = {
                name: {k: _proto_dims(info) for k, info in sig.outputs.items()} for name, sig in signatures.items()
            }
        return self._specs

    def predict(self, images: Any, signature: str = DEFAULT_SIGNATURE, threshold: float | None = None):
        import tensorflow as tf

        signature, inputs = client_inputs(self, images, signature, threshold)
        request = self._predict_pb2.PredictRequest()
        self._spec(request)
        request.model_spec.signature_name = signature
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self._stub.Predict, request)
        try:
            outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        except (ValueError, TypeError) as e:  # a TensorProto whose content does not fit its shape or dtype
            raise ModelServerError(f"{self.target} answered a malformed tensor ({_line(e)})") from None
        return check_outputs(outputs, _rows(inputs), self._output_shapes.get(signature), self.target)


def _proto_dims(info) -> tuple:
    """A ``TensorInfo``'s shape with ``None`` for unknown sizes."""
    return tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
