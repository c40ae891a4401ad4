"""Train a tiny Keras regressor twice — targets at [0,255] and at [0,1] — with the logs a
project keeps: progress-bar stdout, CSVLogger and the TensorBoard callback. Run as
``python keras_regression.py OUTDIR SCALE``; stdout is the Keras log."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np


def main(out: str, scale: float) -> None:
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((64, 8)).astype("float32")
    y = (x @ rng.random((8, 1)) / 8 * scale).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse",
                  metrics=["mean_squared_error", "mean_absolute_error", keras.metrics.RootMeanSquaredError()])
    model.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=1,
              callbacks=[keras.callbacks.CSVLogger(os.path.join(out, "training.csv")),
                         keras.callbacks.TensorBoard(os.path.join(out, "tb"))])


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
