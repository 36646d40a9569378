"""CIR-LVLM: input layout per variant flag, prompt selection, pretrained loading, LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from harness.backbones.tokenization import train_lvlm_tokenizer
from harness.data.cirr import load_cirr_split
from harness.methods.base import MethodContext
from harness.methods.registry import build_method
from harness.training.loop import TrainConfig, train

CORPUS = ["add a small red circle in the top left", "remove the blue square", "paint the green star red"]
TINY = {"vision_hidden": 32, "vision_heads": 2, "language_hidden": 32, "language_heads": 2, "patch_size": 8}


def _method(**params):
    defaults = {"backbone": TINY, "stage0": {"enabled": False}, "embed_dim": 16,
                "connector": {"num_queries": 6, "heads": 2}}
    torch.manual_seed(0)
    return build_method("cir_lvlm", defaults | params, MethodContext(image_size=32, corpus=CORPUS)).eval()


IMAGES = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
CAPTIONS = ["remove the blue square", "add a small red circle in the top left"]  # 4 and 9 words


def _layout(method, captions=CAPTIONS):
    with torch.no_grad():
        inputs, mask, layout, _ = method.build_inputs(IMAGES, captions)
    return inputs, mask, layout


def test_default_query_layout_is_task_input_task_prompt_soft_prompt_emb():
    method = _method()
    inputs, mask, layout = _layout(method)
    assert list(layout) == ["bos", "image", "caption", "task", "soft_prompt", "embedding"]  # the seed's Figure 3
    assert layout["bos"] == (0, 1)
    assert layout["image"][1] - layout["image"][0] == 6  # one token per learnable query
    assert layout["caption"][1] - layout["caption"][0] == 9  # padded to the longest caption
    assert layout["task"][1] - layout["task"][0] == len(method.params.query_task_prompt.split())
    assert layout["soft_prompt"][1] - layout["soft_prompt"][0] == 4  # top-1 prompt of length 4
    assert layout["embedding"] == (inputs.shape[1] - 1, inputs.shape[1])  # [EMB] last
    caption = slice(*layout["caption"])
    assert mask[0, caption].tolist() == [1] * 4 + [0] * 5 and mask[1, caption].sum() == 9


def test_task_first_order_stays_selectable():
    _, _, layout = _layout(_method(instruction_order="task_first"))
    assert list(layout) == ["bos", "task", "image", "caption", "soft_prompt", "embedding"]


def test_target_layout_has_its_own_task_prompt_and_no_caption():
    method = _method()
    with torch.no_grad():
        inputs, _, layout, _ = method.build_inputs(IMAGES, None)
    assert list(layout) == ["bos", "image", "task", "embedding"]
    assert layout["task"][1] - layout["task"][0] == len(method.params.target_task_prompt.split())
    assert method._task_ids["query"] != method._task_ids["target"]
    with_prompt = _method(target_soft_prompt=True)
    with torch.no_grad():
        _, _, layout, _ = with_prompt.build_inputs(IMAGES, None)
    assert layout["soft_prompt"][1] - layout["soft_prompt"][0] == 4


@pytest.mark.parametrize(
    ("params", "segment", "length"),
    [
        ({"prompt_length": 7}, "soft_prompt", 7),
        ({"top_k": 3, "pool_size": 5}, "soft_prompt", 12),
        ({"soft_prompt": "universal", "pool_size": 20}, "soft_prompt", 4),
        ({"connector": {"type": "mlp"}}, "image", 17),  # 16 patches + CLS at 32 px / patch 8
    ],
)
def test_variant_flags_change_the_input(params, segment, length):
    _, _, layout = _layout(_method(**params))
    assert layout[segment][1] - layout[segment][0] == length


def test_task_prompt_off_and_soft_prompt_off_remove_them():
    assert list(_layout(_method(task_prompt=False))[2]) == ["bos", "image", "caption", "soft_prompt", "embedding"]
    assert list(_layout(_method(soft_prompt="off"))[2]) == ["bos", "image", "caption", "task", "embedding"]


def test_task_prompt_attends_to_the_task_input_in_the_paper_order_only():
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        paper = _method().diagnostics(images, CAPTIONS)["attention_share"]
        first = _method(instruction_order="task_first").diagnostics(images, CAPTIONS)["attention_share"]
    assert paper["task"]["image"] > 0.01 and paper["task"]["caption"] > 0.01  # Figure 5's hard-prompt bar
    assert first["task"] == {"image": 0.0, "caption": 0.0}  # causal attention: it comes before both
    assert paper["soft_prompt"]["image"] > 0.01 and paper["soft_prompt"]["caption"] > 0.01


def test_figure_5_has_a_uniform_attention_reference_and_per_query_shares():
    """Uniform causal attention is the null Figure 5 is read against: each row spreads its
    weight evenly over the unmasked tokens up to itself (checked by hand on a padded row), and
    the diagnostics give it beside the observed shares, per query as well as averaged."""
    from harness.methods.cir_lvlm.model import uniform_attention

    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    uniform = uniform_attention(mask)
    assert torch.allclose(uniform[0, 3], torch.full((4,), 0.25)) and torch.allclose(uniform[1, 2],
                                                                                     torch.tensor([0, .5, .5, 0]))
    assert torch.allclose(uniform.sum(-1), mask.float())  # a padding row attends nowhere
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        found = _method().diagnostics(images, CAPTIONS)
    reference = found["attention_share_uniform"]
    for segment, parts in found["attention_share"].items():
        for part, share in parts.items():
            values = found["attention_share_per_query"][segment][part]
            assert len(values) == 2 and abs(sum(values) / 2 - share) < 1e-6
            assert 0.0 < reference[segment][part] < 1.0  # every prompt sees both under uniform attention
    pool_size = _method().pool.pool_size
    assert len(found["prompt_choice"]) == 2 and all(0 <= i < pool_size for i in found["prompt_choice"])


def test_universal_prompt_has_one_prompt_and_no_key_loss():
    method = _method(soft_prompt="universal")
    assert method.pool is not None and method.pool.pool_size == 1
    with torch.no_grad():
        assert method.build_inputs(IMAGES, CAPTIONS)[3].abs().sum() == 0.0


def test_embeddings_are_normalised_and_single_pass():
    method = _method()
    calls = []
    method.language_model.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        query = method.encode_query(IMAGES, CAPTIONS)
    assert len(calls) == 1  # one LM forward pass per query batch
    assert torch.allclose(query.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_padding_does_not_change_an_embedding():
    method = _method()
    with torch.no_grad():
        alone = method.encode_query(IMAGES[:1], CAPTIONS[:1])
        padded = method.encode_query(IMAGES, CAPTIONS)[:1]  # first caption padded by 5 tokens
    assert torch.allclose(alone, padded, atol=1e-5)


STAGE0_TOY = {"vision_steps": 40, "caption_steps": 40, "vision_batch_size": 64, "caption_batch_size": 32}


def test_different_instances_select_different_prompts(tiny_benchmark: Path):
    split = load_cirr_split(tiny_benchmark, "train")
    context = MethodContext(64, [t.caption for t in split.triplets], train_split=split, dataset_key="tiny")
    torch.manual_seed(0)
    method = build_method("cir_lvlm", {"backbone": {**TINY, "patch_size": 16}, "stage0": STAGE0_TOY, "embed_dim": 16,
                                       "connector": {"num_queries": 4, "heads": 2}, "pool_size": 8}, context)
    train(method, split, TrainConfig(epochs=1, max_steps=12, batch_size=16, checkpoint=False), seed=0, progress=False)
    method.eval().reset_statistics()
    triplets = split.triplets[:64]
    with torch.no_grad():
        method.encode_query(split.images.load([t.reference for t in triplets]), [t.caption for t in triplets])
    usage = method.statistics()["prompt_usage"]
    assert sum(usage) == 64
    assert sum(1 for count in usage if count > 0) >= 2


@pytest.fixture(scope="module")
def saved_backbones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny vision tower, causal LM (+ tokenizer) and a LLaVA-style model saved to disk."""
    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(1)
    tokenizer = train_lvlm_tokenizer(CORPUS)
    vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                              num_attention_heads=2, image_size=32, patch_size=8))
    vision.save_pretrained(root / "vision")
    text_config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id)
    language = LlamaForCausalLM(text_config)
    language.save_pretrained(root / "language")
    tokenizer.save_pretrained(root / "language")
    llava = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision.config, text_config=text_config,
                                                      image_token_index=len(tokenizer) - 1, image_seq_length=16))
    llava.save_pretrained(root / "llava")
    tokenizer.save_pretrained(root / "llava")
    return {"root": root, "vision": root / "vision", "language": root / "language", "llava": root / "llava"}


