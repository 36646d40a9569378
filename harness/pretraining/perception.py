"""What a frozen representation of the embedded benchmark's images can see: a linear probe from
features to each grid cell's content, and the dense labels stage 0 supervises its tower with.

Per image, each of the 3x3 cells is empty or holds one object of a shape, colour and size.
The probe fits one linear map from the features (a pooled embedding, or every token of a
sequence flattened) to each cell's four read-outs and reports, on held-out images:

- ``cell``: occupied or empty, over all cells (where the objects are);
- ``shape``, ``colour``, ``size``: over the occupied cells.

    labels = cell_labels(scenes)                     # [N, 9, 4] int64, -1 where a cell is empty
    report = probe(train_features, train_labels, test_features, test_labels)   # {"cell": 99.1, ...} in %

The probe is trained by full-batch L-BFGS on a softmax cross-entropy with a small L2 penalty;
its accuracy is a lower bound on what the features hold (a linear read-out of them).
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
#: L2 penalty of the probe (per weight, on the mean loss) and its L-BFGS iterations
PROBE_PENALTY, PROBE_STEPS = 1e-4, 200


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


def accuracies(decoder: CellDecoder, features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Per read-out, the percent of cells (occupied ones for shape, colour, size) read right."""
    with torch.no_grad():
        outputs = decoder(features)
    result = {}
    for index, (name, _) in enumerate(READOUTS):
        target = labels[:, :, index]
        kept = target >= 0
        result[name] = 100.0 * float((outputs[index].argmax(-1)[kept] == target[kept]).float().mean())
    return result


def probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
          test_labels: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Fit a linear probe on the first images, report its accuracy per read-out on the others.
    Runs with gradients even when called from an evaluation under inference mode."""
    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        train, test = train_features.float().flatten(1).clone(), test_features.float().flatten(1).clone()
        mean, std = train.mean(0, keepdim=True), train.std(0, keepdim=True).clamp_min(1e-6)
        train, test = (train - mean) / std, (test - mean) / std
        decoder = CellDecoder(train.shape[1])
        optimizer = torch.optim.LBFGS(decoder.parameters(), lr=1.0, max_iter=PROBE_STEPS, history_size=20,
                                      line_search_fn="strong_wolfe")
        labels = train_labels.clone()

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = decoder.loss(train, labels) + PROBE_PENALTY * decoder.linear.weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return accuracies(decoder, test, test_labels.clone())
