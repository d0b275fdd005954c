"""Fine-tuning methods (training/encoder/finetuning.py): what each trains, its errors, and that every
method x encoder family trains, exports and matches its ONNX bundle."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx as onnx_lib
import pytest
import torch
from torch import nn

from routerdb.router import Router
from tests import tiny_models
from tests.paths import REPO
from training import specs
from training.encoder import finetuning
from training.encoder.finetuning import FineTuningError
from training.encoder.pretrained import load_base_model, resolve_encoder
from training.export import export_bundle, merged_graph
from training.router import TransformerEmbeddingModel
from training.specs import ValidationSplit

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

METHODS = ("lora", "qlora", "last_layers", "bitfit", "full", "frozen")
VERIFY = [*tiny_models.CORPUS[:4], "x", "An unseen prompt, longer than the others, about routing to LLMs."]


def _spec(kind: str, **fields):
    return specs.RouterConfig.model_validate({"finetuning": {"kind": kind, **fields}}).finetuning


def _prepare(tiny_encoders, kind: str, method: str, **fields) -> nn.Module:
    return finetuning.prepare_encoder(_spec(method, **fields), resolve_encoder(str(tiny_encoders[kind])))


def test_export_copy_uses_eager_attention_and_training_keeps_its_own(tiny_encoders):
    trained = _prepare(tiny_encoders, "bert", "full")
    before = trained.config._attn_implementation
    exported = finetuning.export_encoder(_spec("full"), resolve_encoder(str(tiny_encoders["bert"])), trained)
    assert exported.config._attn_implementation == "eager"
    assert trained.config._attn_implementation == before


def _trainable(module: nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


# --- every method x every encoder family, through export ----------------------------------------


@pytest.fixture(scope="module")
def scores():
    return tiny_models.synthetic_scores(16)


def _train(encoder, method: str, data) -> TransformerEmbeddingModel:
    model = TransformerEmbeddingModel(encoder=str(encoder), finetuning={"kind": method}, epochs=1,
                                      batch_size=24, progress=False, head={"hidden_dims": [8]})
    model.train(data, validation_split=ValidationSplit(0.25, 0))
    return model


@pytest.mark.parametrize("kind", tiny_models.KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_train_export_and_bundle_matches_torch(tiny_encoders, scores, tmp_path, kind, method):
    if (kind, method) == ("llama", "bitfit"):  # Llama has no bias terms: refused before training
        with pytest.raises(FineTuningError, match="'bitfit' trains bias terms, but LlamaModel has none"):
            _train(tiny_encoders[kind], method, scores)
        return
    model = _train(tiny_encoders[kind], method, scores)
    assert len(model.history) == 1 and np.isfinite(model.history[0]["train_loss"])
    bundle = export_bundle(model, tmp_path / "bundle", VERIFY)

    onnx = Router.for_verification(bundle).score(VERIFY)
    trained = np.stack([model.predict(VERIFY)[m] for m in model.llm_names], axis=1)
    manifest = json.loads((bundle / "manifest.json").read_text())
    gap = manifest["finetuning"]["max_abs_diff_merged_vs_trained"]
    if method == "qlora":
        # The bundle is the adapters merged into the full-precision base: it matches that model
        # to 1e-4; the 4-bit model it was trained as differs by the recorded quantisation gap.
        with torch.no_grad():
            merged = merged_graph(model)
            batch = model.tokenizer(VERIFY)
            reference = merged(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask),
                               model.features_tensor(VERIFY).cpu(), model.llm_embeddings.detach().cpu())
        np.testing.assert_allclose(onnx, reference.numpy(), rtol=0, atol=1e-4)
        assert gap == pytest.approx(float(np.abs(reference.numpy() - trained).max()), abs=1e-6)
        assert 0 < gap < 0.2  # nf4 rounding of random tiny weights; a real encoder: see docs
        assert manifest["verification"]["against"] == "merged full-precision model"
        assert "full-precision copy of the base" in manifest["finetuning"]["merged"]
    else:
        np.testing.assert_allclose(onnx, trained, rtol=0, atol=1e-4)
        assert gap < 1e-5
        assert manifest["verification"]["against"] == "trained model"
    assert manifest["verification"]["max_abs_diff"] <= 1e-4
    assert manifest["finetuning"]["kind"] == method
    # exported with eager attention: no SDPA NaN guard (IsNaN + Where over every score tensor)
    assert "IsNaN" not in {n.op_type for n in onnx_lib.load(bundle / "model.onnx").graph.node}
    assert manifest["spec"]["finetuning"]["kind"] == method


# --- what each method trains -----------------------------------------------------------------------

AUTO_TARGETS = {
    "bert": {"query", "key", "value", "dense"},
    "llama": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "gpt2": {"c_attn", "c_proj", "c_fc"},
}


@pytest.mark.parametrize("kind", tiny_models.KINDS)
def test_lora_auto_targets_every_block_projection(tiny_encoders, kind):
    base = load_base_model(resolve_encoder(str(tiny_encoders[kind])))
    names = finetuning.resolve_target_modules(base, "auto")
    assert {n.rsplit(".", 1)[-1] for n in names} == AUTO_TARGETS[kind]
    assert len(names) == {"bert": 12, "llama": 14, "gpt2": 8}[kind]  # 2 blocks each
    encoder = _prepare(tiny_encoders, kind, "lora")
    trainable = _trainable(encoder)
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * len(names)


def test_lora_on_gpt2_conv1d_sets_fan_in_fan_out(tiny_encoders, recwarn):
    encoder = _prepare(tiny_encoders, "gpt2", "lora")
    assert encoder.peft_config["default"].fan_in_fan_out is True
    assert not [w for w in recwarn if "fan_in_fan_out" in str(w.message)]


CONFIGS = {  # tiny random encoders of the other families LoRA "auto" must handle
    "roberta": ({}, {"query", "key", "value", "dense"}),
    "xlm-roberta": ({}, {"query", "key", "value", "dense"}),
    "mpnet": ({}, {"q", "k", "v", "o", "dense"}),
    "distilbert": ({"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64},
                   {"q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"}),
    "qwen2": ({"num_key_value_heads": 1}, {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                           "down_proj"}),
    "mistral": ({"num_key_value_heads": 1, "head_dim": 16}, {"q_proj", "k_proj", "v_proj", "o_proj",
                                                             "gate_proj", "up_proj", "down_proj"}),
}


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_lora_auto_targets_other_families(model_type):
    from transformers import AutoConfig, AutoModel

    extra, expected = CONFIGS[model_type]
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "vocab_size": 100}
    model = AutoModel.from_config(AutoConfig.for_model(model_type, **{**sizes, **extra}))
    names = finetuning.resolve_target_modules(model, "auto")
    assert {n.rsplit(".", 1)[-1] for n in names} == expected


def test_lora_explicit_targets(tiny_encoders):
    base = load_base_model(resolve_encoder(str(tiny_encoders["llama"])))
    names = finetuning.resolve_target_modules(base, ["q_proj", "layers.1.mlp.down_proj"])
    assert names == ["layers.0.self_attn.q_proj", "layers.1.self_attn.q_proj", "layers.1.mlp.down_proj"]
    encoder = _prepare(tiny_encoders, "llama", "lora", target_modules=["q_proj", "v_proj"], rank=4)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in _trainable(encoder)} == {"q_proj", "v_proj"}
    assert encoder.peft_config["default"].r == 4


def test_lora_unknown_target_is_a_clear_error(tiny_encoders):
    expected = (r"target_modules \['query'\] not found in LlamaModel; its block projections are "
                r"\['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj'\]\. "
                r"Use some of those, or \"auto\"")
    with pytest.raises(FineTuningError, match=expected):
        _prepare(tiny_encoders, "llama", "lora", target_modules=["q_proj", "query"])


def test_lora_empty_target_list_is_a_clear_error(tiny_encoders):
    with pytest.raises(FineTuningError, match=r"target_modules is an empty list; name some of BertModel's"):
        _prepare(tiny_encoders, "bert", "lora", target_modules=[])


@pytest.mark.parametrize("kind, final_norm", [("bert", None), ("llama", "norm"), ("gpt2", "ln_f")])
def test_last_layers_trains_the_last_blocks_and_final_norm(tiny_encoders, kind, final_norm):
    encoder = _prepare(tiny_encoders, kind, "last_layers", num_layers=1)
    blocks_name, blocks = finetuning.find_blocks(encoder)
    last = {f"{blocks_name}.1.{n}" for n, _ in blocks[1].named_parameters()}
    norm = set()
    if final_norm:
        norm = {f"{final_norm}.{n}" for n, _ in getattr(encoder, final_norm).named_parameters()}
    assert _trainable(encoder) == last | norm
    assert finetuning.final_norm_names(encoder) == ([final_norm] if final_norm else [])


def test_final_norm_is_a_sibling_of_the_blocks_not_the_embedding_norm():
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model("modernbert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, vocab_size=100, pad_token_id=0, bos_token_id=1,
                                  eos_token_id=2, cls_token_id=1, sep_token_id=2)
    model = AutoModel.from_config(config)
    assert {"embeddings.norm", "final_norm"} <= dict(model.named_modules()).keys()
    assert finetuning.final_norm_names(model) == ["final_norm"]


def test_last_layers_more_than_the_model_has_is_a_clear_error(tiny_encoders):
    with pytest.raises(FineTuningError, match=r"num_layers is 3 but GPT2Model has 2 layers; use 1 to 2, or "
                                              r"kind 'full'"):
        _prepare(tiny_encoders, "gpt2", "last_layers", num_layers=3)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_bitfit_trains_biases_only(tiny_encoders, kind):
    encoder = _prepare(tiny_encoders, kind, "bitfit")
    trainable = _trainable(encoder)
    assert trainable == {n for n, _ in encoder.named_parameters() if n.endswith(".bias")}


def test_bitfit_without_biases_is_a_clear_error(tiny_encoders):
    expected = r"'bitfit' trains bias terms, but LlamaModel has none; use 'lora' or 'last_layers'"
    with pytest.raises(FineTuningError, match=expected):
        _prepare(tiny_encoders, "llama", "bitfit")


@pytest.mark.parametrize("method, everything", [("full", True), ("frozen", False)])
def test_full_and_frozen(tiny_encoders, method, everything):
    encoder = _prepare(tiny_encoders, "bert", method)
    assert all(p.requires_grad == everything for p in encoder.parameters())


@pytest.mark.parametrize("method", METHODS)
def test_trainable_share_is_logged(tiny_encoders, caplog, method):
    with caplog.at_level(logging.INFO, logger="training.encoder.finetuning"):
        encoder = _prepare(tiny_encoders, "gpt2", method)
    trainable, total = finetuning.count_parameters(encoder)
    pct = 100.0 * trainable / total
    assert f"fine-tuning {method}: {trainable:,} of {total:,} encoder parameters trainable ({pct:.3f}%)" \
        in caplog.text
    assert (trainable == total) == (method == "full") and (trainable == 0) == (method == "frozen")


# --- QLoRA specifics -----------------------------------------------------------------------------


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_qlora_loads_a_4bit_base_with_float_adapters(tiny_encoders, quant_type):
    import bitsandbytes as bnb

    encoder = _prepare(tiny_encoders, "bert", "qlora", bnb_4bit_quant_type=quant_type,
                       bnb_4bit_compute_dtype="bfloat16")
    layers = [m for m in encoder.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 12  # every targeted projection is 4-bit
    assert {m.weight.quant_type for m in layers} == {quant_type}
    assert {m.compute_dtype for m in layers} == {torch.bfloat16}
    assert {p.dtype for n, p in encoder.named_parameters() if p.requires_grad} == {torch.float32}
    trainable, total = finetuning.count_parameters(encoder)
    base = load_base_model(resolve_encoder(str(tiny_encoders["bert"])))
    full_size = sum(p.numel() for p in base.parameters())
    assert total - trainable == full_size  # 4-bit weights count two per byte


def test_qlora_trains_after_a_no_grad_forward(tiny_encoders, scores):
    """bitsandbytes repacks 4-bit weights on a CPU no-grad forward; training must still work after."""
    model = TransformerEmbeddingModel(encoder=str(tiny_encoders["gpt2"]), finetuning={"kind": "qlora"},
                                      epochs=2, batch_size=24, progress=False, head={"hidden_dims": [8]})
    model.train(scores, validation_split=ValidationSplit(0.25, 0))  # epoch 1 validation is a no-grad pass
    before = {k: v.clone() for k, v in model.state_tensors().items()}
    model.predict(VERIFY)  # another no-grad forward, then more training
    model.train(scores, validation_split=ValidationSplit(0.25, 0), epochs=1)
    after = model.state_tensors()
    assert any(not torch.equal(before[k], after[k]) for k in before if ".lora_" in k)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_qlora_export_is_the_full_precision_base_with_the_same_adapters(tiny_encoders, kind):
    """The merge is exact: QLoRA's exported encoder == a full-precision LoRA carrying its adapters
    (GPT-2: Conv1D in full precision, 4-bit Linear in the quantised base)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    ref = resolve_encoder(str(tiny_encoders[kind]))
    qlora = finetuning.prepare_encoder(_spec("qlora"), ref).eval()
    with torch.no_grad():
        for name, p in qlora.named_parameters():
            if "lora_B" in name:  # as if trained: B starts at zero
                p.normal_(0, 0.3)
    lora = finetuning.prepare_encoder(_spec("lora"), ref).eval()
    set_peft_model_state_dict(lora, get_peft_model_state_dict(qlora))
    merged = finetuning.export_encoder(_spec("qlora"), ref, qlora)
    assert not any(".lora_" in n for n, _ in merged.named_parameters())
    ids = torch.randint(5, 100, (3, 12))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        want = lora(input_ids=ids, attention_mask=mask).last_hidden_state
        got = merged(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_qlora_without_4bit_support_stops_with_the_alternative(tiny_encoders, monkeypatch):
    import bitsandbytes.functional as bnbf

    def broken(*args, **kwargs):
        raise RuntimeError("no 4-bit kernels for this device")

    monkeypatch.setattr(bnbf, "quantize_4bit", broken)
    with pytest.raises(FineTuningError, match=r"needs bitsandbytes 4-bit support, which failed here: "
                                              r"RuntimeError: no 4-bit kernels.*use finetuning.kind 'lora'"):
        _prepare(tiny_encoders, "bert", "qlora")


def test_registry_matches_spec_union():
    from typing import get_args

    union = get_args(get_args(specs.FineTuning)[0])
    assert {m.model_fields["kind"].default for m in union} == set(finetuning.METHODS) == set(METHODS)


def test_gpu_check_script_runs_on_cpu(tmp_path, monkeypatch):
    """bench/gpu_check.py is run on a GPU machine by hand; here its CPU mode keeps it working."""
    import runpy

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    gpu_check = runpy.run_path(str(REPO / "bench" / "gpu_check.py"))
    args = ["--cpu", "--steps", "2", "--methods", "qlora,lora,bitfit", "--out", str(tmp_path)]
    code = gpu_check["main"](args)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert code == 0 and [r["method"] for r in report["results"]] == ["qlora", "lora", "bitfit"]
    assert report["code"].startswith("training.encoder.finetuning")
    qlora, lora, bitfit = report["results"]
    assert lora["merge_max_abs_diff"] < 1e-5 and qlora["merge_cosine_min"] > 0.99
    assert qlora["quant_type"] == "nf4" and 0 < bitfit["trainable_pct"] < 5
    assert "| qlora |" in (tmp_path / "gpu_check.md").read_text()


def test_bench_finetuning_replaces_only_its_table(tmp_path):
    import runpy

    bench = runpy.run_path(str(REPO / "bench" / "finetuning.py"))
    doc = tmp_path / "finetuning.md"
    start, end = bench["START"], bench["END"]
    doc.write_text(f"# Title\n\nprose before\n\n{start}\nold table\n{end}\n\n## GPU\nkept\n")
    bench["write_doc"](doc, "| new | table |")
    assert doc.read_text() == f"# Title\n\nprose before\n\n{start}\n| new | table |\n{end}\n\n## GPU\nkept\n"
