"""Re-export (stages, ensemble, cascade) and the serving clients (local, REST, gRPC)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import run_cli, tiny_config

from apps.runner import build_network, resolve, run_training
from layerwise.errors import ModelServerError, ServingInputError
from layerwise.export import export_run
from layerwise.restore import restore_run
from layerwise.serving import clients as serving
from layerwise.serving.inputs import load_image_files
from layerwise.serving.rest_format import parse_rest_predictions, rest_request_body
from layerwise.serving.models_config import write_models_config
from layerwise.serving.versions import versions
from layerwise.training.problems import ensemble_probabilities

NET = "layerwise_cnn"
SERVABLES = [f"{NET}_stage_00", f"{NET}_stage_01", f"{NET}_ensemble", f"{NET}_cascade"]

LOAD_AND_PREDICT = """
import json, os, sys, keras, numpy as np, tensorflow as tf
import models  # the zoo's custom layers, for keras.saving.load_model
root, raw, flt, thr, out = sys.argv[1:6]
raw, flt, thr = np.load(raw), np.load(flt), np.load(thr)
results = {}
for name in json.loads(sys.argv[6]):
    for version in sorted(v for v in os.listdir(f"{root}/{name}") if v.isdigit()) if "stage" in name else ():
        classifier = keras.saving.load_model(f"{root}/{name}/{version}/model.keras")
        results[f"{name}/keras{version}/logits"] = np.asarray(classifier(flt, training=False))
    model = tf.saved_model.load(f"{root}/{name}/{sys.argv[7] if 'stage' in name else 1}")
    a = model.signatures["serving_default"](images=tf.constant(raw))
    b = model.signatures["serving_float"](images=tf.constant(flt))
    for key in a:
        results[f"{name}/u8/{key}"] = a[key].numpy()
        results[f"{name}/f32/{key}"] = b[key].numpy()
    if "cascade" in name:
        c = model.signatures["serving_threshold"](images=tf.constant(raw), threshold=tf.constant(thr))
        for key in c:
            results[f"{name}/thr/{key}"] = c[key].numpy()
np.savez(out, **results)
"""


def _tree_digest(path: str) -> str:
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as f:
                digest.update(name.encode() + f.read())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny 2-stage run, trained once, then re-exported (stages -> v2, ensemble/cascade -> v1)."""
    tmp = tmp_path_factory.mktemp("serving")
    workdir = str(tmp / "run")
    config = resolve(tiny_config())
    run_training(config, workdir, verbose=0, log=lambda _: None)
    export = os.path.join(workdir, "export")
    before = {name: _tree_digest(os.path.join(export, name, "1")) for name in SERVABLES[:2]}
    written = export_run(workdir, build_network, threshold=0.8)
    return {"workdir": workdir, "export": export, "before": before, "written": written, "tmp": tmp}


@pytest.mark.slow
def test_reexport_adds_version_n_plus_1_and_leaves_n_intact(exported):
    export = exported["export"]
    assert sorted(exported["written"]) == sorted(SERVABLES)
    for name in SERVABLES[:2]:
        assert versions(os.path.join(export, name)) == [1, 2]
        assert _tree_digest(os.path.join(export, name, "1")) == exported["before"][name]
    for name in SERVABLES[2:]:
        assert versions(os.path.join(export, name)) == [1]
    assert not [d for name in SERVABLES for d in os.listdir(os.path.join(export, name)) if d.startswith(".tmp")]


@pytest.mark.slow
def test_models_config_parses_with_the_tf_serving_proto(exported):
    pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is not installed ([serving] extra)")
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    text = open(os.path.join(exported["export"], "models.config")).read()
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    entries = {c.name: c for c in config.model_config_list.config}
    assert sorted(entries) == sorted(SERVABLES)
    for name, entry in entries.items():
        newest = versions(os.path.join(exported["export"], name))[-1]
        assert entry.version_labels["stable"] == newest
        assert entry.base_path == os.path.abspath(os.path.join(exported["export"], name))
        assert entry.model_platform == "tensorflow"


