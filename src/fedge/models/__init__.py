"""Models and the flat-parameter view used by the parameter bank.

`MODELS` maps a config name to a constructor `(input_shape, num_classes) -> nn.Module`. `FlatModel` describes how one
row of the [N, d] parameter bank maps onto the module's parameters, so a device trains through views of its row
with `torch.func.functional_call` and no per-device module copies exist.
"""

from fedge.models.flat import FlatModel
from fedge.models.vision import MODELS, build_model

__all__ = ["MODELS", "FlatModel", "build_model"]
