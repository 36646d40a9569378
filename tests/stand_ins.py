"""Tiny stand-ins for the checkpoints CIR researchers actually have, saved the way those ship.

    save_llava15(directory)                  # LlavaForConditionalGeneration, fp16, LlamaTokenizer + <image>/<pad>
    save_qwen_vl(directory, "qwen2_5_vl")    # Qwen2.5-VL, bf16, Qwen2Tokenizer, chat template, padded vocabulary
    save_llama(directory)                    # a LLaMA-family causal LM, bf16, LlamaTokenizer without a pad token
    save_clip(directory) / save_siglip(directory)   # whole dual encoders with their processors
    save_blip2_retrieval(directory)          # Blip2ForImageTextRetrieval (blip2-itm-vit-g's layout), BertTokenizer

What makes them look like the real ones (and what the harness used to trip over): the weights'
dtype (bf16 for Qwen and LLaMA-3-era models, fp16 for the LLaVA-1.5 hf conversion), the real
tokenizer classes (LlamaTokenizer has no pad token; Qwen2Tokenizer has no BOS), a vocabulary
padded past the tokenizer's length (Qwen2.5-VL: 152064 rows for 151665 tokens; LLaVA-1.5:
32064 for 32002), LLaVA-1.5's ``vision_feature_layer: -2`` with CLS dropped, chat templates
and the processors' own preprocessing files. Sizes are tiny (width 32) so tests run in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

CORPUS = [
    "add a small red circle in the top left", "remove the blue square", "paint the green star red",
    "make the triangle larger", "move the yellow square to the bottom right", "replace the circle with a star",
    "describe the modified image in one word :", "describe this image in one word :",
]
QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() }}: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %} "
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
WIDTH = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}


def _bpe(pre_tokenizer, specials: list[str], alphabet: list[str] | None = None) -> tuple[dict, list]:
    """(vocab, merges) of a BPE trained on ``CORPUS`` (how the real vocabularies were made, in miniature)."""
    tokenizer = Tokenizer(models.BPE(unk_token=specials[0] if specials else None))
    tokenizer.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=alphabet or [],
                                  show_progress=False)
    tokenizer.train_from_iterator(CORPUS, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    return model["vocab"], [tuple(pair) for pair in model["merges"]]


def llama_tokenizer():
    """A LlamaTokenizer (<unk> <s> </s>, metaspace BPE) with no pad token, as LLaMA-2/3 and Mistral ship."""
    from transformers import LlamaTokenizer

    # the chat template's own words are in any real LLaMA vocabulary
    vocab, merges = _bpe(pre_tokenizers.Metaspace(), ["<unk>", "<s>", "</s>"], sorted(set("USERASSISTANT:")))
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, padding_side="right")
    assert tokenizer.pad_token is None
    return tokenizer


def qwen2_tokenizer():
    """A Qwen2Tokenizer (byte-level BPE, <|endoftext|> as pad and eos, no BOS) with Qwen-VL's
    chat and vision specials and a chat template."""
    from transformers import Qwen2Tokenizer

    vocab, merges = _bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), ["<|endoftext|>"],
                         pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS})
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def _padded(length: int, multiple: int = 64) -> int:
    """A vocabulary padded past the tokenizer, as released checkpoints pad to a multiple of 64/128."""
    return -(-(length + 1) // multiple) * multiple


def _save(model: torch.nn.Module, tokenizer, directory: Path, dtype: torch.dtype) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model.to(dtype).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_llama(directory: Path, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    """A LLaMA-family causal LM (bf16 weights, a tokenizer without a pad token)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = llama_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), num_hidden_layers=2, num_key_value_heads=2,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **WIDTH)
    return _save(LlamaForCausalLM(config), tokenizer, directory, dtype)


def _clip_image_processor(size: int, crop: bool = True) -> dict:
    return {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": size},
            "do_center_crop": crop, "crop_size": {"height": size, "width": size}, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711], "do_convert_rgb": True, "resample": 3}


