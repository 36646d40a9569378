"""Intent fidelity and visual retention read off scene graphs (harness.evaluation.intent)."""

from __future__ import annotations

from harness.data.synthetic.scene import SceneObject, apply_edits, edit_from_json, make_scene
from harness.evaluation.intent import score_retrieved

REFERENCE = make_scene([SceneObject((0, 0), "circle", "red", "small"), SceneObject((1, 1), "square", "blue", "large"),
                        SceneObject((2, 2), "star", "green", "small")])
RECOLOUR = {"type": "recolour", "subject": {"colour": "red", "shape": "circle"}, "new": "yellow"}
REMOVE = {"type": "remove", "subject": {"colour": "green", "shape": "star"}, "new": None}


def test_the_target_shows_every_edit_and_keeps_everything_else():
    target = apply_edits(REFERENCE, [edit_from_json(RECOLOUR), edit_from_json(REMOVE)])
    assert score_retrieved(REFERENCE, [RECOLOUR, REMOVE], target) == {"intent_fidelity": 1.0, "visual_retention": 1.0}


def test_the_reference_keeps_everything_and_shows_no_edit():
    assert score_retrieved(REFERENCE, [RECOLOUR, REMOVE],
                           REFERENCE) == {"intent_fidelity": 0.0, "visual_retention": 1.0}


def test_an_image_that_follows_the_caption_but_loses_the_reference():
    other = make_scene([SceneObject((0, 0), "circle", "yellow", "small")])  # the recoloured circle alone
    assert score_retrieved(REFERENCE, [RECOLOUR], other) == {"intent_fidelity": 1.0, "visual_retention": 0.0}
    moved = make_scene([SceneObject((0, 1), "circle", "yellow", "small"), *REFERENCE[1:]])  # right colour, wrong cell
    assert score_retrieved(REFERENCE, [RECOLOUR], moved)["intent_fidelity"] == 0.0


def test_a_reference_whose_every_object_is_edited_has_no_retention():
    single = make_scene([SceneObject((0, 0), "circle", "red", "small")])
    assert score_retrieved(single, [RECOLOUR], single)["visual_retention"] is None
