"""Blockwise and faiss retrieval return the brute-force top-K, ties broken by gallery index."""

from __future__ import annotations

import pytest
import torch

from harness.evaluation.metrics import ranking
from harness.evaluation.retrieval import faiss_available, top_k, top_k_torch


def _brute_force(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> torch.Tensor:
    return ranking(queries @ gallery.T, None, top=k)  # the harness's own full ranking (ties by index)


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator), dim=1)


@pytest.mark.parametrize("query_block,gallery_block", [(7, 13), (64, 1000), (1, 5)])
def test_blockwise_top_k_equals_brute_force(query_block: int, gallery_block: int):
    queries, gallery = _unit(33, 16, 0), _unit(257, 16, 1)
    _, indices = top_k_torch(queries, gallery, 10, query_block, gallery_block)
    assert torch.equal(indices, _brute_force(queries, gallery, 10))


def test_ties_are_broken_by_gallery_index_across_blocks():
    gallery = torch.zeros(40, 4)
    gallery[:, 0] = 1.0  # every candidate scores the same
    gallery[35] = torch.tensor([2.0, 0, 0, 0])  # one clear winner in the last block
    queries = torch.tensor([[1.0, 0, 0, 0]])
    _, indices = top_k_torch(queries, gallery, 5, gallery_block=8)
    assert indices.tolist() == [[35, 0, 1, 2, 3]] == _brute_force(queries, gallery, 5).tolist()


def test_multi_vector_galleries_rank_by_their_best_vector_on_the_torch_path():
    queries, gallery = _unit(9, 16, 4), _unit(120, 16, 5).view(40, 3, 16)
    best = (queries @ gallery.reshape(120, 16).T).view(9, 40, 3).amax(dim=2)
    for backend in ("auto", "torch"):
        _, indices = top_k(queries, gallery, 7, backend=backend, query_block=2, gallery_block=9)
        assert torch.equal(indices, ranking(best, None, top=7))
    with pytest.raises(ValueError, match="single-vector"):
        top_k(queries, gallery, 7, backend="faiss")


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed")
def test_faiss_returns_the_same_top_k_including_ties():
    queries, gallery = _unit(50, 32, 2), _unit(2000, 32, 3)
    _, indices = top_k(queries, gallery, 20, backend="faiss")
    assert torch.equal(indices, _brute_force(queries, gallery, 20))
    tied = torch.zeros(30, 4)
    tied[:, 1] = 1.0
    _, indices = top_k(torch.tensor([[0.0, 1.0, 0, 0]]), tied, 6, backend="faiss")
    assert indices.tolist() == [[0, 1, 2, 3, 4, 5]]


def test_bench_quick_runs_in_seconds_and_writes_json_and_markdown(tmp_path):
    import json

    from typer.testing import CliRunner

    from harness.cli import app

    result = CliRunner().invoke(app, ["bench", "--quick", "--retrieval", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    [json_path] = tmp_path.glob("*.json")
    report = json.loads(json_path.read_text())
    assert json_path.stem == f"{report['hardware']}-{report['precision']}" and report["precision"] in ("fp32", "bf16")
    # a CPU's file names the instruction set its kernels use: AVX2 and AVX-512 machines share model names
    assert report["hardware"].endswith(f"core-{torch.backends.cpu.get_cpu_capability().lower()}")
    assert set(report["methods"]) == {"image_only", "sum"} and report["matmul_peak_flops"] > 0
    for row in report["methods"].values():
        assert row["ms_per_query_batch1_p95"] >= row["ms_per_query_batch1_p50"] > 0
        assert row["flops_per_query"] > 0 and 0 < row["model_flop_utilisation"]
        assert 0 < row["eval_loop_efficiency"] and 0 < row["train_loop_efficiency"]
    assert [row["gallery"] for row in report["retrieval"]] == [1000, 5000]
    if faiss_available():
        assert all(row["same_top50"] for row in report["retrieval"])
    text = json_path.with_suffix(".md").read_text()
    assert "| image_only |" in text and "## Retrieval" in text and report["hardware"] in text