def save_llava15(directory: Path, dtype: torch.dtype = torch.float16, seed: int = 0, image_size: int = 48) -> Path:
    """A LLaVA-1.5 hf conversion in miniature: fp16 weights, ``vision_feature_layer: -2`` with the
    CLS feature dropped ("default"), the projector the checkpoint trained, <image> and <pad> added to
    a LlamaTokenizer, the text vocabulary padded to a multiple of 64, CLIPImageProcessor at 336 -> 48 px."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    torch.manual_seed(seed)
    tokenizer = llama_tokenizer()
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    tokenizer.chat_template = LLAVA_CHAT_TEMPLATE
    text = LlamaConfig(vocab_size=_padded(len(tokenizer)), num_hidden_layers=2, num_key_value_heads=2,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, **WIDTH)
    vision = CLIPVisionConfig(num_hidden_layers=2, image_size=image_size, patch_size=16, **WIDTH)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         image_seq_length=(image_size // 16) ** 2)
    _save(LlavaForConditionalGeneration(config), tokenizer, directory, dtype)
    (directory / "preprocessor_config.json").write_text(json.dumps(_clip_image_processor(image_size)))
    (directory / "processor_config.json").write_text(json.dumps(
        {"processor_class": "LlavaProcessor", "patch_size": 16, "vision_feature_select_strategy": "default"}))
    return directory


QWEN_VISION = {
    "qwen2_vl": {"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "patch_size": 8},
    "qwen2_5_vl": {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "out_hidden_size": 32, "num_heads": 2,
                   "patch_size": 8, "window_size": 32, "fullatt_block_indexes": [0]},
}


def save_qwen_vl(directory: Path, version: str = "qwen2_5_vl", dtype: torch.dtype = torch.bfloat16,
                 seed: int = 0, layers: int = 2, vision_depth: int = 1) -> Path:
    """A Qwen2-VL / Qwen2.5-VL checkpoint in miniature: bf16, Qwen2Tokenizer with the vision
    specials and a chat template, the vocabulary padded past the tokenizer, M-RoPE sections, and
    Qwen2VLImageProcessor's files (dynamic resolution between min_pixels and max_pixels)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    config_class, model_class = {"qwen2_vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration),
                                 "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration)}[version]
    torch.manual_seed(seed)
    tokenizer = qwen2_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIALS}
    text = WIDTH | {"num_hidden_layers": layers, "num_key_value_heads": 2, "vocab_size": _padded(len(tokenizer)),
                    "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}}
    vision = QWEN_VISION[version] | {"depth": vision_depth}
    config = config_class(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                          vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    _save(model_class(config), tokenizer, directory, dtype)
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessor", "do_resize": True, "do_rescale": True, "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "min_pixels": 16 * 16, "max_pixels": 64 * 64, "patch_size": 8, "temporal_patch_size": 2, "merge_size": 2}))
    return directory


def _dual_encoder_text_config(tokenizer) -> dict:
    return WIDTH | {"vocab_size": len(tokenizer), "num_hidden_layers": 1, "max_position_embeddings": 32,
                    "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                    "pad_token_id": tokenizer.pad_token_id}


def save_clip(directory: Path, dtype: torch.dtype = torch.float16, seed: int = 0, image_size: int = 32,
              layers: int = 1) -> Path:
    """A whole CLIPModel (fp16, as openai/clip-* ship on the hub's fp16 branches) with a CLIPTokenizer."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(directory)
    config = CLIPConfig(text_config=_dual_encoder_text_config(tokenizer) | {"num_hidden_layers": layers},
                        projection_dim=16,
                        vision_config=WIDTH | {"num_hidden_layers": layers, "image_size": image_size, "patch_size": 8})
    _save(CLIPModel(config), tokenizer, directory, dtype)
    (directory / "preprocessor_config.json").write_text(json.dumps(_clip_image_processor(image_size)))
    return directory


def save_siglip(directory: Path, dtype: torch.dtype = torch.float32, seed: int = 0, image_size: int = 32) -> Path:
    """A whole SiglipModel: no ``visual_projection`` (its heads live inside the towers), a text tower
    that pads to its full length, SiglipImageProcessor's (0.5, 0.5) statistics."""
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(directory)
    text = _dual_encoder_text_config(tokenizer) | {"projection_size": 32}
    config = SiglipConfig(text_config=text,
                          vision_config=WIDTH | {"num_hidden_layers": 1, "image_size": image_size, "patch_size": 8})
    _save(SiglipModel(config), tokenizer, directory, dtype)
    (directory / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "SiglipImageProcessor", "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
         "size": {"height": image_size, "width": image_size}}))
    return directory


def clip_tokenizer(directory: Path):
    """A CLIPTokenizer over the corpus' words (``</w>``-suffixed, BOS/EOS/PAD as CLIP's)."""
    from transformers import CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    words = sorted({word for text in CORPUS for word in text.split()} | {"a", "photo", "of", "*", ",", "that"})
    chars = sorted({c for word in words for c in word})
    vocab = {c: i for i, c in enumerate(chars)} | {f"{c}</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab |= {f"{w}</w>": len(vocab) + i for i, w in enumerate(w for w in words if f"{w}</w>" not in vocab)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))


def save_blip2_retrieval(directory: Path, dtype: torch.dtype = torch.float32, seed: int = 0, image_size: int = 32,
                         num_query_tokens: int = 6) -> Path:
    """A Blip2ForImageTextRetrieval (ViT + Q-Former with text input, no LLM; blip2-itm-vit-g ships
    float32) with a BertTokenizer over the corpus' words ([DEC] as BOS, as LAVIS adds it) and
    BlipImageProcessor's preprocessing file (a resize without a crop, CLIP's statistics)."""
    from transformers import BertTokenizer, Blip2Config, Blip2ForImageTextRetrieval

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    words = sorted({word for text in CORPUS for word in text.split()})
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words,
                                                    "[DEC]"]) + "\n")
    tokenizer = BertTokenizer(str(directory / "vocab.txt"), bos_token="[DEC]")
    config = Blip2Config(
        vision_config=WIDTH | {"num_hidden_layers": 2, "image_size": image_size, "patch_size": 8},
        qformer_config=WIDTH | {"vocab_size": len(tokenizer), "num_hidden_layers": 2, "max_position_embeddings": 64,
                                "use_qformer_text_input": True},
        num_query_tokens=num_query_tokens, image_text_hidden_size=16)
    _save(Blip2ForImageTextRetrieval(config), tokenizer, directory, dtype)
    (directory / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "BlipImageProcessor", "do_resize": True, "do_normalize": True,
         "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
         "size": {"height": image_size, "width": image_size}}))
    return directory
