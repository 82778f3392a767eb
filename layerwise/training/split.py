"""Any functional Keras model as a :class:`StagedNetwork`: cut it where one tensor crosses.

Greedy layerwise training (Belilovsky et al., ICML 2019) and the local-learning methods after it
train a network as a sequence of modules; InfoPro (Wang et al., "Revisiting Locally Supervised
Learning", ICLR 2021) splits ResNets into K local modules of roughly equal cost at block
boundaries. :func:`split_model` does that for any functional model: a *valid cut* is a point of
the graph where exactly one tensor is alive (every path from the input to the output passes
through it), such as the output of a residual block; a cut through a residual connection (two
tensors crossing) is refused with the nearest valid cuts named.

The stages are functional sub-models that *share the original layers*: training the stages
trains the user's model in place, and composing them gives the original outputs. Where the model
ends in a classifier (global pooling / flatten / dropout and dense layers), that classifier becomes
the network's final head, ending in logits: a final softmax layer is left out, and a dense layer with
a softmax activation gives its pre-activation through :class:`DenseLogits`.

Example:
    >>> model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    >>> network = split_model(model, 4)              # 4 stages of roughly equal forward FLOPs
    >>> network = split_model(model, ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out"])
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Sequence

import keras
import numpy as np
from keras import tree

from layerwise.nn.flops import layer_flops
from layerwise.errors import ConfigError
from layerwise.nn.network import StagedNetwork
from layerwise.nn.training_layers import DenseLogits

# A trailing classifier: a spatial reduction, then dense layers (with dropout, activations).
REDUCTIONS = (keras.layers.Flatten, keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)
CLASSIFIER_LAYERS = REDUCTIONS + (
    keras.layers.Dense, keras.layers.Dropout, keras.layers.Activation, keras.layers.Softmax, keras.layers.ReLU,
)


@dataclasses.dataclass
class _Graph:
    """A functional model's operations in order, with the points where one tensor crosses."""

    operations: list  # in topological order (input layers excluded)
    names: list[str]  # their names
    outputs: list[keras.KerasTensor]  # each operation's (single) output, or None
    flops: list[int]  # forward FLOPs of each operation
    valid: list[bool]  # a cut after operation i leaves exactly its output alive


def _analyse(model: keras.Model) -> _Graph:
    operations = [op for op in model.operations if not isinstance(op, keras.layers.InputLayer)]
    uses: dict[int, int] = {}
    produced = {id(t) for t in tree.flatten(model.inputs)}
    inputs_of = []
    for op in operations:
        ins = tree.flatten(op.input)
        inputs_of.append(ins)
        for t in ins:
            uses[id(t)] = uses.get(id(t), 0) + 1
    for t in tree.flatten(model.outputs):
        uses[id(t)] = uses.get(id(t), 0) + 1
    live = {id(t): uses.get(id(t), 0) for t in tree.flatten(model.inputs)}
    graph = _Graph([], [], [], [], [])
    for op, ins in zip(operations, inputs_of):
        for t in ins:
            if id(t) not in produced:
                raise ConfigError(
                    f"layer {op.name!r} is called more than once (a shared layer); split_model needs a graph in "
                    "which every layer is called once"
                )
            live[id(t)] -= 1
            if live[id(t)] == 0:
                del live[id(t)]
        outs = tree.flatten(op.output)
        for t in outs:
            produced.add(id(t))
            if uses.get(id(t)):
                live[id(t)] = uses[id(t)]
        single = outs[0] if len(outs) == 1 else None
        graph.operations.append(op)
        graph.names.append(op.name)
        graph.outputs.append(single)
        graph.flops.append(layer_flops(op))
        graph.valid.append(single is not None and set(live) == {id(single)})
    return graph


def _classifier_start(graph: _Graph) -> int | None:
    """Index of the first operation of the trailing classifier (a global pooling or flatten, then
    dense, dropout and activation layers, with a dense layer among them, read from a single
    tensor), or ``None``."""
    start = len(graph.operations)
    while start > 0 and isinstance(graph.operations[start - 1], CLASSIFIER_LAYERS):
        start -= 1
    reductions = [i for i in range(start, len(graph.operations)) if isinstance(graph.operations[i], REDUCTIONS)]
    if not reductions:
        return None
    start = reductions[0]  # activations before the reduction belong to the last stage
    trailing = graph.operations[start:]
    if start == 0 or not any(isinstance(op, keras.layers.Dense) for op in trailing) or not graph.valid[start - 1]:
        return None
    return start


