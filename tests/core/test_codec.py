import pytest
import torch

from fedge.core import codec


@pytest.mark.parametrize("d,density", [(10, 1.0), (1000, 0.5), (1000, 0.05), (70000, 0.5), (70000, 0.01), (9, 0.0)])
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_round_trip_and_size(d: int, density: float, dtype: str) -> None:
    g = torch.Generator().manual_seed(d)
    values = torch.randn(d, generator=g)
    mask = torch.rand(d, generator=g) < density
    payload = codec.encode(values * mask, mask, dtype)
    assert len(payload) == codec.encoded_size(d, int(mask.sum()), dtype)
    assert int(codec.encoded_sizes(mask.sum()[None], d, dtype)[0]) == len(payload)
    decoded = codec.decode(payload)
    expected = (values * mask).half().float() if dtype == "fp16" else values * mask
    assert torch.equal(decoded.values, expected)
    if 0 < int(mask.sum()) < d:
        assert torch.equal(decoded.mask, mask)


def test_layout_choice_is_the_smallest() -> None:
    d = 80000
    sizes_sparse = codec.layout_sizes(d, 100)
    assert codec.encoded_size(d, 100) == sizes_sparse[codec.INDEX] < sizes_sparse[codec.BITMAP]
    half = codec.layout_sizes(d, d // 2)
    assert codec.encoded_size(d, d // 2) == half[codec.BITMAP] < half[codec.DENSE]
    assert codec.encoded_size(d, d) == codec.layout_sizes(d, d)[codec.DENSE]
    # A half-density fp32 payload costs half the values plus one bit per coordinate.
    assert codec.encoded_size(d, d // 2) == codec.HEADER.size + d // 8 + d // 2 * 4


def test_dense_encoding_without_mask() -> None:
    values = torch.arange(5, dtype=torch.float32)
    payload = codec.encode(values, None)
    assert len(payload) == codec.HEADER.size + 20
    assert torch.equal(codec.decode(payload).values, values)


def test_truncated_payload_is_rejected() -> None:
    payload = codec.encode(torch.ones(100), torch.rand(100) < 0.3)
    with pytest.raises(ValueError):
        codec.decode(payload[:-1])
    with pytest.raises(ValueError):
        codec.decode(payload[:3])


def test_cached_mask_layout_sends_values_only() -> None:
    g = torch.Generator().manual_seed(5)
    d = 5000
    mask = torch.rand(d, generator=g) < 0.5
    values = torch.randn(d, generator=g) * mask
    payload = codec.encode(values, mask, mask_known=True)
    nnz = int(mask.sum())
    assert len(payload) == codec.HEADER.size + 4 * nnz == codec.encoded_size(d, nnz, mask_known=True)
    assert int(codec.encoded_sizes(mask.sum()[None], d, mask_known=torch.tensor([True]))[0]) == len(payload)
    decoded = codec.decode(payload, known_mask=mask)
    assert torch.equal(decoded.values, values) and torch.equal(decoded.mask, mask)
    with pytest.raises(ValueError):
        codec.decode(payload)


@pytest.mark.parametrize("catalogue", [9724, 70000])
def test_id_lists_round_trip_with_their_sizes(catalogue: int) -> None:
    ids = torch.tensor([0, 5, catalogue - 1])
    body = codec.encode_id_list(ids, catalogue)
    assert len(body) == int(codec.id_list_sizes(torch.tensor([3]), catalogue)[0])
    assert torch.equal(codec.decode_id_list(body, catalogue), ids)
    with pytest.raises(ValueError):
        codec.decode_id_list(body[:-1], catalogue)
    with pytest.raises(ValueError):
        codec.decode_id_list(codec.encode_id_list(ids, catalogue), catalogue - 1)
