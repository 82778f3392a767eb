"""Local losses: the objective each module of a locally trained network minimises.

Greedy layerwise learning (Belilovsky et al., ICML 2019) is one member of a family of *local*
learning methods; they differ in what a module's local objective is:

- :class:`Pred`: cross-entropy through the stage's auxiliary head (the paper's; Nøkland & Eidnes'
  ``pred``). It is the default, and trains exactly as the toolkit always has.
- :class:`Sim`: similarity matching (Nøkland & Eidnes, "Training Neural Networks with Local Error
  Signals", ICML 2019): the mean squared difference between the cosine-similarity matrix of the
  module's features within a batch (after a 3x3 conv, ``conv_loss`` in their code) and that of the
  one-hot labels. The classification head learns on the detached features (its cross-entropy never
  reaches the module), as their output layer does.
- :class:`PredSim`: ``(1 - beta) * pred + beta * sim`` (their ``predsim``, beta = 0.99). The
  similarity terms and conv are in ``layerwise.training.similarity``.
- :class:`InfoPro`: Wang et al., "Revisiting Locally Supervised Learning: an Alternative to
  End-to-end Training", ICLR 2021: ``lambda_1 * reconstruction + lambda_2 * classification``, the
  reconstruction a small decoder back to the image (upsample, 3x3 conv, BN, ReLU, 3x3 conv, sigmoid,
  binary cross-entropy), the classification a cross-entropy through the head or a supervised
  contrastive loss (Khosla et al. 2020) on a projection; the weights change linearly from the first
  module to the last local one, and the last module trains the network's classifier alone. Its
  decoder, projection head and their terms are in ``layerwise.training.infopro_heads``.

A local loss is a small interface: :meth:`LocalLoss.head` builds the training-only layers it needs
(``features -> {name: tensor}``; decoders, similarity convs and projections are never part of an
exported classifier), and :meth:`LocalLoss.__call__` turns the training model's outputs (the head's
``logits`` and those extra outputs), the labels and the network's input images into the scalar
loss, inside the one compiled training step. :meth:`LocalLoss.for_stage` gives the loss of module
``j`` of ``J`` (InfoPro's weights depend on it).

Example:
    >>> loss = PredSim(beta=0.99)
    >>> extras = loss.head((8, 8, 16), 10, (32, 32, 3))      # the similarity conv
    >>> layerwise.fit(network, data, mode="decoupled", local_loss=loss)
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

import keras
import tensorflow as tf

from layerwise.errors import ConfigError
from layerwise.config import recorded
from layerwise.config import CUSTOM_LOSS, TrainConfig
from layerwise.training.infopro_heads import decoder, projection_head, reconstruction_loss, supervised_contrastive_loss
from layerwise.nn.layers import features_input
from layerwise.training.similarity import SIMILARITY, similarity_head, similarity_loss

LOGITS = "logits"  # the classification head's output in a training model's outputs
RECONSTRUCTION = "reconstruction"
PROJECTION = "projection"
CLASS_TERMS = ("cross_entropy", "contrast")


# ----------------------------------------------------------------------------- the terms
def cross_entropy(logits, labels, global_batch_size: int | None) -> tf.Tensor:
    """Mean cross-entropy of ``logits`` over the global batch (scaled for summing across replicas)."""
    per_example = keras.losses.sparse_categorical_crossentropy(labels, tf.cast(logits, tf.float32), from_logits=True)
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)


def _per_replica(loss: tf.Tensor) -> tf.Tensor:
    """A batch-level loss of one replica's examples, scaled so that the replicas' sum is their mean."""
    return loss / tf.cast(tf.distribute.get_replica_context().num_replicas_in_sync, loss.dtype)


# ----------------------------------------------------------------------------- training-only layers
@keras.saving.register_keras_serializable(package="layerwise")


# ----------------------------------------------------------------------------- the interface
@dataclasses.dataclass(frozen=True)
class LocalLoss:
    """A module's local objective (the base class is the interface; see the module doc).

    A loss of your own subclasses it (a frozen dataclass whose fields are its parameters);
    register it with ``@keras.saving.register_keras_serializable()`` so that a run with a
    ``workdir`` can record it in ``config.json`` (:meth:`get_config`, ``layerwise.config.recorded``).

    Attributes (class-level):
        name: the ``--local_loss`` name.
        detach_head: the classification head learns on detached features: its cross-entropy
            trains the head only, never the module.
        config_fields: a built-in's ``{parameter: configuration field}`` (``beta`` is
            ``predsim_beta``): a run records the loss by its name and these fields.
    """

    name = "local"
    detach_head = False
    config_fields: ClassVar[dict[str, str]] = {}

    def get_config(self) -> dict[str, Any]:
        """The loss's parameters, its dataclass fields (Keras serialisation; override it for
        a subclass that keeps parameters elsewhere)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "LocalLoss":
        """The loss with the parameters :meth:`get_config` gave."""
        return cls(**config)

    @property
    def plain(self) -> bool:
        """Cross-entropy through the head and nothing else: the step of the greedy paper."""
        return False

    @property
    def needs_images(self) -> bool:
        """The loss reads the network's input images (a reconstruction)."""
        return False

    def for_stage(self, j: int, num_stages: int) -> "LocalLoss":
        """The loss of module ``j`` of ``num_stages``."""
        return self

    def head(self, feature_shape: Sequence[int], num_classes: int, image_shape: Sequence[int],
             name: str = "local") -> keras.Model | None:
        """The training-only layers on the module's features, ``features -> {name: tensor}``
        (``None``: none). Built once per module, seeded by the caller."""
        return None

    def __call__(self, outputs: dict, labels, images, global_batch_size: int | None = None) -> tf.Tensor:
        """The loss of one replica's batch, scaled for summing across replicas.

        Args:
            outputs: ``{"logits": head logits, **head(...) outputs}``.
            labels: integer labels.
            images: the network's input images of the batch.
            global_batch_size: the divisor of per-example means (``None``: the batch's own size).
        """
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Pred(LocalLoss):
    """Cross-entropy through the stage's auxiliary head: greedy layerwise learning's local loss."""

    name = "pred"

    @property
    def plain(self) -> bool:
        return True

    def __call__(self, outputs, labels, images, global_batch_size=None):
        return cross_entropy(outputs[LOGITS], labels, global_batch_size)


