import torch
from torch import nn
from torch.func import grad_and_value, vmap

from fedge.models.flat import FlatModel
from fedge.models.vision import build_model
from fedge.runtimes.dense_stack import dense_forward, dense_grad_and_loss, dense_layers


def _autograd(model: FlatModel, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
              w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    def loss(p: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
        ce = nn.functional.cross_entropy(model.forward(p, xb), yb, reduction="none")
        return (ce * wb).sum() / wb.sum().clamp_min(1.0)

    return vmap(grad_and_value(loss))(params, x, y, w)


def test_dense_stack_gradient_equals_autograd() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3))
    model = FlatModel(module)
    layers = dense_layers(model)
    assert layers is not None and [layer.relu for layer in layers] == [True, True, False]
    g = torch.Generator().manual_seed(1)
    params = torch.randn(6, model.dim, generator=g, dtype=torch.float64)
    x = torch.randn(6, 9, 3, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6, 9), generator=g)
    w = (torch.rand(6, 9, generator=g) < 0.8).to(torch.float64)
    w[2] = 0.0  # a device with only padding: zero gradient, zero loss
    model.module.double()
    grad, loss = dense_grad_and_loss(layers, params, x, y, w)
    ref_grad, ref_loss = _autograd(model, params, x, y, w)
    torch.testing.assert_close(grad, ref_grad)
    torch.testing.assert_close(loss, ref_loss)
    assert float(grad[2].abs().sum()) == 0.0
    torch.testing.assert_close(dense_forward(layers, params, x), vmap(model.forward)(params, x))


def test_dense_layers_recognises_only_plain_stacks() -> None:
    assert dense_layers(FlatModel(build_model("mlp", (60,), 10))) is not None
    assert dense_layers(FlatModel(build_model("lenet5", (1, 28, 28), 10))) is None
    assert dense_layers(FlatModel(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)))) is None
    assert dense_layers(FlatModel(nn.Sequential(nn.Linear(4, 2, bias=False)))) is None
    assert dense_layers(FlatModel(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))) is None  # must end in a Linear
