"""Real event files: tensorboardX (every value kind, hparams, a purge_step restart),
TensorFlow's own tf.summary (tensor scalars whose metadata only the first value carries), and
hparams sessions with their metrics as tf.summary's hparams API, Keras's TensorBoard callback
(with its model graph) and torch.utils.tensorboard write them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from gpudoc.events import records

_CACHE: dict[str, Path] = {}
# Every events test runs on both record cores (the compiled one wherever it is built: see
# test_core.py's check that it is, where a C compiler is).
CORES = ["compiled", "python"] if records.core_active() else ["python"]


@pytest.fixture(autouse=True, params=CORES)
def events_core(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The record core the test runs on: in this process and in the gpudoc processes it starts."""
    if request.param == "python":
        monkeypatch.setattr(records, "_core", None)
        monkeypatch.setenv("GPUDOC_EVENTS_CORE", "python")
    else:
        monkeypatch.delenv("GPUDOC_EVENTS_CORE", raising=False)
    return str(request.param)


def _tensorboardx_logdir(root: Path) -> Path:
    from tensorboardX import SummaryWriter

    logdir = root / "tbx"
    rng = np.random.default_rng(0)
    writer = SummaryWriter(str(logdir / "run1"))
    for step in range(0, 101):
        writer.add_scalar("loss", 1 / (step + 1), step)
        writer.add_scalar("acc", step / 100, step)
        if step % 10 == 0:
            writer.add_histogram("weights", rng.normal(size=100), step)
            writer.add_text("note", f"step {step}", step)
            writer.add_image("img", rng.random((3, 8, 8)), step)
            writer.add_pr_curve("pr", rng.integers(0, 2, 50), rng.random(50), step)
    writer.add_hparams({"lr": 0.1, "bs": 32}, {"hparam/acc": 0.9})
    writer.close()
    restart = SummaryWriter(str(logdir / "run1"), purge_step=80, filename_suffix=".restart")
    for step in range(80, 121):
        restart.add_scalar("loss", 2 / (step + 1), step)
    restart.close()
    _torch_run(logdir / "run2", rng)
    return logdir


def _torch_run(directory: Path, rng: np.random.Generator) -> None:
    """torch.utils.tensorboard: audio (its encoder needs no extra package) and a graph."""
    import torch
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(directory))
    writer.add_graph(torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU()), torch.zeros(1, 4))
    for step in range(0, 100):
        writer.add_scalar("loss", 1 / (step + 1), step)
        if step % 20 == 0:
            audio = torch.from_numpy(rng.uniform(-1, 1, 800).astype(np.float32))
            writer.add_audio("sound", audio, step, sample_rate=8000)
    writer.close()


def _tf_logdir(root: Path) -> Path:
    import tensorflow as tf

    logdir = root / "tf"
    writer = tf.summary.create_file_writer(str(logdir / "run"))

    @tf.function
    def double(x: tf.Tensor) -> tf.Tensor:
        return x * 2

    with writer.as_default():
        tf.summary.trace_on(graph=True)
        double(tf.constant(1.0))
        tf.summary.trace_export("double", step=0)  # a graph_run_metadata_graph summary
        for step in range(0, 60):
            tf.summary.scalar("loss", 1.0 / (step + 1), step=step)
            if step % 5 == 0:
                tf.summary.text("log", f"at {step}", step=step)
                tf.summary.histogram("w", tf.random.normal([50], seed=step), step=step)
    writer.close()
    return logdir


def _hparams_logdirs(root: Path) -> dict[str, Path]:
    """Three logdirs whose HParams tables have metric values: tf.summary with the hparams API
    (the experiment at the root naming one metric, two sessions), a Keras fit with the
    TensorBoard callback (model graph, train/ and validation/ metrics) and hp.KerasCallback
    (the session; no experiment, so every scalar is a metric), and torch's add_hparams."""
    import keras
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp
    from torch.utils.tensorboard import SummaryWriter

    tfhp = root / "tfhp"
    with tf.summary.create_file_writer(str(tfhp)).as_default():
        hp.hparams_config(hparams=[hp.HParam("lr", hp.RealInterval(0.001, 0.1))], metrics=[hp.Metric("accuracy")])
    for i, lr in enumerate((0.01, 0.05)):
        with tf.summary.create_file_writer(str(tfhp / f"session{i}")).as_default():
            hp.hparams({"lr": lr})
            for step in range(10):
                tf.summary.scalar("accuracy", 0.5 + step * lr, step=step)
                tf.summary.scalar("loss", 1.0 / (step + 1), step=step)
    run = root / "keras" / "run0"
    x = np.random.default_rng(0).random((32, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    callbacks = [keras.callbacks.TensorBoard(str(run), write_graph=True), hp.KerasCallback(str(run), {"units": 3})]
    model.fit(x, x.sum(axis=1), validation_split=0.25, epochs=4, verbose=0, callbacks=callbacks)
    torchhp = root / "torchhp"
    writer = SummaryWriter(str(torchhp))
    for step in range(5):
        writer.add_scalar("loss", 1 / (step + 1), step)
    writer.add_hparams({"lr": 0.1}, {"hparam/loss": 0.2})
    writer.close()
    return {"tfhp": tfhp, "keras": root / "keras", "torchhp": torchhp}


@pytest.fixture(scope="session")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not _CACHE:
        root = tmp_path_factory.mktemp("events")
        _CACHE["tbx"] = _tensorboardx_logdir(root)
        _CACHE["tf"] = _tf_logdir(root)
        _CACHE.update(_hparams_logdirs(root))
    return _CACHE


@pytest.fixture
def tbx(written: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the tensorboardX logdir (tests may damage it)."""
    return Path(shutil.copytree(written["tbx"], tmp_path / "tbx"))


@pytest.fixture
def tfdir(written: dict[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(written["tf"], tmp_path / "tf"))
