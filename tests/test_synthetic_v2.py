"""The embedded benchmark, version 2: determinism, the certificate's ceilings, round-trip
captions, recorded distractor kinds, hygiene, and version 1 left as it was."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.data.synthetic.caption_parser import parse
from harness.data.synthetic.ceilings import split_ceilings
from harness.data.synthetic.families import FAMILIES
from harness.data.synthetic.generate import SyntheticConfig, generate_queries, write_benchmark
from harness.data.synthetic.phrasing import CORES, FRAMES, phrasing_count, render_style
from harness.data.synthetic.programs import Program, net_edit_count
from harness.data.synthetic.scene import (
    EditNotApplicable,
    apply_edits,
    edit_from_json,
    random_scene,
    scene_from_json,
    scene_key,
)

from .conftest import V2

EVAL = ("val", "test1")


def _read(root: Path, name: str) -> list[dict] | dict:
    return json.loads((root / name).read_text())


def _digest(root: Path) -> dict[str, str]:
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_same_seed_gives_byte_identical_files_with_one_and_two_workers(tmp_path: Path):
    small = V2.model_copy(update={"num_train": 20, "num_val": 12, "num_test": 6})
    one = write_benchmark(small, tmp_path / "one", workers=1, progress=False)
    two = write_benchmark(small, tmp_path / "two", workers=2, progress=False)
    assert _digest(one) == _digest(two)
    assert _read(one, "synthetic.json")["generator_version"] == 2
    other = generate_queries(small.model_copy(update={"seed": 4}))
    assert [q.caption for q in other["val"]] != [q.caption for q in generate_queries(small)["val"]]


def test_version_1_settings_leave_out_version_2_fields():
    from harness.data.datasets import synthetic_key
    from harness.experiments.config import RunConfig

    v1 = SyntheticConfig(version=1)
    assert "version" not in v1.settings() and "group_size" not in v1.settings()
    assert synthetic_key(v1) == synthetic_key(v1.model_copy(update={"group_size": 20}))  # irrelevant to version 1
    assert synthetic_key(v1) != synthetic_key(v1.model_copy(update={"version": 2}))
    run = {"experiment": "x", "method": {"name": "sum"}}
    plain = RunConfig.model_validate(run).run_id()
    explicit = RunConfig.model_validate({**run,
                                         "dataset": {"synthetic": {"version": 1, "held_out_share": 0.5}}}).run_id()
    v3 = RunConfig.model_validate({**run, "dataset": {"synthetic": {"version": 3}}}).run_id()
    v2 = RunConfig.model_validate({**run, "dataset": {"synthetic": {"version": 2}}}).run_id()
    assert plain == v3 != v2 != explicit  # version 3 is the default; version 1 leaves version 2's fields out
    v1_plain = RunConfig.model_validate({**run, "dataset": {"synthetic": {"version": 1}}}).run_id()
    assert v1_plain == explicit


@pytest.mark.parametrize("split", EVAL)
def test_certificate_ceilings(v2_benchmark: Path, split: str):
    rows = {row["family"]: row for row in split_ceilings(v2_benchmark, split)}
    assert rows["all"]["oracle"] == 100.0
    assert rows["all"]["joint_share"] >= 100 / 3
    assert rows["(joint reading)"]["best_additive"] <= 40.0
    assert rows["(the rest)"]["best_additive"] >= 95.0
    assert rows["relative_move"]["joint_share"] == 100.0 and rows["add"]["joint_share"] == 0.0
    recorded = [e["needs_joint_reading"] for e in _read(v2_benchmark, f"query_edits.rc2.{split}.json")]
    assert 100 * np.mean(recorded) == pytest.approx(rows["all"]["joint_share"])  # the files agree with a re-check


def test_version_1_is_additive(tiny_benchmark: Path):
    """The reason for version 2: on version 1 an additive scorer solves (nearly) every query."""
    assert split_ceilings(tiny_benchmark, "val")[0]["best_additive"] >= 95.0


def test_oracle_solves_train(v2_benchmark: Path):
    graphs = _read(v2_benchmark, "scene_graphs.json")
    captions = {c["pairid"]: c for c in _read(v2_benchmark, "captions/cap.rc2.train.json")}
    names = list(_read(v2_benchmark, "image_splits/split.rc2.train.json"))
    keys = Counter(scene_key(scene_from_json(graphs[n])) for n in names)
    for entry in _read(v2_benchmark, "query_edits.rc2.train.json"):
        reference = scene_from_json(graphs[captions[entry["pairid"]]["reference"]])
        expected = apply_edits(reference, [edit_from_json(e) for e in entry["edits"]])
        assert scene_key(expected) == scene_key(scene_from_json(graphs[entry["target"]]))
        assert keys[scene_key(expected)] == 1
        assert entry["needs_joint_reading"] is None  # train has no certificate


def test_no_two_images_share_a_scene_graph(v2_benchmark: Path):
    graphs = _read(v2_benchmark, "scene_graphs.json")
    keys = [scene_key(scene_from_json(objects)) for objects in graphs.values()]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("split", ("train", *EVAL))
def test_groups_hold_the_recorded_kinds(v2_benchmark: Path, split: str):
    graphs = _read(v2_benchmark, "scene_graphs.json")
    images = _read(v2_benchmark, f"image_splits/split.rc2.{split}.json")
    captions = {c["pairid"]: c for c in _read(v2_benchmark, f"captions/cap.rc2.{split}.json")}
    size = 6 if split == "train" else V2.group_size
    kinds_seen: Counter[str] = Counter()
    for entry in _read(v2_benchmark, f"query_edits.rc2.{split}.json"):
        group, caption = entry["group"], captions[entry["pairid"]]
        assert len(group) == size and set(group) <= set(images)
        assert set(caption["img_set"]["members"]) <= set(group) and len(caption["img_set"]["members"]) == 6
        assert group[caption["reference"]] == "reference" and group[entry["target"]] == "target"
        reference, target = (scene_from_json(graphs[n]) for n in (caption["reference"], entry["target"]))
        assert len(reference) >= 2  # no one-object references (they ran out in version 1)
        prog = Program.from_json(entry["program"])
        family = FAMILIES[prog.family]
        assert [e.to_json() for e in family.resolve(prog, reference)] == entry["edits"]
        misread = {scene_key(apply_edits(reference, m)) for m in family.misreadings(prog, reference)}
        for name, kind in group.items():
            scene = scene_from_json(graphs[name])
            if kind == "intent":
                assert scene_key(scene) in misread
            elif kind == "retention":  # the right edit and one change more
                assert net_edit_count(target, scene) == 1 and set(target) - set(reference) <= set(scene)
            elif kind == "topped_up":
                assert net_edit_count(target, scene) == 1
        kinds_seen.update(group.values())
        if prog.family == "compound":
            assert net_edit_count(reference, target) >= 2
    assert kinds_seen["intent"] > 0 and kinds_seen["retention"] > 0
    assert set(kinds_seen) <= {"reference", "target", "intent", "retention", "topped_up"}
    if split != "train":  # the two kinds are balanced: neither under a third of the distractors
        distractors = kinds_seen["intent"] + kinds_seen["retention"] + kinds_seen["topped_up"]
        assert min(kinds_seen["intent"], kinds_seen["retention"]) >= distractors / 3


def _programs(family: str, count: int, seed: int = 0) -> list[tuple[Program, object]]:
    rng = np.random.default_rng(seed)
    found = []
    while len(found) < count:
        reference = random_scene(rng, int(rng.integers(2, 5)))
        try:
            found.append((FAMILIES[family].draw(rng, reference), reference))
        except EditNotApplicable:
            continue
    return found


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("style", sorted(FRAMES))
def test_every_caption_parses_back_to_its_program(family: str, style: str):
    rng = np.random.default_rng(1)
    for prog, _ in _programs(family, 12):
        for held_out in (False, True):
            caption = render_style(prog, rng, style, held_out)
            assert parse(caption) == [prog.to_json()], caption


def test_written_captions_parse_back_and_held_out_only_in_eval(v2_benchmark: Path):
    held = Counter()
    for split in ("train", *EVAL):
        captions = {c["pairid"]: c["caption"] for c in _read(v2_benchmark, f"captions/cap.rc2.{split}.json")}
        for entry in _read(v2_benchmark, f"query_edits.rc2.{split}.json"):
            caption = captions[entry["pairid"]]
            assert parse(caption) == [entry["program"]], caption
            assert (parse(caption, seen_only=True) == []) == entry["held_out"], caption
            held[split] += entry["held_out"]
    assert held["train"] == 0 and held["val"] > 0 and held["test1"] > 0


def test_phrasing_diversity():
    assert all(phrasing_count(variant) >= 10 for variant in CORES)
    rng = np.random.default_rng(2)
    lengths = [len(render_style(p, rng, style, bool(rng.random() < 0.3)).split())
               for family in FAMILIES for p, _ in _programs(family, 10) for style in FRAMES]
    assert min(lengths) >= 4 and max(lengths) <= 40
    assert np.percentile(lengths, 10) <= 9 and np.percentile(lengths, 90) >= 20


def test_a_broken_query_edits_file_is_one_error(v2_benchmark: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(v2_benchmark, copy, ignore=shutil.ignore_patterns("*.png"))
    entries = _read(copy, "query_edits.rc2.val.json")
    del entries[3]["target"]
    (copy / "query_edits.rc2.val.json").write_text(json.dumps(entries))
    with pytest.raises(HarnessError, match=r"query_edits.rc2.val.json.*regenerate"):
        split_ceilings(copy, "val")
