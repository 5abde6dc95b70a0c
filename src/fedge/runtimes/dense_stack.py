"""Hand-written batched forward/backward for stacks of Linear (+ReLU) layers, many devices at once.

`torch.func.vmap(grad(...))` over an MLP works, but at the sizes of federated benchmarks (a 60-64-10 MLP, batches of
32) each step is dominated by the functorch and autograd machinery rather than by arithmetic. For a plain
`Flatten? → Linear → ReLU → … → Linear` stack the gradient of the weighted mean cross-entropy is a handful of
batched matrix products, written out here: forward `z = h Wᵀ + b` with `baddbmm`, backward
`∂W = ∂zᵀ h`, `∂b = Σ ∂z`, `∂h = ∂z W`, masked by `z > 0` through each ReLU. Tests check it equals autograd.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedge.core.privacy import PerSample
from fedge.models.flat import FlatModel


@dataclass(frozen=True)
class DenseLayer:
    weight: slice  # coordinates of W [out, in] in the flat vector
    bias: slice
    out_features: int
    in_features: int
    relu: bool  # a ReLU follows this layer


def dense_layers(model: FlatModel) -> list[DenseLayer] | None:
    """The layers of `model` if its module is a `Sequential` of Flatten / Linear (with bias) / ReLU, else None."""
    module = model.module
    if not isinstance(module, nn.Sequential):
        return None
    slices = {s.name: s for s in model.slices}
    layers: list[DenseLayer] = []
    for index, child in enumerate(module):
        if isinstance(child, nn.Flatten) and not layers:
            continue
        if isinstance(child, nn.ReLU) and layers and not layers[-1].relu:
            last = layers[-1]
            layers[-1] = DenseLayer(last.weight, last.bias, last.out_features, last.in_features, True)
            continue
        if isinstance(child, nn.Linear) and child.bias is not None:
            w, b = slices[f"{index}.weight"], slices[f"{index}.bias"]
            layers.append(DenseLayer(slice(w.start, w.stop), slice(b.start, b.stop), child.out_features,
                                     child.in_features, False))
            continue
        return None
    if not layers or layers[-1].relu:
        return None
    return layers


def _forward(layers: list[DenseLayer], params: torch.Tensor, x: torch.Tensor,
             record: bool) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Logits [M, B, classes]; with `record`, each layer's input and pre-activation for the backward pass."""
    m, b = x.shape[:2]
    h = x.reshape(m, b, -1)
    inputs: list[torch.Tensor] = []
    pre_activations: list[torch.Tensor] = []
    for layer in layers:
        w = params[:, layer.weight].view(m, layer.out_features, layer.in_features)
        z = torch.baddbmm(params[:, layer.bias].unsqueeze(1), h, w.transpose(1, 2))
        if record:
            inputs.append(h)
            pre_activations.append(z)
        h = torch.relu(z) if layer.relu else z
    return h, inputs, pre_activations


def dense_forward(layers: list[DenseLayer], params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Logits [M, B, classes] of device m's parameters `params[m]` on its inputs `x[m]`."""
    return _forward(layers, params, x, record=False)[0]


def dense_grad_and_loss(layers: list[DenseLayer], params: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                        weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per device m: gradient [M, d] and value [M] of Σ_b w_mb·CE(f(params_m, x_mb), y_mb) / max(Σ_b w_mb, 1).

    `params` [M, d] flat rows, `x` [M, B, ...], `y` [M, B] labels, `weight` [M, B] (0 for padding).
    """
    m = y.shape[0]
    h, inputs, pre_activations = _forward(layers, params, x, record=True)
    log_probs = torch.log_softmax(h, dim=2)
    scale = weight / weight.sum(dim=1, keepdim=True).clamp_min(1.0)  # [M, B]
    picked = log_probs.gather(2, y.unsqueeze(2)).squeeze(2)
    loss = -(picked * scale).sum(dim=1)
    dz = log_probs.exp_()  # softmax, reusing the buffer
    dz.scatter_add_(2, y.unsqueeze(2), torch.full_like(picked, -1.0).unsqueeze(2))
    dz.mul_(scale.unsqueeze(2))
    grad = torch.empty_like(params)
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        grad[:, layer.weight] = torch.bmm(dz.transpose(1, 2), inputs[i]).reshape(m, -1)
        grad[:, layer.bias] = dz.sum(dim=1)
        if i > 0:
            w = params[:, layer.weight].view(m, layer.out_features, layer.in_features)
            dz = torch.bmm(dz, w)
            if layers[i - 1].relu:
                dz.mul_(pre_activations[i - 1] > 0)
    return grad, loss


def dense_per_sample(layers: list[DenseLayer], params: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                     onehot: torch.Tensor | None = None) -> tuple[PerSample, torch.Tensor]:
    """Per-sample gradients of CE(f(params_m, x_mb), y_mb) for DP-SGD, and the per-sample losses [M, B].

    For layer l the gradient of sample b is ∂W = ∂z_b h_bᵀ and ∂b = ∂z_b: each layer is kept as the factors
    (∂z [M, B, out], h [M, B, in]), never as [M, B, out, in] (DP-SGD clips and sums them without forming them:
    `fedge.core.privacy.PerSample`; the norm of a sample's weight and bias gradient is ‖∂z_b‖²(‖h_b‖² + 1)).
    Same backward pass as `dense_grad_and_loss`, without the batch mean. `onehot` [M, B, classes] (y as one-hot
    floats, which the batched trainer gathers once per block of steps): softmax − onehot in one subtraction, the
    same numbers as subtracting 1 at y.
    """
    m = y.shape[0]
    h, inputs, pre_activations = _forward(layers, params, x, record=True)
    log_probs = torch.log_softmax(h, dim=2)
    target = y.unsqueeze(2)
    losses = -log_probs.gather(2, target).squeeze(2)
    dz = log_probs.exp_()
    if onehot is not None:
        dz.sub_(onehot)
    else:
        dz.scatter_add_(2, target, torch.full_like(target, -1, dtype=dz.dtype))
    grads = PerSample(params.shape[1])
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        grads.outer.append((layer.weight, layer.bias, dz, inputs[i]))
        if i > 0:
            dz = torch.bmm(dz, params[:, layer.weight].view(m, layer.out_features, layer.in_features))
            if layers[i - 1].relu:
                dz.mul_(pre_activations[i - 1] > 0)  # a new tensor: the one kept in `grads` is untouched
    return grads, losses


__all__ = ["DenseLayer", "dense_forward", "dense_grad_and_loss", "dense_layers", "dense_per_sample"]
