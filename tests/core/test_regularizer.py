import torch

from fedge.core import regularizer


def _case(seed: int, d: int = 200, k: int = 3, scale: float = 0.03) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, generator=g, dtype=torch.float64) * 0.1
    refs = x[None] + scale * torch.randn(k, d, generator=g, dtype=torch.float64)
    overlap = torch.rand(k, d, generator=g) < 0.6
    return x, refs, overlap


def test_closed_form_gradient_matches_autograd() -> None:
    for seed in range(3):
        x, refs, overlap = _case(seed)
        sigma = 1e-3
        leaf = x.clone().requires_grad_(True)
        (auto,) = torch.autograd.grad(regularizer.value(leaf, refs, overlap, sigma), leaf)
        torch.testing.assert_close(regularizer.gradient(x, refs, overlap, sigma), auto)


def test_batched_gradient_matches_per_device() -> None:
    xs, refs, overlaps = zip(*[_case(s) for s in range(4)])
    x = torch.stack(xs)
    r = torch.stack(refs)
    o = torch.stack(overlaps)
    valid = torch.tensor([[True, True, True], [True, False, False], [True, True, False], [False, False, False]])
    batched = regularizer.batched_gradient(x, r, o, valid, 1e-3)
    prepared = regularizer.prepared_gradient(x, regularizer.prepare_references(r, o, valid), 1e-3)
    torch.testing.assert_close(prepared, batched)
    for i in range(4):
        keep = valid[i]
        expected = regularizer.gradient(x[i], r[i][keep], o[i][keep], 1e-3)
        torch.testing.assert_close(batched[i], expected)


def test_pull_is_alive_at_training_distances_and_dead_without_scaling() -> None:
    # Mean squared coordinate differences between neighbouring models during training on digits are ~1e-4..1e-2
    # (docs/dpmn.md). At those distances the pull per coordinate stays a sizeable fraction of a proximal term's
    # 2·(x_i - x_j), whatever the model size ...
    for scale in (0.01, 0.03, 0.05):
        x, refs, overlap = _case(7, d=20000, scale=scale)
        diff, z, _ = regularizer.pair_terms(x, refs, overlap)
        grad = regularizer.gradient(x, refs, overlap, sigma=0.01)
        proximal = 2 * diff.mean(dim=0)
        ratio = float((grad * proximal).sum() / (proximal * proximal).sum())
        assert ratio > 0.5 * float(torch.exp(-z.max() / 0.01)) > 0.05
    # ... and it saturates for a distant model (z >> sigma) ...
    x, refs, overlap = _case(7, d=20000, scale=1.0)
    assert float(regularizer.gradient(x, refs, overlap, sigma=0.01).abs().max()) < 1e-20
    # ... whereas the paper's literal J(z) = 1 - exp(-z) on raw squared distances has underflowed already at
    # training distances: its gradient 2·exp(-z)·diff is exactly zero.
    x, refs, overlap = _case(7, d=20000, scale=0.05)
    raw = ((overlap * (x - refs)) ** 2).sum(dim=1)
    assert float(torch.exp(-raw).max()) < 1e-6
