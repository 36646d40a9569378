"""CLIP4Cir, Pic2Word and SEARLE on the shared dual-encoder backbone."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from harness.backbones.dual_encoder import DualEncoder
from harness.backbones.tokenization import train_lvlm_tokenizer
from harness.cli import app
from harness.data.cirr import load_cirr_split
from harness.evaluation.results import read_result
from harness.methods.base import ImageBatch, MethodContext
from harness.methods.clip4cir import Combiner
from harness.methods.registry import build_method, get_method
from harness.training.loop import TrainConfig, train, training_source

from .conftest import write_yaml

TINY = {"vision_hidden": 32, "vision_heads": 2, "language_hidden": 32, "language_heads": 2, "patch_size": 16}
STAGE0 = {"vision_steps": 4, "caption_steps": 0, "vision_batch_size": 16}
OTI = {"oti_images": 32, "oti_steps": 3, "oti_batch_size": 16}
IMAGES = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)


@pytest.fixture(scope="module")
def split(tiny_benchmark: Path):
    return load_cirr_split(tiny_benchmark, "train")


def _build(name: str, split, corpus: list[str] | None = None, **params):
    torch.manual_seed(0)
    corpus = [t.caption for t in split.triplets] if corpus is None else corpus
    context = MethodContext(64, corpus, train_split=split, dataset_key="baselines-test")
    return build_method(name, {"backbone": TINY, "stage0": STAGE0, **params}, context)


class _Untouchable(list):
    """Triplets that fail the test when anything reads them."""

    def __iter__(self):
        raise AssertionError("a zero-shot method read the training triplets")

    def __getitem__(self, index):
        raise AssertionError("a zero-shot method read the training triplets")

    def __len__(self):
        raise AssertionError("a zero-shot method read the training triplets")


def test_combiner_output_is_normalised_and_mixing_scalar_in_unit_interval():
    torch.manual_seed(0)
    combiner = Combiner(feature_dim=8, projection_dim=32, hidden_dim=64).eval()
    image, text = torch.randn(5, 8) * 3, torch.randn(5, 8) * 3
    fused = combiner(image, text)
    assert fused.shape == (5, 8)
    assert torch.allclose(fused.norm(dim=-1), torch.ones(5), atol=1e-5)
    _, weight = combiner.mixing(image, text)
    assert weight.shape == (5, 1) and bool(((weight > 0) & (weight < 1)).all())
    # lambda really mixes: with a zero learned branch the output is the lambda-weighted residual
    torch.nn.init.zeros_(combiner.output.weight)
    torch.nn.init.zeros_(combiner.output.bias)
    expected = torch.nn.functional.normalize(weight * text + (1 - weight) * image, dim=-1)
    assert torch.allclose(combiner(image, text), expected, atol=1e-5)


def test_clip4cir_tunes_encoders_then_only_the_combiner(split):
    method = _build("clip4cir", split, stage1_fraction=0.5)
    encoder_params = list(method.encoder.parameters())
    method.begin_step(0, 10)
    combiner = list(method.combiner.parameters())
    assert any(p.requires_grad for p in encoder_params) and not any(p.requires_grad for p in combiner)
    method.eval()
    with torch.no_grad():
        sum_query = method.encode_query(IMAGES, ["make it red"] * 3)
    method.begin_step(5, 10)
    assert not any(p.requires_grad for p in encoder_params) and all(p.requires_grad for p in combiner)
    with torch.no_grad():
        combined = method.encode_query(IMAGES, ["make it red"] * 3)
    assert not torch.allclose(sum_query, combined)  # stage 2 queries go through the Combiner
    d = method.encoder.feature_dim
    assert method.combiner.combiner[0].out_features == 8 * d
    assert method.combiner.text_projection[0].out_features == 4 * d
    counts = method.parameter_counts()
    assert counts["trainable"] == counts["total"] - 1  # every weight is trained in one stage; not the logit scale


def test_pseudo_token_is_spliced_at_the_placeholder(split):
    method = _build("pic2word", split)
    encoder = method.encoder
    ids, _, positions = encoder._tokenize(["a photo of * , make it red", "* then red"], placeholder="*")
    photo = encoder.tokenizer("a photo of", add_special_tokens=False)["input_ids"]
    assert positions == [1 + len(photo), 1]  # after [BOS] and the words before it
    assert int(ids[0, 0]) == encoder.tokenizer.bos_token_id
    # splicing the embedding of a real word reproduces the prompt with that word written out
    word = encoder.tokenizer("circle", add_special_tokens=False)["input_ids"]
    embedding = encoder.model.text_model.embeddings.token_embedding.weight[word[0]].detach()
    with torch.no_grad():
        spliced = encoder.prompt_features(["a photo of * , make it red", "* then red"], embedding.expand(2, -1))
        written = encoder.text_features(["a photo of circle , make it red", "circle then red"])
    assert torch.allclose(spliced, written, atol=1e-5)


def test_batched_tokenization_equals_tokenizing_one_text_at_a_time(split):
    """_tokenize encodes a batch in one tokenizer call: the ids, mask and placeholder positions
    must be those of encoding each text on its own (blank pieces, truncation, padding)."""
    encoder = _build("pic2word", split).encoder
    tok = encoder.tokenizer
    captions = [t.caption for t in split.triplets[:12]] + ["", "red " * 200]
    prompts = ["a photo of * , " + c for c in captions[:6]] + ["*", "* then red", "make it * ", "red " * 200 + "*"]
    for texts, placeholder in ((captions, None), (prompts, "*")):
        ids, mask, positions = encoder._tokenize(texts, placeholder)
        for row, text in enumerate(texts):
            head, tail = text.split(placeholder, 1) if placeholder else (text, "")
            head_ids = tok(head, add_special_tokens=False)["input_ids"] if head.strip() else []
            tail_ids = tok(tail, add_special_tokens=False)["input_ids"] if tail.strip() else []
            middle = [encoder._stand_in(placeholder)] if placeholder else []
            body = ([tok.bos_token_id] + head_ids + middle + tail_ids)[: encoder.max_length - 1] + [tok.eos_token_id]
            assert ids[row, : len(body)].tolist() == body and int(mask[row].sum()) == len(body)
            assert positions[row] == 1 + len(head_ids)
        assert ids.shape[1] == max(int(m.sum()) for m in mask)


def test_zero_shot_methods_never_read_captions_or_targets(split):
    pic2word = _build("pic2word", split)  # builds the shared stage-0 CLIP (a pretraining stand-in)
    blind = dataclasses.replace(split, triplets=_Untouchable())
    searle = _build("searle", blind, corpus=[], **OTI)  # OTI sees images (and scene descriptions) only
    config = TrainConfig(epochs=1, max_steps=2, batch_size=16, checkpoint=False)
    for method in (pic2word, searle):
        source = training_source(method, blind, config)
        batch = source.batch(torch.arange(16), "cpu")
        assert isinstance(batch, ImageBatch) and set(vars(batch)) == {"images", "names"}
        assert all(name in split.images for name in batch.names)
        summary = train(method, blind, config, seed=0, progress=False)
        assert summary.steps == 2
    assert len(searle.training_images(blind)) == 32  # phi is distilled on the OTI images
    # the step budget holds however few images there are: 5 steps = 2.5 passes over 32 images
    budget = train(searle, blind, TrainConfig(epochs=1, max_steps=5, batch_size=16, checkpoint=False), seed=0,
                   progress=False)
    assert (budget.steps, budget.epochs) == (5, 3)
    assert searle.statistics()["oti"]["images"] == 32


def test_supervised_flag_trains_textual_inversion_on_triplets(split):
    method = _build("searle", split, supervised=True)
    assert method.training_data == "triplets"
    before = [p.detach().clone() for p in method.phi.parameters()]
    train(method, split, TrainConfig(epochs=1, max_steps=2, batch_size=16, checkpoint=False), seed=0, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, method.phi.parameters(), strict=True))
    assert not any(p.requires_grad for p in method.encoder.parameters())  # CLIP stays frozen


def _saved_tiny_clip(tokenizer, vocab_size: int, directory: Path):
    """A tiny CLIPModel (width 32, 32 px images, 16-d features) saved with ``tokenizer`` into ``directory``."""
    from transformers import CLIPConfig, CLIPModel

    clip = CLIPModel(CLIPConfig(
        text_config={"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16))
    clip.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return clip


def test_pretrained_directory_loads_a_saved_clip(tmp_path: Path):

    torch.manual_seed(3)
    tokenizer = train_lvlm_tokenizer(["a photo of a red circle", "make it blue"])
    clip = _saved_tiny_clip(tokenizer, len(tokenizer), tmp_path / "clip")
    for name in ("clip4cir", "pic2word"):
        method = build_method(name, {"backbone": {"source": "pretrained", "vision_dir": str(tmp_path / "clip")}},
                              MethodContext(64, []))
        assert torch.equal(method.encoder.model.text_projection.weight, clip.text_projection.weight)
        with torch.no_grad():
            query = method.encode_query(IMAGES, ["make it blue"] * 3)
        assert query.shape == (3, 16) and torch.allclose(query.norm(dim=-1), torch.ones(3), atol=1e-5)
    loaded = DualEncoder.from_directory(tmp_path / "clip")
    assert loaded.image_size == 32 and loaded.token_width == 32 and loaded.feature_dim == 16


def test_registry_lists_the_baselines_with_family_and_paper():
    families = (("clip4cir", "late_fusion"), ("sum", "late_fusion"), ("sprc", "early_fusion"),
                ("cir_lvlm", "lvlm_encoder"),
                ("pic2word", "textual_inversion"), ("searle", "textual_inversion"), ("image_only", "reference"),
                ("text_only", "reference"))
    for name, family in families:
        info = get_method(name)
        assert info.family == family and (info.paper or family == "reference" or name == "sum")
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0
    for text in ("clip4cir", "pic2word", "searle", "stage1_fraction", "middle_dim", "oti_steps", "ICCV 2023",
                 "sprc  [early_fusion]",
                 "qformer.num_query_tokens", "rtc_weight", "align_weight", "backbone.blip2_dir", "ICLR 2024"):
        assert text in result.stdout


COMMON = f"backbone: {TINY}, stage0: {STAGE0}"
EXPERIMENT = f"""
experiment: baselines
dataset:
  name: synthetic
  synthetic: {{seed: 5, num_train: 160, num_val: 40, num_test: 8}}