@pytest.mark.slow
def test_every_servable_and_stage_keras_file_loads_in_a_fresh_process_and_matches_keras(exported):
    tmp = exported["tmp"]
    run = restore_run(exported["workdir"], build_network)
    raw, labels = run.data.arrays("test")
    raw = raw[:40].astype(np.uint8)
    normalized = run.data.normalize(raw.astype(np.float32)).numpy()
    thresholds = np.linspace(0.3, 1.0, len(raw)).astype(np.float32)
    for name, array in (("raw", raw), ("flt", normalized), ("thr", thresholds)):
        np.save(tmp / f"{name}.npy", array)
    out = tmp / "fresh.npz"
    subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, exported["export"], str(tmp / "raw.npy"), str(tmp / "flt.npy"),
         str(tmp / "thr.npy"), str(out), json.dumps(SERVABLES), "2"],
        check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    got = dict(np.load(out))
    import tensorflow as tf

    per_stage = [tf.nn.softmax(c(normalized, training=False)).numpy() for c in run.classifiers]
    expected = {SERVABLES[0]: per_stage[0], SERVABLES[1]: per_stage[1], SERVABLES[2]: ensemble_probabilities(per_stage)}
    for j, name in enumerate(SERVABLES[:2]):  # every version's model.keras: the classifier itself
        for version in ("1", "2"):
            np.testing.assert_allclose(tf.nn.softmax(got[f"{name}/keras{version}/logits"]), per_stage[j], atol=1e-5)
    for name, probs in expected.items():
        for kind in ("u8", "f32"):
            np.testing.assert_allclose(got[f"{name}/{kind}/probabilities"], probs, atol=1e-5)
            np.testing.assert_array_equal(got[f"{name}/{kind}/classes"], probs.argmax(-1))
            np.testing.assert_allclose(got[f"{name}/{kind}/top_k_scores"][:, 0], probs.max(-1), atol=1e-5)
    cascade = SERVABLES[3]
    for kind, thr in (("u8", np.full(len(raw), 0.8)), ("f32", np.full(len(raw), 0.8)), ("thr", thresholds)):
        confident = per_stage[0].max(-1) >= thr
        want_exit = np.where(confident, 0, 1)
        want_probs = np.where(confident[:, None], per_stage[0], per_stage[1])
        np.testing.assert_array_equal(got[f"{cascade}/{kind}/exit_stage"], want_exit)
        np.testing.assert_allclose(got[f"{cascade}/{kind}/probabilities"], want_probs, atol=1e-5)
    assert 0 < got[f"{cascade}/thr/exit_stage"].sum() < len(raw)  # both exits are exercised


