"""The method registry and the method interface."""

from __future__ import annotations

import pytest
import torch

from harness.core.errors import HarnessError
from harness.methods.base import CIRMethod, MethodContext, TripletBatch, info_nce
from harness.methods.registry import build_method, get_method, list_methods, register_method

CONTEXT = MethodContext(image_size=32, corpus=["add a red circle", "remove the blue square"])
SMALL = {"start": "scratch", "embed_dim": 16, "vision_hidden": 32, "text_hidden": 32, "patch_size": 8,
         "vision_heads": 2, "text_heads": 2}


def test_reference_methods_are_registered_with_families():
    names = {info.name: info.family for info in list_methods()}
    assert names["image_only"] == names["text_only"] == "reference" and names["sum"] == "late_fusion"
    assert get_method("sum").defaults()["embed_dim"] == 256


def test_duplicate_name_refused():
    with pytest.raises(ValueError, match="already registered"):

        @register_method("sum", family="x", description="x")
        class Again(CIRMethod):
            pass


def test_typo_suggests_close_name():
    with pytest.raises(HarnessError, match="did you mean 'text_only'"):
        get_method("text_onyl")


@pytest.mark.parametrize("name", ["image_only", "text_only", "sum"])
def test_encoders_are_l2_normalised_and_loss_is_finite(name: str):
    torch.manual_seed(0)
    method = build_method(name, SMALL, CONTEXT)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    captions = ["add a red circle", "remove the blue square", "add a red circle", "unknown words here"]
    query = method.encode_query(images, captions)
    target = method.encode_target(images)
    assert query.shape == target.shape == (4, 16)
    assert torch.allclose(query.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(target.norm(dim=-1), torch.ones(4), atol=1e-5)
    loss = method.loss(TripletBatch(images, captions, images))
    assert torch.isfinite(loss)
    loss.backward()


def test_image_only_ignores_caption_and_text_only_ignores_image():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    image_only = build_method("image_only", SMALL, CONTEXT).eval()
    text_only = build_method("text_only", SMALL, CONTEXT).eval()
    with torch.no_grad():
        assert torch.equal(image_only.encode_query(images, ["add a red circle"] * 2),
                           image_only.encode_query(images, ["remove the blue square"] * 2))
        assert torch.equal(text_only.encode_query(images, ["add a red circle"] * 2),
                           text_only.encode_query(images.flip(0), ["add a red circle"] * 2))
    assert image_only.parameter_counts()["total"] < text_only.parameter_counts()["total"]  # no text tower built


def test_info_nce_prefers_matching_pairs():
    aligned = torch.nn.functional.normalize(torch.eye(4), dim=-1)
    shuffled = aligned[[1, 2, 3, 0]]
    assert info_nce(aligned, aligned, 0.1) < info_nce(aligned, shuffled, 0.1)