def _logits(graph: _Graph) -> keras.KerasTensor:
    """The classifier's logits: its output, or what its final softmax takes."""
    last = graph.operations[-1]
    if isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and last.activation is keras.activations.softmax
    ):
        return last.input
    if isinstance(last, keras.layers.Dense) and last.activation is keras.activations.softmax:
        return DenseLogits(last, name=f"{last.name}_logits")(last.input)
    return last.output


def _nearest(graph: _Graph, i: int, end: int) -> str:
    """The valid cuts just before and after operation ``i`` (after: past any parameter-free
    operations that follow it, such as the block's activation)."""
    before = [graph.names[k] for k in range(i - 1, -1, -1) if graph.valid[k]][:1]
    following = [k for k in range(i + 1, end) if graph.valid[k]]  # end - 1: the end of the last stage
    while len(following) > 1 and sum(graph.flops[following[0] + 1: following[1] + 1]) == 0:
        following.pop(0)
    after = [graph.names[k] for k in following[:1] if k < end - 1]
    found = before + after
    return " or ".join(repr(n) for n in found) if found else "none"


def _balanced_cuts(graph: _Graph, end: int, stages: int) -> list[int]:
    """``stages - 1`` valid cut indices before ``end`` minimising the largest stage's FLOPs."""
    cumulative = np.concatenate([[0], np.cumsum(graph.flops[:end])])
    # of valid cuts with the same FLOPs before them, the last (after a block's activation, not
    # between its sum and its ReLU)
    valid = [i for i in range(end - 1) if graph.valid[i]]
    candidates = [i for k, i in enumerate(valid)
                  if k + 1 == len(valid) or cumulative[valid[k + 1] + 1] != cumulative[i + 1]]
    if stages - 1 > len(candidates):
        raise ConfigError(
            f"cannot cut {graph.names[0]}...{graph.names[end - 1]} into {stages} stages: it has only "
            f"{len(candidates)} valid cut points (places where a single tensor crosses); use at most "
            f"{len(candidates) + 1} stages"
        )
    points = [-1] + candidates + [end - 1]  # a stage spans (points[a], points[b]]

    def cost(a: int, b: int) -> float:
        return float(cumulative[points[b] + 1] - cumulative[points[a] + 1])

    n = len(points)
    best = {(0, 0): (0.0, [])}
    for k in range(1, stages + 1):  # k stages ending at point b
        for b in range(1, n):
            if k == stages and b != n - 1:
                continue
            options = [
                (max(best[(k - 1, a)][0], cost(a, b)), best[(k - 1, a)][1] + [b])
                for a in range(b) if (k - 1, a) in best and (k > 1 or a == 0)
            ]
            if options:
                best[(k, b)] = min(options, key=lambda o: (o[0], o[1]))
    _, chosen = best[(stages, n - 1)]
    return [points[b] for b in chosen[:-1]]


def _check_at(at) -> None:
    """Raises ConfigError unless ``at`` is a number of stages or a list of layer names (``True``
    is an int to Python, and a string a sequence of one-letter names)."""
    if isinstance(at, numbers.Integral) and not isinstance(at, bool):
        return
    if isinstance(at, Sequence) and not isinstance(at, str) and all(isinstance(name, str) for name in at):
        return
    hint = f": pass [{at!r}]" if isinstance(at, str) else ""
    raise ConfigError(f"at must be a positive int number of stages or a list of layer names, got {at!r}{hint}")


