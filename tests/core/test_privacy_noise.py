"""`fedge.core.privacy.Noise` draws, in fewer `normal_` calls, exactly the numbers of one `normal_` per parameter tensor
(Opacus's `DPOptimizer` draws), and leaves the generator where those draws leave it; `PerSample` with a layer's bias
folded into its factored weight gives the norms and sums of the dense gradients."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from fedge.core.privacy import Noise, PerSample, clip_rows, noise_runs


@dataclass(frozen=True)
class Tensor:
    start: int
    stop: int
    shape: tuple[int, ...]


def layout(*sizes: int) -> list[Tensor]:
    out, start = [], 0
    for n in sizes:
        out.append(Tensor(start, start + n, (n,)))
        start += n
    return out


LAYOUTS = {
    "mlp": (3840, 64, 640, 10),
    "lenet5": (150, 6, 2400, 16, 7680, 120, 10080, 84, 840, 10),
    "odd": (5, 7, 3, 16, 33, 48, 17, 1, 15, 2, 32, 16, 9, 9, 64, 1),
    "small": (1, 2, 3, 4, 5, 6, 7, 8),
    "blocks": (16, 16, 16, 15, 16, 17, 32, 1),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_noise_equals_one_draw_per_tensor(name: str) -> None:
    tensors = layout(*LAYOUTS[name])
    noise = Noise(tensors, 2)
    for std in (1.0, 0.37):
        for seed in (0, 1, 2):
            mine, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
            for row in range(2):  # several draws in a row: the generator state carries over exactly
                noise.draw(row, std, mine)
            for row in range(2):
                reference = torch.cat([torch.normal(0.0, std, size=t.shape, generator=theirs) for t in tensors])
                assert torch.equal(noise.values[row], reference)
            assert torch.equal(mine.get_state(), theirs.get_state())
    assert len(noise_runs(tensors)) <= len(tensors)
    # several rows at once: row k from generator k
    mine = [torch.Generator().manual_seed(seed) for seed in (3, 4)]
    theirs = [torch.Generator().manual_seed(seed) for seed in (3, 4)]
    for _ in range(2):
        rows = noise.draw_rows(0.5, mine)
        for k, generator in enumerate(theirs):
            reference = torch.cat([torch.normal(0.0, 0.5, size=t.shape, generator=generator) for t in tensors])
            assert torch.equal(rows[k], reference)
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(mine, theirs, strict=True))


def test_noise_runs_merge_what_draws_alike() -> None:
    assert noise_runs(layout(*LAYOUTS["mlp"])) == [slice(0, 4544), slice(4544, 4554)]
    assert len(noise_runs(layout(*LAYOUTS["lenet5"]))) == 6
    assert noise_runs(layout(5, 7, 3, 16)) == [slice(0, 15), slice(15, 31)]


def test_bias_folded_into_outer_part_matches_dense() -> None:
    g = torch.Generator().manual_seed(0)
    m, b, p, q = 3, 5, 4, 6
    left, right = torch.randn(m, b, p, generator=g), torch.randn(m, b, q, generator=g)
    conv = torch.randn(m, b, 7, generator=g)
    dim = 7 + p * q + p
    grads = PerSample(dim, [(slice(0, 7), conv)], [(slice(7, 7 + p * q), slice(7 + p * q, dim), left, right)])
    dense = grads.dense()
    keep = torch.rand(m, dim, generator=g) < 0.7
    valid = (torch.rand(m, b, generator=g) < 0.8).float()
    for mask in (None, keep):
        masked = dense if mask is None else dense * mask[:, None, :]
        torch.testing.assert_close(grads.sq_norms(mask), masked.square().sum(-1), rtol=1e-5, atol=1e-6)
        for c in (0.1, 1.0, None):
            expected = torch.stack([clip_rows(masked[k], c)[0].mul(valid[k][:, None]).sum(0) for k in range(m)])
            got = grads.clipped_sum(c, valid, mask)
            if mask is not None:
                got = got * mask
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
