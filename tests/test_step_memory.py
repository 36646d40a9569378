"""Memory settings of the shared loop change how a step is computed, not what: micro-batches with
cached in-batch negatives (GradCache) and gradient checkpointing give the plain run's losses,
weights and metrics up to float rounding; group learning rates; checkpoints every N steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.core.errors import HarnessError
from harness.data.cirr import load_cirr_split
from harness.evaluation.evaluate import evaluate
from harness.evaluation.protocol import EvalConfig
from harness.methods.base import CIRMethod, MethodContext
from harness.methods.registry import build_method
from harness.training.activation_memory import SavedTensors, enable_gradient_checkpointing
from harness.training.loop import TrainConfig, build_optimizer, train
from tests import stand_ins

TINY_LVLM = {"backbone": {"vision_hidden": 32, "vision_heads": 2, "language_hidden": 32, "language_heads": 2},
             "connector": {"num_queries": 4, "heads": 2}, "stage0": {"enabled": False}, "embed_dim": 16}
PLAIN = TrainConfig(epochs=1, max_steps=4, batch_size=16, precision="fp32", lr=2e-3, checkpoint=False)


@pytest.fixture(scope="module")
def split(tiny_benchmark: Path):
    return load_cirr_split(tiny_benchmark, "train")


@pytest.fixture(scope="module")
def val(tiny_benchmark: Path):
    return load_cirr_split(tiny_benchmark, "val")


@pytest.fixture(scope="module")
def qwen2_vl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stand_ins.save_qwen_vl(tmp_path_factory.mktemp("qwen2_vl"), "qwen2_vl", torch.bfloat16)


def _build(name: str, split, **params) -> CIRMethod:
    """The method with dropout off: micro-batches draw other dropout masks than one batch does
    (harness.training.grad_cache), which these comparisons are not about."""
    torch.manual_seed(0)
    context = MethodContext(64, [t.caption for t in split.triplets], train_split=split, dataset_key="tiny")
    method = build_method(name, params, context)
    for module in method.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return method


def _trained(name: str, split, config: TrainConfig, **params) -> tuple[CIRMethod, list[float]]:
    method = _build(name, split, **params)
    summary = train(method, split, config, seed=0, progress=False)
    return method, summary.loss_per_epoch


CASES = {
    "cir_lvlm (tiny, pool with standardised selection)": ("cir_lvlm", TINY_LVLM),
    "cir_lvlm (tiny, target soft prompt, learned temperature)":
        ("cir_lvlm", TINY_LVLM | {"target_soft_prompt": True, "learnable_temperature": True}),
    "sum (scratch towers)": ("sum", {"start": "scratch", "embed_dim": 16, "vision_hidden": 32, "text_hidden": 32,
                                      "vision_heads": 2, "text_heads": 2}),
}


@pytest.mark.parametrize("checkpointing", [False, True], ids=["micro-batches", "micro-batches+checkpointing"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_micro_batches_give_the_whole_batch_step(case: str, checkpointing: bool, split, val):
    name, params = CASES[case]
    plain, plain_losses = _trained(name, split, PLAIN, **params)
    micro, micro_losses = _trained(name, split, PLAIN.model_copy(
        update={"micro_batch_size": 5, "gradient_checkpointing": checkpointing}), **params)
    assert micro_losses == pytest.approx(plain_losses, rel=1e-5)
    # AdamW moves a weight whose gradient is ~0 by up to lr per step whatever the gradient's sign,
    # so rounding-level differences of such gradients show as weight differences below lr / 2
    # A key projection's bias adds q.b_k to every score of a query, which softmax cancels: its true
    # gradient is exactly 0, so AdamW turns pure rounding noise into lr-sized steps of either sign
    # (0.55 lr apart on one 2-core VM); it is left out, the metrics below still cover the model.
    for (key, a), (_, b) in zip(plain.state_dict().items(), micro.state_dict().items(), strict=True):
        if not key.endswith("k_proj.bias"):
            assert torch.allclose(a.float(), b.float(), atol=PLAIN.lr / 2), key
    config = EvalConfig(batch_size=64, device="cpu", precision="fp32")
    assert evaluate(micro, val, config, progress=False).metrics == evaluate(plain, val, config, progress=False).metrics


def test_gradient_checkpointing_and_micro_batches_leave_a_lora_run_unchanged(qwen2_vl: Path, split, val):
    """A Qwen2-VL stand-in (bf16 weights, LoRA): checkpointing recomputes the LM and vision
    layers; with micro-batches on top the losses and metrics stay the plain run's."""
    params = {"backbone": {"source": "pretrained", "lvlm_dir": str(qwen2_vl), "lora_rank": 4},
              "connector": {"num_queries": 4, "heads": 2}, "embed_dim": 16}
    plain, plain_losses = _trained("cir_lvlm", split, PLAIN, **params)
    checkpointed, checkpointed_losses = _trained("cir_lvlm", split, PLAIN.model_copy(
        update={"gradient_checkpointing": True}), **params)
    assert checkpointed_losses == plain_losses  # the same kernels on the same shapes, recomputed
    both, both_losses = _trained("cir_lvlm", split, PLAIN.model_copy(update={"gradient_checkpointing": True,
                                                                            "micro_batch_size": 8}), **params)
    # bf16 LM: other shapes, other rounding (measured: rel 1.006e-4 with the chat frame on, bf16 eps 7.8e-3)
    assert both_losses == pytest.approx(plain_losses, rel=2e-4)
    batch = _batch(val, 16)
    # bf16 rounding of other micro-batch shapes, carried through training: cosine >= 0.9980 measured
    # on CI's AMD EPYC (>= 0.999 elsewhere); checkpointing alone recomputes the same kernels
    with torch.no_grad():
        for method, floor in ((checkpointed, 0.9999), (both, 0.995)):
            cosine = (method.encode_query(batch.reference_images, batch.captions)
                      * plain.encode_query(batch.reference_images, batch.captions)).sum(-1)
            assert float(cosine.min()) > floor


