"""Blockwise scoring gives exactly what the full-matrix metric functions give, ties included."""

from __future__ import annotations

import pytest
import torch

from harness.evaluation.metrics import ranking, subset_ranks, target_ranks
from harness.evaluation.ranking import score_blockwise, score_per_gallery
from harness.objectives.losses import similarity


def _embeddings(queries: int, gallery: int, seed: int, ties: bool) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(queries, 8, generator=generator)
    g = torch.randn(gallery, 8, generator=generator)
    if ties:  # coarse values: many equal scores, at the top-k boundary too
        q, g = q.round(), g.round().clamp(-1, 1)
    return q, g


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("max_scores", [7, 64, 2**24])  # several blocks of queries, or one
@pytest.mark.parametrize("gallery_block", [6, 13, 2**16])  # several blocks of the gallery (a ragged last one), or one
def test_blockwise_equals_the_full_matrix(ties: bool, max_scores: int, gallery_block: int):
    queries, gallery = _embeddings(23, 40, seed=1, ties=ties)
    generator = torch.Generator().manual_seed(2)
    reference = torch.randint(0, 40, (23,), generator=generator)
    reference[3] = -1  # a query whose reference is not in the gallery
    targets = torch.randint(0, 40, (23,), generator=generator)
    targets[targets == reference] = (targets[targets == reference] + 1) % 40
    members = torch.stack([torch.cat([reference[i : i + 1].clamp(min=0), targets[i : i + 1],
                                      torch.randint(0, 40, (3,), generator=generator)]) for i in range(23)])
    members[5, 4] = -1  # a shorter set
    scored = score_blockwise(queries, gallery, 10, exclude=reference, targets=targets, subset_index=members,
                             reference=reference, max_scores=max_scores, gallery_block=gallery_block)
    scores = queries @ gallery.T
    assert torch.equal(scored.top, ranking(scores, reference, top=10))
    assert torch.equal(scored.ranks, target_ranks(scores, targets, reference))
    assert torch.equal(scored.subset, subset_ranks(scores, members, targets, reference))
    for row in range(23):  # members but the reference, each once, by score then gallery index
        expected = sorted({int(m) for m in members[row] if m >= 0 and m != reference[row]},
                          key=lambda m: (-float(scores[row, m]), m))
        assert [int(m) for m in scored.subset_order[row] if m >= 0] == expected


def test_category_galleries_never_rank_other_categories():
    queries, gallery = _embeddings(6, 12, seed=3, ties=False)
    category = torch.tensor([0, 0, 0, 1, 1, 1])
    columns = torch.arange(12) < 5  # category 0 owns images 0-4, category 1 images 5-11
    galleries = [(torch.tensor([0, 1, 2]), torch.arange(5)), (torch.tensor([3, 4, 5]), torch.arange(5, 12))]
    targets = torch.tensor([0, 1, 2, 5, 6, 7])
    scored = score_per_gallery(queries, gallery, 8, galleries, targets=targets, max_scores=24, gallery_block=4)
    for row in range(6):
        kept = [int(i) for i in scored.top[row] if i >= 0]
        assert len(kept) == (5 if category[row] == 0 else 7)
        assert all(bool(columns[i]) == (category[row] == 0) for i in kept)
        assert (scored.top[row, len(kept):] == -1).all()
    allowed = torch.stack([columns if category[row] == 0 else ~columns for row in range(6)])
    masked = (queries @ gallery.T).masked_fill(~allowed, float("-inf"))
    assert torch.equal(scored.ranks, target_ranks(masked, targets))


def test_reference_images_come_from_the_gallery_and_the_rest_are_decoded():
    from types import SimpleNamespace

    from harness.evaluation.evaluate import _reference_images

    pictures = {name: torch.full((3, 2, 2), value, dtype=torch.uint8) for value, name in enumerate("abcdef")}
    decoded: list[list[str]] = []

    def load(names: list[str]) -> torch.Tensor:
        decoded.append(list(names))
        return torch.stack([pictures[n] for n in names])

    split = SimpleNamespace(images=SimpleNamespace(load=load))
    gallery = ["a", "b", "c"]
    gallery_images = load(gallery)
    decoded.clear()
    triplets = [SimpleNamespace(reference=name) for name in ("c", "e", "a", "f")]
    index = {n: i for i, n in enumerate(gallery)}

    def rows(chosen) -> torch.Tensor:
        return torch.tensor([index.get(t.reference, -1) for t in chosen], dtype=torch.long)

    images = _reference_images(split, triplets, rows(triplets), gallery_images)
    assert decoded == [["e", "f"]]  # only the references outside the gallery are read
    assert torch.equal(images, torch.stack([pictures[n] for n in ("c", "e", "a", "f")]))
    decoded.clear()
    inside = _reference_images(split, triplets[::2], rows(triplets[::2]), gallery_images)
    assert decoded == [] and torch.equal(inside, torch.stack([pictures["c"], pictures["a"]]))


