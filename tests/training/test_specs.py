from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from tests.paths import REPO
from training import specs
from training.encoder import finetuning
from training.fit import main as fit_main
from training.llm_embeddings import embedder
from training.model import heads
from training.trainer import losses, optim

EXAMPLE_SPECS = sorted((REPO / "examples" / "specs").glob("*.json"))


def _tags(union) -> set[str]:
    """The `kind` of every member of a discriminated union (members may be Tag-annotated)."""
    members = typing.get_args(typing.get_args(union)[0])
    members = [typing.get_args(m)[0] if typing.get_origin(m) is typing.Annotated else m for m in members]
    return {m.model_fields["kind"].default for m in members}


def test_examples_exist():
    assert any(p.name == "demo.json" for p in EXAMPLE_SPECS)


@pytest.mark.parametrize("path", EXAMPLE_SPECS, ids=lambda p: p.name)
def test_every_example_spec_validates(path):
    spec = specs.load_spec(path)
    assert spec.output.bundle_dir and spec.data.train
    for src in spec.data.train:
        assert (REPO / src).exists() or Path(src).is_absolute() or "shared" in src, src


def test_registries_match_spec_unions():
    assert _tags(specs.FineTuning) == set(finetuning.METHODS)
    assert _tags(specs.Optimizer) == set(optim.OPTIMIZERS)
    assert _tags(specs.EmbeddingSpec) == set(embedder.KINDS)
    assert _tags(specs.HeadSpec) == set(heads.HEADS)
    assert _tags(specs.LossSpec) == set(losses.LOSSES)
    assert _tags(specs.Schedule) == set(optim.SCHEDULES)


def test_a_head_or_loss_without_kind_is_the_default_kind():
    config = specs.RouterConfig(head={"hidden_dims": [8]}, loss={"ties": "half"})
    assert isinstance(config.head, specs.MLPHeadSpec) and config.head.hidden_dims == [8]
    assert isinstance(config.loss, specs.MarginRankingSpec) and config.loss.ties == "half"


def test_fields_of_another_kind_are_refused_with_their_path():
    base = {"data": {"train": ["x"]}, "output": {"run_dir": "r", "bundle_dir": "b"}}
    with pytest.raises(specs.SpecError, match=r"head\.irt\.llm_strength: Extra inputs"):
        specs.parse_spec({**base, "head": {"kind": "irt", "llm_strength": True}})
    with pytest.raises(specs.SpecError, match=r"loss\.margin_ranking\.source_scale: Extra inputs"):
        specs.parse_spec({**base, "loss": {"kind": "margin_ranking", "source_scale": True}})
    with pytest.raises(specs.SpecError, match=r"head: Input tag 'tree' .* does not match any of the expected "
                                              r"tags: 'mlp', 'irt'"):
        specs.parse_spec({**base, "head": {"kind": "tree"}})


def test_the_flat_loss_format_is_refused_with_its_migration():
    flat = {"data": {"train": ["x"]}, "output": {"run_dir": "r", "bundle_dir": "b"},
            "loss": "bradley_terry", "ties": "half", "pointwise_weight": 1.0, "source_scale": True,
            "margin": 0.1}
    want = {"kind": "bradley_terry", "pointwise_weight": 1.0, "source_scale": True, "ties": "half"}
    with pytest.raises(specs.SpecError, match="the loss settings moved into `loss`") as err:
        specs.parse_spec(flat)
    assert json.dumps(want) in str(err.value)  # the `loss` to write instead, margin dropped
    migrated = specs.migrate_flat_loss(flat)
    assert migrated["loss"] == want and "ties" not in migrated
    assert specs.parse_spec(migrated).loss == specs.BradleyTerrySpec(**{k: v for k, v in want.items()
                                                                          if k != "kind"})
    current = specs.RouterConfig().model_dump(mode="json")
    assert specs.migrate_flat_loss(current) is current  # the current format passes through
    stored = {**flat, "loss": "margin_ranking", "margin": 0.3, "source_scale": False}
    assert specs.RouterConfig.from_stored(stored).loss == specs.MarginRankingSpec(
        margin=0.3, ties="half", pointwise_weight=1.0)  # a checkpoint or manifest of the flat format


@pytest.mark.parametrize("kind", ["mlp", "irt"])
def test_a_stored_flat_head_loads_and_a_real_conflict_is_still_refused(kind):
    """Checkpoints and manifests written before issue 17 hold the flat HeadSpec: both heads' fields."""
    flat_head = {"kind": kind, "skills": 8, "coverage": False, "bradley_terry_level": False,
                 "hidden_dims": [32], "dropout": 0.1, "negative_slope": 0.01, "lr_multiplier": 10.0,
                 "llm_strength": False}
    loss = {"loss": "margin_ranking", "margin": 0.1} if kind == "mlp" else {"loss": "bradley_terry"}
    stored = {"head": flat_head, **loss,
              "embedding_spec": {"kind": "learned", "dim": 9 if kind == "irt" else 32}}
    head = specs.RouterConfig.from_stored(stored).head
    assert (head.kind, head.hidden_dims) == (kind, [32])
    other = {"mlp": {"coverage": True}, "irt": {"llm_strength": True}}[kind]  # not a default: meant
    with pytest.raises(ValueError, match="head"):
        specs.RouterConfig.from_stored({**stored, "head": {**flat_head, **other}})


def test_all_problems_reported_at_once():
    bad = {"data": {"train": []}, "output": {"run_dir": "r", "bundle_dir": "b"},
           "finetuning": {"kind": "lorax"}, "epochs": 0, "learning_rate": 1}
    with pytest.raises(specs.SpecError) as err:
        specs.parse_spec(bad, where="bad.json")
    text = str(err.value)
    assert text.startswith("bad.json: 4 problem(s)")
    for fragment in ("data.train", "'lorax'", "epochs", "learning_rate", "Extra inputs"):
        assert fragment in text


def test_unknown_nested_key_is_refused():
    with pytest.raises(specs.SpecError, match=r"finetuning\.lora\.rnak"):
        specs.parse_spec({"data": {"train": ["x"]}, "output": {"run_dir": "r", "bundle_dir": "b"},
                          "finetuning": {"kind": "lora", "rnak": 4}})


def test_same_run_and_bundle_dir_refused():
    with pytest.raises(specs.SpecError, match="same directory"):
        specs.parse_spec({"data": {"train": ["x"]}, "output": {"run_dir": "a", "bundle_dir": "a"}})


def test_load_spec_reports_bad_json_with_position(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"data": ')
    with pytest.raises(specs.SpecError, match=r"s\.json: not valid JSON at line 1"):
        specs.load_spec(path)
    with pytest.raises(specs.SpecError, match="cannot read spec"):
        specs.load_spec(tmp_path / "missing.json")


def test_validation_split_positional_and_encoder_by_name():
    assert specs.ValidationSplit(0.3, 7) == specs.ValidationSplit(fraction=0.3, seed=7)
    config = specs.RouterConfig(encoder="some/model")
    assert config.encoder.name == "some/model" and config.encoder.max_length == 128


def test_validate_only_cli(tmp_path, capsys):
    assert fit_main([str(REPO / "examples/specs/demo.json"), "--validate-only"]) == 0
    assert "valid (lora fine-tuning" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": {}, "output": {}}))
    assert fit_main([str(bad), "--validate-only"]) == 2
    err = capsys.readouterr().err
    assert "data.train: Field required" in err and "output.run_dir: Field required" in err


def test_specs_module_does_not_import_torch():
    code = "import sys, training.specs; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
