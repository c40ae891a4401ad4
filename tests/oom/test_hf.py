"""Hugging Face models without wrappers: built from a config (no download), fed input_ids,
attention_mask and labels shaped for their head, trained on their own ``.loss``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpudoc.cli import cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY_BERT = {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 128, "vocab_size": 1000, "max_position_embeddings": 128}


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["oom", *args])
    return result.exit_code, result.stdout, result.stderr


def config(tmp_path: Path, head: str, **changes: object) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY_BERT, "architectures": [head], **changes}))
    return f"hf:{path}"


@pytest.mark.parametrize("head", ["BertForSequenceClassification", "BertForMultipleChoice", "BertForMaskedLM",
                                  "BertForTokenClassification"])
def test_heads_train_on_their_own_loss(tmp_path: Path, head: str) -> None:
    """Each head gets labels of its shape (a wrong shape makes the model's own loss raise)."""
    code, out, err = run("estimate", config(tmp_path, head), "--batch", "2", "--input", "tokens:32", "--gpu", "A100",
                         "--no-remedies", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["method"] == "trace" and data["breakdown"]["activations"] > 0
    assert data["model"] == f"hf:{tmp_path.name}"  # a config.json is named by its folder


def test_the_sequence_classification_labels_change_with_the_head(tmp_path: Path) -> None:
    from gpudoc.oom.trace import labelled_inputs

    with_head = transformers.BertForSequenceClassification(transformers.BertConfig(**{
        k: v for k, v in TINY_BERT.items() if k != "model_type"}))
    inputs = labelled_inputs(with_head, (3, 16), True)
    assert inputs is not None and inputs["labels"].shape == (3,) and inputs["attention_mask"].shape == (3, 16)
    choices = transformers.BertForMultipleChoice(with_head.config)
    picked = labelled_inputs(choices, (3, 16), True)
    assert picked is not None and picked["input_ids"].shape == (3, 2, 16) and picked["labels"].shape == (3,)
    masked = labelled_inputs(transformers.BertForMaskedLM(with_head.config), (3, 16), True)
    assert masked is not None and masked["labels"].shape == (3, 16)
    assert labelled_inputs(torch.nn.Linear(2, 2), (3, 16), True) is None  # no labels: the plain path


def test_known_checkpoints_are_built_from_their_configs() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    from gpudoc.oom.models import resolve

    counts = {"hf:bert-base-uncased": 109_514_298, "hf:openai-community/gpt2": 124_439_808}
    for name, count in counts.items():
        spec = resolve(name)
        assert spec.default_input == "tokens:512"
        with FakeTensorMode():
            model = spec.source()  # type: ignore[operator]
            assert sum(p.numel() for p in model.parameters()) == count, name
    assert resolve("hf:bert-large-uncased:BertForSequenceClassification").backbone == r"^bert\."


def test_eager_attention_from_the_config_keeps_the_score_matrix(tmp_path: Path) -> None:
    """attn_implementation in the config picks transformers' attention: eager materialises the
    L x L probabilities, SDPA (memory-efficient on CUDA) does not."""
    peaks = {}
    for attention in ("eager", "sdpa"):
        folder = tmp_path / attention
        folder.mkdir()
        spec = config(folder, "BertForMaskedLM", attn_implementation=attention)
        code, out, err = run("estimate", spec, "--batch", "2", "--input", "tokens:128", "--gpu", "V100",
                             "--no-remedies", "--json")
        assert code == 0, err
        data = json.loads(out)
        peaks[attention] = data["breakdown"]["activations"]
        assert bool(data["attention_kernels"]) == (attention == "sdpa")
    square = 2 * 2 * 128 * 128  # batch x heads x L x L
    assert peaks["eager"] - peaks["sdpa"] > 2 * 4 * square  # two layers' float32 probabilities at least


@pytest.mark.parametrize(("text", "message"), [
    (None, "neither a known checkpoint nor a config file"),
    ("{not json", "not JSON"),
    ('{"hidden_size": 4}', "names its model_type"),
    ('{"model_type": "no-such-type"}', "cannot make a 'no-such-type' config"),
])
def test_bad_configs_are_one_line(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "config.json"
    if text is not None:
        path.write_text(text)
    code, _, err = run("estimate", f"hf:{path}", "--batch", "2", "--gpu", "A100", "--no-remedies")
    assert code == 2 and message in err and len(err.strip().splitlines()) <= 2, err


def test_an_unknown_or_mismatched_head_is_named(tmp_path: Path) -> None:
    code, _, err = run("estimate", config(tmp_path, "BertForEverything"), "--batch", "2", "--gpu", "A100")
    assert code == 2 and "transformers has no model class 'BertForEverything'" in err
    code, _, err = run("estimate", f"{config(tmp_path, 'BertForMaskedLM')}:GPT2LMHeadModel", "--batch", "2")
    assert code == 2 and "GPT2LMHeadModel takes a GPT2Config, the config is a BertConfig" in err
    code, _, err = run("estimate", "hf:", "--batch", "2")
    assert code == 2 and "hf: needs a checkpoint name or a config.json" in err


def test_a_sequence_past_the_position_table_is_named_before_the_model_runs(tmp_path: Path) -> None:
    """Past the model's positions: the position table is named before the model runs (its own
    error would name the module that raised it, with the tensors it was given)."""
    code, _, err = run("estimate", config(tmp_path, "BertForMaskedLM"), "--batch", "2", "--input", "tokens:256",
                       "--gpu", "A100", "--no-remedies")
    assert code == 2 and err == ("gpudoc: error: bert.embeddings.position_embeddings (Embedding) holds 128 "
                                 "positions; the input has 256 tokens: use at most tokens:128\n")
