import torch

from fedge.core.masks import density, kept_count, magnitude_mask, regrow, scheduled_density


def test_magnitude_mask_has_exact_per_layer_density() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1000, generator=g)
    groups = [(0, 300), (300, 950)]  # 950..1000 is "bias": never pruned
    rho = torch.tensor([0.5, 0.2, 0.73])
    mask = magnitude_mask(x, groups, rho)
    for i in range(3):
        for start, stop in groups:
            assert int(mask[i, start:stop].sum()) == kept_count(stop - start, float(rho[i]))
        assert bool(mask[i, 950:].all())
    # The kept coordinates are the largest in magnitude within their layer.
    kept = x[0, :300][mask[0, :300]].abs().min()
    dropped = x[0, :300][~mask[0, :300]].abs().max()
    assert kept >= dropped


def test_pruning_only_removes_and_regrow_restores_density() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 400, generator=g)
    groups = [(0, 400)]
    first = magnitude_mask(x, groups, torch.tensor([0.5, 0.5]))
    second = magnitude_mask(x * torch.rand(2, 400, generator=g), groups, torch.tensor([0.25, 0.5]), current=first)
    assert not bool((second & ~first).any())
    assert int(second[0].sum()) == 100 and torch.equal(second[1], first[1])
    grown = regrow(second, groups, torch.tensor([0.5, 0.5]),
                   lambda rows, start, stop: torch.rand(len(rows), stop - start, generator=g))
    assert int(grown[0].sum()) == 200 and bool((second & ~grown).sum() == 0)
    assert density(grown).tolist() == [0.5, 0.5]


def test_regrow_picks_the_pruned_coordinates_of_largest_noise() -> None:
    """Only rows below their target ask for noise (each row's own), and each re-enables its pruned coordinates of
    largest noise: the choice a sort of every row makes."""
    g = torch.Generator().manual_seed(2)
    mask = torch.rand(12, 90, generator=g) < 0.4
    mask[::3] = True  # rows at (above) their target: unchanged
    target = torch.full((12,), 0.6)
    full_noise = torch.rand(12, 90, generator=torch.Generator().manual_seed(7))
    asked: list[int] = []

    def noise(rows: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        asked.extend(rows.tolist())
        return full_noise[rows, start:stop]

    grown = regrow(mask, [(0, 90)], target, noise)
    assert not set(asked) & {0, 3, 6, 9}
    noise_ref = full_noise.masked_fill(mask, -1.0)
    order = torch.sort(noise_ref, dim=1, descending=True, stable=True).indices
    missing = (kept_count(90, 0.6) - mask.sum(dim=1)).clamp_min(0)
    reference = mask.clone()
    for i in range(12):
        reference[i, order[i, : int(missing[i])]] = True
    assert torch.equal(grown, reference)
    assert torch.equal(grown[::3], mask[::3])


def test_schedule_ramps_linearly_to_target() -> None:
    target = torch.tensor([0.5, 0.2])
    steps = [scheduled_density(target, torch.tensor([p, p]), 4).tolist() for p in range(6)]
    assert steps[0] == [1.0, 1.0]
    assert abs(steps[2][0] - 0.75) < 1e-6 and abs(steps[2][1] - 0.6) < 1e-6
    assert [round(v, 6) for v in steps[4]] == [0.5, 0.2] and steps[5] == steps[4]


def test_keep_largest_matches_a_stable_sort_with_ties() -> None:
    from fedge.core.masks import keep_largest

    g = torch.Generator().manual_seed(11)
    for trial in range(20):
        n, size = int(torch.randint(1, 8, (1,), generator=g)), int(torch.randint(1, 40, (1,), generator=g))
        values = torch.randint(-1, 4, (n, size), generator=g).float()  # many ties, like pruned (-1) and zeros
        keep = torch.randint(1, size + 1, (n,), generator=g)
        order = torch.sort(values, dim=1, descending=True, stable=True).indices
        expected = torch.zeros(n, size, dtype=torch.bool)
        for i in range(n):
            expected[i, order[i, : int(keep[i])]] = True
        assert torch.equal(keep_largest(values, keep), expected), trial