@pytest.mark.slow
def test_saved_model_cli_lists_the_documented_signatures(exported):
    cli = shutil.which("saved_model_cli") or os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli is not installed")

    def show(name, version):
        path = os.path.join(exported["export"], name, str(version))
        return subprocess.run([cli, "show", "--all", "--dir", path], check=True, capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout

    stage = show(SERVABLES[0], 2)
    for text in ("signature_def['serving_default']", "signature_def['serving_float']", "DT_UINT8",
                 "outputs['probabilities']", "outputs['classes']", "outputs['top_k_scores']", "outputs['top_k_classes']"):
        assert text in stage
    cascade = show(SERVABLES[3], 1)
    for text in ("signature_def['serving_threshold']", "signature_def['serving_float_threshold']",
                 "inputs['threshold']", "outputs['exit_stage']"):
        assert text in cascade


# ----------------------------------------------------------------------------- local client
@pytest.mark.slow
def test_local_client_checks_inputs_before_calling(exported):
    model = serving.LocalModel(os.path.join(exported["export"], SERVABLES[0]))
    assert model.path.endswith(os.path.join(SERVABLES[0], "2"))
    good = np.zeros((3, 8, 8, 1), np.uint8)
    assert model.predict(good)["probabilities"].shape == (3, 10)
    assert model.predict(good[0])["classes"].shape == (1,)  # one image becomes a batch of one
    with pytest.raises(ServingInputError, match="are 9x8 pixels but the model takes 8x8"):
        model.predict(np.zeros((2, 9, 8, 1), np.uint8))
    with pytest.raises(ServingInputError, match=r"3 channel\(s\) but the model takes 1 \(grayscale\)"):
        model.predict(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ServingInputError, match="takes raw uint8 pixels.*serving_float"):
        model.predict(np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(ServingInputError, match="takes normalised float32 images; got uint8"):
        model.predict(good, signature="serving_float")
    with pytest.raises(ServingInputError, match="range 300..300"):
        model.predict(np.full((1, 8, 8, 1), 300, np.int64))
    with pytest.raises(ServingInputError, match="no signature 'nope'"):
        model.predict(good, signature="nope")
    with pytest.raises(ServingInputError, match="takes no threshold"):
        model.predict(good, threshold=0.5)
    np.testing.assert_array_equal(model.predict(good.astype(np.int32))["classes"], model.predict(good)["classes"])


@pytest.mark.slow
def test_local_client_reads_png_files_and_checks_channels(exported, tmp_path):
    import tensorflow as tf

    run_raw = np.arange(64, dtype=np.uint8).reshape(8, 8, 1) * 3
    gray, rgb = tmp_path / "gray.png", tmp_path / "rgb.png"
    gray.write_bytes(tf.io.encode_png(run_raw).numpy())
    rgb.write_bytes(tf.io.encode_png(np.repeat(run_raw, 3, -1)).numpy())
    model = serving.LocalModel(os.path.join(exported["export"], SERVABLES[3]))
    images = load_image_files([str(gray), str(gray)])
    np.testing.assert_array_equal(images, np.stack([run_raw, run_raw]))
    out = model.predict(images, threshold=0.7)
    assert set(out) >= {"probabilities", "classes", "exit_stage"} and out["exit_stage"].shape == (2,)
    np.testing.assert_allclose(out["probabilities"], model.predict(run_raw, threshold=0.7)["probabilities"][[0, 0]], atol=1e-6)
    with pytest.raises(ServingInputError, match="convert them to grayscale"):
        model.predict(load_image_files([str(rgb)]))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ServingInputError, match="cannot decode"):
        load_image_files([str(tmp_path / "bad.png")])


# ------------------------------------------------------------------------------ REST client
def test_rest_request_bodies_follow_the_documented_row_format():
    images = np.arange(2 * 2 * 2 * 1, dtype=np.uint8).reshape(2, 2, 2, 1)
    body = rest_request_body("serving_default", {"images": images})
    assert body == {"signature_name": "serving_default", "instances": images.tolist()}
    body = rest_request_body("serving_threshold", {"images": images, "threshold": np.array([0.5, 0.9], np.float32)})
    assert body["signature_name"] == "serving_threshold"
    assert body["instances"] == [{"images": images[0].tolist(), "threshold": 0.5}, {"images": images[1].tolist(), "threshold": 0.8999999761581421}]
    json.dumps(body)  # serialisable as is
    answer = {"predictions": [{"classes": 1, "probabilities": [0.1, 0.9]}, {"classes": 0, "probabilities": [0.8, 0.2]}]}
    parsed = parse_rest_predictions(answer)
    assert parsed["classes"].tolist() == [1, 0] and parsed["probabilities"].shape == (2, 2)


METADATA = {
    "model_spec": {"name": "digits", "signature_name": "", "version": "1"},
    "metadata": {"signature_def": {"signature_def": {
        "serving_default": {
            "inputs": {"images": {"dtype": "DT_UINT8", "tensor_shape": {"dim": [
                {"size": "-1", "name": ""}, {"size": "8", "name": ""}, {"size": "8", "name": ""}, {"size": "1", "name": ""}],
                "unknown_rank": False}, "name": "serving_default_images:0"}},
            "outputs": {}, "method_name": "tensorflow/serving/predict"},
        "__saved_model_init_op": {"inputs": {}, "outputs": {}, "method_name": ""},
    }}},
}


class FakeTFServing(http.server.BaseHTTPRequestHandler):
    """Answers like TF Serving 2.x: metadata, predict, 404 for unknown models, 400 errors."""

    bodies: list = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path in ("/v1/models/digits/metadata", "/v1/models/digits/versions/1/metadata"):
            self._send(200, METADATA)
        elif self.path.startswith("/v1/models/digits/versions/"):
            self._send(404, {"error": "Servable not found for request: Specific(digits, 7)"})
        else:
            self._send(404, {"error": "Servable not found for request: Latest(" + self.path.split("/")[3] + ")"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append((self.path, body))
        if body.get("signature_name") != "serving_default":
            self._send(400, {"error": "Serving signature name: \"x\" not found in signature def"})
            return
        rows = [{"classes": 7, "probabilities": [0.0] * 7 + [1.0, 0.0, 0.0]} for _ in body["instances"]]
        self._send(200, {"predictions": rows})


@pytest.fixture
def fake_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeTFServing)
    FakeTFServing.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_rest_client_against_a_fake_tf_serving(fake_server):
    client = serving.RestClient(fake_server, "digits", timeout=5)
    images = np.zeros((2, 8, 8, 1), np.uint8)
    out = client.predict(images)
    assert out["classes"].tolist() == [7, 7]
    path, body = FakeTFServing.bodies[-1]
    assert path == "/v1/models/digits:predict"
    assert body == {"signature_name": "serving_default", "instances": images.tolist()}
    assert serving.RestClient(fake_server, "digits", version=1).predict(images)["classes"].shape == (2,)
    assert FakeTFServing.bodies[-1][0] == "/v1/models/digits/versions/1:predict"
    with pytest.raises(ServingInputError, match="are 28x28 pixels but the model takes 8x8"):
        client.predict(np.zeros((1, 28, 28, 1), np.uint8))
    assert len(FakeTFServing.bodies) == 2  # the bad batch was never sent
    with pytest.raises(ModelServerError, match=r"does not serve model 'nope' \(Servable not found.*Latest\(nope\)"):
        serving.RestClient(fake_server, "nope").predict(images)
    with pytest.raises(ModelServerError, match="model 'digits' version 7"):
        serving.RestClient(fake_server, "digits", version=7).predict(images)
    unchecked = serving.RestClient(fake_server, "digits", check=False)
    with pytest.raises(ServingInputError, match="rejected the request.*not found in signature def"):
        unchecked.predict(images, signature="serving_float")


class Recorder(http.server.BaseHTTPRequestHandler):
    """A well-behaved TF Serving stand-in that records every request it gets (a redirect target)."""

    seen: list = []

    def log_message(self, *args):
        pass

    def _answer(self, payload):
        type(self).seen.append(self.path)
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._answer(METADATA)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer({"predictions": [{"classes": 7, "probabilities": [0.1] * 10}]})


class Redirector(http.server.BaseHTTPRequestHandler):
    """Answers every request with ``code`` and ``Location: target`` (class attributes)."""

    code, target = 302, ""

    def log_message(self, *args):
        pass

    def _redirect(self):
        if self.command == "POST":
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(type(self).code)
        self.send_header("Location", type(self).target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _redirect


def _serve(handler) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_rest_client_follows_no_redirect_to_any_scheme_or_host():
    # Targets urllib's own redirect handler follows (http/https/ftp, any host): a well-behaved
    # server (another host name, or another port) and an FTP address that only counts connections.
    # TF Serving never redirects, so the client must refuse every one without going there.
    redirector, target = _serve(Redirector), _serve(Recorder)
    ftp = socket.socket()
    try:
        ftp.bind(("127.0.0.1", 0))
        ftp.listen(8)
        ftp.setblocking(False)
        port = target.server_address[1]
        targets = [f"http://localhost:{port}/v1/models/digits/metadata", f"http://127.0.0.1:{port}/v1/models/digits",
                   f"ftp://127.0.0.1:{ftp.getsockname()[1]}/x"]
        Recorder.seen = []
        for code in (301, 302, 303, 307, 308):
            for location in targets:
                Redirector.code, Redirector.target = code, location
                client = serving.RestClient(f"http://127.0.0.1:{redirector.server_address[1]}", "digits", timeout=2)
                with pytest.raises(ModelServerError, match=f"HTTP {code} .*a redirect to {location}.*never redirects"):
                    client.input_specs()  # GET
                unchecked = serving.RestClient(client.server, "digits", timeout=2, check=False)
                with pytest.raises(ModelServerError, match=f"HTTP {code} "):
                    unchecked.predict(np.zeros((1, 8, 8, 1), np.uint8))  # POST
        assert Recorder.seen == []  # no request reached the redirect target
        with pytest.raises(BlockingIOError):
            ftp.accept()  # nobody connected to the FTP address either
    finally:
        ftp.close()
        for server in (redirector, target):
            server.shutdown()
            server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rest_client_reports_refused_connections_and_timeouts():
    with pytest.raises(ModelServerError, match="cannot reach .*Connection refused"):
        serving.RestClient(f"127.0.0.1:{_closed_port()}", "digits", timeout=2).predict(np.zeros((1, 8, 8, 1), np.uint8))
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        client = serving.RestClient(f"http://127.0.0.1:{silent.getsockname()[1]}", "digits", timeout=0.5)
        with pytest.raises(ModelServerError, match="did not answer within 0.5 s"):
            client.predict(np.zeros((1, 8, 8, 1), np.uint8))


def test_grpc_client_reports_an_unreachable_server():
    pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is not installed ([serving] extra)")
    client = serving.GrpcClient(f"127.0.0.1:{_closed_port()}", "digits", timeout=2)
    with pytest.raises(ModelServerError, match="cannot reach|did not answer"):
        client.predict(np.zeros((1, 8, 8, 1), np.uint8))


# ------------------------------------------------------------- malformed requests (issue #13)
def _newest(exported, name) -> str:
    path = os.path.join(exported["export"], name)
    return os.path.join(path, str(versions(path)[-1]))


@pytest.mark.slow
def test_signatures_check_their_inputs_inside_the_graph(exported):
    """What TF Serving feeds is not compared with the signature: the graph itself refuses wrong
    rank, size or channels, non-finite floats and bad thresholds, and answers an empty batch."""
    import tensorflow as tf

    for name in SERVABLES:
        model = tf.saved_model.load(_newest(exported, name))
        for signature, dtype in (("serving_default", tf.uint8), ("serving_float", tf.float32)):
            serve = model.signatures[signature]
            for shape in ((2, 9, 8, 1), (2, 8, 8, 3), (1, 2, 8, 8, 1), (2, 32, 32, 1)):
                with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected shape \[\?,8,8,1\]"):
                    serve(images=tf.zeros(shape, dtype))
            empty = serve(images=tf.zeros((0, 8, 8, 1), dtype))
            assert empty["probabilities"].shape == (0, 10) and empty["classes"].shape == (0,), name
            assert empty["top_k_classes"].shape == (0, 5)
        for value in (np.nan, np.inf):
            images = np.zeros((2, 8, 8, 1), np.float32)
            images[1, 3, 3, 0] = value
            with pytest.raises(tf.errors.InvalidArgumentError, match="takes finite normalised pixels"):
                model.signatures["serving_float"](images=tf.constant(images))
    cascade = tf.saved_model.load(_newest(exported, SERVABLES[3])).signatures["serving_threshold"]
    images = tf.zeros((2, 8, 8, 1), tf.uint8)
    for thresholds, message in (([0.5, 1.5], r"in \(0, 1\]"), ([0.0, 0.5], r"in \(0, 1\]"),
                                ([np.nan, 0.5], r"in \(0, 1\]"), ([0.5], "one value per image")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            cascade(images=images, threshold=tf.constant(thresholds, tf.float32))
    empty = cascade(images=tf.zeros((0, 8, 8, 1), tf.uint8), threshold=tf.zeros((0,), tf.float32))
    assert empty["exit_stage"].shape == (0,)


# ------------------------------------------------ the servables' arithmetic, in this process (fast)
@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """A 3-stage network with seeded, untrained heads, exported (stage 0, ensemble, cascade) and
    loaded back in this process: the serving arithmetic needs no training and no fresh process.
    The heads' logits are scaled so that stage probabilities differ and confidences spread."""
    import keras
    import tensorflow as tf

    from layerwise.data import load_dataset
    from layerwise.serving.servables import export_cascade, export_classifier, export_ensemble
    from layerwise.nn.heads import AuxHead

    tmp = tmp_path_factory.mktemp("in_process")
    data = load_dataset("digits")
    config = resolve(tiny_config(model_options={"num_stages": 3, "width": 8, "downsample_at": [1]}))
    network = build_network(config, data)
    heads = [AuxHead(k=1, width=8)(network.output_shape(j), 10, name=f"head_{j}") for j in range(3)]
    for layer in (layer for head in heads for layer in head.layers if isinstance(layer, keras.layers.Dense)):
        layer.kernel.assign(layer.kernel * 5.0)
    classifiers = [network.compose(j + 1, heads[j]) for j in range(3)]
    raw = data.arrays("test")[0][:64]
    normalised = (raw.astype(np.float32) - data.mean) / data.std  # by hand, in NumPy
    logits = [np.asarray(c(normalised, training=False), np.float64) for c in classifiers]
    per_stage = [np.exp(z - z.max(-1, keepdims=True)) / np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)
                 for z in logits]
    paths = {
        "stage": export_classifier(classifiers[0], str(tmp / "stage"), data.mean, data.std),
        "ensemble": export_ensemble(network, heads, str(tmp / "ensemble"), data.mean, data.std),
        "cascade": export_cascade(network, heads, str(tmp / "cascade"), data.mean, data.std, threshold=0.5),
    }
    return {"network": network, "heads": heads, "raw": raw, "normalised": normalised, "per_stage": per_stage,
            "paths": paths, **{name: tf.saved_model.load(path) for name, path in paths.items()}}


def _by_hand_cascade(per_stage, thresholds):
    """Example i leaves at the first stage whose top probability is >= thresholds[i]; the last answers the rest."""
    exits = np.full(len(thresholds), len(per_stage) - 1)
    for j in range(len(per_stage) - 2, -1, -1):
        exits = np.where(per_stage[j].max(-1) >= thresholds, j, exits)
    return np.stack(per_stage)[exits, np.arange(len(exits))], exits


def test_the_served_ensemble_is_the_2_to_the_j_weighted_average_of_the_stages(in_process):
    import tensorflow as tf

    p = in_process["per_stage"]
    want = (1 * p[0] + 2 * p[1] + 4 * p[2]) / 7
    out = in_process["ensemble"].signatures["serving_float"](images=tf.constant(in_process["normalised"]))
    np.testing.assert_allclose(out["probabilities"], want, atol=1e-5)
    np.testing.assert_array_equal(out["classes"], want.argmax(-1))
    np.testing.assert_allclose(out["top_k_scores"], -np.sort(-want, -1)[:, :5], atol=1e-5)
    # the test tells weightings apart: uniform or reversed weights are far from the served answer
    for other in ((p[0] + p[1] + p[2]) / 3, (4 * p[0] + 2 * p[1] + p[2]) / 7):
        assert np.abs(other - want).max() > 0.01


def test_uint8_signatures_normalise_raw_pixels_like_the_float_signatures_by_hand(in_process):
    import tensorflow as tf

    raw, normalised = tf.constant(in_process["raw"]), tf.constant(in_process["normalised"])
    thresholds = tf.constant(np.linspace(0.2, 1.0, len(in_process["raw"])), tf.float32)
    pairs = [(in_process[name].signatures["serving_default"](images=raw),
              in_process[name].signatures["serving_float"](images=normalised)) for name in ("stage", "ensemble", "cascade")]
    cascade = in_process["cascade"].signatures
    pairs.append((cascade["serving_threshold"](images=raw, threshold=thresholds),
                  cascade["serving_float_threshold"](images=normalised, threshold=thresholds)))
    for uint8, float32 in pairs:
        assert sorted(uint8) == sorted(float32)
        np.testing.assert_allclose(uint8["probabilities"], float32["probabilities"], atol=1e-5)
        for key in set(uint8) - {"probabilities", "top_k_scores"}:
            np.testing.assert_array_equal(uint8[key], float32[key])
    np.testing.assert_allclose(pairs[0][1]["probabilities"], in_process["per_stage"][0], atol=1e-5)


def test_cascade_thresholds_0_and_above_1_exit_first_and_last_like_the_cascade_by_hand(in_process):
    import tensorflow as tf

    from layerwise.serving.cascade import cascade_probabilities

    network, heads, per_stage = in_process["network"], in_process["heads"], in_process["per_stage"]
    normalised = tf.constant(in_process["normalised"])
    n = len(in_process["normalised"])
    mixed = np.random.default_rng(0).uniform(0.2, 1.0, n).astype(np.float32)
    for thresholds, exits in ((np.zeros(n, np.float32), 0), (np.full(n, 1.5, np.float32), 2), (mixed, None)):
        want_probs, want_exits = _by_hand_cascade(per_stage, thresholds)
        if exits is not None:  # 0: every example leaves at stage 0; > 1: none leaves early
            assert (want_exits == exits).all()
        else:
            assert set(want_exits.tolist()) == {0, 1, 2}  # every exit is exercised
        probs, got_exits = cascade_probabilities(network.stages, heads, normalised, tf.constant(thresholds))
        np.testing.assert_array_equal(got_exits, want_exits)
        np.testing.assert_allclose(probs, want_probs, atol=1e-5)
    # the same through the exported servable: its thresholds are in (0, 1], so the smallest
    # float and 1.0 stand for 0 and "above every confidence" (no stage is 100 % sure here)
    assert max(p.max() for p in per_stage[:2]) < 1.0
    serve = in_process["cascade"].signatures["serving_float_threshold"]
    for thresholds in (np.full(n, np.finfo(np.float32).tiny), np.ones(n), mixed):
        out = serve(images=normalised, threshold=tf.constant(thresholds, tf.float32))
        want_probs, want_exits = _by_hand_cascade(per_stage, thresholds)
        np.testing.assert_array_equal(out["exit_stage"], want_exits)
        np.testing.assert_allclose(out["probabilities"], want_probs, atol=1e-5)
    default = in_process["cascade"].signatures["serving_float"](images=normalised)  # exported with 0.5
    want_probs, want_exits = _by_hand_cascade(per_stage, np.full(n, 0.5))
    assert set(want_exits.tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(default["exit_stage"], want_exits)
    np.testing.assert_allclose(default["probabilities"], want_probs, atol=1e-5)


def test_classifier_signatures_refuse_wrong_shapes_dtypes_and_ranks(in_process):
    import tensorflow as tf

    for signature, dtype, kind in (("serving_default", tf.uint8, "uint8"), ("serving_float", tf.float32, "float")):
        serve = in_process["stage"].signatures[signature]
        for shape in ((2, 9, 8, 1), (2, 8, 8, 3), (1, 2, 8, 8, 1), (8, 8, 1), (2, 32, 32, 1)):
            with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected shape \[\?,8,8,1\]"):
                serve(images=tf.zeros(shape, dtype))
        other = tf.float32 if dtype == tf.uint8 else tf.uint8
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"expected to be a {kind} tensor but is a"):
            serve(images=tf.zeros((2, 8, 8, 1), other))
        assert serve(images=tf.zeros((0, 8, 8, 1), dtype))["probabilities"].shape == (0, 10)
    not_finite = np.zeros((2, 8, 8, 1), np.float32)
    not_finite[1, 2, 3] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="takes finite normalised pixels"):
        in_process["stage"].signatures["serving_float"](images=tf.constant(not_finite))
    # the local client checks the same before calling, with what to do instead
    model = serving.LocalModel(in_process["paths"]["stage"])
    good = np.zeros((3, 8, 8, 1), np.uint8)
    assert model.predict(good)["probabilities"].shape == (3, 10)
    assert model.predict(good[0])["classes"].shape == (1,)  # one image: a batch of one
    for images, message in ((np.zeros((2, 9, 8, 1), np.uint8), "are 9x8 pixels but the model takes 8x8"),
                            (np.zeros((2, 8, 8, 3), np.uint8), r"3 channel\(s\) but the model takes 1 \(grayscale\)"),
                            (np.zeros((1, 2, 8, 8, 1), np.uint8), r"takes a batch of images shaped \[N, 8, 8, 1\]"),
                            (np.zeros((8, 8), np.uint8), r"takes a batch of images shaped \[N, 8, 8, 1\]"),
                            (np.zeros((2, 8, 8, 1), np.float32), "takes raw uint8 pixels.*serving_float"),
                            (np.full((1, 8, 8, 1), 300, np.int64), "range 300..300")):
        with pytest.raises(ServingInputError, match=message):
            model.predict(images)
    with pytest.raises(ServingInputError, match="takes normalised float32 images; got uint8"):
        model.predict(good, signature="serving_float")
    with pytest.raises(ServingInputError, match="NaN or infinite"):
        model.predict(not_finite, signature="serving_float")


MALFORMED_REQUESTS = """
import sys, numpy as np, tensorflow as tf
for path in sys.argv[1:]:
    model = tf.saved_model.load(path)
    for signature, dtype in (("serving_default", np.uint8), ("serving_float", np.float32)):
        try:
            model.signatures[signature](images=tf.zeros((8, 8, 1), dtype))  # rank 3: no batch dimension
        except tf.errors.InvalidArgumentError:
            print("refused", path, signature)
# The way a server runs a SavedModel: a TF1 session over the signature's tensors. Session.run
# checks feed shapes in Python; a C++ server does not, so feed through the call below it.
tf.compat.v1.disable_eager_execution()
for path in sys.argv[1:]:
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        signature = meta.signature_def["serving_default"]
        images = session.graph.get_tensor_by_name(signature.inputs["images"].name)
        out = session.graph.get_tensor_by_name(signature.outputs["probabilities"].name)
        for shape in ((8, 8, 1), (2, 32, 32, 1)):
            try:
                session._do_run(None, [], [out], {images.ref(): np.zeros(shape, np.uint8)}, None, None)
            except tf.errors.InvalidArgumentError:
                print("session refused", path, shape)
"""


@pytest.mark.slow
def test_a_rank_3_request_is_refused_and_does_not_abort_the_process(exported):
    """A rank-3 tensor used to abort the whole process (rc 134) in a convolution kernel."""
    paths = [_newest(exported, name) for name in SERVABLES]
    result = subprocess.run([sys.executable, "-c", MALFORMED_REQUESTS, *paths], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert sum(line.startswith("refused") for line in lines) == 2 * len(paths), result.stdout
    assert sum(line.startswith("session refused") for line in lines) == 2 * len(paths), result.stdout


@pytest.mark.slow
def test_local_client_answers_an_empty_batch_and_refuses_non_finite_floats(exported):
    model = serving.LocalModel(os.path.join(exported["export"], SERVABLES[2]))
    assert model.predict(np.zeros((0, 8, 8, 1), np.uint8))["probabilities"].shape == (0, 10)
    with pytest.raises(ServingInputError, match="NaN or infinite"):
        model.predict(np.full((1, 8, 8, 1), np.nan, np.float32), signature="serving_float")


def _limited(max_bytes: int):
    """``preexec_fn`` giving a child a full disk: files stop growing at ``max_bytes`` (EFBIG)."""
    import resource
    import signal

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return limit


@pytest.mark.slow
def test_disk_full_while_exporting_is_one_line_and_leaves_no_partial_version(exported):
    export = exported["export"]
    before = {name: versions(os.path.join(export, name)) for name in SERVABLES}
    config = open(os.path.join(export, "models.config")).read()
    result = subprocess.run([sys.executable, "-m", "apps.export", exported["workdir"]], cwd=os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))), capture_output=True, text=True, preexec_fn=_limited(20000),
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "could not write" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert {name: versions(os.path.join(export, name)) for name in SERVABLES} == before
    assert not [d for name in SERVABLES for d in os.listdir(os.path.join(export, name)) if d.startswith(".tmp")]
    assert open(os.path.join(export, "models.config")).read() == config


def _read_only(command: list[str], directory: str) -> list[str]:
    """``command`` run with ``directory`` read-only: a private read-only bind mount (root, as in
    containers), else without write permission; skips where neither makes it read-only."""
    if os.geteuid() != 0:
        os.chmod(directory, 0o555)
        return command
    if not shutil.which("unshare") or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("cannot make a directory read-only here (root without mount namespaces)")
    quoted = " ".join(shlex.quote(a) for a in command)
    return ["unshare", "-m", "sh", "-c", f"mount --bind {shlex.quote(directory)} {shlex.quote(directory)} && "
            f"mount -o remount,ro,bind {shlex.quote(directory)} && exec {quoted}"]


@pytest.mark.slow
def test_export_report_and_training_on_a_read_only_workdir(exported, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(exported["workdir"], workdir)
    os.remove(os.path.join(workdir, ".lock"))  # a run written before the lock existed, too
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for args, message in ((["apps.report", workdir], "cannot write in"),
                          (["apps.export", workdir], "cannot write in"),
                          (["apps.train", "--workdir", os.path.join(workdir, "new"), "--dataset", "digits"],
                           "cannot write in"),  # an unwritable place for a new run
                          (["apps.export", workdir, "--export_dir", str(tmp_path / "servables")], None)):
        command = _read_only([sys.executable, "-m", *args], workdir)
        result = subprocess.run(command, cwd=repo, capture_output=True, text=True, env=env, timeout=300)
        if message is None:  # servables written elsewhere: a read-only run exports fine
            assert result.returncode == 0, result.stderr[-2000:]
            assert versions(str(tmp_path / "servables" / SERVABLES[2])) == [1]
            continue
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr[-2000:]


# -------------------------------------------------------------------------------------- CLIs
@pytest.mark.slow
def test_predict_and_export_clis(exported):
    result = run_cli("apps.predict", "--model_dir", os.path.join(exported["export"], SERVABLES[3]),
                     "--dataset", "digits", "--limit", "5", "--threshold", "0.9")
    assert result.returncode == 0, result.stderr
    assert "exit stage" in result.stdout and "accuracy" in result.stdout
    result = run_cli("apps.predict", "--server", f"http://127.0.0.1:{_closed_port()}", "--model_name", "x",
                     "--dataset", "digits", "--timeout", "2")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and errors[0].startswith("error: cannot reach"), result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("apps.export", exported["workdir"], "--threshold", "1.5")
    assert result.returncode == 2 and "threshold must be in (0, 1]" in result.stderr


# --------------------------------------------------------------- a real tensorflow_model_server
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="tensorflow_model_server is not on PATH (not installable from the registries here)")
@pytest.mark.slow
def test_rest_and_grpc_against_a_real_tensorflow_model_server(exported):
    import time

    grpc_port, rest_port = _closed_port(), _closed_port()
    server = subprocess.Popen([
        "tensorflow_model_server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
        f"--model_config_file={os.path.join(exported['export'], 'models.config')}",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        local = serving.LocalModel(os.path.join(exported["export"], SERVABLES[3]))
        images = (np.arange(4 * 64).reshape(4, 8, 8, 1) % 17).astype(np.uint8)
        want = local.predict(images, threshold=0.7)
        rest = serving.RestClient(f"http://127.0.0.1:{rest_port}", SERVABLES[3], timeout=5)
        for _ in range(60):
            try:
                got = rest.predict(images, threshold=0.7)
                break
            except ModelServerError:
                time.sleep(1)
        else:
            pytest.fail("tensorflow_model_server did not come up in 60 s")
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-5)
        np.testing.assert_array_equal(got["exit_stage"], want["exit_stage"])
        grpc_out = serving.GrpcClient(f"127.0.0.1:{grpc_port}", SERVABLES[3], timeout=5).predict(images, threshold=0.7)
        np.testing.assert_allclose(grpc_out["probabilities"], want["probabilities"], atol=1e-5)
        with pytest.raises(ModelServerError):
            serving.RestClient(f"http://127.0.0.1:{rest_port}", SERVABLES[0], version=99, timeout=5).predict(images)
    finally:
        server.terminate()
        server.wait(10)


def test_models_config_base_paths_below_a_serving_root(tmp_path):
    for version in ("net_stage_00/1", "net_ensemble/1", "net_ensemble/2"):
        (tmp_path / version).mkdir(parents=True)
        (tmp_path / version / "saved_model.pb").write_bytes(b"")  # a servable has a SavedModel version
    text = open(write_models_config(str(tmp_path), serving_root="/models/")).read()
    assert 'base_path: "/models/net_stage_00"' in text and 'base_path: "/models/net_ensemble"' in text
    assert str(tmp_path) not in text
    assert f'base_path: "{tmp_path}/net_ensemble"' in open(write_models_config(str(tmp_path))).read()


def test_export_of_a_directory_that_is_not_a_finished_run_is_a_clear_error(tmp_path):
    from layerwise.errors import CheckpointError, ConfigError

    with pytest.raises(ConfigError, match="is not a run directory"):
        export_run(str(tmp_path), build_network)
    with pytest.raises(ConfigError, match=r"threshold must be in \(0, 1\]"):
        export_run(str(tmp_path), build_network, threshold=0.0)
    (tmp_path / "config.json").write_text(json.dumps(resolve(tiny_config()).to_dict()))
    with pytest.raises(CheckpointError, match="has no finished stage"):
        export_run(str(tmp_path), build_network)
