"""Stage 0's visual instruction tuning: the LM learns several instructions told apart only by
their words, so that CIR-LVLM's task prompt is an instruction it has learned to follow (an
LVLM's task prompt works because instruction tuning, e.g. LLaVA's, taught it to follow one).

Each example is [BOS] visual prompt tokens, the instruction, then the answer and [EOS]; the
loss is the next-token loss on the answer alone. The instructions (a switch for each):

    describe   the target task prompt's words -> the image's scene description
    colour     "what colour is the <shape> ?" -> the colour of that shape (shapes unique in the image)
    count      "how many shapes are there ?"  -> a number word
    edit       "<caption> " + the query task prompt, on the reference -> the target's description

``edit`` reads the training triplets (reference, caption, target description): supervision
beyond image descriptions, the same triplets CIR training later uses (docs/assumptions.md).
The question words are added to the LM's tokenizer here only, so the CLIP phase and its
tokenizer, which the dual-encoder methods share, stay as they were.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from harness.data.synthetic.scene import describe
from harness.data.triplet import Triplet

INSTRUCTIONS = ("describe", "colour", "count", "edit")
COLOUR_QUESTION = "what colour is the {shape} ?"
COUNT_QUESTION = "how many shapes are there ?"
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
#: words of the questions and answers that image descriptions and captions do not hold
QUESTION_WORDS = ("what", "colour", "is", "?", "how", "many", "shapes", "are", "there", *NUMBER_WORDS)


@dataclass(frozen=True)
class Example:
    """One instruction on one image: the words before the answer, and the answer."""

    kind: str
    image: str
    instruction: str
    answer: str


def image_examples(kind: str, image: str, scene: Sequence, target_prompt: str) -> list[Example]:
    """The ``describe``, ``colour`` and ``count`` examples of one image."""
    if kind == "describe":
        return [Example(kind, image, target_prompt, describe(scene))]
    if kind == "count":
        return [Example(kind, image, COUNT_QUESTION, NUMBER_WORDS[min(len(scene), len(NUMBER_WORDS) - 1)])]
    if kind == "colour":
        shapes = Counter(o.shape for o in scene)
        return [Example(kind, image, COLOUR_QUESTION.format(shape=o.shape),
                        o.colour) for o in scene if shapes[o.shape] == 1]
    raise ValueError(f"not an image instruction: {kind}")


def examples(scenes: dict[str, Sequence], triplets: Sequence[Triplet], images: Sequence[str], kinds: Sequence[str],
             query_prompt: str, target_prompt: str) -> dict[str, list[Example]]:
    """Every example of each instruction in ``kinds`` on ``images`` (``edit``: on the
    ``triplets`` whose reference is among them); ``scenes`` maps image name -> scene."""
    found: dict[str, list[Example]] = {}
    for kind in kinds:
        if kind == "edit":
            names = set(images)
            found[kind] = [Example(kind, t.reference, f"{t.caption} {query_prompt}", describe(scenes[t.target]))
                           for t in triplets if t.target and t.reference in names]
        else:
            found[kind] = [e for name in images for e in image_examples(kind, name, scenes[name], target_prompt)]
    return {kind: rows for kind, rows in found.items() if rows}


class InstructionBatches:
    """Tokenised examples, drawn for a step with each instruction equally likely."""

    def __init__(self, found: dict[str, list[Example]], tokenizer, image_index: dict[str, int]):
        self.kinds = sorted(found)
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id
        self.rows: dict[str, list[tuple[int, list[int], list[int]]]] = {
            kind: [(image_index[e.image], _ids(tokenizer, e.instruction), _ids(tokenizer, e.answer)) for e in rows]
            for kind, rows in found.items()}

    def draw(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image rows [B], token ids [B, T] right-padded, labels [B, T]: the answer and [EOS] only)."""
        kinds = torch.randint(0, len(self.kinds), (batch_size,), generator=generator).tolist()
        chosen = []
        for kind in kinds:
            rows = self.rows[self.kinds[kind]]
            chosen.append(rows[int(torch.randint(0, len(rows), (1,), generator=generator))])
        width = max(len(instruction) + len(answer) + 1 for _, instruction, answer in chosen)
        ids = torch.full((batch_size, width), self.pad, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        for row, (_, instruction, answer) in enumerate(chosen):
            sequence = [*instruction, *answer, self.eos]
            ids[row, :len(sequence)] = torch.tensor(sequence)
            labels[row, len(instruction):len(sequence)] = torch.tensor([*answer, self.eos])
        return torch.tensor([image for image, _, _ in chosen]), ids, labels


def with_question_words(tokenizer):
    """``tokenizer`` with the question words it lacks added as whole words (appended ids, so
    every existing token keeps its id)."""
    from tokenizers import AddedToken

    unknown = [w for w in QUESTION_WORDS if tokenizer.convert_tokens_to_ids(w) == tokenizer.unk_token_id]
    tokenizer.add_tokens([AddedToken(w, single_word=True) for w in unknown])
    return tokenizer


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def instruction_inputs(language_model, tokenizer, visual: torch.Tensor,
                       ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs_embeds, attention_mask) of [BOS] visual tokens, then ``ids`` (padding masked)."""
    embed = language_model.get_input_embeddings()
    batch = ids.shape[0]
    bos = embed(torch.full((batch, 1), tokenizer.bos_token_id, dtype=torch.long))
    text = embed(ids)
    inputs = torch.cat([bos, visual.to(text.dtype), text], dim=1)
    attention = torch.cat([torch.ones(batch, 1 + visual.shape[1], dtype=torch.long),
                           (ids != tokenizer.pad_token_id).long()], dim=1)
    return inputs, attention


def instruct_step(tower, connector, language_model, tokenizer, images: torch.Tensor, batches: InstructionBatches,
                  batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Next-token loss on the answers of one batch of instruction examples."""
    rows, ids, labels = batches.draw(batch_size, generator)
    with torch.no_grad():
        features = tower(images[rows])
    visual = connector(features)
    inputs, attention = instruction_inputs(language_model, tokenizer, visual, ids)
    labels = torch.cat([torch.full((ids.shape[0], 1 + visual.shape[1]), -100), labels], dim=1)
    return language_model(inputs_embeds=inputs, attention_mask=attention, labels=labels).loss


@torch.no_grad()
def first_words(tower, connector, language_model, tokenizer, images: torch.Tensor, image_index: dict[str, int],
                rows: Sequence[Example], batch_size: int = 64) -> list[str]:
    """The LM's greedy next token after each example's instruction (its answer's first word);
    instructions of one token count share a batch."""
    language_model.eval()
    instructions = [_ids(tokenizer, e.instruction) for e in rows]
    by_length: dict[int, list[int]] = {}
    for index, ids in enumerate(instructions):
        by_length.setdefault(len(ids), []).append(index)
    words: dict[int, str] = {}
    for indices in by_length.values():
        for start in range(0, len(indices), batch_size):
            batch = indices[start:start + batch_size]
            visual = connector(tower(images[[image_index[rows[i].image] for i in batch]]))
            inputs, attention = instruction_inputs(language_model, tokenizer, visual,
                                                   torch.tensor([instructions[i] for i in batch]))
            predicted = language_model(inputs_embeds=inputs, attention_mask=attention).logits[:, -1].argmax(-1)
            words |= dict(zip(batch, tokenizer.convert_ids_to_tokens(predicted.tolist())))
    return [words[i] for i in range(len(rows))]


def first_word_accuracy(tower, connector, language_model, tokenizer, images: torch.Tensor,
                        image_index: dict[str, int], rows: Sequence[Example]) -> float:
    """Share (in %) of ``rows`` whose answer's first word is the LM's greedy next token after
    the instruction: how well it follows a question it was taught, on these images."""
    predicted = first_words(tower, connector, language_model, tokenizer, images, image_index, rows)
    return 100.0 * sum(p == e.answer.split()[0] for p, e in zip(predicted, rows)) / max(len(rows), 1)


def majority_share(rows: Sequence[Example]) -> float:
    """Share (in %) of the most common answer: the accuracy of always giving it (chance level)."""
    counts = Counter(e.answer.split()[0] for e in rows)
    return 100.0 * max(counts.values()) / max(len(rows), 1)
