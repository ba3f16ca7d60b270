"""A tiny Llama GGUF written with the ``gguf`` package: 2 layers, d_model 32, d_mlp 64, random weights
(Q8_0 blocks for the matrices, so loading exercises dequantization), a byte-level BPE tokenizer of the
256 byte symbols plus two merges. About 60 KB; transformers' GGUF loader reads it like a real file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

D_MODEL, D_MLP, N_LAYERS, N_HEADS = 32, 64, 2, 2
MERGES = ["1 2", "Ġ t"]  # "12" and "Ġt" become single tokens


def _byte_symbols() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return [bytes_to_unicode()[b] for b in range(256)]


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    import gguf
    from gguf import GGMLQuantizationType

    rng = np.random.default_rng(seed)
    tokens = ["<|endoftext|>", *_byte_symbols(), "12", "Ġt"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(64)
    writer.add_embedding_length(D_MODEL)
    writer.add_block_count(N_LAYERS)
    writer.add_feed_forward_length(D_MLP)
    writer.add_head_count(N_HEADS)
    writer.add_head_count_kv(N_HEADS)
    writer.add_rope_dimension_count(D_MODEL // N_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3] + [1] * (len(tokens) - 1))  # 3 = control, 1 = normal
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)

    def matrix(name: str, rows: int, cols: int, quantize: bool = True) -> None:
        weights = (rng.standard_normal((rows, cols)) * 0.2).astype(np.float32)
        if quantize:
            blocks = gguf.quants.quantize(weights, GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, blocks, raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, weights)

    def ones(name: str) -> None:
        writer.add_tensor(name, np.ones(D_MODEL, dtype=np.float32))

    matrix("token_embd.weight", len(tokens), D_MODEL, quantize=False)
    for layer in range(N_LAYERS):
        block = f"blk.{layer}."
        ones(block + "attn_norm.weight")
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            matrix(f"{block}{name}.weight", D_MODEL, D_MODEL)
        ones(block + "ffn_norm.weight")
        matrix(block + "ffn_gate.weight", D_MLP, D_MODEL)
        matrix(block + "ffn_up.weight", D_MLP, D_MODEL)
        matrix(block + "ffn_down.weight", D_MODEL, D_MLP)
    ones("output_norm.weight")  # no output.weight: the head is tied to the embedding
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