train: {{epochs: 1, batch_size: 32, num_threads: 2}}
eval: {{batch_size: 64}}
grid:
  method:
    - {{name: clip4cir, params: {{{COMMON}}}}}
    - {{name: pic2word, params: {{{COMMON}}}}}
    - {{name: searle, params: {{{COMMON}, oti_images: 32, oti_steps: 2, oti_batch_size: 16}}}}
seeds: [0]
"""


def test_each_baseline_trains_and_evaluates_end_to_end(tmp_path: Path):
    config = write_yaml(tmp_path / "baselines.yaml", EXPERIMENT)
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    results = {r.method: r for r in map(read_result, (tmp_path / "out" / "baselines" / "runs").glob("*/result.json"))}
    assert sorted(results) == ["clip4cir", "pic2word", "searle"]
    for r in results.values():
        assert r.train["steps"] >= 1 and 0 <= r.metrics["recall_at_50"] <= 100
        assert "after post_layernorm" in r.provenance["image_embedding"] and r.provenance["image"]["size"] == 64
    assert results["pic2word"].provenance["query_prompt"] == "a photo of * , {caption}"  # textual inversion
    assert results["searle"].provenance["pseudo_word"] == "$"


def test_references_start_from_the_shared_stage0_clip(split):
    clip4cir = _build("clip4cir", split)
    image_only, text_sum = _build("image_only", split), _build("sum", split)
    name = "vision_model.encoder.layers.0.mlp.fc1.weight"
    shared = clip4cir.encoder.model.state_dict()[name]
    assert torch.equal(image_only.encoder.model.state_dict()[name], shared)
    assert torch.equal(text_sum.encoder.model.state_dict()[name], shared)
    # image-only counts (and trains) only the image side of the CLIP
    assert image_only.parameter_counts()["total"] < text_sum.parameter_counts()["total"]
    assert not any(p.requires_grad for p in image_only.encoder.text_tower.parameters())


def test_dual_encoders_and_default_cir_lvlm_share_one_stage0_clip():
    from harness.backbones.params import BackboneParams
    from harness.methods.cir_lvlm.model import CIRLVLMParams, stage0_request
    from harness.pretraining.stage0 import Stage0Params, clip_request

    shared = clip_request("synthetic-x", BackboneParams(), Stage0Params())
    assert shared.vision_key() == stage0_request(CIRLVLMParams(), "synthetic-x").vision_key()


def test_pretrain_builds_what_each_run_starts_from(tmp_path: Path):
    stage0 = {**STAGE0, "caption_steps": 2, "instruct_steps": 2}
    lvlm = ("{name: cir_lvlm, params: {backbone: " + str(TINY) + ", stage0: " + str(stage0)
            + ", connector: {num_queries: 4, heads: 2}}}")
    config = write_yaml(tmp_path / "pretrain.yaml", EXPERIMENT.replace(
        "    - {name: pic2word", f"    - {lvlm}\n    - {{name: image_only, params: {{start: scratch}}}}\n    - "
                                 f"{{name: pic2word"))
    result = CliRunner().invoke(app, ["pretrain", str(config)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2  # one CLIP for clip4cir, pic2word and searle; one LVLM stage 0; none for scratch
    assert lines[0].startswith("stage 0 (CLIP)") and lines[1].startswith("stage 0 (LVLM)")
    again = CliRunner().invoke(app, ["pretrain", str(config)])
    assert again.stdout.count("(cached") == 2


def test_pseudo_word_splicing_with_a_real_clip_tokenizer(tmp_path: Path):
    """CLIP's tokenizer maps unknown text to <|endoftext|>, where CLIP pools: the placeholder's
    stand-in must be an ordinary token, and the prompt must still pool at its true end."""
    import json
    import string

    from transformers import CLIPTokenizer

    chars = [*string.ascii_lowercase, ",", "*", "$"]
    vocab = {c: i for i, c in enumerate(chars)} | {f"{c}</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    torch.manual_seed(4)
    clip = _saved_tiny_clip(tokenizer, len(vocab), tmp_path / "clip")
    encoder = DualEncoder.from_directory(tmp_path / "clip")
    assert encoder._stand_in("*") == vocab["*</w>"] != tokenizer.eos_token_id
    embedding = clip.text_model.embeddings.token_embedding.weight[vocab["x</w>"]].detach()
    with torch.no_grad():
        spliced = encoder.prompt_features(["a photo of * , red", "* ,"], embedding.expand(2, -1))
        written = encoder.text_features(["a photo of x , red", "x ,"])
        different = encoder.prompt_features(["a photo of * , red", "* ,"], torch.zeros(2, 32))
    assert torch.allclose(spliced, written, atol=1e-5)
    assert not torch.allclose(spliced, different, atol=1e-3)  # the pooled feature sees the pseudo-word


def test_searle_averages_both_caption_orders(split):
    from harness.data.triplet import Triplet

    method = _build("searle", split, supervised=True).eval()
    two = Triplet(0, "x", "ignored", "y", captions=("is red.", "has a star"))
    text = method.query_text(two)
    assert text.split("\x1e") == ["is red and has a star", "has a star and is red"]
    with torch.no_grad():
        both = method.encode_query(IMAGES[:1], [text])
        first = method.encode_query(IMAGES[:1], ["is red and has a star"])
        second = method.encode_query(IMAGES[:1], ["has a star and is red"])
    expected = torch.nn.functional.normalize(first + second, dim=-1)
    assert torch.allclose(both, expected, atol=1e-5)


def test_clip4cir_training_updates_the_encoders_in_stage_1_and_the_combiner_in_stage_2(split):
    method = _build("clip4cir", split, stage1_fraction=0.5)
    encoder = {n: p.detach().clone() for n, p in method.encoder.named_parameters() if "logit_scale" not in n}
    combiner = {n: p.detach().clone() for n, p in method.combiner.named_parameters()}
    config = TrainConfig(epochs=1, max_steps=4, batch_size=16, checkpoint=False)
    train(method, split, config, seed=0, progress=False)
    moved_encoder = [n for n, p in method.encoder.named_parameters() if n in encoder and not torch.equal(p, encoder[n])]
    moved_combiner = [n for n, p in method.combiner.named_parameters() if not torch.equal(p, combiner[n])]
    assert moved_encoder and len(moved_combiner) == len(combiner)  # both stages really trained their part
    assert bool(method.combiner_trained)


def test_searle_resumed_from_a_checkpoint_ends_where_an_uninterrupted_run_ends(split, tmp_path: Path):
    """SEARLE draws concepts from its own generator; the checkpoint keeps it (training_state)."""
    from harness.training.loop import seed_everything

    config = TrainConfig(epochs=1, max_steps=6, batch_size=16)  # 32 OTI images: 2 steps a pass, 3 passes

    def fresh():
        seed_everything(0)
        return _build("searle", split, **OTI)

    whole = fresh()
    train(whole, split, config, seed=0, checkpoint_dir=tmp_path / "whole", progress=False)

    def stop_after_first_pass(epoch, method):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(fresh(), split, config, seed=0, checkpoint_dir=tmp_path / "cut", progress=False,
              on_epoch=stop_after_first_pass)
    resumed = fresh()
    summary = train(resumed, split, config, seed=0, checkpoint_dir=tmp_path / "cut", progress=False)
    assert summary.resumed_from_step == 2
    for (name, a), (_, b) in zip(whole.phi.state_dict().items(), resumed.phi.state_dict().items()):
        assert torch.equal(a, b), name


def test_gallery_embeddings_of_a_frozen_encoder_are_cached_and_invalidated(split, tmp_path: Path, monkeypatch):
    """Pic2Word's target side is stage 0's frozen CLIP: a second evaluation reads the gallery's
    embeddings from the cache instead of encoding them; other weights, another image size or
    another split give another key."""
    import os

    from harness.evaluation.embedding_cache import embedding_key
    from harness.evaluation.evaluate import evaluate
    from harness.evaluation.protocol import EvalConfig

    monkeypatch.setenv("CIR_HARNESS_CACHE", os.environ["CIR_HARNESS_CACHE"])
    method = _build("pic2word", split)
    calls = {"n": 0}
    original = method.encode_target

    def counted(images):
        calls["n"] += 1
        return original(images)

    monkeypatch.setattr(method, "encode_target", counted)
    config = EvalConfig(batch_size=64, warmup_batches=0, latency_queries=0, diagnostic_queries=0, examples=0)
    first = evaluate(method, split, config, progress=False)
    encoded = calls["n"]
    second = evaluate(method, split, config, progress=False)
    assert encoded > 0 and calls["n"] == encoded  # nothing of the gallery encoded again
    assert first.timings["gallery_from_cache"] == 0.0 and second.timings["gallery_from_cache"] == 1.0
    assert second.metrics == first.metrics
    key = embedding_key(method, split, torch.device("cpu"))
    with torch.no_grad():
        method.encoder.model.visual_projection.weight.add_(1e-3)  # other weights: another key
    assert embedding_key(method, split, torch.device("cpu")) != key
    resized = dataclasses.replace(split, images=type(split.images)(split.images.paths, 32))
    assert embedding_key(method, resized, torch.device("cpu")) not in (key, None)
    assert embedding_key(method, dataclasses.replace(split, split="val"), torch.device("cpu")) != key
    method.encoder.model.visual_projection.weight.requires_grad_(True)  # a trained target side: no caching
    assert embedding_key(method, split, torch.device("cpu")) is None
    assert embedding_key(_build("sum", split), split, torch.device("cpu")) is None


def test_batch_rows_are_the_batches_the_loop_draws(split, monkeypatch):
    """`harness bench` times bare steps on batch_rows: they must be the loop's own batches, in
    order, across a pass boundary (192 queries / 64 = 3 batches per pass; 5 steps)."""
    from harness.training.loop import TripletSource, batch_rows

    drawn: list[torch.Tensor] = []
    original = TripletSource.batch

    def recording(self, rows, device):
        drawn.append(rows.clone())
        return original(self, rows, device)

    monkeypatch.setattr(TripletSource, "batch", recording)
    config = TrainConfig(max_steps=5, batch_size=64, checkpoint=False, precision="fp32")
    train(_build("image_only", split), split, config, seed=4, progress=False)
    planned = batch_rows(len(split.triplets), config, 4, 5)
    assert len(drawn) == len(planned) == 5
    assert all(torch.equal(a, b) for a, b in zip(drawn, planned, strict=True))
    assert not torch.equal(torch.sort(planned[0]).values, torch.sort(planned[3]).values)  # a new pass, a new order


def test_searles_oti_cache_key_follows_the_images_it_may_draw_from(split):
    """A store with images dropped as missing (allow_missing_images) inverts other images: another key."""
    import dataclasses

    from harness.data.images import ImageStore
    from harness.methods.searle import _oti_key

    method = _build("searle", split, **OTI)
    context = MethodContext(64, [], train_split=split, dataset_key="baselines-test")
    kept = dict(list(split.images.paths.items())[1:])
    fewer = dataclasses.replace(split, images=ImageStore(kept, split.images.image_size))
    assert _oti_key(method, context) != _oti_key(method, dataclasses.replace(context, train_split=fewer))
    assert _oti_key(method, context) == _oti_key(method, dataclasses.replace(context, corpus=["other"]))
