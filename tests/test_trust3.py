"""Issue #25, "Trust, third round": clients that never return a wrong answer, labels that never
lose ``stable``, a models.config nobody can inject into, readers that never crash on a record.

Each hostile answer or input is one row of a table; the servers are local (127.0.0.1), bounded,
and stop by themselves.
"""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, tiny_config

from apps.runner import build_network, resolve, run_training
from layerwise.errors import ConfigError, ModelServerError
from layerwise.export import export_run
from layerwise.run.report import write_report
from layerwise.run.runlog import RunLog, read_records
from layerwise.serving import clients as serving
from layerwise.serving.models_config import text_proto_string, write_models_config
from layerwise.serving.versions import LABELS_FILE, VERSION_INFO, record_label, version_labels

# ------------------------------------------------------------------ hostile REST answers
NUM_CLASSES = 3
METADATA = {
    "model_spec": {"name": "digits", "signature_name": "", "version": "1"},
    "metadata": {"signature_def": {"signature_def": {
        "serving_default": {
            "inputs": {"images": {"dtype": "DT_UINT8", "tensor_shape": {"dim": [
                {"size": "-1"}, {"size": "8"}, {"size": "8"}, {"size": "1"}]}}},
            "outputs": {
                "probabilities": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1"}, {"size": str(NUM_CLASSES)}]}},
                "classes": {"dtype": "DT_INT64", "tensor_shape": {"dim": [{"size": "-1"}]}},
            },
            "method_name": "tensorflow/serving/predict"},
    }}},
}
GOOD_ROW = {"classes": 1, "probabilities": [0.25, 0.5, 0.25]}
IMAGES = np.zeros((2, 8, 8, 1), np.uint8)


class HostileServing(http.server.BaseHTTPRequestHandler):
    """Answers metadata correctly and every predict with ``body`` (bytes) and ``length`` (the
    Content-Length it claims; ``None``: the true one)."""

    body, length = b"", None

    def log_message(self, *args):
        pass

    def _send(self, data: bytes, length: int | None = None):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(json.dumps(METADATA).encode())

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send(type(self).body, type(self).length)
        if type(self).length is not None:
            self.close_connection = True


def _serve(handler) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def hostile():
    server = _serve(HostileServing)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _json(payload) -> bytes:
    return json.dumps(payload).encode()


