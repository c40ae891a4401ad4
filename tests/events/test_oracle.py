"""TensorBoard itself is the oracle: what its plugins show of gpudoc's trim, merge and replay
output must be what they show of the input restricted to the same steps.

One logdir holds every kind each available writer can produce without downloads —
torch.utils.tensorboard, tensorboardX, tf.summary (with the hparams API, custom scalars, pr
curves and meshes through their summary protos), TF1's FileWriter and Keras's TensorBoard
callback — steps 0..9
everywhere. Its views are read through TensorBoard's plugin event multiplexer: the data
provider's scalars, tensors and blob sequences of every plugin, and the HTTP routes of the
plugins that show data per run (hparams, custom scalars, graphs, projector) through werkzeug's
test client on TensorBoard's WSGI app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from gpudoc.cli import cli

FIRST, LAST = 3, 6
STEPS = range(10)


def _torch(run: Path) -> None:
    import torch
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(1)
    writer = SummaryWriter(str(run))
    writer.add_graph(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()), torch.zeros(2, 4))
    writer.add_custom_scalars({"training": {"loss": ["Multiline", ["loss", "acc"]]}})
    writer.add_embedding(torch.from_numpy(rng.random((6, 3))), metadata=list("abcdef"),
                         label_img=torch.from_numpy(rng.random((6, 3, 4, 4))), tag="points")
    for step in STEPS:
        writer.add_scalar("loss", 1 / (step + 1), step)
        writer.add_scalar("acc", step / 10, step)
        writer.add_histogram("weights", rng.normal(size=20), step)
        writer.add_image("img", rng.random((3, 4, 4)), step)
        writer.add_audio("sound", torch.from_numpy(rng.uniform(-1, 1, 80).astype(np.float32)), step,
                         sample_rate=800)
        writer.add_text("note", f"torch step {step}", step)
        writer.add_pr_curve("pr", rng.integers(0, 2, 20), rng.random(20), step)
        writer.add_mesh("mesh", vertices=torch.from_numpy(rng.random((1, 4, 3))),
                        faces=torch.tensor([[[0, 1, 2], [1, 2, 3]]]), global_step=step)
    writer.add_hparams({"lr": 0.1, "opt": "sgd"}, {"hparam/score": 0.7}, run_name="hp")
    writer.close()


def _tensorboardx(run: Path) -> None:
    import torch
    from tensorboardX import SummaryWriter

    rng = np.random.default_rng(2)
    writer = SummaryWriter(str(run))
    writer.add_graph(torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.zeros(1, 2))
    writer.add_custom_scalars_multilinechart(["loss", "acc"], category="x", title="both")
    writer.add_embedding(rng.random((5, 2)), metadata=list("vwxyz"), tag="emb")
    for step in STEPS:
        writer.add_scalar("loss", 2 / (step + 1), step)
        writer.add_scalars("pair", {"a": step, "b": -step}, step)
        writer.add_histogram("weights", rng.normal(size=20), step)
        writer.add_image("img", rng.random((3, 4, 4)), step)
        writer.add_text("note", f"tbx step {step}", step)
        writer.add_pr_curve("pr", rng.integers(0, 2, 20), rng.random(20), step)
    writer.add_hparams({"lr": 0.2}, {"hparam/acc": 0.8}, name="hp")
    writer.close()


def _tf(logdir: Path) -> None:
    import tensorflow as tf
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary
    from tensorboard.plugins.hparams import api as hp
    from tensorboard.plugins.mesh import summary_v2 as mesh_summary
    from tensorboard.plugins.pr_curve import summary as pr_summary

    rng = np.random.default_rng(3)
    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp.hparams_config(hparams=[hp.HParam("lr", hp.RealInterval(0.001, 0.5))],
                          metrics=[hp.Metric("accuracy"), hp.Metric("epoch_loss", group="validation")])
    writer = tf.summary.create_file_writer(str(logdir / "session"))

    @tf.function
    def double(x: tf.Tensor) -> tf.Tensor:
        return x * 2

    layout = layout_pb2.Layout(category=[layout_pb2.Category(title="tf", chart=[layout_pb2.Chart(
        title="acc", multiline=layout_pb2.MultilineChartContent(tag=["accuracy"]))])])
    with writer.as_default():
        hp.hparams({"lr": 0.05})
        tf.summary.experimental.write_raw_pb(custom_scalar_summary.pb(layout).SerializeToString(), step=0)
        tf.summary.trace_on(graph=True)
        double(tf.constant(1.0))
        tf.summary.trace_export("double", step=0)
        for step in STEPS:
            tf.summary.scalar("accuracy", 0.5 + step / 20, step=step)
            tf.summary.histogram("w", rng.normal(size=20), step=step)
            tf.summary.image("pic", rng.random((1, 4, 4, 1)), step=step)
            tf.summary.audio("voice", rng.uniform(-1, 1, (1, 80, 1)).astype("float32"), 800, step=step)
            tf.summary.text("log", f"tf step {step}", step=step)
            pr = pr_summary.pb("curve", rng.integers(0, 2, 20).astype(bool), rng.random(20), num_thresholds=5)
            tf.summary.experimental.write_raw_pb(pr.SerializeToString(), step=step)
            mesh_summary.mesh("shape", vertices=rng.random((1, 4, 3)).astype("float32"),
                              faces=np.array([[[0, 1, 2], [1, 2, 3]]], dtype="int32"), step=step)
    writer.close()
    with tf.summary.create_file_writer(str(logdir / "session" / "validation")).as_default():
        for step in STEPS:
            tf.summary.scalar("epoch_loss", 1 / (step + 2), step=step)
    _tf1(logdir / "v1")


def _tf1(run: Path) -> None:
    """TF1's FileWriter: a GraphDef and MetaGraphDef, and text whose metadata only the first
    value carries (the writer strips it from later ones)."""
    import tensorflow as tf

    with tf.Graph().as_default():
        text = tf.compat.v1.placeholder(tf.string, [])
        values = tf.compat.v1.placeholder(tf.float32, [3])
        merged = tf.compat.v1.summary.merge([tf.compat.v1.summary.text("note", text),
                                             tf.compat.v1.summary.histogram("h", values),
                                             tf.compat.v1.summary.scalar("first", values[0])])
        with tf.compat.v1.Session() as session:
            writer = tf.compat.v1.summary.FileWriter(str(run), session.graph)
            for step in STEPS:
                writer.add_summary(session.run(merged, {text: f"v1 step {step}", values: [step, 1, 2]}), step)
            writer.close()


def _keras(run: Path) -> None:
    import keras
    from tensorboard.plugins.hparams import api as hp

    rng = np.random.default_rng(4)
    x = rng.random((16, 3)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="relu"), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    callbacks = [keras.callbacks.TensorBoard(str(run), histogram_freq=1, write_graph=True),
                 hp.KerasCallback(str(run), {"units": 2})]
    model.fit(x, x.sum(axis=1), validation_split=0.25, epochs=len(STEPS), verbose=0, callbacks=callbacks)


@pytest.fixture(scope="module")
def logdirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One logdir per writer (the HParams dashboard shows one experiment per logdir)."""
    root = tmp_path_factory.mktemp("oracle")
    writers = {"torch": _torch, "tensorboardX": _tensorboardx, "tf.summary": _tf, "keras": _keras}
    for name, write in writers.items():
        write(root / name / "run")
    (root / "tensorboardX" / "run" / "notes.txt").write_text("a file TensorBoard does not read\n")
    return {name: root / name for name in writers}


