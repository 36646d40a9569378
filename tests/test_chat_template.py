"""CIR-LVLM frames its instruction with the checkpoint's chat template and vision delimiters
(``chat_template``), as an instruction-tuned LVLM has always read one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.core.errors import HarnessError
from harness.methods.base import MethodContext
from harness.methods.cir_lvlm.chat import chat_frame
from harness.methods.registry import build_method
from tests import stand_ins

PARAMS = {"embed_dim": 16, "connector": {"num_queries": 4, "heads": 2}}


def _lvlm(directory: Path, **params):
    torch.manual_seed(0)
    return build_method("cir_lvlm",
                        PARAMS | params | {"backbone": {"source": "pretrained", "lvlm_dir": str(directory)}},
                        MethodContext(48, stand_ins.CORPUS))


def _segments(method, captions: list[str] | None) -> dict[str, tuple[int, int]]:
    images = torch.zeros(len(captions or ["x"]), 3, 48, 48, dtype=torch.uint8)
    return method.build_inputs(images, captions)[2]


def _text(method, ids: list[int]) -> str:
    return method.tokenizer.decode(ids)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stand_ins.save_qwen_vl(tmp_path_factory.mktemp("q25") / "q25", "qwen2_5_vl", torch.bfloat16)


def test_qwen_reads_its_instruction_in_a_user_turn_with_the_image_between_vision_delimiters(qwen: Path):
    method = _lvlm(qwen)
    frame = method.chat
    assert _text(method, frame.head) == "<|im_start|>user\n"
    assert _text(method, frame.tail) == "<|im_end|>\n<|im_start|>assistant\n"
    assert _text(method, frame.vision_open + frame.vision_close) == "<|vision_start|><|vision_end|>"
    for captions in (["make the triangle larger"], None):  # query, then target
        layout = _segments(method, captions)
        order = sorted(layout, key=lambda name: layout[name][0])
        expected = ["chat_head", "vision_open", "image", "vision_close", *(["caption"] if captions else []), "task",
                    *(["soft_prompt"] if captions else []), "chat_tail", "embedding"]  # the paper's order
        assert order == expected
        assert layout["embedding"][1] == max(end for _, end in layout.values())  # [EMB] opens the answer
    # the frame is what the model reads: switching it off changes the embedding
    images = torch.randint(0, 255, (2, 3, 48, 48), dtype=torch.uint8)
    with torch.no_grad():
        framed = method.encode_query(images, ["remove the blue square", "paint the green star red"])
        bare = _lvlm(qwen, chat_template="off")
        assert bare.chat is None and "chat_head" not in _segments(bare, ["x"])
        assert not torch.allclose(framed, bare.encode_query(images, ["remove the blue square",
                                                                      "paint the green star red"]))


def test_llava_gets_bos_and_its_user_assistant_frame_without_vision_delimiters(tmp_path: Path):
    directory = stand_ins.save_llava15(tmp_path / "llava")
    method = _lvlm(directory)
    assert method.chat.head[0] == method.tokenizer.bos_token_id  # the template leaves BOS to the tokenizer
    assert _text(method, method.chat.head[1:]).strip() == "USER:"
    assert _text(method, method.chat.tail).strip() == "ASSISTANT:"
    assert method.chat.vision_open == method.chat.vision_close == []
    assert method._task_ids["query"][0] != method.tokenizer.bos_token_id  # one BOS, at the head


def test_a_template_kept_only_by_the_processor_is_found_and_on_needs_one(tmp_path: Path):
    directory = stand_ins.save_llava15(tmp_path / "llava")
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    (directory / "chat_template.json").write_text(json.dumps({"chat_template": stand_ins.LLAVA_CHAT_TEMPLATE}))
    assert _lvlm(directory).chat is not None
    (directory / "chat_template.json").unlink()
    assert _lvlm(directory).chat is None  # auto: a base checkpoint is not framed
    with pytest.raises(HarnessError, match="chat_template: on, but the checkpoint has no chat template"):
        _lvlm(directory, chat_template="on")


def test_tiny_backbones_are_never_framed():
    from harness.backbones.tokenization import train_lvlm_tokenizer

    tokenizer = train_lvlm_tokenizer(stand_ins.CORPUS)
    assert chat_frame(tokenizer, "auto") is None
    with pytest.raises(HarnessError, match="no chat template"):
        chat_frame(tokenizer, "on")