@dataclasses.dataclass(frozen=True)
class Sim(LocalLoss):
    """Similarity matching (Nøkland & Eidnes 2019, ``sim``); the head learns on detached features."""

    name = "sim"
    detach_head = True

    def head(self, feature_shape, num_classes, image_shape, name="local"):
        return similarity_head(feature_shape, name)

    def __call__(self, outputs, labels, images, global_batch_size=None):
        logits = outputs[LOGITS]
        sim = _per_replica(similarity_loss(outputs[SIMILARITY], labels, logits.shape[-1]))
        return sim + cross_entropy(logits, labels, global_batch_size)


@dataclasses.dataclass(frozen=True)
class PredSim(LocalLoss):
    """``(1 - beta) * pred + beta * sim`` (Nøkland & Eidnes 2019, ``predsim``; beta = 0.99 there).

    Attributes:
        beta: the weight of the similarity term.
    """

    beta: float = 0.99
    name = "predsim"
    config_fields: ClassVar[dict[str, str]] = {"beta": "predsim_beta"}

    def head(self, feature_shape, num_classes, image_shape, name="local"):
        return similarity_head(feature_shape, name)

    def __call__(self, outputs, labels, images, global_batch_size=None):
        logits = outputs[LOGITS]
        sim = _per_replica(similarity_loss(outputs[SIMILARITY], labels, logits.shape[-1]))
        return (1.0 - self.beta) * cross_entropy(logits, labels, global_batch_size) + self.beta * sim


