"""The checkpoint's own chat frame around CIR-LVLM's instruction (``chat_template``).

    frame = chat_frame(tokenizer, "auto", lvlm_config, directory)   # None: no frame
    frame.head, frame.tail              # token ids before and after the user's turn content
    frame.vision_open, frame.vision_close   # Qwen-VL's <|vision_start|> / <|vision_end|> ids, or []

An instruction-tuned LVLM has only ever read instructions inside its chat template, images
between its vision delimiters. The frame is rendered from the checkpoint's template with a
placeholder as the user's message and the generation prompt on, then split at the placeholder:

    [head: BOS, system turn, "<|im_start|>user\\n"] [instruction] [tail: "<|im_end|>\\n<|im_start|>assistant\\n"] [EMB]

so [EMB] sits where the assistant's answer begins (E5-V's "in one word:" prompting reads the
embedding at the answer's first position). Where the soft prompt goes inside a chat turn is
NOT FOUND in the paper; it is kept at the end of the instruction, inside the user's turn (an
assumption). LLaVA-1.5 has no vision delimiters (its visual tokens replace "<image>" in place).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.core.errors import HarnessError
from harness.core.files import read_json_object, read_text

ChatTemplate = Literal["auto", "on", "off"]
PLACEHOLDER = "<<cir-harness-instruction>>"


@dataclass(frozen=True)
class ChatFrame:
    """Token ids around the instruction and around its visual prompt tokens."""

    head: list[int]
    tail: list[int]
    vision_open: list[int]
    vision_close: list[int]


def template_of(tokenizer, directory: Path | None) -> str | None:
    """The tokenizer's chat template, else the processor's (``chat_template.jinja`` or the
    ``chat_template`` of ``chat_template.json``, where LLaVA-style hf conversions keep it)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    if directory is None:
        return None
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return read_text(jinja, field="chat_template", fix="repair the file or set method.params.chat_template: off")
    path = directory / "chat_template.json"
    if path.is_file():
        value = read_json_object(path, field="chat_template",
                                 fix="repair the file or set method.params.chat_template: off").get("chat_template")
        return value if isinstance(value, str) else None
    return None


def chat_frame(tokenizer, mode: ChatTemplate, config: Any = None, directory: Path | None = None) -> ChatFrame | None:
    """The frame of ``mode``: ``auto`` frames when the checkpoint has a chat template (an
    instruction-tuned one), ``on`` requires one, ``off`` never frames."""
    if mode == "off":
        return None
    template = template_of(tokenizer, directory)
    if template is None:
        if mode == "on":
            raise HarnessError("chat_template: on, but the checkpoint has no chat template", file=directory,
                               field="method.params.chat_template", fix="set chat_template: auto or off")
        return None
    head, tail = _split_render(tokenizer, template, directory)
    ids = [_ids(tokenizer, head), _ids(tokenizer, tail)]
    bos = tokenizer.bos_token
    if bos is not None and not head.startswith(bos):  # the template leaves BOS to the tokenizer (LLaMA-family)
        ids[0] = [tokenizer.bos_token_id, *ids[0]]
    return ChatFrame(ids[0], ids[1], *_vision_delimiters(config))


def _split_render(tokenizer, template: str, directory: Path | None) -> tuple[str, str]:
    """(text before, text after) the user's message in the template's rendering of one user turn
    plus the generation prompt; the message as a text part first (processor templates), else as
    a plain string."""
    for content in ([{"type": "text", "text": PLACEHOLDER}], PLACEHOLDER):
        try:
            text = tokenizer.apply_chat_template([{"role": "user", "content": content}], chat_template=template,
                                                 tokenize=False, add_generation_prompt=True)
        except Exception:  # a template that takes only the other form of content  # noqa: BLE001
            continue
        if isinstance(text, str) and text.count(PLACEHOLDER) == 1:
            head, tail = text.split(PLACEHOLDER)
            return head, tail
    raise HarnessError("the chat template does not render a single user message", file=directory,
                       field="method.params.chat_template", fix="set chat_template: off")


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _vision_delimiters(config: Any) -> tuple[list[int], list[int]]:
    """Qwen-VL's vision start / end ids from the checkpoint config, or none."""
    start = getattr(config, "vision_start_token_id", None)
    end = getattr(config, "vision_end_token_id", None)
    return ([start], [end]) if start is not None and end is not None else ([], [])