# (case, body, claimed Content-Length, a pattern of the one-line error)
HOSTILE_ANSWERS = [
    ("predictions is a string", _json({"predictions": "abc"}), None, "not a list of rows"),
    ("one row for two images", _json({"predictions": [GOOD_ROW]}), None, "1 row.* for 2 image"),
    ("three rows for two images", _json({"predictions": [GOOD_ROW] * 3}), None, "3 row.* for 2 image"),
    ("NaN probabilities", b'{"predictions": [{"classes": 1, "probabilities": [NaN, 0.5, 0.5]}, '
     b'{"classes": 1, "probabilities": [0.25, 0.5, 0.25]}]}', None, "NaN or infinite"),
    ("Infinity probabilities", b'{"predictions": [{"classes": 1, "probabilities": [Infinity, 0.5, 0.5]}, '
     b'{"classes": 1, "probabilities": [0.25, 0.5, 0.25]}]}', None, "NaN or infinite"),
    ("a JSON string", _json("predictions"), None, "not a JSON object"),
    ("a JSON number", _json(3), None, "not a JSON object"),
    ("a JSON list", _json([GOOD_ROW, GOOD_ROW]), None, "not a JSON object"),
    ("ragged rows", _json({"predictions": [GOOD_ROW, {"classes": 1, "probabilities": [0.5, 0.5]}]}), None,
     "rows of different lengths"),
    ("rows with different keys", _json({"predictions": [GOOD_ROW, {"classes": 1, "scores": [0.25, 0.5, 0.25]}]}),
     None, "rows with different outputs"),
    ("rows that are not all dicts", _json({"predictions": [GOOD_ROW, [0.25, 0.5, 0.25]]}), None,
     "rows with different outputs"),
    ("a short body", _json({"predictions": [GOOD_ROW, GOOD_ROW]}), 4000, "broken HTTP answer.*IncompleteRead"),
    ("not JSON", b"<html>hello</html>", None, "not JSON"),
    ("no predictions", _json({"answer": 42}), None, "without 'predictions'"),
    ("a missing output", _json({"predictions": [{"probabilities": [0.25, 0.5, 0.25]}] * 2}), None,
     r"missing \['classes'\]"),
    ("an extra output", _json({"predictions": [{**GOOD_ROW, "exit_stage": 1}] * 2}), None,
     r"unexpected \['exit_stage'\]"),
    ("string probabilities", _json({"predictions": [{"classes": 1, "probabilities": ["a", "b", "c"]}] * 2}), None,
     "not numbers"),
    ("null classes", _json({"predictions": [{"classes": None, "probabilities": [0.25, 0.5, 0.25]}] * 2}), None,
     "not numbers"),
    ("probabilities not summing to 1", _json({"predictions": [{"classes": 1, "probabilities": [0.1, 0.5, 0.1]}] * 2}),
     None, "do not sum to 1"),
    ("negative probabilities", _json({"predictions": [{"classes": 2, "probabilities": [-0.5, 0.5, 1.0]}] * 2}), None,
     r"outside \[0, 1\]"),
    ("more classes than the signature", _json({"predictions": [{"classes": 1, "probabilities": [0.2, 0.4, 0.2, 0.2]}] * 2}),
     None, r"shaped \[2, 4\]; the signature says \[N, 3\]"),
    ("a class out of range", _json({"predictions": [{"classes": 7, "probabilities": [0.25, 0.5, 0.25]}] * 2}), None,
     "up to 7 for a model of 3 classes"),
    ("a class that is not the argmax", _json({"predictions": [{"classes": 0, "probabilities": [0.25, 0.5, 0.25]}] * 2}),
     None, "not the most probable"),
    ("float classes", _json({"predictions": [{"classes": 1.5, "probabilities": [0.25, 0.5, 0.25]}] * 2}), None,
     "not integers"),
    ("a columnar string", _json({"outputs": "abc"}), None, "the signature has"),
]


@pytest.mark.parametrize("case, body, length, error", HOSTILE_ANSWERS, ids=[row[0] for row in HOSTILE_ANSWERS])
def test_every_hostile_rest_answer_is_one_line_model_server_error(hostile, case, body, length, error):
    HostileServing.body, HostileServing.length = body, length
    client = serving.RestClient(hostile, "digits", timeout=5)
    with pytest.raises(ModelServerError, match=error) as raised:
        client.predict(IMAGES)
    assert "\n" not in str(raised.value)


def test_a_right_answer_still_comes_back_checked_and_unchecked(hostile):
    HostileServing.body, HostileServing.length = _json({"predictions": [GOOD_ROW, GOOD_ROW]}), None
    for check in (True, False):
        out = serving.RestClient(hostile, "digits", timeout=5, check=check).predict(IMAGES)
        assert out["classes"].tolist() == [1, 1] and out["probabilities"].shape == (2, NUM_CLASSES)
    HostileServing.body = _json({"outputs": {"classes": [1, 1], "probabilities": [[0.25, 0.5, 0.25]] * 2}})
    assert serving.RestClient(hostile, "digits", timeout=5).predict(IMAGES)["classes"].tolist() == [1, 1]


@pytest.mark.parametrize("case", ["one row for two images", "NaN probabilities", "rows with different keys",
                                  "a class out of range", "probabilities not summing to 1"])
def test_without_metadata_the_answer_is_still_checked_against_the_request(hostile, case):
    _, body, length, error = next(row for row in HOSTILE_ANSWERS if row[0] == case)
    HostileServing.body, HostileServing.length = body, length
    with pytest.raises(ModelServerError, match=error):
        serving.RestClient(hostile, "digits", timeout=5, check=False).predict(IMAGES)