@dataclasses.dataclass(frozen=True)
class InfoPro(LocalLoss):
    """InfoPro (Wang et al., ICLR 2021): ``recon_weight * reconstruction + class_weight * class term``.

    Module ``j < J - 1`` uses the weights interpolated linearly from the first values (module 0) to
    the ``_last`` ones (module J - 2), as the reference code's ``ixx_1 -> ixx_2`` and
    ``ixy_1 -> ixy_2``; module ``J - 1`` trains the network's classifier with cross-entropy alone.

    Attributes:
        recon_weight, recon_weight_last: lambda_1 of the first and of the last local module.
        class_weight, class_weight_last: lambda_2 of the first and of the last local module.
        class_term: ``cross_entropy`` (through the stage's head) or ``contrast`` (supervised
            contrastive loss on a projection; the head then learns on detached features).
        temperature: of the contrastive loss (0.07).
        feature_dim: the projection's output width (128).
        decoder_width: the decoder's hidden width (12 in the reference code).
        image_mean, image_std: the pipeline's per-channel normalisation on the 0-1 pixel scale, so
            that the reconstruction target is the de-normalised image, as the authors'
            (:func:`~layerwise.training.infopro_heads.reconstruction_target`); ``layerwise.fit``
            fills them from the data (``DataSource.unit_statistics``) and records them. Empty: the
            min-max stretched image.
    """

    recon_weight: float = 5.0
    recon_weight_last: float = 0.0
    class_weight: float = 0.5
    class_weight_last: float = 1.0
    class_term: str = "cross_entropy"
    temperature: float = 0.07
    feature_dim: int = 128
    decoder_width: int = 12
    image_mean: tuple[float, ...] = ()
    image_std: tuple[float, ...] = ()
    name = "infopro"
    config_fields: ClassVar[dict[str, str]] = {
        "recon_weight": "infopro_recon_weight", "recon_weight_last": "infopro_recon_weight_last",
        "class_weight": "infopro_class_weight", "class_weight_last": "infopro_class_weight_last",
        "class_term": "infopro_class_term", "temperature": "infopro_temperature",
        "feature_dim": "infopro_feature_dim", "decoder_width": "infopro_decoder_width",
        "image_mean": "infopro_image_mean", "image_std": "infopro_image_std",
    }

    def __post_init__(self):
        if self.class_term not in CLASS_TERMS:
            raise ConfigError(f"infopro_class_term must be one of {', '.join(CLASS_TERMS)}, got {self.class_term!r}")
        if len(self.image_mean) != len(self.image_std):
            raise ConfigError(f"infopro_image_mean and infopro_image_std need one value per channel each, got "
                              f"{len(self.image_mean)} and {len(self.image_std)}")
        object.__setattr__(self, "image_mean", tuple(float(v) for v in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(v) for v in self.image_std))

    @property
    def detach_head(self) -> bool:
        return self.class_term == "contrast"

    @property
    def needs_images(self) -> bool:
        return True

    def for_stage(self, j: int, num_stages: int) -> LocalLoss:
        if j >= num_stages - 1:
            return Pred()
        ratio = j / (num_stages - 2) if num_stages > 2 else 0.0
        recon = self.recon_weight * (1 - ratio) + self.recon_weight_last * ratio
        cls = self.class_weight * (1 - ratio) + self.class_weight_last * ratio
        return dataclasses.replace(self, recon_weight=recon, recon_weight_last=recon, class_weight=cls,
                                   class_weight_last=cls)

    def head(self, feature_shape, num_classes, image_shape, name="local"):
        features = features_input(feature_shape, f"{name}_features")
        outputs = {RECONSTRUCTION: decoder(feature_shape, image_shape, self.decoder_width, name)(features)}
        if self.class_term == "contrast":
            outputs[PROJECTION] = projection_head(feature_shape, self.feature_dim, name)(features)
        return keras.Model(features, outputs, name=name)

    def __call__(self, outputs, labels, images, global_batch_size=None):
        statistics = (self.image_mean, self.image_std) if self.image_mean else (None, None)
        recon = tf.nn.compute_average_loss(reconstruction_loss(outputs[RECONSTRUCTION], images, *statistics),
                                           global_batch_size=global_batch_size)
        head = cross_entropy(outputs[LOGITS], labels, global_batch_size)
        if self.class_term == "contrast":
            contrast = tf.nn.compute_average_loss(
                supervised_contrastive_loss(outputs[PROJECTION], labels, self.temperature),
                global_batch_size=global_batch_size)
            return self.recon_weight * recon + self.class_weight * contrast + head
        return self.recon_weight * recon + self.class_weight * head


