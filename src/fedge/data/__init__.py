"""Dataset loaders (real file formats), the dataset registry and the federation builder.

`DATASETS` (fedge.data.registry) maps a config name to `(data_dir, data_config) -> ArrayDataset`;
`load_federated` (fedge.data.federated) partitions one over devices. `synthetic` is generated per device.
"""

from fedge.data.base import ArrayDataset
from fedge.data.registry import DATASETS

__all__ = ["DATASETS", "ArrayDataset"]
