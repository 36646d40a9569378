"""Tokenizers trained locally on the dataset's own text (nothing is downloaded).

    tokenizer = train_word_tokenizer(captions)          # [CLS] ... [SEP], for text encoders
    tokenizer = train_lvlm_tokenizer(captions)          # [BOS] [EOS] [EMB], no added specials
    batch = tokenizer(captions, padding=True, return_tensors="pt")
    tokenizer.save_pretrained(run_dir / "tokenizer")   # saved with the run

``padding_side`` is passed to the constructor because setting it later is not saved.
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
LVLM_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[EMB]"]
EMBEDDING_TOKEN = "[EMB]"
#: CIR-LVLM's default task prompts (an assumption; see harness.methods.cir_lvlm.model). Stage 0's
#: tokenizer learns their words, for every method that starts from it.
QUERY_TASK_PROMPT = "describe the modified image in one word :"
TARGET_TASK_PROMPT = "describe this image in one word :"


def _word_level(corpus: Iterable[str], specials: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(sorted(set(corpus)),
                                  trainers.WordLevelTrainer(special_tokens=specials, show_progress=False))
    return tokenizer


def train_word_tokenizer(corpus: Iterable[str], max_length: int = 32,
                         padding_side: str = "right") -> PreTrainedTokenizerFast:
    """A lower-cased word-level tokenizer that wraps text in [CLS] ... [SEP] (text encoders)."""
    tokenizer = _word_level(corpus, SPECIAL_TOKENS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        padding_side=padding_side, model_max_length=max_length,
    )


def train_lvlm_tokenizer(corpus: Iterable[str], max_length: int = 128,
                         padding_side: str = "right") -> PreTrainedTokenizerFast:
    """A lower-cased word-level tokenizer for a causal LM: [BOS]/[EOS]/[EMB] specials, none
    added automatically (the LVLM assembles its sequences itself)."""
    tokenizer = _word_level(corpus, LVLM_SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]",
        extra_special_tokens={"embedding_token": EMBEDDING_TOKEN}, padding_side=padding_side,
        model_max_length=max_length,
    )
