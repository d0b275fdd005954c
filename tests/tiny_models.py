"""Tiny random-weight encoders (BERT, Llama, GPT-2 shapes, hidden size 32) built locally."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

CORPUS = [
    "Write a Python function that reverses a linked list.",
    "What is the capital of France? Answer briefly.",
    "Solve for x: 3x + 5 = 20. Show your steps.",
    "Translate 'good morning' into Spanish and German.",
    "Explain why the sky is blue in simple terms.",
    "Prove that the square root of 2 is irrational.",
    "Summarise the plot of Hamlet in three sentences.",
    "SELECT name FROM users WHERE age > 30 ORDER BY name;",
    "Which of the following is a prime number? A) 21 B) 23 C) 25 D) 27",
    "Write a short poem about autumn leaves and rain.",
] * 5

KINDS = ("bert", "llama", "gpt2")


def _fixed_wordpiece(specials: list[str]) -> models.WordPiece:
    """A WordPiece vocabulary listed in sorted order: the same ids in every process (a trained
    one breaks ties between equally frequent pieces in hash order, which varies per process)."""
    words = set()
    for text in CORPUS:
        words |= {w for w, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(text.lower())}
    chars = sorted({c for w in words for c in w})
    pieces = [*specials, *sorted(words), *chars, *(f"##{c}" for c in chars)]
    return models.WordPiece({p: i for i, p in enumerate(dict.fromkeys(pieces))}, unk_token="[UNK]")


def _tokenizer(kind: str, fixed_vocab: bool = False) -> Tokenizer:
    if kind == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(_fixed_wordpiece(specials) if fixed_vocab else models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        if not fixed_vocab:
            trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials)
            tok.train_from_iterator(CORPUS, trainer)
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        tok.decoder = decoders.WordPiece()
        return tok
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>"] if kind == "gpt2" else ["<unk>", "<s>", "</s>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    if kind == "llama":
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", bos)])
    return tok


def build(kind: str, out: Path, *, padding_side: str = "right", sentence_pooling: str | None = None,
          fixed_vocab: bool = False) -> Path:
    """Save a tiny model + fast tokenizer of `kind` to `out`; returns `out`. With `fixed_vocab`
    (BERT only) the vocabulary, hence the whole model under one torch seed, is the same in every
    process."""
    from transformers import (
        BertConfig,
        BertModel,
        GPT2Config,
        GPT2Model,
        LlamaConfig,
        LlamaModel,
        PreTrainedTokenizerFast,
    )

    tok = _tokenizer(kind, fixed_vocab)
    vocab = tok.get_vocab_size()
    if kind == "bert":
        model = BertModel(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=128), add_pooling_layer=False)
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                     cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                     model_max_length=128)
    elif kind == "llama":
        model = LlamaModel(LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=2,
                                       intermediate_size=64, max_position_embeddings=128))
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                     unk_token="<unk>", model_max_length=128)
    elif kind == "gpt2":
        eot = tok.token_to_id("<|endoftext|>")
        model = GPT2Model(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=128,
                                     bos_token_id=eot, eos_token_id=eot))
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                     eos_token="<|endoftext|>", model_max_length=128)
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    hf.padding_side = padding_side
    hf.init_kwargs["padding_side"] = padding_side  # saved to tokenizer_config.json
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    hf.save_pretrained(out)
    if sentence_pooling:
        _write_sentence_transformers_pooling(out, sentence_pooling)
    return out


def _write_sentence_transformers_pooling(out: Path, mode: str) -> None:
    import json

    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))
    flags = {"pooling_mode_cls_token": mode == "cls", "pooling_mode_mean_tokens": mode == "mean",
             "pooling_mode_lasttoken": mode == "last_token"}
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **flags}))


def synthetic_scores(n_prompts: int = 60, seed: int = 0):
    """A per-model score table where the best LLM depends on the prompt: 'coder' wins code
    prompts, 'chat' the others, 'weak' never. Learnable from the prompt text alone."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_prompts):
        base = CORPUS[i % 10]
        prompt = f"{base} (variant {i}, {rng.integers(1000)})"
        code = "python" in base.lower() or "select" in base.lower()
        for model, score in (("coder", float(code)), ("chat", float(not code)), ("weak", 0.0)):
            rows.append({"prompt_id": f"p{i}", "prompt": prompt, "model": model, "score": score,
                         "benchmark": "synthetic"})
    return pa.Table.from_pylist(rows)