def test_gradient_checkpointing_keeps_less_for_backward(qwen2_vl: Path, split):
    """What the saved-tensor count sees: the layers' inner activations are no longer kept."""
    params = {"backbone": {"source": "pretrained", "lvlm_dir": str(qwen2_vl), "lora_rank": 4},
              "connector": {"num_queries": 4, "heads": 2}, "embed_dim": 16}
    batch = _batch(split, 8)
    kept = {}
    for checkpointing in (False, True):
        method = _build("cir_lvlm", split, **params).train()
        if checkpointing:
            assert enable_gradient_checkpointing(method) == 1  # the LM (its LoRA); the vision tower is frozen
        with SavedTensors(method) as saved:
            method.loss(batch)
        kept[checkpointing] = saved.bytes
    assert kept[True] < 0.6 * kept[False]


def test_a_method_that_overrides_loss_cannot_be_micro_batched(split):
    class Whole(type(_build("sum", split, **CASES["sum (scratch towers)"][1]))):
        def loss(self, batch):
            return super().loss(batch)

    Whole.method_name = "whole"
    method = Whole(Whole.Params.model_validate(CASES["sum (scratch towers)"][1]),
                   MethodContext(64, [t.caption for t in split.triplets], train_split=split))
    with pytest.raises(HarnessError, match="loss_inputs and loss_from"):
        train(method, split, PLAIN.model_copy(update={"micro_batch_size": 4}), seed=0, progress=False)


def test_group_learning_rates(split):
    method = _build("cir_lvlm", split, **TINY_LVLM)
    optimizer = build_optimizer(method, PLAIN.model_copy(update={"group_lr": {"new": 1e-3, "language_model": 1e-5}}))
    rates = {group["group"]: group["lr"] for group in optimizer.param_groups}
    assert rates == {"new": 1e-3, "language_model": 1e-5, "vision": PLAIN.lr}  # not named: lr
    connector = {id(p) for p in method.connector.parameters()}
    [new] = [g for g in optimizer.param_groups if g["group"] == "new"]
    assert connector <= {id(p) for p in new["params"]}
    with pytest.raises(HarnessError, match="train.group_lr.*adapters.*one of its groups: language_model, new, vision"):
        build_optimizer(method, PLAIN.model_copy(update={"group_lr": {"adapters": 1e-4}}))
    # a run with group rates trains the groups at their own rates (the LM's barely moves)
    before = [p.detach().clone() for p in method.language_model.parameters()]
    train(method, split, PLAIN.model_copy(update={"group_lr": {"language_model": 1e-12}}), seed=0, progress=False)
    assert all(torch.allclose(a, b, atol=1e-8) for a, b in zip(before, method.language_model.parameters()))


def test_a_run_cut_between_epochs_resumes_from_its_step_checkpoint(split, tmp_path: Path):
    """checkpoint_every: the run dies at step 3 of a 5-step pass, after the step-2 checkpoint; the
    resumed run redraws the pass's order, skips its first two batches and ends where an
    uninterrupted run ends, bitwise."""
    params = CASES["sum (scratch towers)"][1]
    config = TrainConfig(epochs=2, batch_size=32, precision="fp32", checkpoint_every=2)
    whole, whole_losses = _trained("sum", split, config.model_copy(update={"checkpoint": False}), **params)

    class Died(Exception):
        pass

    def dies_at_step_3(step: int, total: int) -> None:
        if step == 3:
            raise Died

    cut = _build("sum", split, **params)
    cut.begin_step = dies_at_step_3  # type: ignore[method-assign]
    with pytest.raises(Died):
        train(cut, split, config, seed=0, checkpoint_dir=tmp_path, progress=False)
    resumed = _build("sum", split, **params)
    summary = train(resumed, split, config, seed=0, checkpoint_dir=tmp_path, progress=False)
    assert summary.resumed_from_step == 2
    assert summary.loss_per_epoch == whole_losses
    for (key, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), key


def _batch(split, size: int):
    from harness.methods.base import TripletBatch

    triplets = [t for t in split.triplets if t.target is not None][:size]
    return TripletBatch(split.images.load([t.reference for t in triplets]), [t.caption for t in triplets],
                        split.images.load([t.target for t in triplets]))


def test_the_attention_kernel_is_a_backbone_setting_outside_the_run_id(split, tmp_path: Path):
    from harness.experiments.config import RunConfig

    params = TINY_LVLM | {"backbone": TINY_LVLM["backbone"] | {"attn_implementation": "eager"}}
    method = _build("cir_lvlm", split, **params)
    from transformers import PreTrainedModel

    models = [m for m in method.modules() if isinstance(m, PreTrainedModel)]
    assert models and all(m.config._attn_implementation == "eager" for m in models)
    with pytest.raises(HarnessError, match="backbone.attn_implementation: .*cannot use flash_attention_2"):
        _build("cir_lvlm", split, **TINY_LVLM | {"backbone": TINY_LVLM["backbone"] | {"attn_implementation":
                                                                                       "flash_attention_2"}})
    run = {"experiment": "x", "method": {"name": "cir_lvlm", "params": TINY_LVLM}}
    eager = run | {"method": {"name": "cir_lvlm", "params": params}}
    assert RunConfig.model_validate(run).run_id() == RunConfig.model_validate(eager).run_id()
