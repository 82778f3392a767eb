"""Issue #23 moved the building blocks to ``layerwise.nn``: a run directory written before the
move names the old modules in its ``network.json`` and still restores."""

import json

import numpy as np

from layerwise.run.network_file import NETWORK_FILE, RecordedData, read_network, write_network
from models import build_model


def test_a_network_file_naming_the_modules_before_the_move_still_reads(tmp_path):
    network = build_model("layerwise_cnn", (8, 8, 1), 10, num_stages=2, width=4, downsample_at=(1,))
    data = RecordedData("digits", (8, 8, 1), 10, [0.5], [0.25], uint8_pixels=False)
    assert write_network(str(tmp_path), network, data) is None
    path = tmp_path / NETWORK_FILE
    record = json.loads(path.read_text())
    assert "layerwise.nn.layers" in record["modules"]  # what a run writes now
    record["modules"] = ["layerwise.training.downsampling", "layerwise.training.layers", "layerwise.training.network"]
    path.write_text(json.dumps(record))

    saved = read_network(str(tmp_path))

    assert saved.network.name == network.name
    assert [tuple(w.shape) for s in saved.network.stages for w in s.weights] == [
        tuple(w.shape) for s in network.stages for w in s.weights]
    np.testing.assert_allclose(saved.data.std, [0.25])