def _plugins(context: Any) -> list[Any]:
    """Every plugin TensorBoard ships that shows logged data (not the debugger or redirects)."""
    from tensorboard.plugins.audio.audio_plugin import AudioPlugin
    from tensorboard.plugins.custom_scalar.custom_scalars_plugin import CustomScalarsPlugin
    from tensorboard.plugins.distribution.distributions_plugin import DistributionsPlugin
    from tensorboard.plugins.graph.graphs_plugin import GraphsPlugin
    from tensorboard.plugins.histogram.histograms_plugin import HistogramsPlugin
    from tensorboard.plugins.hparams.hparams_plugin import HParamsPlugin
    from tensorboard.plugins.image.images_plugin import ImagesPlugin
    from tensorboard.plugins.mesh.mesh_plugin import MeshPlugin
    from tensorboard.plugins.pr_curve.pr_curves_plugin import PrCurvesPlugin
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
    from tensorboard.plugins.scalar.scalars_plugin import ScalarsPlugin
    from tensorboard.plugins.text.text_plugin import TextPlugin

    classes = (ScalarsPlugin, CustomScalarsPlugin, ImagesPlugin, AudioPlugin, GraphsPlugin, DistributionsPlugin,
               HistogramsPlugin, TextPlugin, PrCurvesPlugin, HParamsPlugin, MeshPlugin, ProjectorPlugin)
    return [cls(context) for cls in classes]


