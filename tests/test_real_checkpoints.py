"""Checkpoints saved the way real ones ship (tests/stand_ins.py): half-precision weights, tokenizers
without a pad token, padded vocabularies, LLaVA-1.5's feature layer, SigLIP's missing projection.
Each must train through the shared loop, evaluate and give its attention diagnostics, under bf16
autocast and fp32 alike; a checkpoint keeps what the run trains and nothing of the base model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from harness.core.errors import HarnessError
from harness.data.cirr import load_cirr_split
from harness.methods.base import MethodContext
from harness.methods.registry import build_method
from harness.training.checkpoint import split_state
from harness.training.loop import TrainConfig, load_checkpoint, train
from tests import stand_ins

LVLM_PARAMS = {"embed_dim": 16, "connector": {"num_queries": 4, "heads": 2}}
STAND_INS = {
    "llava15_fp16": lambda d: {"lvlm_dir": str(stand_ins.save_llava15(d / "llava", torch.float16))},
    "qwen2_vl_bf16": lambda d: {"lvlm_dir": str(stand_ins.save_qwen_vl(d / "q2", "qwen2_vl", torch.bfloat16))},
    "qwen2_5_vl_bf16": lambda d: {"lvlm_dir": str(stand_ins.save_qwen_vl(d / "q25", "qwen2_5_vl", torch.bfloat16))},
    "qwen2_5_vl_fp16": lambda d: {"lvlm_dir": str(stand_ins.save_qwen_vl(d / "q25h", "qwen2_5_vl", torch.float16))},
    "clip_and_llama_bf16": lambda d: {"vision_dir": str(stand_ins.save_clip(d / "clip", torch.bfloat16)),
                                      "language_dir": str(stand_ins.save_llama(d / "llama", torch.bfloat16))},
}


@pytest.fixture(scope="module")
def split(tiny_benchmark: Path):
    return load_cirr_split(tiny_benchmark, "train")


@pytest.fixture(scope="module", params=sorted(STAND_INS))
def stand_in(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    return request.param, STAND_INS[request.param](tmp_path_factory.mktemp(request.param))


def _lvlm(backbone: dict, split, **params):
    torch.manual_seed(0)
    context = MethodContext(64, [t.caption for t in split.triplets], train_split=split, dataset_key="tiny")
    return build_method("cir_lvlm",
                        LVLM_PARAMS | params | {"backbone": {"source": "pretrained", "lora_rank": 4, **backbone}},
                        context)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_cir_lvlm_trains_evaluates_and_explains_itself_from_a_half_precision_checkpoint(stand_in, split, precision):
    name, backbone = stand_in
    method = _lvlm(backbone, split)
    frozen_dtype = torch.float16 if "fp16" in name else torch.bfloat16
    assert method.language_model.get_input_embeddings().weight.dtype == frozen_dtype  # kept as released
    trained = method.optimizer_parameters()
    assert trained and all(p.dtype == torch.float32 for p in trained)  # master weights
    emb_before = method.embedding_row.detach().clone()
    summary = train(method, split, TrainConfig(max_steps=2, batch_size=4, checkpoint=False, precision=precision),
                    seed=0, progress=False)
    assert summary.steps == 2 and all(torch.isfinite(torch.tensor(summary.loss_per_epoch)))
    assert not torch.equal(method.embedding_row, emb_before)  # [EMB] is learned although the table is frozen
    images = split.images.load([t.reference for t in split.triplets[:3]])
    captions = [t.caption for t in split.triplets[:3]]
    with torch.no_grad():
        query = method.encode_query(images, captions)
        shares = method.diagnostics(images, captions)["attention_share"]
    assert query.dtype == torch.float32 and torch.allclose(query.norm(dim=-1), torch.ones(3), atol=1e-4)
    assert shares["soft_prompt"]["image"] > 0 and shares["embedding"]["caption"] > 0


def test_the_padded_vocabulary_is_never_shrunk(split, tmp_path: Path):
    directory = stand_ins.save_qwen_vl(tmp_path / "q25")
    from transformers import AutoConfig

    rows = AutoConfig.from_pretrained(directory).text_config.vocab_size
    method = _lvlm({"lvlm_dir": str(directory)}, split)
    assert len(method.tokenizer) < rows
    assert method.language_model.get_input_embeddings().num_embeddings == rows


def test_a_tokenizer_without_a_pad_token_pads_with_an_existing_token(split, tmp_path: Path):
    backbone = {"vision_dir": str(stand_ins.save_clip(tmp_path / "clip")),
                "language_dir": str(stand_ins.save_llama(tmp_path / "llama"))}
    method = _lvlm(backbone, split)
    assert method.tokenizer.pad_token == "</s>"
    assert len(method.tokenizer) == len(stand_ins.llama_tokenizer()) + 1  # [EMB] only: no pad row added
    with torch.no_grad():  # captions of different lengths need padding
        query = method.encode_query(split.images.load([t.reference for t in split.triplets[:2]]),
                                    ["a", "remove the blue square"])
    assert torch.isfinite(query).all()


def test_llava15_features_come_from_its_trained_layer_without_cls(tmp_path: Path):
    from transformers import LlavaForConditionalGeneration

    directory = stand_ins.save_llava15(tmp_path / "llava")
    method = build_method("cir_lvlm", LVLM_PARAMS | {"backbone": {"source": "pretrained", "lvlm_dir": str(directory)}},
                          MethodContext(48, stand_ins.CORPUS))
    images = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    reference = LlavaForConditionalGeneration.from_pretrained(directory).model.vision_tower
    with torch.no_grad():
        features = method.vision(images)
        pixels = ((images.float() / 255 - method.vision.mean) / method.vision.std).half()
        expected = reference(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
    assert features.shape == (2, 9, 32)  # 48 px / 16 = 3 x 3 patches, CLS dropped
    assert torch.equal(features, expected)


def test_a_lora_checkpoint_holds_no_frozen_base_weight(split, tmp_path: Path):
    backbone = {"lvlm_dir": str(stand_ins.save_qwen_vl(tmp_path / "q25"))}
    method = _lvlm(backbone, split)
    train(method, split, TrainConfig(max_steps=2, batch_size=4), seed=0, checkpoint_dir=tmp_path / "ckpt",
          progress=False)
    with safe_open(str(tmp_path / "ckpt" / "last" / "model.safetensors"), framework="pt") as handle:
        saved = set(handle.keys())
    frozen = set(split_state(method)[1])
    assert saved and not saved & frozen
    assert any(".vision." in name or name.startswith("vision.") for name in frozen)  # the tower is frozen ...
    assert not any(name.startswith("vision.") for name in saved)                     # ... and not saved
    assert all(name.split(".")[0] in {"connector", "pool", "standardisers", "head", "embedding_row", "language_model"}
               for name in saved)
    assert all("lora_" in name for name in saved if name.startswith("language_model."))  # adapters only
    fresh = _lvlm(backbone, split)
    load_checkpoint(tmp_path / "ckpt", fresh)
    images = split.images.load([t.reference for t in split.triplets[:2]])
    with torch.no_grad():
        assert torch.equal(fresh.eval().encode_target(images), method.eval().encode_target(images))
    other = _lvlm({"lvlm_dir": str(stand_ins.save_qwen_vl(tmp_path / "other", seed=1))}, split)
    with pytest.raises(HarnessError, match="frozen base weights differ"):
        load_checkpoint(tmp_path / "ckpt", other)


@pytest.mark.parametrize("name", ["sum", "clip4cir", "pic2word"])
def test_dual_encoder_methods_train_from_siglip_and_a_half_precision_clip(name, split, tmp_path: Path):
    for directory in (stand_ins.save_siglip(tmp_path / "siglip"), stand_ins.save_clip(tmp_path / "clip")):
        torch.manual_seed(0)
        method = build_method(name, {"backbone": {"source": "pretrained", "vision_dir": str(directory)}},
                              MethodContext(64, [], train_split=split, dataset_key="tiny"))
        summary = train(method, split, TrainConfig(max_steps=2, batch_size=4, checkpoint=False, precision="bf16"),
                        seed=0, progress=False)
        assert summary.steps == 2 and all(torch.isfinite(torch.tensor(summary.loss_per_epoch)))
        with torch.no_grad():
            target = method.encode_target(split.images.load([t.target for t in split.triplets[:2]]))
        assert target.dtype == torch.float32 and torch.allclose(target.norm(dim=-1), torch.ones(2), atol=1e-3)


def test_only_a_half_precision_tower_hands_back_float32_features(tmp_path: Path):
    """A float32 tower's features stay as autocast computed them (bf16), so tiny runs are unchanged;
    a tower kept in fp16 runs outside autocast and hands back float32."""
    from harness.backbones.dual_encoder import DualEncoder

    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    for dtype, expected in ((torch.float32, torch.bfloat16), (torch.float16, torch.float32)):
        encoder = DualEncoder.from_directory(stand_ins.save_clip(tmp_path / str(dtype), dtype))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert encoder.image_features(images).dtype == expected
            assert encoder.text_features(["remove the blue square"]).dtype == expected


def test_the_checkpoint_connector_is_llavas_own_projector_trained_on(split, tmp_path: Path):
    from transformers import LlavaForConditionalGeneration

    directory = stand_ins.save_llava15(tmp_path / "llava", torch.float16)
    method = _lvlm({"lvlm_dir": str(directory)}, split, connector={"type": "checkpoint"})
    projector = LlavaForConditionalGeneration.from_pretrained(directory).model.multi_modal_projector
    for (name, ours), (_, theirs) in zip(method.connector.state_dict().items(), projector.state_dict().items(),
                                         strict=True):
        assert ours.dtype == torch.float32 and torch.equal(ours, theirs.float()), name  # trained: float32 master copy
    with torch.no_grad():
        _, _, layout, _ = method.build_inputs(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), ["a", "b"])
    assert layout["image"][1] - layout["image"][0] == 9  # one token per patch (3 x 3), no resampling
    assert {id(p) for p in method.connector.parameters()} <= {id(p) for p in method.parameter_groups()["new"]}
    before = [p.detach().clone() for p in method.connector.parameters()]
    train(method, split, TrainConfig(max_steps=2, batch_size=4, checkpoint=False, precision="fp32"), seed=0,
          progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, method.connector.parameters()))


def test_qwens_merged_patch_tokens_get_their_mrope_grid_positions(split, tmp_path: Path):
    from harness.methods.cir_lvlm.model import mrope_positions

    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 6, 7]])  # 2 text, 2 x 2 image, 1 text, padding, 1 text
    rows = mrope_positions(positions, (2, 6), 2)
    assert rows[:, 0].tolist() == [[0, 1, 2, 2, 2, 2, 4, 4, 5],   # temporal: the image's start
                                   [0, 1, 2, 2, 3, 3, 4, 4, 5],   # height: start + row
                                   [0, 1, 2, 3, 2, 3, 4, 4, 5]]   # width: start + column; then start + 2
    directory = stand_ins.save_qwen_vl(tmp_path / "q25", "qwen2_5_vl", torch.bfloat16)
    method = _lvlm({"lvlm_dir": str(directory)}, split, connector={"type": "checkpoint"})
    assert method.mrope_grid == 64 // 16 and isinstance(method.connector, torch.nn.Identity)
    summary = train(method, split, TrainConfig(max_steps=2, batch_size=4, checkpoint=False), seed=0, progress=False)
    assert summary.steps == 2 and all(torch.isfinite(torch.tensor(summary.loss_per_epoch)))
    queries = _lvlm({"lvlm_dir": str(directory)}, split)
    assert queries.mrope_grid is None  # learnable queries have no grid: 1-D positions


def test_the_checkpoint_connector_needs_an_lvlm_and_low_resolution_is_named(split, tmp_path: Path, capsys):
    backbone = {"vision_dir": str(stand_ins.save_clip(tmp_path / "clip", torch.float16)),
                "language_dir": str(stand_ins.save_llama(tmp_path / "llama", torch.bfloat16))}
    with pytest.raises(HarnessError, match="connector.type.*needs an LVLM checkpoint"):
        _lvlm(backbone, split, connector={"type": "checkpoint"})
    build_method("cir_lvlm", LVLM_PARAMS | {"backbone": {"source": "pretrained", **backbone}},
                 MethodContext(16, stand_ins.CORPUS))
    assert "dataset.image_size 16 is below the vision tower's 32 px" in capsys.readouterr().err