def test_image_source_preloads_when_it_fits_and_decodes_per_batch_otherwise(tiny_benchmark, monkeypatch):
    from harness.data.cirr import load_cirr_split
    from harness.training.loop import ImageSource, TrainConfig

    split = load_cirr_split(tiny_benchmark, "train")
    names = sorted(split.images.paths)[:40]
    rows = torch.tensor([3, 17, 5, 39])
    preloaded = ImageSource(split, TrainConfig(), names)
    assert preloaded.images is not None and len(preloaded.images) == 40
    monkeypatch.setenv("CIR_HARNESS_PRELOAD_MB", "0")
    per_batch = ImageSource(load_cirr_split(tiny_benchmark, "train"), TrainConfig(), names)
    assert per_batch.images is None
    one, two = preloaded.batch(rows, "cpu"), per_batch.batch(rows, "cpu")
    assert one.names == two.names == [names[i] for i in rows] and torch.equal(one.images, two.images)


def _brute_force_max_similarity(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """[Q, G]: each image's best vector, one query and one image at a time, in float64."""
    return torch.tensor([[max(float(q.double() @ v.double()) for v in image) for image in gallery] for q in queries],
                        dtype=torch.float64)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("max_scores", [7, 64, 2**24])
@pytest.mark.parametrize("gallery_block", [6, 2**16])
def test_max_similarity_ranking_equals_brute_force(ties: bool, max_scores: int, gallery_block: int):
    generator = torch.Generator().manual_seed(4)
    queries = torch.randn(17, 8, generator=generator)
    gallery = torch.randn(30, 4, 8, generator=generator)  # 4 vectors per image
    if ties:
        queries, gallery = queries.round(), gallery.round().clamp(-1, 1)
    reference = torch.randint(0, 30, (17,), generator=generator)
    targets = (reference + 1 + torch.randint(0, 28, (17,), generator=generator)) % 30
    members = torch.stack([reference, targets, (targets + 3) % 30, (targets + 7) % 30], dim=1)
    scored = score_blockwise(queries, gallery, 10, exclude=reference, targets=targets, subset_index=members,
                             reference=reference, max_scores=max_scores, gallery_block=gallery_block)
    scores = _brute_force_max_similarity(queries, gallery)
    assert torch.allclose(similarity(queries, gallery).double(), scores, atol=1e-5)
    assert torch.equal(scored.top, ranking(scores, reference, top=10))
    assert torch.equal(scored.ranks, target_ranks(scores, targets, reference))
    assert torch.equal(scored.subset, subset_ranks(scores, members, targets, reference))
    if ties:  # the ties are real: some query has equal scores at the top
        assert bool((scored.top_scores[:, 0] == scored.top_scores[:, 1]).any())


@pytest.mark.parametrize("gallery_block", [6, 2**16])
def test_one_vector_per_image_scores_as_the_single_vector_gallery_bit_for_bit(gallery_block: int):
    queries, gallery = _embeddings(23, 40, seed=5, ties=False)
    reference = torch.arange(23) % 40
    targets = (reference + 5) % 40
    single = score_blockwise(queries, gallery, 10, exclude=reference, targets=targets, gallery_block=gallery_block)
    multi = score_blockwise(queries, gallery.unsqueeze(1), 10, exclude=reference, targets=targets,
                            gallery_block=gallery_block)
    assert torch.equal(single.top, multi.top) and torch.equal(single.top_scores, multi.top_scores)
    assert torch.equal(single.ranks, multi.ranks)
    assert torch.equal(similarity(queries, gallery), similarity(queries, gallery.unsqueeze(1)))


def test_multi_vector_galleries_go_through_the_scratch_file_and_the_embedding_cache():
    from harness.evaluation.embedding_cache import load_embeddings, save_embeddings
    from harness.evaluation.embedding_file import EmbeddingFile

    gallery = torch.randn(10, 3, 8, generator=torch.Generator().manual_seed(6))
    with EmbeddingFile(10) as store:
        store.write(0, gallery[:4])
        store.write(4, gallery[4:])
        assert torch.equal(store.tensor(), gallery)
    save_embeddings("multi-vector-test", gallery)
    assert torch.equal(load_embeddings("multi-vector-test"), gallery)