class Board:
    """TensorBoard serving one logdir: its multiplexer (nothing sampled away), data provider
    and WSGI app under werkzeug's test client."""

    def __init__(self, root: Path) -> None:
        import argparse

        from tensorboard.backend import application
        from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
        from tensorboard.context import RequestContext
        from tensorboard.plugins import base_plugin
        from werkzeug.test import Client

        self.root = str(root)
        mux = plugin_event_multiplexer.EventMultiplexer(
            size_guidance={k: 0 for k in ("compressedHistograms", "images", "audio", "scalars", "histograms",
                                          "tensors")},
            tensor_size_guidance={}, purge_orphaned_data=True)
        mux.AddRunsFromDirectory(self.root)
        mux.Reload()
        self.provider = data_provider.MultiplexerDataProvider(mux, self.root)
        flags = argparse.Namespace(logdir=self.root, samples_per_plugin={}, reload_interval=0,
                                   window_title="", path_prefix="", generic_data="true")
        context = base_plugin.TBContext(logdir=self.root, multiplexer=mux, data_provider=self.provider,
                                        flags=flags, plugin_name_to_instance={}, sampling_hints={})
        self.plugins = {p.plugin_name: p for p in _plugins(context)}
        context.plugin_name_to_instance.update(self.plugins)
        self.client = Client(application.TensorBoardWSGI(list(self.plugins.values()), data_provider=self.provider))
        self.ctx = RequestContext()

    def get(self, plugin: str, route: str, **query: Any) -> Any:
        response = self.client.get(f"/data/plugin/{plugin}/{route}", query_string=query)
        assert response.status_code == 200, (plugin, route, query, response.get_data(as_text=True)[:300])
        return self._clean(response.get_data(as_text=True), response.mimetype)

    def post(self, plugin: str, route: str, body: dict[str, Any]) -> Any:
        response = self.client.post(f"/data/plugin/{plugin}/{route}", data=json.dumps(body),
                                    content_type="application/json")
        assert response.status_code == 200, (plugin, route, response.get_data(as_text=True)[:300])
        return self._clean(response.get_data(as_text=True), response.mimetype)

    def _clean(self, text: str, mimetype: str) -> Any:
        text = text.replace(self.root, "<logdir>")
        return json.loads(text) if mimetype == "application/json" else text


# Plugins whose data TensorBoard shows per run (the latest layout, the HParams table, graphs),
# whatever steps it was written at.
RUN_LEVEL_PLUGINS = frozenset({"custom_scalars", "hparams", "graphs", "graph_keras_model", "graph_run_metadata",
                               "graph_run_metadata_graph", "graph_tagged_run_metadata"})
_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
Series = dict[tuple[str, str, str], dict[str, Any]]


def _series(board: Board) -> Series:
    """Every (plugin, run, tag) the data provider lists, with its metadata and every point."""
    provider, ctx, found = board.provider, board.ctx, {}
    for plugin in sorted(provider.list_plugins(ctx, experiment_id="")):
        listed = provider.list_scalars(ctx, experiment_id="", plugin_name=plugin)
        read = provider.read_scalars(ctx, experiment_id="", plugin_name=plugin, downsample=10**9)
        for run, tags in listed.items():
            for tag, meta in tags.items():
                points = [(p.step, p.wall_time, p.value) for p in read[run][tag]]
                found[(plugin, run, tag)] = {"meta": (meta.display_name, meta.description, meta.plugin_content),
                                             "points": points}
        listed = provider.list_tensors(ctx, experiment_id="", plugin_name=plugin)
        read = provider.read_tensors(ctx, experiment_id="", plugin_name=plugin, downsample=10**9)
        for run, tags in listed.items():
            for tag, meta in tags.items():
                points = [(p.step, p.wall_time, p.numpy.dtype.str, p.numpy.shape,
                           p.numpy.tolist() if p.numpy.dtype.kind == "O" else p.numpy.tobytes())
                          for p in read[run][tag]]
                found[(plugin, run, tag)] = {"meta": (meta.display_name, meta.description, meta.plugin_content),
                                             "points": points}
        listed = provider.list_blob_sequences(ctx, experiment_id="", plugin_name=plugin)
        read = provider.read_blob_sequences(ctx, experiment_id="", plugin_name=plugin, downsample=10**9)
        for run, tags in listed.items():
            for tag, meta in tags.items():
                points = [(p.step, p.wall_time, tuple(provider.read_blob(ctx, blob_key=b.blob_key) for b in p.values))
                          for p in read[run][tag]]
                found[(plugin, run, tag)] = {"meta": (meta.display_name, meta.description, meta.plugin_content,
                                                      meta.max_length), "points": points}
    return found


