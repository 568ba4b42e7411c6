"""PyTorch adapter over ``arctique.Dataset`` (install with ``pip install ".[torch]"``)."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset as _TorchDataset

from .reader import Dataset

# The sample attributes the adapter can carry, and the dtype of each tensor. The image becomes
# (3, H, W) in [0, 1] and the class posterior (1 + classes, H, W), channels first as torch has them.
FIELDS = {"image": np.float32, "instance": np.int64, "semantic": np.int64, "foreground": np.int64,
          "three_class": np.int64, "cytoplasm": np.int64, "tissue": np.int64, "soft": np.float32,
          "soft_instances": np.int64, "overlap": np.int64, "defocus": np.float32,
          "class_posterior": np.float32, "stack": np.int64}
DEFAULT_FIELDS = ("image", "instance", "semantic")


class TorchDataset(_TorchDataset):
    """Samples as dicts of tensors: the ``fields`` asked for (``FIELDS``; default image, instance
    and semantic) and ``index``, the sample's seed; ``transform`` is applied to that dict. Label
    noise and annotators come from the ``Dataset`` (``noise=``, ``annotator=``), splits from its
    ``split=``."""

    def __init__(self, dataset: Dataset, transform: Optional[Callable[[Dict], Dict]] = None,
                 fields: Sequence[str] = DEFAULT_FIELDS) -> None:
        unknown = sorted(set(fields) - set(FIELDS))
        if unknown:
            raise ValueError(f"fields: {', '.join(unknown)} not among {', '.join(FIELDS)}")
        self.dataset, self.transform, self.fields = dataset, transform, tuple(fields)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> Dict[str, torch.Tensor]:
        s = self.dataset[position]
        item: Dict = {"index": s.index}
        for name in self.fields:
            value = getattr(s, name)
            if name == "image":
                value = value.transpose(2, 0, 1).astype(np.float32) / 255
            elif name == "class_posterior":
                value = value.transpose(2, 0, 1)
            item[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=FIELDS[name]))
        return self.transform(item) if self.transform else item
