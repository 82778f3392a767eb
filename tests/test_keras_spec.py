"""One spec, recorded and honoured (issue 22, item 4): a run's config.json describes the head and the
local loss that trained, with every parameter; a resume with another one is refused naming the
field; objects of the user's own are recorded as Keras-serialised objects or refused at once."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

import layerwise
from layerwise.data.pipelines import as_source
from layerwise.errors import WorkdirMismatchError
from layerwise.config import schema
from layerwise.config import TrainConfig
from layerwise.nn.heads import config_heads, head_options
from layerwise.training.local_losses import config_local_loss, local_loss_options
from conftest import digit_arrays, interrupt_at_stage, three_conv_cnn

SPLIT_AT = ["relu1", "relu2"]
HEAD = layerwise.AuxHead(k=1, width=8, pooled_size=1, hidden_units=(16,), dropout=0.3)


@keras.saving.register_keras_serializable(package="test_keras_spec")
@dataclasses.dataclass(frozen=True)
class ScaledPred(layerwise.Pred):
    """A local loss of a user's own: the paper's cross-entropy, scaled."""

    scale: float = 2.0

    def __call__(self, outputs, labels, images, global_batch_size=None):
        return self.scale * super().__call__(outputs, labels, images, global_batch_size)


@dataclasses.dataclass(frozen=True)
class UnregisteredPred(layerwise.Pred):
    """The same, never registered with Keras: it cannot be recorded."""

    scale: float = 2.0


@keras.saving.register_keras_serializable(package="test_keras_spec")
def linear_head(feature_shape, num_classes):
    """A head builder of a user's own, registered: recordable (named layers: a checkpoint of a resumed
    run is matched by layer names)."""
    features = keras.Input(feature_shape)
    logits = keras.layers.Dense(num_classes, name="linear_logits")(keras.layers.Flatten(name="linear_flat")(features))
    return keras.Model(features, logits, name="linear_head")


def user_model(seed: int = 0) -> keras.Model:
    """A small Keras model of the user's, ending in a softmax classifier (split_model's final head)."""
    return three_conv_cnn("spec_cnn", seed)


@pytest.fixture(scope="module")
def digits():
    x, y = digit_arrays()
    return x[:256], y[:256], x[1500:1628], y[1500:1628]


def fit(digits, workdir, quiet_log, callbacks=(), **changes):
    x, y, xv, yv = digits
    options = {**dict(head=HEAD, local_loss=layerwise.PredSim(beta=0.5), epochs_per_stage=1, batch_size=64,
                      precision="float32", verbose=0, log=quiet_log), **changes}
    network = layerwise.split_model(user_model(), SPLIT_AT)
    return layerwise.fit(network, (x, y), test=(xv, yv), workdir=workdir, callbacks=list(callbacks), **options)


@pytest.mark.slow
def test_the_head_and_local_loss_are_recorded_resumed_refused_when_changed_and_restored(digits, tmp_path, quiet_log):
    _, _, xv, _ = digits
    reference = fit(digits, None, quiet_log)
    workdir = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        fit(digits, workdir, quiet_log, [interrupt_at_stage(1)])
    messages = []
    result = fit(digits, workdir, lambda m: messages.append(m))
    assert any("stage_00: finished earlier" in m for m in messages)
    assert len(result.classifiers) == len(reference.classifiers) == 3
    for resumed, uninterrupted in zip(result.classifiers, reference.classifiers):
        np.testing.assert_allclose(resumed.predict(xv, verbose=0), uninterrupted.predict(xv, verbose=0), atol=1e-6)
    # the heads that trained are the requested ones: Dense(16) and both Dropouts
    head = result.heads[0]
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in head.layers) == 2
    assert [layer.units for layer in head.layers if isinstance(layer, keras.layers.Dense)] == [16, 10]

    with open(os.path.join(workdir, "config.json")) as f:
        stored = json.load(f)
    assert {k: stored["heads"][k] for k in ("conv_layers", "width", "pooled_size", "hidden_units", "dropout")} == {
        "conv_layers": 0, "width": 8, "pooled_size": 1, "hidden_units": [16], "dropout": 0.3}
    assert (stored["local"]["loss"], stored["local"]["predsim_beta"]) == ("predsim", 0.5)
    assert config_heads(result.config)[0] == HEAD and config_local_loss(result.config) == layerwise.PredSim(beta=0.5)

    # the same run named by its fields (what the CLI and a config file say) is the same run
    messages.clear()
    fit(digits, workdir, messages.append, head=None, local_loss="predsim", predsim_beta=0.5, aux_conv_layers=0,
        aux_width=8, aux_pooled_size=1, aux_hidden_units=[16], aux_dropout=0.3)
    assert any("stage_02: finished earlier" in m for m in messages)
    with pytest.raises(WorkdirMismatchError, match=r"local_loss: 'predsim' -> 'sim'"):
        fit(digits, workdir, quiet_log, local_loss=layerwise.Sim())
    with pytest.raises(WorkdirMismatchError, match=r"predsim_beta: 0.5 -> 0.6"):
        fit(digits, workdir, quiet_log, local_loss=layerwise.PredSim(beta=0.6))
    with pytest.raises(WorkdirMismatchError, match=r"aux_dropout: 0.3 -> 0.2"):
        fit(digits, workdir, quiet_log, head=dataclasses.replace(HEAD, dropout=0.2))

    # restore_run rebuilds the same heads from config.json (a split_model network still needs its
    # builder from the caller: saving the network with the run is left for later)
    x, y, xv, yv = digits
    run = layerwise.restore_run(
        workdir, lambda config, data: layerwise.split_model(user_model(), SPLIT_AT),
        lambda config: as_source((x, y), None, (xv, yv), num_classes=10))
    assert [h.count_params() for h in run.heads] == [h.count_params() for h in result.heads.values()]
    for restored, trained in zip(run.classifiers, result.classifiers):
        probabilities = keras.ops.softmax(restored(xv, training=False))
        np.testing.assert_allclose(probabilities, trained.predict(xv, verbose=0), atol=1e-6)


@pytest.mark.parametrize("head", [
    layerwise.AuxHead(), HEAD, layerwise.AuxHead(k=3, width=5, batchnorm=False, pre_pool=2, max_features=64),
    layerwise.AuxHead(k=2, width=4, hidden_units=(7, 3), dropout=0.5, pooled_size=3),
], ids=["default", "issue", "convs", "mlp"])
def test_every_aux_head_field_round_trips_through_the_config_and_its_json(head):
    config = TrainConfig().replace(**head_options(head, required=True)).validate()
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert config_heads(again) == (head, head)


@pytest.mark.parametrize("fields, message", [
    (dict(dropout=1.5), r"AuxHead dropout must be a number in \[0, 1\), got 1.5"),
    (dict(dropout=-0.1), r"dropout"),
    (dict(k=0), r"AuxHead k must be an integer >= 1"),
    (dict(k=2.0), r"AuxHead k must be an integer"),
    (dict(width=0), r"AuxHead width must be an integer >= 1"),
    (dict(width=True), r"AuxHead width"),
    (dict(pooled_size=0), r"AuxHead pooled_size"),
    (dict(hidden_units=(16, 0)), r"AuxHead hidden_units"),
    (dict(pre_pool=0), r"AuxHead pre_pool"),
    (dict(max_features=-1), r"AuxHead max_features"),
    (dict(batchnorm="yes"), r"AuxHead batchnorm"),
], ids=["dropout_1.5", "dropout_negative", "k_0", "k_float", "width_0", "width_bool", "pooled_size_0",
        "hidden_units_0", "pre_pool_0", "max_features_negative", "batchnorm_str"])
def test_an_aux_head_with_an_impossible_field_is_refused_when_made(fields, message):
    with pytest.raises(layerwise.ConfigError, match=message):
        layerwise.AuxHead(**fields)


@pytest.mark.parametrize("changes, message", [
    (dict(aux_dropout=1.0), r"aux_dropout must be in \[0, 1\), got 1.0"),
    (dict(aux_hidden_units=[8, 0]), r"aux_hidden_units must be positive widths"),
    (dict(aux_pooled_size=0), r"aux_pooled_size must be positive"),
    (dict(infopro_temperature=0.0), r"infopro_temperature must be positive"),
    (dict(local_loss="custom"), r"local_loss custom goes with local_loss_object"),
], ids=["aux_dropout", "aux_hidden_units", "aux_pooled_size", "infopro_temperature", "custom_without_object"])
def test_the_config_refuses_impossible_head_and_loss_fields_naming_them(changes, message):
    with pytest.raises(layerwise.ConfigError, match=message):
        TrainConfig().replace(**changes).validate()


def test_every_builtin_local_loss_round_trips_through_its_config_fields():
    losses = [layerwise.Pred(), layerwise.Sim(), layerwise.PredSim(beta=0.25),
              layerwise.InfoPro(1.0, 2.0, 3.0, 4.0, "contrast", temperature=0.5, feature_dim=7, decoder_width=3)]
    for loss in losses:
        config = TrainConfig().replace(**local_loss_options(loss, required=True)).validate()
        assert config_local_loss(TrainConfig.from_dict(config.to_dict())) == loss
    assert config.local.infopro_temperature == 0.5 and config.local.infopro_decoder_width == 3


def test_new_fields_have_flags_and_recorded_objects_none(digits):
    leaves = schema.flat_names(TrainConfig)
    assert all(leaves[name].cli for name in ("aux_pooled_size", "aux_hidden_units", "aux_dropout",
                                             "infopro_temperature", "infopro_feature_dim", "infopro_decoder_width"))
    assert not leaves["aux_head_object"].cli and not leaves["local_loss_object"].cli


@pytest.mark.slow
def test_a_registered_loss_and_head_of_ones_own_are_recorded_and_a_changed_one_refused(digits, tmp_path, quiet_log):
    workdir = str(tmp_path / "own")
    result = fit(digits, workdir, quiet_log, local_loss=ScaledPred(3.0), head=linear_head)
    with open(os.path.join(workdir, "config.json")) as f:
        stored = json.load(f)
    assert stored["local"]["loss"] == "custom"
    assert stored["local"]["object"]["registered_name"] == "test_keras_spec>ScaledPred"
    assert stored["local"]["object"]["config"] == {"scale": 3.0}
    assert stored["heads"]["object"]["config"] == "test_keras_spec>linear_head"
    assert config_local_loss(result.config) == ScaledPred(3.0) and config_heads(result.config)[0] is linear_head
    messages = []
    fit(digits, workdir, messages.append, local_loss=ScaledPred(3.0), head=linear_head)
    assert any("stage_01: finished earlier" in m for m in messages)
    with pytest.raises(WorkdirMismatchError, match=r"local_loss_object\.config\.scale: 3\.0 -> 4\.0"):
        fit(digits, workdir, quiet_log, local_loss=ScaledPred(4.0), head=linear_head)
    with pytest.raises(WorkdirMismatchError, match=r"aux_head_object"):
        fit(digits, workdir, quiet_log, local_loss=ScaledPred(3.0), head=HEAD)


@pytest.mark.parametrize("changes, what", [
    (dict(local_loss=UnregisteredPred()), "local loss UnregisteredPred"),
    (dict(head=lambda shape, classes: linear_head(shape, classes)), "head <lambda>"),
], ids=["unregistered_loss", "lambda_head"])
def test_an_object_that_cannot_be_recorded_is_refused_in_one_line_before_anything_is_written(
        digits, tmp_path, quiet_log, changes, what):
    workdir = str(tmp_path / "refused")
    with pytest.raises(layerwise.ConfigError, match=f"cannot record the {what} in the run's config.json") as error:
        fit(digits, workdir, quiet_log, **changes)
    assert "\n" not in str(error.value) and "register_keras_serializable" in str(error.value)
    assert not os.path.exists(workdir)
    # in memory it trains, and its configuration says it was not recorded
    result = fit(digits, None, quiet_log, **changes)
    assert len(result.classifiers) == 3
    assert "not_recorded" in json.dumps(result.config.to_dict())
    with pytest.raises(layerwise.ConfigError, match="was not recorded"):
        layerwise.fit(layerwise.split_model(user_model(), SPLIT_AT), digits[:2], config=result.config, verbose=0,
                      log=quiet_log)