# ------------------------------------------------------------------ a total deadline
class Drip(http.server.BaseHTTPRequestHandler):
    """Sends its answer one byte every ``interval`` seconds, at most ``limit`` bytes, then stops:
    in the headers (``where = "headers"``) or in the body."""

    interval, limit, where = 0.4, 30, "body"

    def log_message(self, *args):
        pass

    def _drip(self, data: bytes):
        try:
            for byte in data[: type(self).limit]:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(type(self).interval)
        except OSError:  # the client hung up: what the deadline is for
            pass
        self.close_connection = True

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = _json({"predictions": [GOOD_ROW, GOOD_ROW]})
        if type(self).where == "headers":
            self._drip(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nX-Padding: " + b"x" * 100 + b"\r\n\r\n" + body)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self._drip(body)


@pytest.mark.parametrize("where", ["headers", "body"])
def test_the_timeout_is_a_total_deadline_against_a_dripping_server(where):
    # 1 byte every 0.4 s never trips a 1 s limit per read: the old client waited 30 x 0.4 = 12 s.
    Drip.where = where
    server = _serve(Drip)
    try:
        client = serving.RestClient(f"http://127.0.0.1:{server.server_address[1]}", "digits", timeout=1, check=False)
        start = time.monotonic()
        with pytest.raises(ModelServerError, match="did not answer within 1 s"):
            client.predict(IMAGES)
        assert time.monotonic() - start < 5  # the deadline (1 s), with room for a loaded machine
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------ model names
@pytest.mark.parametrize("name", ["../../x", "..", ".hidden", "a/b", "x?y=1", "x#y", "m%2e%2e", "", "a b", "name\n", "é"])
def test_model_names_that_could_change_the_url_are_refused(name):
    with pytest.raises(ConfigError, match="model must be a servable name"):
        serving.RestClient("http://127.0.0.1:1", name)


@pytest.mark.parametrize("name", ["layerwise_cnn_stage_02", "digits", "m-1.v2", "_x"])
def test_servable_names_are_accepted(name):
    assert serving.RestClient("http://127.0.0.1:1", name).url(":predict").endswith(f"/v1/models/{name}:predict")


# ------------------------------------------------------------------ hostile gRPC answers
def _tensor(value, dtype=None):
    import tensorflow as tf

    return tf.make_tensor_proto(np.asarray(value, dtype))


GRPC_ANSWERS = [
    ("one row for two images", {"classes": ([1], np.int64), "probabilities": ([[0.25, 0.5, 0.25]], np.float32)},
     "1 row.* for 2 image"),
    ("NaN probabilities", {"classes": ([1, 1], np.int64), "probabilities": ([[np.nan, 0.5, 0.5]] * 2, np.float32)},
     "NaN or infinite"),
    ("string probabilities", {"classes": ([1, 1], np.int64), "probabilities": ([[b"a"] * 3] * 2, None)}, "not numbers"),
    ("probabilities not summing to 1", {"classes": ([1, 1], np.int64), "probabilities": ([[0.1, 0.5, 0.1]] * 2, np.float32)},
     "do not sum to 1"),
]


@pytest.mark.parametrize("case, outputs, error", GRPC_ANSWERS, ids=[row[0] for row in GRPC_ANSWERS])
def test_every_hostile_grpc_answer_is_one_line_model_server_error(case, outputs, error):
    pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is not installed ([serving] extra)")
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class Hostile(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            response = predict_pb2.PredictResponse()
            for name, (value, dtype) in outputs.items():
                response.outputs[name].CopyFrom(_tensor(value, dtype))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Hostile(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        client = serving.GrpcClient(f"127.0.0.1:{port}", "digits", timeout=10, check=False)
        with pytest.raises(ModelServerError, match=error) as raised:
            client.predict(IMAGES)
        assert "\n" not in str(raised.value)
    finally:
        server.stop(0)


# ------------------------------------------------------------------ labels: each export changes only its own
def _version(servable: Path, version: int, complete: bool = True, ours: bool = True) -> None:
    """A version directory as export writes it (SavedModel, and what it covers when ``ours``)."""
    path = servable / str(version)
    (path / "assets.extra").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"")
    if ours:
        (path / VERSION_INFO).write_text(json.dumps({"complete": complete}))


# (case, [(version, complete, label), ...] recorded in order, the labels after)
LABEL_HISTORIES = [
    ("stable then canary keeps stable", [(1, True, "stable"), (2, True, "canary")], {"stable": 1, "canary": 2}),
    ("stable moves to a newer stable", [(1, True, "stable"), (2, True, "canary"), (3, True, "stable")],
     {"stable": 3, "canary": 2}),
    ("a canary first gives no stable", [(1, True, "canary")], {"canary": 1}),
    ("a partial export is unfinished, never canary", [(1, True, "stable"), (2, False, "canary")],
     {"stable": 1, "unfinished": 2}),
    ("a complete export ends unfinished", [(1, False, "stable"), (2, True, "canary")], {"canary": 2}),
    ("a partial export never moves stable", [(1, True, "stable"), (2, False, "stable")], {"stable": 1, "unfinished": 2}),
]


@pytest.mark.parametrize("case, history, labels", LABEL_HISTORIES, ids=[row[0] for row in LABEL_HISTORIES])
def test_an_export_gives_its_label_to_its_own_version_only(tmp_path, case, history, labels):
    servable = tmp_path / "net_stage_00"
    for version, complete, label in history:
        _version(servable, version, complete)
        record_label(str(servable), version, label)
    assert version_labels(str(servable)) == labels
    assert json.loads((servable / LABELS_FILE).read_text()) == labels


def test_servables_exported_before_labels_were_recorded_keep_the_older_rule(tmp_path):
    servable = tmp_path / "net_ensemble"
    _version(servable, 1)
    _version(servable, 2)
    assert version_labels(str(servable)) == {"stable": 2}  # no labels.json: stable on the newest complete
    _version(servable, 3)
    assert record_label(str(servable), 3, "canary") == {"stable": 2, "canary": 3}
    (servable / LABELS_FILE).write_text("{torn")
    assert version_labels(str(servable)) == {"stable": 3}  # an unreadable record: the older rule
    (servable / LABELS_FILE).write_text(json.dumps({"stable": 9, "canary": 3, "x y": 1, "prod": "2"}))
    assert version_labels(str(servable)) == {"canary": 3}  # a missing version and malformed entries are dropped


def test_a_folder_that_layerwise_did_not_write_is_never_stable(tmp_path):
    junk = tmp_path / "other_model" / "7"
    junk.mkdir(parents=True)
    (junk / "junk.txt").write_text("not a SavedModel")
    _version(tmp_path / "foreign", 3, ours=False)  # someone else's SavedModel
    assert version_labels(str(tmp_path / "other_model")) == {}
    assert version_labels(str(tmp_path / "foreign")) == {}
    text = Path(write_models_config(str(tmp_path))).read_text()
    assert "other_model" not in text  # no SavedModel: no servable
    assert 'name: "foreign"' in text and "version_labels" not in text


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("trust3") / "run")
    run_training(resolve(tiny_config()), workdir, verbose=0, log=lambda _: None)
    return workdir


def _config_labels(export_root: str) -> dict[str, dict[str, int]]:
    """``{servable: {label: version}}`` as TF Serving's own proto parser reads models.config."""
    pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is not installed ([serving] extra)")
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    text = Path(export_root, "models.config").read_text()
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    return {c.name: dict(c.version_labels) for c in config.model_config_list.config}


@pytest.mark.slow
def test_a_canary_export_keeps_stable_and_leaves_other_servables_alone(finished_run, tmp_path):
    srv = str(tmp_path / "srv")
    first = export_run(finished_run, build_network, srv)
    other = tmp_path / "srv" / "other_net_stage_00"  # another model's servable, labelled by its own export
    shutil.copytree(first["layerwise_cnn_stage_00"], other / "4")
    (other / LABELS_FILE).write_text(json.dumps({"stable": 4}))
    junk = tmp_path / "srv" / "other_model" / "7"
    junk.mkdir(parents=True)
    (junk / "junk.txt").write_text("junk")
    before = _config_labels(srv)
    assert before["layerwise_cnn_ensemble"] == {"stable": 1}

    second = export_run(finished_run, build_network, srv, label="canary")
    after = _config_labels(srv)
    for servable in second:
        assert after[servable] == {"stable": 1, "canary": 2}, servable
    assert after["other_net_stage_00"] == {"stable": 4}
    assert "other_model" not in after

    export_run(finished_run, build_network, srv)  # a stable export moves stable, canary stays where it was
    assert all(after3 == {"stable": 3, "canary": 2} for after3 in map(_config_labels(srv).get, second))


# ------------------------------------------------------------------ models.config: nothing gets in
HOSTILE_ROOTS = [
    '/models" } config { name: "evil" base_path: "/etc',
    "../../../etc",
    "models",
    "/models/../etc",
    "/models/./x",
    "/a//b",
    "/models\\x",
    "/models'x",
    "/models\nconfig",
    "/models\x00",
    "",
]


@pytest.mark.parametrize("root", HOSTILE_ROOTS)
def test_a_hostile_serving_root_is_a_config_error_naming_the_argument(tmp_path, root):
    _version(tmp_path / "net_stage_00", 1)
    with pytest.raises(ConfigError, match="^serving_root .* pass the absolute path"):
        write_models_config(str(tmp_path), serving_root=root)
    assert not (tmp_path / "models.config").exists()


@pytest.mark.parametrize("root, base", [("/models", "/models/net"), ("/models/", "/models/net"), ("/", "/net"),
                                        ("/srv/my models", "/srv/my models/net")])
def test_absolute_serving_roots_are_accepted(tmp_path, root, base):
    _version(tmp_path / "net", 1)
    assert f'base_path: "{base}"' in Path(write_models_config(str(tmp_path), serving_root=root)).read_text()


@pytest.mark.slow
def test_the_export_cli_names_the_flag_and_writes_nothing(finished_run, tmp_path):
    srv = tmp_path / "srv"
    result = run_cli("apps.export", finished_run, "--export_dir", str(srv),
                     "--serving_root", '/models" } config { name: "evil" base_path: "/etc')
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --serving_root ") and "absolute path" in lines[0]
    assert not srv.exists()


@pytest.mark.parametrize("name", ['a"b', "a\\b", 'x" } config { name: "evil', "caf\u00e9"])
def test_hostile_servable_names_are_escaped_and_parse_back_as_themselves(tmp_path, name):
    pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is not installed ([serving] extra)")
    _version(tmp_path / name, 1)
    write_models_config(str(tmp_path), serving_root="/models")
    labels = _config_labels(str(tmp_path))
    assert list(labels) == [name]  # one entry, named as the folder: nothing injected


@pytest.mark.parametrize("value", ["a\nb", "a\x00b", "a\x1bb", "a\rb", "a\x7fb"])
def test_the_text_proto_writer_refuses_control_characters(value):
    with pytest.raises(ValueError, match="control character"):
        text_proto_string(value)
    assert text_proto_string('say "hi" \\ bye') == '"say \\"hi\\" \\\\ bye"'


def test_a_folder_named_with_a_newline_is_left_out_with_a_warning(tmp_path):
    _version(tmp_path / "good", 1)
    _version(tmp_path / "bad\nname", 1)
    with pytest.warns(UserWarning, match="left out of models.config"):
        text = Path(write_models_config(str(tmp_path))).read_text()
    assert text.count("config {") == 1 and 'name: "good"' in text


# ------------------------------------------------------------------ readers that check each record
GOOD_EPOCH = {"event": "epoch", "problem": "stage_00", "stage": 0, "epoch": 0, "loss": 1.0, "accuracy": 0.5,
              "test_accuracy": 0.5}
GOOD_STAGE = {"event": "stage", "problem": "stage_00", "stage": 0, "params": 100, "accuracy": 0.5,
              "test_accuracy": 0.5, "ensemble_accuracy": 0.5}
# (case, a JSON line that does not fit its event)
MISFIT_RECORDS = [
    ("an epoch with no other key", {"event": "epoch"}),
    ("an epoch without its number", {k: v for k, v in GOOD_EPOCH.items() if k != "epoch"}),
    ("an epoch number that is a string", {**GOOD_EPOCH, "epoch": "1"}),
    ("an epoch number that is a bool", {**GOOD_EPOCH, "epoch": True}),
    ("a loss that is a list", {**GOOD_EPOCH, "loss": [1.0]}),
    ("a stage with no other key", {"event": "stage"}),
    ("a stage number that is a float", {**GOOD_STAGE, "stage": 0.5}),
    ("params that are a string", {**GOOD_STAGE, "params": "many"}),
    ("a test accuracy that is a string", {**GOOD_STAGE, "test_accuracy": "high"}),
    ("an older run's test accuracy that is a string", {**GOOD_STAGE, "test_acc": "high"}),
    ("a problem that is a number", {**GOOD_STAGE, "problem": 7}),
    ("no event", {"problem": "stage_00", "stage": 0}),
    ("an event that is a number", {"event": 3}),
]


def _run_files(workdir: Path, *records) -> None:
    workdir.mkdir(exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(resolve(tiny_config()).to_dict()))
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize("case, record", MISFIT_RECORDS, ids=[row[0] for row in MISFIT_RECORDS])
def test_a_record_that_does_not_fit_its_event_is_skipped_counted_and_said_once(tmp_path, case, record):
    _run_files(tmp_path, GOOD_EPOCH, record, record, GOOD_STAGE)
    with pytest.warns(UserWarning, match="skipped 2 record") as said:
        assert read_records(str(tmp_path / "metrics.jsonl")) == [GOOD_EPOCH, GOOD_STAGE]
    assert len(said) == 1
    with pytest.warns(UserWarning, match="skipped 2 record"):
        report = Path(write_report(str(tmp_path))).read_text()
    assert "| 0 |" in report and (tmp_path / "plots" / "training_curves.png").exists()
    with pytest.warns(UserWarning, match="skipped 2 record"):
        assert RunLog(str(tmp_path)).records == [GOOD_EPOCH, GOOD_STAGE]


def test_records_of_other_events_pass_with_the_common_checks():
    from layerwise.run.runlog import record_fits

    assert record_fits({"event": "prune", "problem": "stage_01_pruned", "stage": 1, "kept_filters": [1, 2]})
    assert record_fits({"event": "a_later_event", "anything": {"nested": True}})
    assert record_fits({**GOOD_EPOCH, "test_acc": None, "peak_memory_mb": None})  # not measured there
    assert not record_fits({"event": "prune", "params": "x"})


@pytest.mark.slow
def test_apps_report_skips_a_record_with_missing_keys_in_one_warning_line(tmp_path):
    _run_files(tmp_path, GOOD_EPOCH, {"event": "epoch"}, GOOD_STAGE, {"event": "stage"})
    result = run_cli("apps.report", str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "skipped" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: ") and "skipped 2 record(s)" in warned[0]
    assert (tmp_path / "report.md").exists()


@pytest.mark.slow
def test_a_finished_run_is_never_failed_by_its_report(finished_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir)
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"event": "epoch"}) + "\n")  # a whole line with missing keys
    config = resolve(tiny_config())
    messages = []
    with pytest.warns(UserWarning, match="skipped 1 record"):
        records = run_training(config, str(workdir), verbose=0, log=messages.append)  # resumes: all finished
    assert [r["problem"] for r in records if r["event"] == "stage"] == ["stage_00", "stage_01"]
    assert any("results in" in m for m in messages) and (workdir / "report.md").exists()

    shutil.rmtree(workdir / "plots")
    (workdir / "plots").write_text("a file where the plots go")  # the report cannot be written
    messages = []
    with pytest.warns(UserWarning, match="skipped 1 record"):
        records = run_training(config, str(workdir), verbose=0, log=messages.append)
    assert len(records) >= 2
    failed = [m for m in messages if "report could not be written" in m]
    assert len(failed) == 1 and "apps.report" in failed[0] and "\n" not in failed[0]
