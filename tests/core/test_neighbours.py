import torch

from fedge.core.neighbours import random_select, threshold_select, topk_select
from fedge.core.similarity import overlap_cosine, paired_cosine


def test_threshold_kmin_kmax_semantics() -> None:
    scores = torch.tensor([
        [0.0, 0.9, 0.5, 0.3, 0.1, -0.2],
        [0.9, 0.0, 0.1, 0.05, 0.0, 0.0],
        [0.5, 0.1, 0.0, 0.15, 0.19, 0.1],
        [0.3, 0.05, 0.15, 0.0, 0.8, 0.7],
        [0.1, 0.0, 0.19, 0.8, 0.0, 0.6],
        [-0.2, 0.0, 0.1, 0.7, 0.6, 0.0],
    ])
    candidates = torch.ones(6, 6, dtype=torch.bool)
    chosen = threshold_select(scores, candidates, delta=0.2, k_min=1, k_max=2)
    # Row 0: 0.9, 0.5, 0.3 pass δ, capped at k_max = 2 → {1, 2}.
    assert chosen[0].nonzero().flatten().tolist() == [1, 2]
    # Row 1: only 0.9 passes → {0}.
    assert chosen[1].nonzero().flatten().tolist() == [0]
    # Row 2: 0.5 passes; row 2 has one. Row with none passing gets k_min best: use δ = 0.95.
    strict = threshold_select(scores, candidates, delta=0.95, k_min=1, k_max=2)
    assert strict.sum(dim=1).tolist() == [1] * 6
    assert strict[2].nonzero().flatten().tolist() == [0]
    # k_min = 0 allows isolation; the diagonal is never chosen.
    none = threshold_select(scores, candidates, delta=0.95, k_min=0, k_max=2)
    assert int(none.sum()) == 0
    assert not bool(threshold_select(scores, candidates, -1.0, 0, 5).diagonal().any())
    # Per-device k_max.
    per = threshold_select(scores, candidates, 0.2, 1, torch.tensor([1, 1, 1, 3, 1, 1]))
    assert per[0].nonzero().flatten().tolist() == [1]
    assert per[3].nonzero().flatten().tolist() == [0, 4, 5]


def test_candidates_limit_selection() -> None:
    scores = torch.ones(4, 4)
    candidates = torch.zeros(4, 4, dtype=torch.bool)
    candidates[0, 3] = True
    chosen = threshold_select(scores, candidates, 0.2, 2, 3)
    assert chosen[0].nonzero().flatten().tolist() == [3]
    assert int(chosen[1:].sum()) == 0


def test_topk_and_random_counts() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(10, 10, generator=g)
    cand = torch.ones(10, 10, dtype=torch.bool)
    top = topk_select(scores, cand, 3)
    assert top.sum(dim=1).tolist() == [3] * 10
    counts = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    rnd = random_select(cand, counts, torch.rand(10, 10, generator=g))
    assert rnd.sum(dim=1).tolist() == counts.tolist()
    assert not bool(rnd.diagonal().any())


def test_ties_go_to_the_lower_rank_not_the_lower_index() -> None:
    scores = torch.zeros(4, 4)  # every candidate tied
    cand = torch.ones(4, 4, dtype=torch.bool)
    assert topk_select(scores, cand, 1)[0].nonzero().flatten().tolist() == [1]
    rank = torch.tensor([3, 2, 1, 0])  # e.g. device ids of rows stored in reverse order
    assert topk_select(scores, cand, 1, tie_rank=rank)[0].nonzero().flatten().tolist() == [3]
    assert topk_select(scores, cand, 2, tie_rank=rank)[3].nonzero().flatten().tolist() == [1, 2]


def test_overlap_cosine_matches_explicit_formula() -> None:
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(5, 50, generator=g) < 0.6
    u = torch.randn(5, 50, generator=g, dtype=torch.float64) * masks
    matrix = overlap_cosine(u, masks)
    for i in range(5):
        for j in range(5):
            m = masks[i] & masks[j]
            a, b = u[i] * m, u[j] * m
            expected = (a @ b) / (a.norm() * b.norm())
            assert abs(float(matrix[i, j]) - float(expected)) < 1e-9
    rows, cols = torch.tensor([0, 1, 4]), torch.tensor([2, 3, 0])
    torch.testing.assert_close(paired_cosine(u[rows], masks[rows], u[cols], masks[cols]), matrix[rows, cols])


def _sorted_reference(scores: torch.Tensor, candidates: torch.Tensor, delta: float, k_min: torch.Tensor,
                      k_max: torch.Tensor) -> torch.Tensor:
    """The definition, written plainly: a stable descending sort of each row, then the δ / k_max / k_min rule."""
    n = scores.shape[0]
    chosen = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        ranked = [j for j in sorted(range(n), key=lambda j: (-float(scores[i, j]), j))
                  if j != i and bool(candidates[i, j])]
        passing = [j for j in ranked if float(scores[i, j]) >= delta][: int(k_max[i])]
        keep = max(len(passing), int(k_min[i]))
        chosen[i, ranked[:keep]] = True
    return chosen


def test_threshold_and_topk_match_a_stable_sort_with_many_ties() -> None:
    g = torch.Generator().manual_seed(5)
    for trial in range(30):
        n = int(torch.randint(2, 25, (1,), generator=g))
        # Few distinct values, so ties at the cut-off are the rule rather than the exception.
        scores = torch.randint(-2, 3, (n, n), generator=g).float() / 2
        candidates = torch.rand(n, n, generator=g) < 0.7
        k_min = torch.randint(0, 3, (n,), generator=g)
        k_max = torch.randint(0, 5, (n,), generator=g)
        delta = [0.0, 0.5, 1.0][trial % 3]
        expected = _sorted_reference(scores, candidates, delta, k_min, k_max)
        assert torch.equal(threshold_select(scores, candidates, delta, k_min, k_max), expected), trial
        top = _sorted_reference(scores, candidates, float("inf"), k_max, k_max)  # δ above every score: k best
        assert torch.equal(topk_select(scores, candidates, k_max), top), trial


def test_best_per_row_on_a_subset_of_rows() -> None:
    from fedge.core.neighbours import best_per_row

    masked = torch.tensor([[0.5, float("-inf"), 0.9, 0.5, 0.1, 0.5],
                           [0.2, 0.3, float("-inf"), 0.3, 0.3, 0.0]])
    chosen = best_per_row(masked, torch.tensor([3, 2]))
    assert chosen[0].nonzero().flatten().tolist() == [0, 2, 3]  # 0.9, then the first two of the tied 0.5s
    assert chosen[1].nonzero().flatten().tolist() == [1, 3]
    assert best_per_row(masked, torch.tensor([9, 0])).sum(dim=1).tolist() == [5, 0]  # finite entries only
