"""Do a textual-inversion run's pseudo-words carry their image? For finished pic2word / searle
runs: retrieve each validation image among the first N gallery images from the text feature of
"a photo of <pseudo-word>" (R@1 of its own image), and for SEARLE the same for its OTI tokens
(the distillation targets), with the norms and the cosine between phi's tokens and OTI's.

    .venv/bin/python benchmarks/inversion_check.py runs/fusion_strategy/runs/<id> [...] [--images 2000]

Uses the run's saved config and checkpoint; needs the dataset and the stage-0 cache it used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from harness.data.datasets import dataset_key, load_dataset
from harness.experiments.config import RunConfig
from harness.methods.base import MethodContext
from harness.methods.registry import build_method
from harness.training.loop import load_checkpoint


def own_image_recall(method, images: torch.Tensor, tokens: torch.Tensor, placeholder: str) -> float:
    """% of images whose pseudo-word prompt ranks the image itself first."""
    with torch.no_grad():
        image = F.normalize(method.encoder.image_features(images), dim=-1)
        text = F.normalize(method.encoder.prompt_features([f"a photo of {placeholder}"] * len(images), tokens,
                                                          placeholder=placeholder), dim=-1)
    return float(((text @ image.T).argmax(1) == torch.arange(len(images))).float().mean() * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--images", type=int, default=2000, help="validation images to retrieve among")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for run in args.runs:
        config = RunConfig.model_validate(yaml.safe_load((run / "config.yaml").read_text()))
        if config.method.name not in ("pic2word", "searle"):
            print(f"{run}: {config.method.name} has no pseudo-words; skipped")
            continue
        train = load_dataset(config.dataset, config.dataset.train_split, progress=False)
        val = load_dataset(config.dataset, config.dataset.eval_split, progress=False)
        context = MethodContext(config.dataset.image_size, [], train_split=train,
                                dataset_key=dataset_key(config.dataset))
        method = build_method(config.method.name, config.method.params, context)
        load_checkpoint(run / "checkpoints", method)
        method.eval()
        placeholder = "*" if config.method.name == "pic2word" else "$"
        images = val.images.load(val.gallery[: args.images])
        with torch.no_grad():
            _, tokens = method.pseudo_word(images)
        line = f"{run.name} {config.method.name} seed {config.seed}: pseudo-word -> own image R@1 " \
               f"{own_image_recall(method, images, tokens, placeholder):.1f} among {len(images)}"
        if config.method.name == "searle":
            names = method.training_images(train)[: min(500, args.images)]
            train_images = train.images.load(names)
            oti = method.oti_tokens[: len(names)]
            with torch.no_grad():
                _, predicted = method.pseudo_word(train_images)
            cosine = float(F.cosine_similarity(predicted, oti).mean())
            line += (f"; OTI tokens -> own image R@1 {own_image_recall(method, train_images, oti, '$'):.1f} among "
                     f"{len(names)}; cos(phi, OTI) {cosine:.2f}; norms phi {float(predicted.norm(dim=-1).mean()):.2f}, "
                     f"OTI {float(oti.norm(dim=-1).mean()):.2f}")
        print(line)


if __name__ == "__main__":
    main()
