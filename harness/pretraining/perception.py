"""What a frozen representation of the embedded benchmark's images can see: a linear probe from
features to each grid cell's content, and the dense labels stage 0 supervises its tower with.

Per image, each of the 3x3 cells is empty or holds one object of a shape, colour and size.
The probe fits one linear map from the features (a pooled embedding, or every token of a
sequence flattened) to each cell's four read-outs (ridge regression onto one-hot classes, in
closed form) and reports, on held-out images:

- ``cell``: occupied or empty, over all cells (where the objects are);
- ``shape``, ``colour``, ``size``: over the occupied cells.

    labels = cell_labels(scenes)                     # [N, 9, 4] int64, -1 where a cell is empty
    head = CellTokenHead(128)                        # a dense head shared by a cell-aligned tower's 9 tokens
    report = probe(train_features, train_labels, test_features, test_labels)   # {"cell": 99.1, ...} in %

Its accuracy is a lower bound on what the features hold (a linear read-out of them); with few
fitting images and many features (flattened tokens) it reads a little less than a logistic probe
would (measured: colour from the default stage 0's tokens 74 % against 86 % with 2,000 images).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from harness.data.synthetic.scene import CELLS, COLOURS, SHAPES, SIZES, Scene

#: The read-outs of a cell: (name, classes); "cell" is occupied (1) or empty (0).
READOUTS: tuple[tuple[str, int], ...] = (("cell", 2), ("shape", len(SHAPES)), ("colour", len(COLOURS)),
                                         ("size", len(SIZES)))
ATTRIBUTES = tuple(name for name, _ in READOUTS)
#: the probe's ridge penalty (on standardised features)
PROBE_PENALTY = 1.0


def cell_labels(scenes: Sequence[Scene]) -> torch.Tensor:
    """[N, 9, 4]: per image and cell, occupied (0/1), shape, colour and size indices (-1 where empty)."""
    labels = torch.full((len(scenes), len(CELLS), len(READOUTS)), -1, dtype=torch.long)
    labels[:, :, 0] = 0
    for row, scene in enumerate(scenes):
        for obj in scene:
            cell = CELLS.index(obj.cell)
            labels[row, cell] = torch.tensor([1, SHAPES.index(obj.shape), COLOURS.index(obj.colour),
                                              SIZES.index(obj.size)])
    return labels


class CellDecoder(torch.nn.Module):
    """A linear map from a feature vector to every cell's read-outs (the probe, and the dense
    head of stage 0's vision phase)."""

    def __init__(self, width: int):
        super().__init__()
        self.sizes = [classes for _, classes in READOUTS]
        self.linear = torch.nn.Linear(width, len(CELLS) * sum(self.sizes))

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Per read-out, logits [N, 9, classes]."""
        logits = self.linear(features.flatten(1)).view(len(features), len(CELLS), sum(self.sizes))
        return list(torch.split(logits, self.sizes, dim=-1))

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the read-outs a cell has (an empty cell: occupancy alone)."""
        total = features.new_zeros(())
        for index, logits in enumerate(self(features)):
            target = labels[:, :, index]
            kept = target >= 0
            total = total + F.cross_entropy(logits[kept].float(), target[kept])
        return total / len(READOUTS)


class CellTokenHead(torch.nn.Module):
    """One linear map shared by the nine cell tokens of a tower whose patch grid is the scene's
    3x3 grid: token i reads cell i's content (stage 0's dense head at that geometry; each step
    then trains one classifier nine times instead of nine classifiers once)."""

    def __init__(self, width: int):
        super().__init__()
        self.sizes = [classes for _, classes in READOUTS]
        self.linear = torch.nn.Linear(width, sum(self.sizes))

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Per read-out, logits [N, 9, classes] from the cell tokens [N, 9, width]."""
        return list(torch.split(self.linear(tokens), self.sizes, dim=-1))

    loss = CellDecoder.loss


def _one_hot(labels: torch.Tensor) -> torch.Tensor:
    """[N, 9 * classes]: each read-out's classes one-hot per cell, zeros where a cell has none."""
    blocks = []
    for index, (_, classes) in enumerate(READOUTS):
        target = labels[:, :, index]
        blocks.append((F.one_hot(target.clamp_min(0), classes).double() * (target >= 0).unsqueeze(-1)).flatten(1))
    return torch.cat(blocks, dim=1)


def probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
          test_labels: torch.Tensor) -> dict[str, float]:
    """Fit the linear probe on the first images, report its accuracy per read-out on the others:
    ridge regression onto each read-out's one-hot classes (standardised features and a bias,
    penalty ``PROBE_PENALTY``), solved in closed form in its kernel form (fewer images than
    features is the usual case), the class of largest output read. No randomness, and fast
    enough to run in every evaluation."""
    with torch.inference_mode(False):
        train, test = train_features.double().flatten(1).clone(), test_features.double().flatten(1).clone()
        mean, std = train.mean(0, keepdim=True), train.std(0, keepdim=True).clamp_min(1e-6)
        train, test = _with_bias((train - mean) / std), _with_bias((test - mean) / std)
        kernel = train @ train.T
        weights = torch.linalg.solve(kernel + PROBE_PENALTY * torch.eye(len(kernel), dtype=kernel.dtype),
                                     _one_hot(train_labels))
        outputs = (test @ train.T) @ weights
    result, at = {}, 0
    for index, (name, classes) in enumerate(READOUTS):
        block = outputs[:, at:at + len(CELLS) * classes].view(len(test), len(CELLS), classes)
        at += len(CELLS) * classes
        target = test_labels[:, :, index]
        kept = target >= 0
        result[name] = 100.0 * float((block.argmax(-1)[kept] == target[kept]).double().mean())
    return result


def _with_bias(features: torch.Tensor) -> torch.Tensor:
    return torch.cat([features, torch.ones(len(features), 1, dtype=features.dtype)], dim=1)
