"""Stage 0: the small-scale stand-in for the pretrained LVLM a real CIR method starts from.

On the embedded benchmark's training images and their scene descriptions:

1. a tiny CLIP (vision tower + text tower) is trained contrastively on (image, description);
2. with that vision tower frozen, a connector and a tiny causal LM learn to describe images
   (next-token loss on the description given the visual prompt tokens);
3. visual instruction tuning (``instruct_steps``, harness.pretraining.instruction_tuning): the LM learns
   several instructions told apart only by their words, the task prompts' among them.

Step 1 is cached under ``<cache>/backbones/stage0-vision-<hash>/`` (tokenizer/, clip/, vision/,
rng.pt, vision.json), keyed without the connector, so a connector ablation trains it once.
The result is cached under ``<cache>/backbones/stage0-<hash>/`` keyed by (dataset, backbone
sizes, connector, stage-0 settings, seed) and reused by every later run:

    vision/ language_model/ tokenizer/   save_pretrained() directories
    connector.safetensors                 the connector after step 2
    stage0.json                           settings, losses and seconds of both steps

    directory = ensure_stage0(request, train_split)        # builds it when absent
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import save_model
from tqdm import tqdm
from transformers import AutoTokenizer, CLIPConfig, CLIPModel, CLIPTextConfig

from harness.backbones.language import tiny_language_model
from harness.backbones.params import BackboneParams
from harness.backbones.tokenization import (
    EMBEDDING_TOKEN,
    QUERY_TASK_PROMPT,
    TARGET_TASK_PROMPT,
    train_lvlm_tokenizer,
)
from harness.backbones.vision import (
    TINY_MEAN,
    TINY_STD,
    VisionTower,
    tiny_vision_config,
)
from harness.core.device import autocast, full_precision, resolve_precision
from harness.core.errors import HarnessError
from harness.core.files import staged_directory
from harness.core.paths import cache_dir, file_lock
from harness.core.settings import Precision
from harness.data.synthetic.captions import template_corpus
from harness.data.synthetic.scene import CELLS, describe, scene_from_json
from harness.data.triplet import CIRSplit
from harness.objectives.schedule import cosine_with_warmup
from harness.pretraining import instruction_tuning as instruct
from harness.pretraining.instruction_tuning import INSTRUCTIONS, with_question_words
from harness.pretraining.perception import CellDecoder, CellTokenHead, cell_labels, probe

try:  # the name in transformers 5.24; earlier releases call the same function clip_loss
    from transformers.models.clip.modeling_clip import image_text_contrastive_loss
except ImportError:  # pragma: no cover - depends on the installed transformers
    from transformers.models.clip.modeling_clip import (
        clip_loss as image_text_contrastive_loss,
    )

log = logging.getLogger(__name__)
#: 2: stage 0 trains on one torch thread, so its checkpoint no longer depends on the machine's
#: thread count or on `harness run --jobs` (a 1- and a 2-thread build ended at vision losses
#: 0.232 and 0.223); one thread was also faster here (vision phase 119 s against 147 s)
STAGE0_VERSION = 2
STAGE0_THREADS = 1


class Stage0Params(BaseModel):
    """Stage-0 budget. Defaults sized for a 2-core CPU (about a minute); the prototype's
    17-second vision warm start lifted R@1 from about 2 to about 28 (the project's prototype; docs/assumptions.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="warm-start tiny backbones with stage 0 (strongly recommended)")
    seed: int | Literal["run"] = Field(0, description="stage-0 seed: one shared 'public checkpoint' for every run; "
                                       "in an experiment file 'run' draws each run's stage 0 with the run's own seed "
                                       "(stage-0 luck then counts as seed noise; one stage 0 per seed to build)")
    vision_steps: int = Field(300, ge=0, description="contrastive image-description steps")
    vision_batch_size: int = Field(128, ge=2)
    vision_lr: float = Field(1e-3, gt=0)
    dense_weight: float = Field(0.0, ge=0, description="vision phase: weight of a dense scene-graph loss beside the "
                                "contrastive one: linear heads read every grid cell's content (empty, or shape, "
                                "colour, size) from the pooled image embedding and from the patch tokens (issue 34). "
                                "0, the default for now: contrastive alone; at the default 16-pixel patches it lifts "
                                "no shape read-out (docs/assumptions.md, 'Perception')")
    dense_steps: int = Field(0, ge=0, description="a perceive phase before the contrastive one: the vision tower "
                             "alone learns the dense scene-graph loss (dense_weight's heads) for this many steps "
                             "(batch vision_batch_size, rate vision_lr); 0 = off. With 21-pixel patches at 64 px (one "
                             "per grid cell) 2,400 steps of batch 64 at rate 2e-3 read shapes from the tokens at 94 % "
                             "(docs/assumptions.md, 'Perception')")
    caption_steps: int = Field(300, ge=0, description="describe-the-image steps for connector + LM")
    caption_batch_size: int = Field(64, ge=1)
    caption_lr: float = Field(1e-3, gt=0)
    precision: Precision = Field(
        "fp32", description="fp32 by default: a bf16 stage 0 took the vision phase from 147 to 65 s on a Zen 4 CPU, "
        "but the CIR-LVLM runs started from it lost about 3 points of Rs@1 on the main job (its runs trained in bf16 "
        "from an fp32 stage 0 did not); auto / bf16 as train.precision. The resolved value joins the cache key")
    instruct_steps: int = Field(300, ge=0, description="visual instruction tuning after the describe phase: the LM "
                                "learns the instructions below, told apart only by their words, so the task prompt is "
                                "an instruction it has learned to follow (LLaVA-style tuning, which an LVLM's task "
                                "prompt relies on; the steps are an assumption sized like the describe phase); 0 = off")
    instructions: tuple[Literal["describe", "colour", "count", "edit"], ...] = Field(
        INSTRUCTIONS, min_length=1, description="which instructions: describe (the target task prompt's words -> the "
        "description), colour (what colour is the <shape> ?), count (how many shapes are there ?), edit (caption + the "
        "query task prompt on the reference -> the target's description; reads the training triplets)")
    embed_steps: int = Field(0, ge=0, description="experimental last phase: contrastive image <-> description "
                             "through the LM's [EMB] token (E5-V / TRACE idea, not in the paper); 0 = off")


@dataclass(frozen=True)
class Stage0Request:
    """Everything that determines a stage-0 checkpoint."""

    dataset_key: str
    backbone: BackboneParams
    connector: dict
    params: Stage0Params
    extra_corpus: tuple[str, ...] = ()
    #: (query, target) task prompts the instruction-tuning phase teaches
    task_prompts: tuple[str, str] = (QUERY_TASK_PROMPT, TARGET_TASK_PROMPT)

    def key(self) -> str:
        blob = json.dumps(
            {"version": STAGE0_VERSION, "dataset": self.dataset_key, "backbone": self.backbone.tiny_key(),
             "connector": self.connector, "stage0": self._settings(), "corpus": sorted(self.extra_corpus),
             **({"task_prompts": list(self.task_prompts)} if self.params.instruct_steps else {})},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _settings(self) -> dict:
        """Stage-0 settings in the cache key; the optional phase only when on, so caches built
        before it existed stay valid; the precision as resolved here, fp32 left out (as before
        it existed)."""
        settings = self.params.model_dump(mode="json", exclude=_phases_off(self.params))
        return _with_resolved_precision(settings, self.params)

    def directory(self) -> Path:
        return cache_dir() / "backbones" / f"stage0-{self.key()}"

    def vision_key(self) -> str:
        """Key of the first phase (tokenizer + CLIP), which the connector does not change."""
        vision = _with_resolved_precision(self.params.model_dump(include={
            "seed", "vision_steps", "vision_batch_size", "vision_lr", "precision", *_dense_settings(self.params)}),
            self.params)
        blob = json.dumps(
            {"version": STAGE0_VERSION, "dataset": self.dataset_key, "backbone": self.backbone.tiny_key(),
             "stage0": vision, "corpus": sorted(self.extra_corpus)},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def vision_directory(self) -> Path:
        return cache_dir() / "backbones" / f"stage0-vision-{self.vision_key()}"

    def built(self, full: bool = True) -> bool:
        """Whether the cache holds this checkpoint: the whole stage 0, or (``full`` False) its
        first phase alone, which the dual-encoder methods start from."""
        return (self.directory() / "stage0.json").is_file() if full else \
            (self.vision_directory() / "vision.json").is_file()


def _phases_off(params: Stage0Params) -> set[str]:
    """Settings of optional phases that are off: left out of cache keys and reports, so the
    checkpoints built before a phase existed keep their key."""
    off = set()
    if params.embed_steps == 0:
        off.add("embed_steps")
    if params.instruct_steps == 0:
        off |= {"instruct_steps", "instructions"}
    if params.dense_weight == 0:
        off.add("dense_weight")
    if params.dense_steps == 0:
        off.add("dense_steps")
    return off


def _with_resolved_precision(settings: dict, params: Stage0Params) -> dict:
    """``settings`` with ``precision`` as stage 0 runs it (always on the CPU); fp32 is dropped
    so that checkpoints built before the setting existed keep their key."""
    settings = dict(settings)
    precision = resolve_precision(params.precision, "cpu")
    settings.pop("precision", None)
    if precision != "fp32":
        settings["precision"] = precision
    return settings


def clip_request(dataset_key: str, backbone: BackboneParams, params: Stage0Params) -> Stage0Request:
    """The request for stage 0's CLIP alone (dual-encoder methods). Its tokenizer corpus holds
    the default CIR-LVLM instruction words, so it is the very checkpoint (same cache entry)
    that a default CIR-LVLM's vision tower comes from."""
    return Stage0Request(dataset_key, backbone, {}, params,
                         extra_corpus=(QUERY_TASK_PROMPT, TARGET_TASK_PROMPT, EMBEDDING_TOKEN))


def scene_graphs(split: CIRSplit) -> dict[str, list]:
    """Image name -> its scene (a list of objects), from the benchmark's scene_graphs.json."""
    path = split.root / "scene_graphs.json"
    if not path.is_file():
        raise HarnessError("stage 0 needs scene descriptions, which only the embedded benchmark has", file=path,
                           fix="use dataset synthetic, or backbone.source: pretrained with local checkpoints")
    return {name: scene_from_json(graph) for name, graph in json.loads(path.read_text()).items()}


def scene_descriptions(split: CIRSplit) -> dict[str, str]:
    """Image name -> scene description, from the benchmark's scene_graphs.json."""
    return {name: describe(scene) for name, scene in scene_graphs(split).items()}


def ensure_stage0(request: Stage0Request, train_split: CIRSplit, force: bool = False, progress: bool = True) -> Path:
    """The stage-0 directory for ``request``, built first when absent (or when ``force``).

    The first phase (tokenizer + CLIP) is cached on its own, so requests that differ only
    in the connector or the describe phase (a connector ablation) train it once. It saves
    the RNG states it ends with, and the second phase resumes from them: the result is the
    same whether the first phase was built now or earlier."""
    directory = request.directory()
    if request.built() and not force:
        return directory
    # building must not move the caller's RNG (runs stay the same cached or not); a process that
    # finds another building the same entry waits for it and then reads it
    with file_lock(directory.parent / f".{directory.name}.lock"), torch.random.fork_rng():
        if request.built() and not force:
            return directory
        data = _TrainingData(train_split)
        vision = request.vision_directory()
        with file_lock(vision.parent / f".{vision.name}.lock"):  # ensure_stage0_clip may be building it
            _cached(vision, "vision.json", force, lambda out: _build_vision(request, data, out, progress))
        return _cached(directory, "stage0.json", force,
                       lambda out: _build_describe(request, data, vision, out, progress))


def ensure_stage0_clip(request: Stage0Request, train_split: CIRSplit, force: bool = False,
                       progress: bool = True) -> Path:
    """Stage 0's first phase alone: the directory holding ``clip/`` (the tiny CLIP trained on
    image-description pairs) and ``tokenizer/``, which the dual-encoder methods start from. It
    is the same cache entry the CIR-LVLM's vision tower comes from."""
    directory = request.vision_directory()
    with file_lock(directory.parent / f".{directory.name}.lock"), torch.random.fork_rng():
        if request.built(full=False) and not force:
            return directory
        data = _TrainingData(train_split)
        return _cached(directory, "vision.json", force,
                       lambda out: _build_vision(request, data, out, progress))


def _cached(directory: Path, marker: str, force: bool, build) -> Path:
    """``directory`` holding ``marker``, built atomically by ``build(staging)`` when absent (the
    caller holds the entry's lock); ``build`` returns the report the marker file holds."""
    if (directory / marker).is_file() and not force:
        return directory
    with staged_directory(directory) as staging:
        report = build(staging)
        (staging / marker).write_text(json.dumps(report, indent=2))
    return directory


class _TrainingData:
    """Training images, their scenes and scene descriptions, loaded once for every phase."""

    def __init__(self, split: CIRSplit):
        self.split = split
        self.scenes = scene_graphs(split)
        self.names = _training_images(split)
        self.images = split.images.load(self.names)
        self.texts = [describe(self.scenes[name]) for name in self.names]
        self.labels = cell_labels([self.scenes[name] for name in self.names])

    def encode(self, tokenizer) -> dict:
        return tokenizer([f"[BOS] {t} [EOS]" for t in self.texts], padding=True, return_tensors="pt")


def _training_images(split: CIRSplit) -> list[str]:
    names = {t.reference for t in split.triplets} | {t.target for t in split.triplets if t.target}
    return sorted(names)


def _build_vision(request: Stage0Request, data: _TrainingData, out: Path, progress: bool) -> dict:
    """Phase 1: tokenizer and a tiny CLIP trained on (image, scene description)."""
    params, backbone = request.params, request.backbone
    generator = torch.Generator().manual_seed(params.seed)
    torch.manual_seed(params.seed)
    corpus = [*data.texts, *(t.caption for t in data.split.triplets), *template_corpus(), *request.extra_corpus]
    tokenizer = train_lvlm_tokenizer(corpus)
    tokenizer.save_pretrained(str(out / "tokenizer"))
    encoded = data.encode(tokenizer)
    image_size = int(data.images.shape[-1])
    clip = CLIPModel(CLIPConfig(
        text_config=CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=backbone.language_hidden,
                                   intermediate_size=4 * backbone.language_hidden, num_hidden_layers=2,
                                   num_attention_heads=backbone.language_heads,
                                   max_position_embeddings=max(64, encoded["input_ids"].shape[1]),
                                   pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                   eos_token_id=tokenizer.eos_token_id),
        vision_config=tiny_vision_config(backbone.vision_hidden, backbone.vision_layers, backbone.vision_heads,
                                         image_size, backbone.patch_size),
        projection_dim=backbone.vision_hidden,
    ))
    mean = torch.tensor(TINY_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(TINY_STD).view(1, 3, 1, 1)
    heads = _dense_heads(clip) if params.dense_weight or params.dense_steps else None
    perceive = _perceive(clip, heads, data, (mean, std), generator, params, progress) if params.dense_steps else None
    heads = heads if params.dense_weight else None
    trained = torch.nn.ModuleList([clip, *([heads] if heads is not None else [])])
    report = _phase(trained, params.vision_steps, params.vision_lr, "stage 0: vision-description contrastive", progress,
                    lambda: _clip_step(clip, data.images, encoded, mean, std, params.vision_batch_size, generator,
                                       heads, data.labels, params.dense_weight),
                    params.precision)
    clip.save_pretrained(str(out / "clip"))
    clip.vision_model.save_pretrained(str(out / "vision"))
    statistics = {"image_mean": TINY_MEAN, "image_std": TINY_STD}
    (out / "vision" / "preprocessor_config.json").write_text(json.dumps(statistics))
    torch.save({"torch": torch.get_rng_state(), "batches": generator.get_state()}, out / "rng.pt")
    with torch.random.fork_rng():  # after rng.pt: the probe leaves the next phase's draws as they were
        report["perception"] = _perception(clip, data, mean, std)
    return {"settings": {"backbone": backbone.tiny_key(), **_with_resolved_precision(params.model_dump(include={
            "seed", "vision_steps", "vision_batch_size", "vision_lr", *_dense_settings(params)}), params)},
            "images": len(data.names), **({"perceive": perceive} if perceive else {}), "vision": report}


def _dense_settings(params: Stage0Params) -> set[str]:
    """The dense-loss settings in use (left out at 0, so older cache keys stay valid)."""
    return {name for name in ("dense_weight", "dense_steps") if getattr(params, name)}


def _perceive(clip, heads, data: _TrainingData, statistics: tuple[torch.Tensor, torch.Tensor],
              generator: torch.Generator, params: Stage0Params, progress: bool) -> dict:
    """The optional perceive phase: the vision tower (and its projection) learn the dense
    scene-graph loss alone, before the contrastive phase."""
    mean, std = statistics

    def step() -> torch.Tensor:
        rows = torch.randint(0, data.images.shape[0], (params.vision_batch_size,), generator=generator)
        output = clip.vision_model(pixel_values=(data.images[rows].float() / 255.0 - mean) / std)
        pooled = clip.visual_projection(output.pooler_output)
        return heads["pooled"].loss(pooled, data.labels[rows]) + heads["tokens"].loss(
            output.last_hidden_state[:, 1:], data.labels[rows])

    trained = torch.nn.ModuleList([clip.vision_model, clip.visual_projection, heads])
    return _phase(trained, params.dense_steps, params.vision_lr, "stage 0: perceive (dense scene-graph loss)",
                  progress, step, params.precision)


#: Training images the perception probe fits on, then those it is tested on (disjoint).
PROBE_FIT, PROBE_TEST = 4000, 2000


def _perception(clip, data: _TrainingData, mean: torch.Tensor, std: torch.Tensor) -> dict:
    """The linear perception probe (harness.pretraining.perception) of the frozen tower: from the
    pooled image embedding (what the dual encoders compare) and from the patch tokens (what a
    connector or a Q-Former reads), fitted on some training images, tested on others (images the
    tower trained on, the probe did not)."""
    fit = min(PROBE_FIT, len(data.names) * 2 // 3)
    rows = torch.arange(min(len(data.names), fit + PROBE_TEST))
    pooled, tokens = [], []
    with torch.no_grad():
        for start in range(0, len(rows), 256):
            pixels = (data.images[rows[start:start + 256]].float() / 255.0 - mean) / std
            output = clip.vision_model(pixel_values=pixels)
            pooled.append(clip.visual_projection(output.pooler_output))
            tokens.append(output.last_hidden_state[:, 1:])
    labels = data.labels[rows]
    return {"fit_images": fit, "test_images": len(rows) - fit,
            **{name: probe(features[:fit], labels[:fit], features[fit:], labels[fit:])
               for name, features in (("pooled", torch.cat(pooled)), ("tokens", torch.cat(tokens)))}}


def _build_describe(request: Stage0Request, data: _TrainingData, vision: Path, out: Path, progress: bool) -> dict:
    """Phase 2: with the phase-1 vision tower frozen, connector + LM learn to describe images."""
    from harness.backbones.connector import ConnectorParams, build_connector

    params, backbone = request.params, request.backbone
    rng = torch.load(vision / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    generator = torch.Generator()
    generator.set_state(rng["batches"])
    shutil.copytree(vision / "tokenizer", out / "tokenizer")
    shutil.copytree(vision / "vision", out / "vision")
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer", local_files_only=True, padding_side="right")
    if params.instruct_steps:
        with_question_words(tokenizer).save_pretrained(str(out / "tokenizer"))
    encoded = data.encode(tokenizer)
    tower = VisionTower.from_directory(out / "vision").eval()
    language_model = tiny_language_model(backbone, tokenizer)
    connector = build_connector(ConnectorParams(**request.connector), tower.hidden_size, backbone.language_hidden)
    trainable = torch.nn.ModuleDict({"connector": connector, "language_model": language_model})
    report = _phase(trainable, params.caption_steps, params.caption_lr, "stage 0: describe images", progress,
                    lambda: _caption_step(tower, connector, language_model, data.images, encoded,
                                          params.caption_batch_size, generator), params.precision)
    phases = {"caption": report}
    if params.instruct_steps:
        phases["instruct"] = _instruct(request, data, (tower, connector, language_model, tokenizer), generator,
                                       progress)
    if params.embed_steps:
        report_embed = _phase(trainable, params.embed_steps, params.caption_lr,
                              "stage 0: embed (image <-> description)",
                              progress, lambda: _embed_step(tower, connector, language_model, tokenizer, data.images,
                                                            encoded, params.caption_batch_size, generator),
                              params.precision)
    language_model.save_pretrained(str(out / "language_model"))
    save_model(connector, str(out / "connector.safetensors"))
    vision_report = json.loads((vision / "vision.json").read_text())
    return {"settings": {"backbone": backbone.tiny_key(), "connector": request.connector,
                         **_with_resolved_precision(params.model_dump(mode="json", exclude=_phases_off(params)),
                                                    params)},
            "images": len(data.names), "vision_stage": str(vision), "vision": vision_report["vision"], **phases,
            **({"embed": report_embed} if params.embed_steps else {})}


def _instruct(request: Stage0Request, data: _TrainingData, models: tuple, generator: torch.Generator,
              progress: bool) -> dict:
    """Phase 3: visual instruction tuning on all but every tenth training image; the phase's
    report adds the first-word accuracy of the colour and count questions on the images held
    out, beside the share of their most common answer (chance level)."""
    params = request.params
    tower, connector, language_model, tokenizer = models
    held_out = set(data.names[::10])
    query_prompt, target_prompt = request.task_prompts
    found = instruct.examples(data.scenes, data.split.triplets, [n for n in data.names if n not in held_out],
                              params.instructions, query_prompt, target_prompt)
    index = {name: row for row, name in enumerate(data.names)}
    batches = instruct.InstructionBatches(found, tokenizer, index)
    trainable = torch.nn.ModuleDict({"connector": connector, "language_model": language_model})
    report = _phase(trainable, params.instruct_steps, params.caption_lr, "stage 0: instruction tuning", progress,
                    lambda: instruct.instruct_step(tower, connector, language_model, tokenizer, data.images, batches,
                                                   params.caption_batch_size, generator), params.precision)
    questions = instruct.examples(data.scenes, data.split.triplets, sorted(held_out),
                                  [k for k in ("colour", "count") if k in params.instructions], query_prompt,
                                  target_prompt)
    report["held_out"] = {kind: {"examples": len(rows), "majority_share": instruct.majority_share(rows),
                                 "accuracy": instruct.first_word_accuracy(tower, connector, language_model, tokenizer,
                                                                          data.images, index, rows)}
                          for kind, rows in questions.items()}
    report["examples"] = {kind: len(rows) for kind, rows in found.items()}
    return report


def _phase(module: torch.nn.Module, steps: int, lr: float, desc: str, progress: bool, step_loss,
           precision: Precision = "fp32") -> dict:
    """Train ``module`` for ``steps``; report seconds, first / last loss and the precision."""
    start = time.perf_counter()
    resolved = resolve_precision(precision, "cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(STAGE0_THREADS)  # the same checkpoint whatever the caller's thread count
    try:
        losses = _loop(module, steps, lr, desc, progress, step_loss, resolved)
    finally:
        torch.set_num_threads(threads)
    return {"seconds": time.perf_counter() - start, "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None, "precision": resolved}


def _loop(module: torch.nn.Module, steps: int, lr: float, desc: str, progress: bool, step_loss,
          precision: str = "fp32") -> list[float]:
    if steps == 0:
        return []
    module.train()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(steps, 0.05))
    losses = []
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress, leave=False)
    for _ in bar:
        with autocast("cpu", precision):  # type: ignore[arg-type]
            loss = step_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    module.eval()
    return losses


def _dense_heads(clip) -> torch.nn.ModuleDict:
    """The vision phase's dense heads: every cell's content read linearly from the pooled image
    embedding (what the dual-encoder methods compare) and from the patch tokens (what the LVLM's
    connector and SPRC's Q-Former read): from all of them flattened, or, where the patch grid is
    the scene's 3x3 grid (21-pixel patches at 64 px), each cell from its own token through one
    shared head. They train with the tower and are not kept."""
    config = clip.vision_model.config
    patches = (config.image_size // config.patch_size) ** 2
    tokens = CellTokenHead(config.hidden_size) if patches == len(CELLS) else CellDecoder(patches * config.hidden_size)
    return torch.nn.ModuleDict({"pooled": CellDecoder(clip.config.projection_dim), "tokens": tokens})


def _clip_step(clip, images, encoded, mean, std, batch_size, generator, heads=None, labels=None,
               dense_weight: float = 0.0) -> torch.Tensor:
    rows = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
    pixels = (images[rows].float() / 255.0 - mean) / std
    mask = encoded["attention_mask"][rows]
    width = int(mask.sum(1).max())
    output = clip(input_ids=encoded["input_ids"][rows, :width], attention_mask=mask[:, :width], pixel_values=pixels)
    # CLIP's loss (transformers' clip_loss), with the similarities in float32 under bf16 autocast
    with full_precision("cpu"):
        text, image = output.text_embeds.float(), output.image_embeds.float()
        loss = image_text_contrastive_loss(torch.matmul(text, image.t()) * clip.logit_scale.exp())
    if heads is None:
        return loss
    pooled = clip.visual_projection(output.vision_model_output.pooler_output)
    tokens = output.vision_model_output.last_hidden_state[:, 1:]
    dense = heads["pooled"].loss(pooled, labels[rows]) + heads["tokens"].loss(tokens, labels[rows])
    return loss + dense_weight * dense


def _caption_step(tower, connector, language_model, images, encoded, batch_size, generator) -> torch.Tensor:
    rows = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
    with torch.no_grad():
        features = tower(images[rows])
    visual = connector(features)
    mask = encoded["attention_mask"][rows]
    width = int(mask.sum(1).max())
    ids, mask = encoded["input_ids"][rows, :width], mask[:, :width]
    text = language_model.get_input_embeddings()(ids)
    embeds = torch.cat([visual, text], dim=1)
    attention = torch.cat([torch.ones(visual.shape[:2], dtype=mask.dtype), mask], dim=1)
    labels = torch.cat([torch.full(visual.shape[:2], -100), ids.masked_fill(mask == 0, -100)], dim=1)
    return language_model(inputs_embeds=embeds, attention_mask=attention, labels=labels).loss


def _embed_step(tower, connector, language_model, tokenizer, images, encoded, batch_size, generator) -> torch.Tensor:
    """Optional phase 3: an image (target task prompt + visual tokens + [EMB]) and its
    description (target task prompt + description + [EMB]) should meet at the LM's [EMB]
    hidden state: symmetric InfoNCE (temperature 0.05) over the batch."""
    import torch.nn.functional as F

    from harness.objectives.losses import info_nce

    rows = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
    embed = language_model.get_input_embeddings()
    prompt = embed(torch.tensor([tokenizer.bos_token_id, *tokenizer(TARGET_TASK_PROMPT, add_special_tokens=False)
                                 ["input_ids"]])).unsqueeze(0).expand(batch_size, -1, -1)
    token_id = tokenizer.convert_tokens_to_ids(EMBEDDING_TOKEN)
    token = embed(torch.tensor([token_id])).unsqueeze(0).expand(batch_size, -1, -1)
    with torch.no_grad():
        features = tower(images[rows])
    visual = connector(features)
    mask = encoded["attention_mask"][rows]
    width = int(mask.sum(1).max())
    ids, mask = encoded["input_ids"][rows, 1:width], mask[:, 1:width]  # drop the description's own [BOS]

    def last_hidden(middle: torch.Tensor, middle_mask: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([prompt, middle, token], dim=1)
        attention = torch.cat([torch.ones(prompt.shape[:2], dtype=torch.long), middle_mask.long(),
                               torch.ones(batch_size, 1, dtype=torch.long)], dim=1)
        positions = (attention.cumsum(1) - 1).clamp(min=0)
        hidden = language_model.model(inputs_embeds=inputs, attention_mask=attention, position_ids=positions)
        return F.normalize(hidden.last_hidden_state[:, -1], dim=-1)

    image_side = last_hidden(visual, torch.ones(visual.shape[:2], dtype=torch.long))
    text_side = last_hidden(embed(ids), mask)
    return info_nce(image_side, text_side, 0.05, symmetric=True)
