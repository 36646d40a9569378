"""SPRC: the fusion pass reads image and caption, the second pass no image, three losses that
reach their parameters, a pretrained BLIP-2 retrieval directory, and a short train + eval."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from harness.data.cirr import load_cirr_split
from harness.evaluation.evaluate import evaluate
from harness.evaluation.protocol import EvalConfig
from harness.methods.base import MethodContext, TripletBatch
from harness.methods.registry import build_method
from harness.methods.sprc import Sprc
from harness.pretraining.blip2_stage1 import QFormerPretraining, QFormerWarmStart, itm_loss
from harness.training.loop import TrainConfig, train
from tests import stand_ins

TINY = {"vision_hidden": 32, "vision_heads": 2, "language_hidden": 32, "language_heads": 2, "patch_size": 16}
STAGE0 = {"vision_steps": 4, "caption_steps": 0, "instruct_steps": 0, "vision_batch_size": 16}
QFORMER = {"hidden": 32, "heads": 2, "num_query_tokens": 4, "embed_dim": 16}
PRETRAINING = {"steps": 3, "batch_size": 8}
PRETRAINING_ITM = QFormerPretraining(steps=3, batch_size=8, itm=True)


@pytest.fixture(scope="module")
def split(tiny_benchmark: Path):
    return load_cirr_split(tiny_benchmark, "train")


def _sprc(split, **params) -> Sprc:
    torch.manual_seed(0)
    context = MethodContext(64, [t.caption for t in split.triplets], train_split=split, dataset_key="sprc-test")
    settings = {"backbone": TINY, "stage0": STAGE0, "qformer": QFORMER, "qformer_pretraining": PRETRAINING, **params}
    return build_method("sprc", settings, context)  # type: ignore[return-value]


def _images(count: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_the_fusion_pass_reads_both_the_image_and_the_caption(split):
    method = _sprc(split).eval()
    images, other = _images(2, 0), _images(2, 1)
    captions = ["make it red", "add a small blue circle"]
    with torch.no_grad():
        prompts, _, _ = method.fuse(images, captions)
        assert prompts.shape == (2, 4, 32)
        assert not torch.allclose(prompts, method.fuse(other, captions)[0], atol=1e-4)  # another image
        assert not torch.allclose(prompts, method.fuse(images, captions[::-1])[0], atol=1e-4)  # another caption


def test_the_second_pass_sees_no_image(split):
    method = _sprc(split).eval()
    cross = [m for name, m in method.backbone.qformer.qformer.named_modules() if name.endswith("crossattention")]
    assert cross, "the Q-Former has cross-attention layers"
    calls: list[str] = []
    hooks = [m.register_forward_hook(lambda *_: calls.append("cross")) for m in cross]
    images = _images(2, 2)
    with torch.no_grad():
        prompts, ids, mask = method.fuse(images, ["make it red", "remove the square"])
        assert len(calls) == len(cross)  # the fusion pass: each cross-attention layer once
        calls.clear()
        query = method.compose(prompts, ids, mask)
        assert calls == []  # the second pass: none
        assert torch.equal(query, method.encode_query(images, ["make it red", "remove the square"]))
    for hook in hooks:
        hook.remove()


def test_targets_are_several_normalised_vectors_and_scored_by_their_best(split):
    method = _sprc(split).eval()
    assert method.scoring == "max_similarity"
    with torch.no_grad():
        targets = method.encode_target(_images(3, 3))
        query = method.encode_query(_images(1, 4), ["make it green"])
    assert targets.shape == (3, 4, 16)
    assert torch.allclose(targets.norm(dim=-1), torch.ones(3, 4), atol=1e-5)
    assert torch.allclose(query.norm(dim=-1), torch.ones(1), atol=1e-5)


def test_each_loss_is_finite_and_its_gradient_reaches_its_parameters(split):
    method = _sprc(split).train()
    batch = TripletBatch(_images(4, 5), ["make it red", "add a circle", "remove it", "swap them"], _images(4, 6))
    terms = method.loss_terms(method.loss_inputs(batch))
    assert set(terms) == {"itc", "rtc", "align"}
    reached = {
        "itc": [method.backbone.qformer.query_tokens, method.backbone.qformer.text_projection.weight,
                method.backbone.qformer.vision_projection.weight, method.temperature],
        "rtc": [method.prompt_tokens, method.backbone.qformer.text_projection.weight, method.temperature],
        "align": [method.backbone.qformer.query_tokens],
    }
    for name, loss in terms.items():
        assert torch.isfinite(loss), name
        grads = torch.autograd.grad(loss, reached[name], retain_graph=True, allow_unused=True)
        assert all(g is not None and bool(g.abs().sum() > 0) for g in grads), name
    # align pulls the fused prompts towards the learned ones, never the learned ones (detached)
    assert torch.autograd.grad(terms["align"], [method.prompt_tokens], retain_graph=True, allow_unused=True)[0] is None
    assert not any(p.requires_grad for p in method.backbone.tower.parameters())  # ViT frozen, as SPRC's


def test_loss_weights_compose_the_total(split):
    method = _sprc(split, rtc_weight=0.4, align_weight=0.0).train()
    batch = TripletBatch(_images(3, 7), ["make it red", "add a circle", "remove it"], _images(3, 8))
    torch.manual_seed(1)
    inputs = method.loss_inputs(batch)
    assert "fused_mean" not in inputs
    terms = method.loss_terms(inputs)
    assert torch.allclose(method.loss_from(inputs), terms["itc"] + 0.4 * terms["rtc"])


def test_the_qformer_stage0_is_cached_and_reused(split):
    from harness.methods.registry import get_method

    params = get_method("sprc").params.model_validate(
        {"backbone": TINY, "stage0": STAGE0, "qformer": QFORMER, "qformer_pretraining": PRETRAINING})
    [start] = Sprc.warm_starts(params, "sprc-test")
    first = _sprc(split).state_dict()
    assert start.built()
    report = json.loads((start.directory() / "qformer.json").read_text())
    assert report["itc"]["last_loss"] is not None and report["images"] > 0
    with pytest.MonkeyPatch.context() as patch:  # a second method reads the cache: building again would fail
        patch.setattr(QFormerWarmStart, "_build", lambda *_: (_ for _ in ()).throw(AssertionError("built again")))
        second = _sprc(split).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_itm_pretraining_samples_only_non_matching_negatives_and_trains_the_fusion_pass(split):
    method = _sprc(split).train()
    qformer, head = method.backbone.qformer, torch.nn.Linear(32, 2)
    features = method.backbone.image_features(_images(4, 11))
    ids, mask = method.backbone.tokenize(["a red circle", "a blue square", "a red circle", "two green stars"])
    sampled: list[torch.Tensor] = []
    real_multinomial = torch.multinomial
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "multinomial", lambda w, *a, **k: sampled.append(w) or real_multinomial(w, *a, **k))
        loss = itm_loss(qformer, head, features, ids, mask, torch.zeros(4, 4), torch.Generator().manual_seed(0))
    text_to_image, image_to_text = sampled
    matching = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    for weights in (text_to_image, image_to_text):  # rows 0 and 2 share their text: never each other's negative
        assert bool((weights[matching] < 1e-9).all()) and bool((weights[~matching] > 0.1).all())
    assert torch.isfinite(loss)
    grads = torch.autograd.grad(loss, [head.weight, qformer.query_tokens], allow_unused=True)
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads)


def test_itm_pretraining_is_its_own_cache_entry_and_itc_alone_keeps_its_key(split):
    from harness.methods.registry import get_method

    params = get_method("sprc").params.model_validate(
        {"backbone": TINY, "stage0": STAGE0, "qformer": QFORMER, "qformer_pretraining": PRETRAINING})
    [itc] = Sprc.warm_starts(params, "sprc-test")
    before_itm = {"version": 1, "clip": itc.clip.vision_key(), "sizes": itc.sizes.model_dump(),  # the key's blob then
                  "pretraining": {"steps": 3, "batch_size": 8, "lr": 1e-3, "temperature": 0.07}}
    old_key = "qformer-" + hashlib.sha256(json.dumps(before_itm, sort_keys=True).encode()).hexdigest()[:16]
    assert itc.key() == old_key  # caches built before ITM existed stay valid
    [both] = Sprc.warm_starts(params.model_copy(update={"qformer_pretraining": PRETRAINING_ITM}), "sprc-test")
    assert both.key() != itc.key()
    method = _sprc(split, qformer_pretraining=PRETRAINING_ITM.model_dump())
    report = json.loads((both.directory() / "qformer.json").read_text())
    assert report["objective"] == "itc+itm" and report["itc"]["last_loss"] is not None
    assert not torch.equal(method.backbone.qformer.query_tokens, _sprc(split).backbone.qformer.query_tokens)


def test_the_temperature_starts_where_the_qformer_pretraining_left_it(split):
    method = _sprc(split)
    [start] = Sprc.warm_starts(method.params, "sprc-test")
    learned = json.loads((start.directory() / "qformer.json").read_text())["temperature"]
    assert learned != pytest.approx(0.07) and float(method.temperature) == pytest.approx(learned)
    assert float(_sprc(split, temperature=0.05).temperature) == pytest.approx(0.05)  # an explicit value wins


def test_a_broken_qformer_report_in_the_cache_is_one_line_naming_it(split):
    from harness.core.errors import HarnessError

    [start] = Sprc.warm_starts(_sprc(split).params, "sprc-test")
    report = start.directory() / "qformer.json"
    kept = report.read_bytes()
    try:
        report.write_text("{not json")
        for read in (lambda: _sprc(split), lambda: start.summary(cached=True)):
            with pytest.raises(HarnessError, match="qformer.json") as error:
                read()
            assert "delete" in str(error.value) and "\n" not in str(error.value)
    finally:
        report.write_bytes(kept)


def test_pretrained_loads_a_saved_blip2_retrieval_model_and_embeds_a_query(tmp_path: Path, split):
    """bf16 weights: the frozen ViT computes in them, what trains is float32."""
    directory = stand_ins.save_blip2_retrieval(tmp_path / "blip2-itm-tiny", torch.bfloat16)
    method = _sprc(split, backbone={"source": "pretrained", "blip2_dir": str(directory)}).eval()
    assert Sprc.warm_starts(method.params, "sprc-test") == []
    with torch.no_grad():
        query = method.encode_query(_images(2, 9), ["make the triangle larger", "remove the blue square"])
        targets = method.encode_target(_images(3, 10))
    assert query.shape == (2, 16) and targets.shape == (3, 6, 16)
    assert torch.isfinite(query).all() and torch.isfinite(targets).all()
    assert method.backbone.tower.model.embeddings.patch_embedding.weight.dtype == torch.bfloat16  # frozen, as shipped
    assert method.backbone.qformer.query_tokens.dtype == torch.float32  # trained in float32
    assert float(method.temperature) == pytest.approx(0.07)  # the checkpoint keeps no temperature: SPRC's initial one


def test_pretrained_without_a_directory_is_a_clear_error(split):
    from harness.core.errors import HarnessError

    with pytest.raises(HarnessError, match="blip2_dir"):
        _sprc(split, backbone={"source": "pretrained"})


def test_a_short_train_and_evaluation_runs(tiny_benchmark: Path, split):
    method = _sprc(split)
    summary = train(method, split, TrainConfig(max_steps=2, batch_size=8, checkpoint=False), seed=0, progress=False)
    assert summary.steps == 2
    val = load_cirr_split(tiny_benchmark, "val")
    evaluation = evaluate(method, val, EvalConfig(batch_size=16, max_queries=12, warmup_batches=0,
                                                  latency_queries=2, diagnostic_queries=0), progress=False)
    assert evaluation.num_queries == 12 and 0 <= evaluation.metrics["recall_at_1"] <= 100
    assert all(len(entry["top"]) > 0 for entry in evaluation.rankings)


EXPERIMENT = f"""
experiment: sprc
dataset:
  name: synthetic
  synthetic: {{seed: 5, num_train: 160, num_val: 40, num_test: 8}}