def _routes(board: Board) -> dict[str, Any]:
    """What the plugins that show data per run answer over HTTP."""
    views: dict[str, Any] = {
        "runs": sorted((r.run_name, r.start_time) for r in board.provider.list_runs(board.ctx, experiment_id="")),
        "hparams/experiment": board.post("hparams", "experiment", {"experimentName": ""}),
        "hparams/session_groups": board.post("hparams", "session_groups", {
            "startIndex": 0, "sliceSize": 1000, "allowedStatuses": _STATUSES, "colParams": []}),
        "custom_scalars/layout": board.get("custom_scalars", "layout"),
        "graphs/info": board.get("graphs", "info"),
    }
    for run, item in views["graphs/info"].items():
        if item["run_graph"]:
            views[f"graphs/graph {run}"] = board.get("graphs", "graph", run=run)
        for tag, kinds in item["tags"].items():
            if kinds["op_graph"]:
                views[f"graphs/graph {run} {tag}"] = board.get("graphs", "graph", run=run, tag=tag)
            if kinds["conceptual_graph"]:
                views[f"graphs/conceptual {run} {tag}"] = board.get("graphs", "graph", run=run, tag=tag,
                                                                    conceptual="true")
            if kinds["profile"]:
                views[f"graphs/run_metadata {run} {tag}"] = board.get("graphs", "run_metadata", run=run, tag=tag)
    views["projector/runs"] = board.get("projector", "runs")
    for run in views["projector/runs"]:
        config = views[f"projector/info {run}"] = board.get("projector", "info", run=run)
        for embedding in config.get("embeddings", []):
            name = embedding["tensorName"]
            response = board.client.get("/data/plugin/projector/tensor", query_string={"run": run, "name": name})
            views[f"projector/tensor {run} {name}"] = response.get_data()
            if embedding.get("metadataPath"):
                views[f"projector/metadata {run} {name}"] = board.get("projector", "metadata", run=run, name=name)
            if embedding.get("sprite"):
                response = board.client.get("/data/plugin/projector/sprite_image",
                                            query_string={"run": run, "name": name})
                views[f"projector/sprite {run} {name}"] = response.get_data()
    return views


def views(root: Path) -> tuple[Series, dict[str, Any]]:
    board = Board(root)
    return _series(board), _routes(board)


def restricted(series: Series, routes: dict[str, Any], first: int | None, last: int | None,
               start: float | None = None, end: float | None = None) -> Series:
    """What TensorBoard shows of ``series`` restricted to steps first..last and wall times
    start..end: per-step data in the range; run-level plugins' data whole; and each HParams
    session metric's value, the point the HParams table shows (a scalar chart of that tag
    shows it too)."""
    metric_points = set()
    for group in routes["hparams/session_groups"]["sessionGroups"]:
        for session in group["sessions"]:
            for value in session["metricValues"]:
                sub = value["name"].get("group", "")
                run = f"{session['name']}/{sub}" if sub else session["name"]
                metric_points.add((run, value["name"]["tag"], int(value.get("trainingStep", 0))))
    kept = {}
    for (plugin, run, tag), item in series.items():
        points = item["points"] if plugin in RUN_LEVEL_PLUGINS else [
            p for p in item["points"] if (run, tag, p[0]) in metric_points
            or ((first is None or p[0] >= first) and (last is None or p[0] <= last)
                and (start is None or p[1] >= start) and (end is None or p[1] <= end))]
        if points:
            kept[(plugin, run, tag)] = {**item, "points": points}
    return kept


def gpudoc(*args: str) -> None:
    result = CliRunner().invoke(cli, ["events", *args])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def inputs(logdirs: dict[str, Path]) -> dict[str, tuple[Series, dict[str, Any]]]:
    return {name: views(root) for name, root in logdirs.items()}