def _trained(split, adaptation: str) -> tuple[object, dict[str, torch.Tensor]]:
    """A tiny CIR-LVLM under ``adaptation`` and its LM weights before 4 training steps."""
    torch.manual_seed(0)
    context = MethodContext(64, [t.caption for t in split.triplets], train_split=split, dataset_key="tiny")
    method = build_method("cir_lvlm",
                          {"backbone": {**TINY, "patch_size": 16, "freeze_vision": True}, "lm_adaptation": adaptation,
                                       "stage0": {"enabled": False}, "embed_dim": 16,
                                       "connector": {"num_queries": 4, "heads": 2}}, context)
    before = {name: tensor.detach().clone() for name, tensor in method.language_model.named_parameters()}
    train(method, split, TrainConfig(epochs=1, max_steps=4, batch_size=8, checkpoint=False), seed=0, progress=False)
    return method, before


def test_lora_trains_only_adapters_prompts_connector_and_head(tiny_benchmark: Path):
    method, before = _trained(load_cirr_split(tiny_benchmark, "train"), "lora")
    trainable = [name for name, p in method.named_parameters() if p.requires_grad]
    lm = [name for name in trainable if name.startswith("language_model.")]
    assert lm and all(".lora_A." in name or ".lora_B." in name for name in lm)
    assert {name.split(".")[0] for name in trainable} == {"language_model", "connector", "pool", "head",
                                                          "embedding_row"}
    for name, tensor in method.language_model.named_parameters():
        if "lora_" not in name:  # base weights as they were; B starts at zero, so A and B must have moved
            assert torch.equal(tensor, before[name]), name
    assert any(not torch.equal(t, before[n]) for n, t in method.language_model.named_parameters() if "lora_B" in n)