method:
  name: sprc
  params: {{backbone: {TINY}, stage0: {STAGE0}, qformer: {QFORMER}, qformer_pretraining: {PRETRAINING}}}
train: {{max_steps: 3, batch_size: 16, num_threads: 2}}
eval: {{batch_size: 32}}
seeds: [0]
"""


def test_harness_pretrain_run_and_score_a_multi_vector_method(tmp_path: Path):
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.evaluation.results import read_result

    from .conftest import write_yaml

    config = write_yaml(tmp_path / "sprc.yaml", EXPERIMENT)
    pretrain = CliRunner().invoke(app, ["pretrain", str(config)])
    assert pretrain.exit_code == 0, pretrain.output
    assert pretrain.stdout.strip().startswith("stage 0 (Q-Former)")
    run = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / "out")])
    assert run.exit_code == 0, run.output
    [run_dir] = (tmp_path / "out" / "sprc" / "runs").iterdir()
    assert read_result(run_dir / "result.json").train["steps"] == 3
    provenance = read_result(run_dir / "result.json").provenance  # early fusion: what the Q-Former reads and gives
    assert "query outputs" in provenance["target_embedding"] and provenance["vision"]["image"]["size"] == 64
    score = CliRunner().invoke(app, ["score", str(run_dir)])
    assert score.exit_code == 0, score.output
    assert "matches result.json" in score.stdout
