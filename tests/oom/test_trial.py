"""What a new user's trial of `gpudoc oom` found: each a one-line exit 2, not a silent success
or an estimate of something that cannot run."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from gpudoc.cli import cli

MODELS = '''
import torch


class Tokens(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = torch.nn.Embedding(50, 8)
        self.pos = torch.nn.Embedding(16, 8)
        self.head = torch.nn.Linear(8, 50)

    def forward(self, ids):
        return self.head(self.tok(ids) + self.pos(torch.arange(ids.shape[1])))


def tokens():
    return Tokens()


def exits():
    raise SystemExit(0)  # a factory that parses sys.argv with argparse
'''


def oom(tmp_path: Path, *args: str) -> tuple[int, str]:
    (tmp_path / "m.py").write_text(MODELS)
    result = CliRunner().invoke(cli, ["oom", "estimate", *args, "--gpu", "T4"], catch_exceptions=False)
    return result.exit_code, result.stderr


def test_a_factory_that_exits_is_an_error_not_a_silent_success(tmp_path: Path) -> None:
    code, err = oom(tmp_path, f"{tmp_path / 'm.py'}:exits", "--input", "8", "--batch", "2")
    assert code == 2 and err == "gpudoc: error: calling the model factory failed: SystemExit: 0\n"


def test_a_sequence_longer_than_the_position_table_is_refused(tmp_path: Path) -> None:
    code, err = oom(tmp_path, f"{tmp_path / 'm.py'}:tokens", "--input", "tokens:32", "--batch", "2")
    assert code == 2 and err.startswith("gpudoc: error: pos (Embedding) holds 16 positions; the input has 32 tokens")
    code, err = oom(tmp_path, f"{tmp_path / 'm.py'}:tokens", "--input", "tokens:16", "--batch", "2")
    assert code == 0, err


def test_a_batch_that_does_not_split_into_equal_micro_batches_is_refused(tmp_path: Path) -> None:
    code, err = oom(tmp_path, "resnet18", "--batch", "9", "--accumulate", "2")
    assert code == 2 and "--batch 9 does not split into 2 equal micro-batches" in err
