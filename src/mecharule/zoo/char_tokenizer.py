"""Character-level tokenizers for the organisms: one token per character, exact round trip.

Saved as a plain ``tokenizers`` JSON with ``tokenizer_class`` set so ``AutoTokenizer`` loads the
generic fast tokenizer (not Qwen2's byte-level class, which would re-split text and drop spaces).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ("<pad>", "<eos>", "<unk>")


def build_char_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    chars = sorted({c for text in texts for c in text})
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for c in chars:
        vocab[c] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
