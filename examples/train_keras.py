"""A small Keras classifier on synthetic data with the TensorBoard and CSVLogger callbacks (CPU):

    gpudoc run --logdir runs/keras -- python examples/train_keras.py

It learns which of three Gaussian clusters a point comes from. Keras's ``TensorBoard`` callback
writes ``epoch_loss`` and ``epoch_accuracy`` under ``DIR/train`` and ``DIR/validation`` (and
``epoch_learning_rate``), and ``CSVLogger`` writes every epoch's numbers to
``DIR/training.csv`` (``gpudoc metrics-check`` reads either), where DIR is ``--logdir``
(default: ``$GPUDOC_LOGDIR``, which ``gpudoc run --logdir`` sets; no callbacks without it).
Keras prints a summary line per epoch (``verbose=2``), which ``gpudoc run`` also reads.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices, before it loads

import numpy as np


def data(count: int, features: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points of ``features`` dimensions from three clusters, and their labels 0-2."""
    centres = np.random.default_rng(0).normal(0, 2, (3, features))
    labels = rng.integers(0, 3, count)
    return (centres[labels] + rng.normal(0, 1.5, (count, features))).astype("float32"), labels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--size", type=int, default=2048, help="training points (a quarter as many to validate)")
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow CPU threads")
    parser.add_argument("--logdir", default=os.environ.get("GPUDOC_LOGDIR"),
                        help="write TensorBoard event files and training.csv here (default: $GPUDOC_LOGDIR)")
    args = parser.parse_args()
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    x, y = data(args.size, args.features, rng)
    x_val, y_val = data(max(args.size // 4, 1), args.features, rng)
    model = keras.Sequential([keras.Input((args.features,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    callbacks: list[keras.callbacks.Callback] = []
    if args.logdir:
        Path(args.logdir).mkdir(parents=True, exist_ok=True)
        callbacks = [keras.callbacks.TensorBoard(args.logdir, write_graph=False),
                     keras.callbacks.CSVLogger(str(Path(args.logdir) / "training.csv"))]
    model.fit(x, y, validation_data=(x_val, y_val), epochs=args.epochs, batch_size=args.batch,
              callbacks=callbacks, verbose=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