def test_frozen_leaves_the_language_model_bitwise_unchanged(tiny_benchmark: Path):
    method, before = _trained(load_cirr_split(tiny_benchmark, "train"), "frozen")
    assert not any(p.requires_grad for p in method.language_model.parameters())
    assert all(torch.equal(t, before[n]) for n, t in method.language_model.named_parameters())
    trainable = {name.split(".")[0] for name, p in method.named_parameters() if p.requires_grad}
    assert trainable == {"connector", "pool", "head", "embedding_row"}


def test_full_trains_every_language_model_weight(tiny_benchmark: Path):
    method, before = _trained(load_cirr_split(tiny_benchmark, "train"), "full")
    assert all(p.requires_grad for p in method.language_model.parameters())
    assert not torch.equal(method.language_model.get_parameter("layers.0.mlp.down_proj.weight"),
                           before["layers.0.mlp.down_proj.weight"])


def test_lora_targets_that_name_nothing_are_refused():
    from harness.core.errors import HarnessError

    with pytest.raises(HarnessError, match="lora_targets"):
        _method(lora_targets=["no_such_proj"])


def _pretrained(backbone: dict, **params):
    torch.manual_seed(0)
    return build_method("cir_lvlm", {"backbone": {"source": "pretrained", **backbone}, "embed_dim": 16,
                                     "connector": {"num_queries": 4, "heads": 2}, **params},
                        MethodContext(image_size=32, corpus=CORPUS))


def test_pretrained_directories_load_back_with_their_weights(saved_backbones):
    method = _pretrained({"vision_dir": str(saved_backbones["vision"]),
                          "language_dir": str(saved_backbones["language"])},
                         lm_adaptation="full")
    saved_vision = CLIPVisionModel.from_pretrained(saved_backbones["vision"])
    saved_language = LlamaForCausalLM.from_pretrained(saved_backbones["language"])
    name, tensor = next(iter(saved_vision.state_dict().items()))
    assert torch.equal(method.vision.model.state_dict()[name], tensor)
    layer = "layers.1.mlp.down_proj.weight"
    assert torch.equal(method.language_model.state_dict()[layer], saved_language.model.state_dict()[layer])
    with torch.no_grad():
        assert method.encode_query(IMAGES, CAPTIONS).shape == (2, 16)


