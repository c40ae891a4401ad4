"""Hugging Face transformers models by configuration, built with no download: ``hf:NAME``
(a few well-known checkpoints, their config values written here), ``hf:path/config.json``, and
``:ClassName`` to pick the head (``hf:bert-large-uncased:BertForSequenceClassification``);
the head is otherwise the config's first ``architectures`` entry."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpudoc.errors import EnvironmentMissing, InputError

_BERT = {"model_type": "bert", "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2}
_ROBERTA = {"model_type": "roberta", "vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1,
            "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
_GPT2 = {"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024}

# The published config.json values of these checkpoints (everything else is the config class's
# default, which is what those files leave out).
KNOWN: dict[str, dict[str, Any]] = {
    "bert-base-uncased": {**_BERT, **_BASE, "architectures": ["BertForMaskedLM"]},
    "bert-large-uncased": {**_BERT, **_LARGE, "architectures": ["BertForMaskedLM"]},
    "bert-base-cased": {**_BERT, **_BASE, "vocab_size": 28996, "architectures": ["BertForMaskedLM"]},
    "bert-large-cased": {**_BERT, **_LARGE, "vocab_size": 28996, "architectures": ["BertForMaskedLM"]},
    "roberta-base": {**_ROBERTA, **_BASE, "architectures": ["RobertaForMaskedLM"]},
    "roberta-large": {**_ROBERTA, **_LARGE, "architectures": ["RobertaForMaskedLM"]},
    "gpt2": {**_GPT2, "n_embd": 768, "n_layer": 12, "n_head": 12, "architectures": ["GPT2LMHeadModel"]},
    "gpt2-medium": {**_GPT2, "n_embd": 1024, "n_layer": 24, "n_head": 16, "architectures": ["GPT2LMHeadModel"]},
    "gpt2-large": {**_GPT2, "n_embd": 1280, "n_layer": 36, "n_head": 20, "architectures": ["GPT2LMHeadModel"]},
    "distilbert-base-uncased": {"model_type": "distilbert", "architectures": ["DistilBertForMaskedLM"]},
}
# Hub organisations the same checkpoints now live under.
_ORGS = ("google-bert/", "openai-community/", "FacebookAI/", "distilbert/")


def import_transformers() -> Any:
    """``transformers``, or exit 3 with the install line."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise EnvironmentMissing("transformers is not installed: hf: models need it", "pip install transformers")
    from gpudoc.oom.quiet import quiet_frameworks

    with quiet_frameworks():
        import transformers
    transformers.logging.set_verbosity_error()  # its notes on the configs built here (loss_type=None)
    return transformers


def config_values(name: str) -> tuple[dict[str, Any], str]:
    """The config values of ``name`` (a known checkpoint or a config.json path) and a label."""
    if not name.strip():
        raise InputError("hf: needs a checkpoint name or a config.json", "e.g. hf:bert-base-uncased")
    key = name
    for org in _ORGS:
        key = key.removeprefix(org)
    if key.lower() in KNOWN:
        return dict(KNOWN[key.lower()]), key.lower()
    path = Path(name)
    try:
        text = path.read_text()
    except IsADirectoryError:
        candidate = path / "config.json"
        if not candidate.is_file():
            raise InputError(f"hf:{name}: a directory without config.json") from None
        return config_values(str(candidate))
    except FileNotFoundError:
        known = ", ".join(sorted(KNOWN))
        raise InputError(f"hf:{name}: neither a known checkpoint nor a config file",
                         f"give a config.json (no downloads), or one of {known}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"hf:{name}: cannot read it ({type(exc).__name__}: {exc})") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"hf:{name}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(values, dict) or not isinstance(values.get("model_type"), str):
        raise InputError(f"hf:{name}: a config.json names its model_type", 'e.g. {"model_type": "bert", ...}')
    return values, path.stem if path.name != "config.json" else path.parent.name or "config"


def hf_factory(spec: str) -> tuple[str, Callable[[], Any], str, str | None]:
    """``NAME[:ClassName]`` → a label, a factory building the model from its config (random
    weights), the default input (``tokens:N``, N the positions capped at 512) and the backbone's
    parameter names (the base model's prefix). ``attn_implementation`` (or
    ``_attn_implementation``) in a config file picks the attention (eager, sdpa); transformers'
    default otherwise."""
    name, head = spec, None
    found = re.fullmatch(r"(.+):([A-Za-z_]\w*)", spec)
    if found is not None:
        name, head = found.group(1), found.group(2)
    values, label = config_values(name)
    transformers = import_transformers()
    values = dict(values)
    model_type = values.pop("model_type")
    attention = values.pop("attn_implementation", None) or values.pop("_attn_implementation", None)
    architectures = values.pop("architectures", None) or []
    values.pop("transformers_version", None)
    cls_name = head or (architectures[0] if architectures and isinstance(architectures[0], str) else None)
    try:
        config = transformers.AutoConfig.for_model(model_type, **values)
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"hf:{name}: transformers {transformers.__version__} cannot make a {model_type!r} config "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if cls_name is None:
        cls: Any = transformers.AutoModel
    else:
        cls = getattr(transformers, cls_name, None)
        if not isinstance(cls, type) or not hasattr(cls, "config_class"):
            raise InputError(f"hf:{spec}: transformers has no model class {cls_name!r}",
                             "e.g. BertForSequenceClassification")
    wanted = getattr(cls, "config_class", None)
    if cls is not transformers.AutoModel and isinstance(wanted, type) and not isinstance(config, wanted):
        raise InputError(f"hf:{spec}: {cls_name} takes a {wanted.__name__}, the config is a {type(config).__name__}",
                         f"pick a head of {type(config).__name__.removesuffix('Config')}")
    if attention:
        config._attn_implementation = attention

    def build() -> Any:
        if cls is transformers.AutoModel:
            return cls.from_config(config)
        return cls(config)

    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 512
    prefix = getattr(cls, "base_model_prefix", "")
    backbone = rf"^{re.escape(prefix)}\." if prefix and cls_name and not cls_name.endswith("Model") else None
    return (f"hf:{label}" + (f":{head}" if head else ""), build, f"tokens:{min(512, int(positions))}", backbone)
