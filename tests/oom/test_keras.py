"""The analytic Keras estimate against a hand count."""

from __future__ import annotations

from pathlib import Path

import pytest

keras = pytest.importorskip("keras")

from gpudoc.errors import InputError  # noqa: E402
from gpudoc.oom.analytic import keras_estimate, load_keras  # noqa: E402
from gpudoc.oom.devices import find_device  # noqa: E402
from gpudoc.oom.trace import TraceConfig  # noqa: E402

V100 = find_device("V100-32GB")


def small() -> keras.Model:
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden))


def test_hand_count_of_a_two_layer_model() -> None:
    e = keras_estimate("small", small(), TraceConfig(32, "8", optimizer="adam"), V100)
    params = 8 * 16 + 16 + 16 + 1
    assert e.parameters == e.trainable_parameters == params
    assert e.breakdown["parameters"] == params * 4 and e.breakdown["gradients"] == params * 4
    assert e.breakdown["optimizer state"] == 2 * params * 4
    # Layer outputs kept for the backward pass: the input (32x8), hidden (32x16) and out (32x1).
    assert e.breakdown["activations"] == 32 * (8 + 16 + 1) * 4
    assert e.method == "analytic" and "expected error" in e.notes[0]
    frozen = keras_estimate("small", small(), TraceConfig(32, "8", freeze="^hidden$"), V100)
    assert frozen.trainable_parameters == 17 and frozen.breakdown["optimizer state"] == 2 * 17 * 4
    half = keras_estimate("small", small(), TraceConfig(32, "8", precision="amp"), V100)
    assert half.breakdown["activations"] == e.breakdown["activations"] // 2
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = keras_estimate("small", small(), TraceConfig(32, "8"), V100)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.breakdown["activations"] < e.breakdown["activations"] and "mixed_float16" in mixed.notes[-1]
    with pytest.raises(InputError, match="matches no layer name"):
        keras_estimate("small", small(), TraceConfig(32, "8", freeze="^nothing"), V100)


def test_a_saved_keras_file_rebuilt_at_another_input(tmp_path: Path) -> None:
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(x))
    path = tmp_path / "m.keras"
    model.save(path)
    rebuilt = load_keras(str(path), "32x32x3")
    e = keras_estimate("m", rebuilt, TraceConfig(2, "32x32x3", optimizer="sgd"), V100)
    assert e.breakdown["activations"] == 2 * (32 * 32 * 3 + 32 * 32 * 4 + 4) * 4
    assert e.breakdown["optimizer state"] == 0


def test_accumulation_and_checkpointing_are_not_silently_ignored() -> None:
    e = keras_estimate("small", small(), TraceConfig(32, "8"), V100)
    accumulated = keras_estimate("small", small(), TraceConfig(32, "8", accumulate=4), V100)
    assert accumulated.breakdown["activations"] == e.breakdown["activations"] // 4
    assert "gradient accumulation: micro-batch 8" in accumulated.notes
    checkpointed = keras_estimate("small", small(), TraceConfig(32, "8", checkpointing=True), V100)
    assert checkpointed.breakdown == e.breakdown
    assert "--checkpointing had no effect: the analytic estimate does not model it" in checkpointed.notes


def test_a_channels_first_input_or_a_cut_off_file_is_refused(tmp_path: Path) -> None:
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs))
    path = tmp_path / "m.keras"
    model.save(path)
    with pytest.raises(InputError, match=r"--input 3x32x32: the model takes 3 channels last \(32x32x3\), not 32"):
        load_keras(str(path), "3x32x32")  # CHW, as for torch: would rebuild the model with 32 channels
    cut = tmp_path / "cut.keras"
    cut.write_bytes(path.read_bytes()[:300])
    with pytest.raises(InputError, match="not a .keras archive"):
        load_keras(str(cut), None)