def test_lora_touches_only_language_model_modules(saved_backbones):
    method = _pretrained({"vision_dir": str(saved_backbones["vision"]),
                          "language_dir": str(saved_backbones["language"]),
                          "lora_rank": 4})
    lora = [name for name, _ in method.named_parameters() if "lora_" in name]
    assert lora and all(name.startswith("language_model.") for name in lora)
    assert len(lora) == 2 * 4 * 2  # A and B for q, k, v, o in both layers
    trainable = {name.split(".")[0] for name, p in method.named_parameters() if p.requires_grad}
    assert trainable == {"language_model", "connector", "pool", "head",
                         "embedding_row"}  # [EMB] learned beside the frozen table
    frozen_lm = [name for name, p in method.language_model.named_parameters() if not p.requires_grad]
    assert any("mlp" in name for name in frozen_lm)  # base LM weights stay frozen
    assert not any(p.requires_grad for p in method.vision.parameters())  # vision frozen by default when pretrained


def test_llava_style_checkpoint_loads(saved_backbones):
    method = _pretrained({"lvlm_dir": str(saved_backbones["llava"]), "lora_rank": 4})
    with torch.no_grad():
        query = method.encode_query(IMAGES, CAPTIONS)
    assert torch.allclose(query.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert all(name.startswith("language_model.") for name, _ in method.named_parameters() if "lora_" in name)


QWEN_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 2, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                           "mrope_section": [2, 3, 3]}}  # sums to head_dim / 2
QWEN_VISION = {
    "qwen2_vl": {"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "patch_size": 8},
    "qwen2_5_vl": {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "out_hidden_size": 32, "num_heads": 2,
                   "patch_size": 8, "window_size": 32, "fullatt_block_indexes": [0]},
}


@pytest.fixture(scope="module", params=sorted(QWEN_VISION))
def saved_qwen(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A tiny Qwen2-VL / Qwen2.5-VL checkpoint saved with save_pretrained, plus the model saved."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    config_class, model_class = {"qwen2_vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration),
                                 "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration)}[request.param]
    torch.manual_seed(2)
    tokenizer = train_lvlm_tokenizer(CORPUS)
    text = QWEN_TEXT | {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    model = model_class(config_class(text_config=text, vision_config=QWEN_VISION[request.param],
                                     image_token_id=len(tokenizer) - 1))
    directory = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, model


def test_qwen_vl_style_checkpoint_loads_with_its_weights(saved_qwen):
    directory, saved = saved_qwen
    method = _pretrained({"lvlm_dir": str(directory), "lora_rank": 4})
    name = "blocks.0.attn.qkv.weight"
    assert torch.equal(method.vision.model.state_dict()[name], saved.model.visual.state_dict()[name])
    assert method.vision.image_size == 32 and method.vision.hidden_size == 32  # 32 px: a 2x2 grid of merged tokens
    with torch.no_grad():
        assert method.vision(IMAGES).shape == (2, 4, 32)
        query = method.encode_query(IMAGES, CAPTIONS)
    assert torch.allclose(query.norm(dim=-1), torch.ones(2), atol=1e-5)
    lora = [name for name, _ in method.named_parameters() if "lora_" in name]
    assert lora and all(name.startswith("language_model.") for name in lora)
    assert not any(p.requires_grad for p in method.vision.parameters())


def test_qwen_patch_layout_matches_the_image_processor():
    """The torch patchify of QwenVisionTower equals Qwen2VLImageProcessor's (PIL backend) layout."""
    import numpy as np
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    from harness.backbones.vision import CLIP_MEAN, CLIP_STD, QwenVisionTower

    config = Qwen2VLConfig(text_config=QWEN_TEXT | {"vocab_size": 16}, vision_config=QWEN_VISION["qwen2_vl"])
    tower = QwenVisionTower(Qwen2VLForConditionalGeneration(config).model.visual, 48, CLIP_MEAN, CLIP_STD)
    pixels = torch.randn(2, 3, 48, 32)
    flat, grid = tower.patchify(pixels)
    processor = Qwen2VLImageProcessorPil()
    expected = [processor.patchify(image.numpy(), patch_size=8, merge_size=2, temporal_patch_size=2)
                for image in pixels]
    assert grid.tolist() == [[1, 6, 4]] * 2 and all(e[1:] == (6, 4) for e in expected)
    assert np.allclose(flat.numpy(), np.concatenate([e[0] for e in expected]))


def test_missing_pretrained_directory_is_a_user_error(tmp_path: Path):
    from harness.core.errors import HarnessError

    with pytest.raises(HarnessError, match="vision_dir"):
        _pretrained({"vision_dir": str(tmp_path / "nope"), "language_dir": str(tmp_path / "nope")})


def _small_stage0(steps: int):
    """A seconds-long stage 0: ``steps`` contrastive and describe steps, 2 instruction-tuning
    steps (the phase runs, its default 300 would not be seconds)."""
    from harness.pretraining.stage0 import Stage0Params

    return Stage0Params(vision_steps=steps, caption_steps=steps, instruct_steps=2, vision_batch_size=8,
                        caption_batch_size=8)


def test_building_stage0_leaves_the_callers_random_state_alone(tiny_benchmark: Path):
    from harness.backbones.params import BackboneParams
    from harness.pretraining.stage0 import Stage0Request, ensure_stage0

    split = load_cirr_split(tiny_benchmark, "train")
    request = Stage0Request("rng-test", BackboneParams(**TINY), {"type": "queries", "num_queries": 4, "heads": 2},
                            _small_stage0(2))
    torch.manual_seed(7)
    ensure_stage0(request, split, progress=False)  # builds
    after_build = torch.rand(3)
    torch.manual_seed(7)
    ensure_stage0(request, split, progress=False)  # cached
    assert torch.equal(torch.rand(3), after_build)


def test_connector_variants_share_the_vision_phase_and_results_do_not_depend_on_it(
    tiny_benchmark: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from harness.backbones.params import BackboneParams
    from harness.pretraining.stage0 import Stage0Request, ensure_stage0

    split = load_cirr_split(tiny_benchmark, "train")
    params = _small_stage0(3)

    def request(connector: dict) -> Stage0Request:
        return Stage0Request("share-test", BackboneParams(**TINY), connector, params)

    queries, mlp = {"type": "queries", "num_queries": 4, "heads": 2}, {"type": "mlp", "num_queries": 4, "heads": 2}
    monkeypatch.setenv("CIR_HARNESS_CACHE", str(tmp_path / "alone"))
    alone = ensure_stage0(request(queries), split, progress=False)
    monkeypatch.setenv("CIR_HARNESS_CACHE", str(tmp_path / "shared"))
    ensure_stage0(request(mlp), split, progress=False)
    shared = ensure_stage0(request(queries), split, progress=False)  # vision phase taken from the cache
    assert len(list((tmp_path / "shared" / "backbones").glob("stage0-vision-*"))) == 1
    for name in ("connector.safetensors", "language_model/model.safetensors", "vision/model.safetensors"):
        assert (alone / name).read_bytes() == (shared / name).read_bytes(), name


def test_optional_embed_phase_runs_and_keeps_existing_stage0_keys(tiny_benchmark: Path):
    from harness.backbones.params import BackboneParams
    from harness.pretraining.stage0 import Stage0Request, ensure_stage0

    split = load_cirr_split(tiny_benchmark, "train")
    connector = {"type": "queries", "num_queries": 4, "heads": 2}
    base = _small_stage0(2)
    off = Stage0Request("embed-test", BackboneParams(**TINY), connector, base)
    on = Stage0Request("embed-test", BackboneParams(**TINY), connector, base.model_copy(update={"embed_steps": 3}))
    assert "embed_steps" not in off._settings() and off.key() != on.key()  # caches built before it stay valid
    assert off.vision_key() == on.vision_key()  # the CLIP phase is shared
    report = json.loads((ensure_stage0(on, split, progress=False) / "stage0.json").read_text())
    assert report["embed"]["first_loss"] is not None and report["embed"]["last_loss"] is not None


def test_the_perception_probe_reads_as_many_features_as_images_past_one_batch(tiny_benchmark: Path):
    """CIR-LVLM's probe encodes its connector tokens 256 images at a time: 300 images (a batch
    and a part) give 300 rows, the labels' count (the last batch once ran past it, and a default
    evaluation of 3,000 images failed)."""
    from harness.evaluation.evaluate import evaluate
    from harness.evaluation.protocol import EvalConfig

    method, _ = _trained(load_cirr_split(tiny_benchmark, "train"), "lora")
    val = load_cirr_split(tiny_benchmark, "val")
    assert len(val.gallery) > 300
    done = evaluate(method.eval(), val, EvalConfig(perception_images=300, latency_queries=0, examples=0,
                                                   diagnostic_queries=0, max_queries=8), progress=False)
    assert done.diagnostics["perception"]["fit_images"] == 200 and done.diagnostics["perception"]["test_images"] == 100
