"""Predict with an exported classifier: locally, or through TF Serving (REST or gRPC).

    python -m apps.predict --model_dir runs/demo/export/layerwise_cnn_stage_02 --images a.png,b.png
    python -m apps.predict --model_dir runs/demo/export/layerwise_cnn_cascade --dataset mnist5k --limit 100 --threshold 0.95
    python -m apps.predict --server http://localhost:8501 --model_name layerwise_cnn_ensemble --npy batch.npy
    python -m apps.predict --grpc localhost:8500 --model_name layerwise_cnn_stage_02 --model_version 1 --images a.png

Exactly one source of the model (--model_dir, --server or --grpc) and one source of images
(--images, --npy or --dataset). Images are checked against the signature before sending;
dataset images come with labels, and then the accuracy is printed too. See docs/serving.md.
"""

from __future__ import annotations

from absl import flags

from apps import cli

flags.DEFINE_string("model_dir", None, "A SavedModel version directory, or a servable directory (newest version).")
flags.DEFINE_string("server", None, "TF Serving REST address, e.g. http://localhost:8501.")
flags.DEFINE_string("grpc", None, "TF Serving gRPC address, e.g. localhost:8500 (needs the [serving] extra).")
flags.DEFINE_string("model_name", None, "Servable name on the server (e.g. layerwise_cnn_cascade).")
flags.DEFINE_integer("model_version", None, "Servable version on the server [default: the server's choice].")
flags.DEFINE_string("signature", "serving_default", "serving_default (uint8 pixels) or serving_float (normalised).")
flags.DEFINE_float("threshold", None, "Exit threshold for the cascade servable [default: the one it was exported with].")
flags.DEFINE_list("images", None, "PNG/JPEG files, one batch, comma-separated (a.png,b.png).")
flags.DEFINE_string("npy", None, "A .npy batch [N, H, W, C] (or one image [H, W, C]).")
flags.DEFINE_string("dataset", None, "A registered dataset: predict on its --split (raw pixels, with labels).")
flags.DEFINE_string("split", "test", "Dataset split.")
flags.DEFINE_integer("limit", 20, "At most this many dataset examples (0: all).")
flags.DEFINE_integer("split_seed", 0, "The dataset's split seed (as in training).")
flags.DEFINE_float("timeout", 10.0, "Seconds to wait for the server.")
FLAGS = flags.FLAGS


def _client():
    from layerwise.errors import ConfigError
    from layerwise.serving import clients as serving

    sources = [name for name in ("model_dir", "server", "grpc") if FLAGS[name].value]
    if len(sources) != 1:
        raise ConfigError("pass exactly one of --model_dir, --server, --grpc")
    if FLAGS.model_dir:
        return serving.LocalModel(FLAGS.model_dir)
    if not FLAGS.model_name:
        raise ConfigError("--server/--grpc need --model_name (a servable in models.config)")
    cls = serving.RestClient if FLAGS.server else serving.GrpcClient
    return cls(FLAGS.server or FLAGS.grpc, FLAGS.model_name, FLAGS.model_version, timeout=FLAGS.timeout)


def _images():
    import numpy as np

    from layerwise.serving import inputs
    from layerwise.errors import ConfigError

    sources = [name for name in ("images", "npy", "dataset") if FLAGS[name].value]
    if len(sources) != 1:
        raise ConfigError("pass exactly one of --images, --npy, --dataset")
    if FLAGS.images:
        return inputs.load_image_files(FLAGS.images), None
    if FLAGS.npy:
        return inputs.load_npy(FLAGS.npy), None
    from layerwise.data import load_dataset

    data = load_dataset(FLAGS.dataset, split_seed=FLAGS.split_seed)
    if not hasattr(data, "arrays"):
        raise ConfigError(f"dataset {FLAGS.dataset!r} is not held in memory; export a .npy batch instead")
    x, y = data.arrays(FLAGS.split)
    if FLAGS.limit:
        x, y = x[: FLAGS.limit], y[: FLAGS.limit]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8), y


def main(argv: list[str]) -> None:
    import numpy as np

    from layerwise.errors import ConfigError

    cli.refuse_arguments(argv, "; --images takes a comma-separated list: --images a.png,b.png")
    if FLAGS.limit < 0:  # flags first: nothing is loaded for a bad command
        raise ConfigError(f"--limit must be >= 0 (0: every example), got {FLAGS.limit}")
    if not 0 < FLAGS.timeout < float("inf"):
        raise ConfigError(f"--timeout must be a positive number of seconds, got {FLAGS.timeout}")
    client = _client()
    images, labels = _images()
    out = client.predict(images, FLAGS.signature, FLAGS.threshold)
    classes = np.asarray(out["classes"]).reshape(-1)
    scores = np.asarray(out["probabilities"]).max(axis=-1)
    exits = out.get("exit_stage")
    for i, (c, s) in enumerate(zip(classes, scores)):
        line = f"{i}: class {int(c)} ({s:.3f})"
        if exits is not None:
            line += f", exit stage {int(exits[i])}"
        if labels is not None:
            line += f", label {int(labels[i])}"
        print(line)
    if labels is not None:
        print(f"accuracy {np.mean(classes == labels):.2%} on {len(labels)} examples")
    if exits is not None:
        print(f"mean exit stage {np.mean(exits):.2f}")


def console() -> None:
    """The installed ``layerwise-predict`` command (``python -m apps.predict`` from a checkout)."""
    cli.run(main)


if __name__ == "__main__":
    console()