def _cuts(model: keras.Model, graph: _Graph, at: int | Sequence[str], end: int) -> list[int]:
    """The indices of the ops ``split_model`` cuts after: ``at`` balanced cuts, or after the
    layers ``at`` names (each checked: known, before the classifier, a single tensor crossing, in
    order)."""
    if isinstance(at, numbers.Integral) and not isinstance(at, bool):
        if at < 1:
            raise ConfigError(f"the number of stages must be >= 1, got {at}")
        return _balanced_cuts(graph, end, int(at))
    index = {n: i for i, n in enumerate(graph.names)}
    cuts = []
    for layer in at:
        if layer not in index:
            raise ConfigError(f"model {model.name!r} has no layer {layer!r} to cut after")
        i = index[layer]
        if i >= end - 1:
            raise ConfigError(
                f"cannot cut after {layer!r}: it is {'the last stage layer' if i == end - 1 else 'in the classifier'}; "
                f"cut before {graph.names[end - 1]!r}"
            )
        if not graph.valid[i]:
            raise ConfigError(
                f"cannot cut after {layer!r}: more than one tensor crosses there (a residual or parallel "
                f"branch); the nearest valid cuts are {_nearest(graph, i, end)}"
            )
        if cuts and i <= cuts[-1]:
            raise ConfigError(f"the cuts must follow the model's order; {layer!r} comes before {graph.names[cuts[-1]]!r}")
        cuts.append(i)
    return cuts


def split_model(model: keras.Model, at: int | Sequence[str], *, num_classes: int | None = None,
                name: str | None = None) -> StagedNetwork:
    """Cuts a functional Keras model into stages (and its classifier, if any, into the final head).

    Args:
        model: a functional (or Sequential) Keras model with one image input and one output.
        at: the names of the layers to cut after (in order), or an int K: K stages of roughly
            equal forward FLOPs, cut only where a single tensor crosses.
        num_classes: the number of classes, needed when the model does not end in a classifier.
        name: the network's name (default: the model's).

    Returns:
        The :class:`StagedNetwork`; its stages share the model's layers and weights. A model
        compiled before (``model.compile(optimizer=...)``) passes its optimizer on
        (``network.optimizer``): ``layerwise.fit`` trains every problem with a fresh copy of it.

    Raises:
        ConfigError: a cut where more than one tensor crosses (the message names the layer and
            the nearest valid cuts), an unknown layer, too many stages, ``at`` neither an int nor
            a list of names (``2.5``, ``True``), a subclassed model, or a missing ``num_classes``.
    """
    compiled_optimizer = model.optimizer if getattr(model, "compiled", False) else None
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    if not (isinstance(model, keras.Model) and hasattr(model, "operations") and model.inputs):
        raise ConfigError(
            "split_model needs a functional Keras model (built from keras.Input); a subclassed model has no "
            "graph to cut"
        )
    if len(model.inputs) != 1 or len(tree.flatten(model.outputs)) != 1:
        raise ConfigError("split_model needs a model with one input (the images) and one output")
    _check_at(at)
    graph = _analyse(model)
    head_start = _classifier_start(graph)
    end = len(graph.names) if head_start is None else head_start  # the stages cover ops [0, end)
    cuts = _cuts(model, graph, at, end)
    boundaries = [model.inputs[0]] + [graph.outputs[i] for i in cuts] + [graph.outputs[end - 1]]
    stages = [keras.Model(a, b, name=f"stage_{j:02d}") for j, (a, b) in enumerate(zip(boundaries[:-1], boundaries[1:]))]
    final_head = None
    output = tree.flatten(model.outputs)[0]
    if head_start is not None:
        head = keras.Model(boundaries[-1], _logits(graph), name="final_head")
        classes = int(output.shape[-1])
        if num_classes is not None and num_classes != classes:
            raise ConfigError(f"num_classes is {num_classes} but the model's classifier has {classes} outputs")
        num_classes = classes

        def final_head(feature_shape, classes, head=head):
            return head
    elif num_classes is None:
        raise ConfigError(
            f"model {model.name!r} does not end in a classifier (global pooling + Dense): pass num_classes so "
            "that the last stage gets an auxiliary head"
        )
    network = StagedNetwork(
        name or model.name, tuple(model.inputs[0].shape[1:]), int(num_classes), stages, final_head=final_head,
        options={"split_at": [graph.names[i] for i in cuts]},
    )
    network.optimizer = compiled_optimizer
    return network
