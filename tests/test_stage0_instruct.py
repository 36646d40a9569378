"""Stage 0's visual instruction tuning (harness.pretraining.instruction_tuning): its examples, its batches,
and that the tuned LM answers its questions on held-out images above chance."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.backbones.params import BackboneParams
from harness.backbones.tokenization import QUERY_TASK_PROMPT, TARGET_TASK_PROMPT
from harness.data.cirr import load_cirr_split
from harness.data.synthetic.scene import describe
from harness.pretraining.instruction_tuning import (
    COLOUR_QUESTION,
    NUMBER_WORDS,
    InstructionBatches,
    examples,
    first_words,
    majority_share,
)
from harness.pretraining.stage0 import Stage0Params, Stage0Request, ensure_stage0, scene_graphs

BACKBONE = {"vision_hidden": 32, "vision_heads": 2, "language_hidden": 32, "language_heads": 2}
CONNECTOR = {"type": "queries", "num_queries": 4, "heads": 2}
PROMPTS = (QUERY_TASK_PROMPT, TARGET_TASK_PROMPT)


def _request(**stage0) -> Stage0Request:
    params = Stage0Params(**{"vision_batch_size": 64, "caption_batch_size": 32, **stage0})
    return Stage0Request("instruct-test", BackboneParams(**BACKBONE), CONNECTOR, params,
                         extra_corpus=(*PROMPTS, "[EMB]"), task_prompts=PROMPTS)


def test_examples_ask_what_the_scene_graph_answers(tiny_benchmark: Path):
    split = load_cirr_split(tiny_benchmark, "train")
    scenes = scene_graphs(split)
    images = sorted({t.reference for t in split.triplets})[:40]
    found = examples(scenes, split.triplets, images, ("describe", "colour", "count", "edit"), *PROMPTS)
    for e in found["colour"]:  # asked only of shapes the image holds once, answered with that shape's colour
        matching = [o for o in scenes[e.image] if e.instruction == COLOUR_QUESTION.format(shape=o.shape)]
        assert len(matching) == 1 and e.answer == matching[0].colour
    assert all(e.answer == NUMBER_WORDS[len(scenes[e.image])] for e in found["count"])
    assert all(e.instruction == TARGET_TASK_PROMPT and e.answer == describe(scenes[e.image]) for e in found["describe"])
    edits = {t.pairid: t for t in split.triplets if t.reference in images}
    assert len(found["edit"]) == len(edits) > 0
    for e, t in zip(found["edit"], edits.values()):
        assert e.image == t.reference and e.instruction == f"{t.caption} {QUERY_TASK_PROMPT}"
        assert e.answer == describe(scenes[t.target])


def test_batches_put_the_loss_on_the_answer_and_eos_alone(tiny_benchmark: Path):
    split = load_cirr_split(tiny_benchmark, "train")
    request = _request(vision_steps=1, caption_steps=0, instruct_steps=0)
    directory = ensure_stage0(request, split, progress=False)
    from transformers import AutoTokenizer

    from harness.pretraining.instruction_tuning import with_question_words

    tokenizer = with_question_words(AutoTokenizer.from_pretrained(directory / "tokenizer", local_files_only=True))
    images = sorted({t.reference for t in split.triplets})[:20]
    scenes = scene_graphs(split)
    found = examples(scenes, split.triplets, images, ("count",), *PROMPTS)
    batches = InstructionBatches(found, tokenizer, {name: i for i, name in enumerate(images)})
    rows, ids, labels = batches.draw(8, torch.Generator().manual_seed(0))
    question = tokenizer("how many shapes are there ?", add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in question and len(question) == 6  # the new words are whole tokens
    for row in range(8):
        answer = NUMBER_WORDS.index(tokenizer.convert_ids_to_tokens(int(ids[row, 6])))
        assert ids[row, :6].tolist() == question and answer == len(scenes[images[int(rows[row])]])
        assert labels[row, :6].eq(-100).all() and labels[row, 6:8].tolist() == [ids[row, 6], tokenizer.eos_token_id]


def test_instruction_tuned_stage0_answers_its_questions_on_held_out_images(tiny_benchmark: Path):
    train, val = load_cirr_split(tiny_benchmark, "train"), load_cirr_split(tiny_benchmark, "val")
    request = _request(vision_steps=300, caption_steps=300, instruct_steps=600)
    off = _request(vision_steps=300, caption_steps=300, instruct_steps=0)
    assert off.key() != request.key() and "instructions" not in off._settings()  # older checkpoints keep their key
    assert off.vision_key() == request.vision_key()  # the CLIP phase (shared with dual encoders) is unchanged
    directory = ensure_stage0(request, train, progress=False)
    report = json.loads((directory / "stage0.json").read_text())["instruct"]
    assert set(report["examples"]) == {"describe", "colour", "count",
                                       "edit"} and report["last_loss"] < report["first_loss"]
    model = _loaded(directory)
    names = sorted({t.reference for t in val.triplets} | {t.target for t in val.triplets})  # never seen in stage 0
    images = val.images.load(names)
    index = {name: i for i, name in enumerate(names)}
    asked = examples(scene_graphs(val), val.triplets, names, ("colour", "count"), *PROMPTS)
    count = first_words(*model, images, index, asked["count"])
    colour = first_words(*model, images, index, asked["colour"])
    colours = {e.answer for e in asked["colour"]}
    # the words alone tell the two questions apart: numbers to the one, colours to the other
    assert sum(w in NUMBER_WORDS for w in count) / len(count) > 0.95
    assert sum(w in colours for w in colour) / len(colour) > 0.95
    accuracy = 100 * sum(w == e.answer for w, e in zip(count, asked["count"])) / len(count)
    assert accuracy > majority_share(asked["count"]) + 10, (accuracy, majority_share(asked["count"]))


def _loaded(directory: Path) -> tuple:
    """(vision tower, connector, LM, tokenizer) of a stage-0 directory."""
    from safetensors.torch import load_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.backbones.connector import ConnectorParams, build_connector
    from harness.backbones.vision import VisionTower

    tower = VisionTower.from_directory(directory / "vision").eval()
    connector = build_connector(ConnectorParams(**CONNECTOR), tower.hidden_size, BACKBONE["language_hidden"])
    load_model(connector, str(directory / "connector.safetensors"))
    language_model = AutoModelForCausalLM.from_pretrained(directory / "language_model", local_files_only=True).eval()
    return tower, connector.eval(), language_model, AutoTokenizer.from_pretrained(directory / "tokenizer",
                                                                                  local_files_only=True)