@dataclasses.dataclass(frozen=True)
class WithAuxiliaryTerms(LocalLoss):
    """End to end with auxiliary terms: the network's cross-entropy plus each earlier stage's local
    loss, nothing detached (Nøkland & Eidnes' ``--no-detach``; deep supervision).

    Attributes:
        terms: ``(output prefix, loss)`` per auxiliary stage: the loss reads the outputs named
            ``prefix + key``.
    """

    terms: tuple[tuple[str, LocalLoss], ...] = ()
    name = "end_to_end"

    @property
    def needs_images(self) -> bool:
        return any(term.needs_images for _, term in self.terms)

    def __call__(self, outputs, labels, images, global_batch_size=None):
        loss = cross_entropy(outputs[LOGITS], labels, global_batch_size)
        for prefix, term in self.terms:
            own = {key[len(prefix):]: value for key, value in outputs.items() if key.startswith(prefix)}
            loss += term(own, labels, images, global_batch_size)
        return loss


LOCAL_LOSSES: dict[str, type[LocalLoss]] = {cls.name: cls for cls in (Pred, Sim, PredSim, InfoPro)}


def local_loss_for(name: str, **options) -> LocalLoss:
    """The built-in local loss ``name`` with ``options`` (its dataclass fields).

    Raises:
        ConfigError: an unknown name (the message lists them) or option.
    """
    if name not in LOCAL_LOSSES:
        raise ConfigError(f"unknown local loss {name!r}; choose one of: {', '.join(LOCAL_LOSSES)}")
    cls = LOCAL_LOSSES[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"local loss {name!r} takes no option(s) {unknown}; it takes: {sorted(known) or 'none'}")
    return cls(**options)


def as_recorded(value: Any) -> Any:
    """A parameter as ``config.json`` holds it (a tuple as a list)."""
    return list(value) if isinstance(value, tuple) else value


def with_image_statistics(config: TrainConfig, statistics: tuple[Sequence[float], Sequence[float]] | None
                          ) -> TrainConfig:
    """``config`` with InfoPro's ``infopro_image_mean`` / ``infopro_image_std`` set to ``statistics``
    (the data's normalisation on the 0-1 pixel scale, ``DataSource.unit_statistics``) where the run
    uses the built-in InfoPro loss and records none yet; otherwise ``config`` itself (a recorded
    run keeps what it recorded)."""
    local = config.local
    if local.loss != InfoPro.name or local.infopro_image_mean or statistics is None:
        return config
    mean, std = statistics
    return config.replace(infopro_image_mean=[float(v) for v in mean], infopro_image_std=[float(v) for v in std])


def local_loss_options(loss: LocalLoss, required: bool) -> dict[str, Any]:
    """The configuration fields (flat names) that record ``loss``: a built-in by its name and
    its :attr:`LocalLoss.config_fields`, any other LocalLoss as ``local_loss="custom"`` and its
    Keras-serialised form (``local_loss_object``).

    Args:
        loss: what ``layerwise.fit(local_loss=...)`` was given.
        required: the run is written to a workdir, so a loss that cannot be recorded is refused.

    Raises:
        ConfigError: ``required`` and ``loss`` cannot be serialised (``layerwise.config.recorded``).
    """
    if type(loss) is LOCAL_LOSSES.get(loss.name):  # a built-in (a subclass records itself whole)
        fields = {flag: as_recorded(getattr(loss, parameter)) for parameter, flag in loss.config_fields.items()}
        return {"local_loss": loss.name, "local_loss_object": {}, **fields}
    form = recorded.record(loss, "local loss", lambda obj: isinstance(obj, LocalLoss), required=required)
    return {"local_loss": CUSTOM_LOSS, "local_loss_object": form}


def config_local_loss(config: TrainConfig) -> LocalLoss:
    """The local loss a run's configuration describes (``--local_loss`` and its weights, or the
    recorded ``local_loss_object``).

    Raises:
        ConfigError: a recorded loss that cannot be rebuilt (its class is not imported).
    """
    local = config.local
    if local.loss == CUSTOM_LOSS:
        return recorded.rebuild(local.object, "local loss", lambda obj: isinstance(obj, LocalLoss))
    cls = LOCAL_LOSSES[local.loss]
    flat = config.flat()
    return cls(**{parameter: flat[flag] for parameter, flag in cls.config_fields.items()})