WRITERS = ["torch", "tensorboardX", "tf.summary", "keras"]


def _assert_same(got: tuple[Series, dict[str, Any]], series: Series, routes: dict[str, Any]) -> None:
    got_series, got_routes = got
    assert sorted(got_series) == sorted(series)
    for key in series:
        assert got_series[key] == series[key], key
    assert got_routes.keys() == routes.keys()
    for key in routes:
        assert got_routes[key] == routes[key], key


@pytest.mark.parametrize("writer", WRITERS)
def test_input_views_cover_every_kind(writer: str, inputs: dict[str, tuple[Series, dict[str, Any]]]) -> None:
    """The oracle sees what was written (so an empty view cannot pass the comparisons below)."""
    series, routes = inputs[writer]
    plugins = {plugin for plugin, _, _ in series}
    assert {"scalars", "histograms"} <= plugins
    assert routes["graphs/info"]
    assert routes["hparams/session_groups"]["sessionGroups"]
    if writer != "keras":
        assert {"images", "text", "pr_curves", "custom_scalars"} <= plugins
        assert routes["custom_scalars/layout"]["category"]
    if writer in ("torch", "tensorboardX"):
        assert routes["projector/runs"]


@pytest.mark.parametrize("writer", WRITERS)
def test_trim_shows_the_range(writer: str, logdirs: dict[str, Path], inputs: dict[str, Any], tmp_path: Path) -> None:
    series, routes = inputs[writer]
    gpudoc("trim", str(logdirs[writer]), "-o", str(tmp_path / "out"), "--steps", f"{FIRST}:{LAST}")
    _assert_same(views(tmp_path / "out"), restricted(series, routes, FIRST, LAST), routes)


@pytest.mark.parametrize("writer", WRITERS)
def test_trim_by_wall_time_shows_the_window(writer: str, logdirs: dict[str, Path], inputs: dict[str, Any],
                                            tmp_path: Path) -> None:
    series, routes = inputs[writer]
    walls = sorted(p[1] for (plugin, _, _), item in series.items() if plugin not in RUN_LEVEL_PLUGINS
                   for p in item["points"])
    start, end = walls[len(walls) // 3], walls[2 * len(walls) // 3]
    gpudoc("trim", str(logdirs[writer]), "-o", str(tmp_path / "out"), "--start", repr(start), "--end", repr(end))
    _assert_same(views(tmp_path / "out"), restricted(series, routes, None, None, start, end), routes)


@pytest.mark.parametrize("writer", WRITERS)
def test_trim_of_nothing_shows_everything(writer: str, logdirs: dict[str, Path], inputs: dict[str, Any],
                                          tmp_path: Path) -> None:
    series, routes = inputs[writer]
    gpudoc("trim", str(logdirs[writer]), "-o", str(tmp_path / "out"))
    _assert_same(views(tmp_path / "out"), series, routes)


@pytest.mark.parametrize("writer", WRITERS)
def test_replay_shows_the_range(writer: str, logdirs: dict[str, Path], inputs: dict[str, Any], tmp_path: Path) -> None:
    series, routes = inputs[writer]
    gpudoc("replay", str(logdirs[writer]), "-o", str(tmp_path / "out"), "--rate", "1000000",
           "--steps", f"{FIRST}:{LAST}")
    _assert_same(views(tmp_path / "out"), restricted(series, routes, FIRST, LAST), routes)


@pytest.mark.parametrize("writer", WRITERS)
def test_merge_of_the_pieces_shows_the_whole(writer: str, logdirs: dict[str, Path], inputs: dict[str, Any],
                                             tmp_path: Path) -> None:
    """Each run cut in two by step (both pieces keep the run-level data), then merged back."""
    from gpudoc.events import discover

    series, routes = inputs[writer]
    src = logdirs[writer]
    gpudoc("trim", str(src), "-o", str(tmp_path / "a"), "--steps", f":{FIRST}")
    gpudoc("trim", str(src), "-o", str(tmp_path / "b"), "--steps", f"{FIRST + 1}:")
    for run in discover(src)[1]:
        gpudoc("merge", str(tmp_path / "a" / run.name), str(tmp_path / "b" / run.name), "--run", ".",
               "-o", str(tmp_path / "out" / run.name), "--overlap", "keep-last", "--force")
    _assert_same(views(tmp_path / "out"), series, routes)
