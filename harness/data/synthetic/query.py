"""A generated query and the registry that keeps scene graphs unique (both generator versions)."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.data.synthetic.scene import Edit, Scene, scene_key

SPLITS = ("train", "val", "test1")
#: Image folder per split, as CIRR names them.
SPLIT_DIRS = {"train": "train", "val": "dev", "test1": "test1"}


@dataclass
class Query:
    """One generated query with the scenes of its images."""

    pairid: int
    reference: str
    target: str
    caption: str
    edits: list[Edit]
    members: list[str]
    images: dict[str, Scene] = field(default_factory=dict)
    record: dict[str, object] | None = None  # version 2: family, program, group kinds, certificate

    @property
    def edit_type(self) -> str:
        if self.record is not None:
            return str(self.record["family"])
        return "compound" if len(self.edits) > 1 else self.edits[0].type


class SceneRegistry:
    """Keeps every scene key used so far, so no two images share a scene graph."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def fresh(self, scene: Scene, *others: Scene) -> bool:
        key = scene_key(scene)
        return key not in self.keys and all(key != scene_key(o) for o in others)

    def add(self, scenes: list[Scene]) -> None:
        self.keys.update(scene_key(s) for s in scenes)
