"""Tokenizers trained locally on the dataset's own text (nothing is downloaded).

    tokenizer = train_word_tokenizer(captions)          # a transformers TokenizersBackend
    batch = tokenizer(captions, padding=True, return_tensors="pt")
    tokenizer.save_pretrained(run_dir / "tokenizer")   # saved with the run
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import (
    Tokenizer,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def train_word_tokenizer(corpus: Iterable[str], max_length: int = 32, padding_side: str = "right") -> PreTrainedTokenizerFast:
    """A lower-cased word-level tokenizer over ``corpus``, wrapped for transformers.

    ``padding_side`` is passed to the constructor because setting it later is not saved."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        sorted(set(corpus)), trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, show_progress=False)
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        padding_side=padding_side,
        model_max_length=max_length,
    )
