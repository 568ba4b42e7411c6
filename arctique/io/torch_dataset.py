"""PyTorch adapter over ``arctique.Dataset`` (install with ``pip install -e ".[torch]"``)."""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch.utils.data import Dataset as _TorchDataset

from .reader import Dataset


class TorchDataset(_TorchDataset):
    """Samples as tensors: ``image`` (3, H, W) float32 in [0, 1], ``instance`` and ``semantic``
    (H, W) int64, ``index`` the sample's seed; ``transform`` is applied to that dict."""

    def __init__(self, dataset: Dataset, transform: Optional[Callable[[Dict], Dict]] = None) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> Dict[str, torch.Tensor]:
        s = self.dataset[position]
        item = {"image": torch.from_numpy(s.image.transpose(2, 0, 1).astype(np.float32) / 255),
                "instance": torch.from_numpy(s.instance.astype(np.int64)),
                "semantic": torch.from_numpy(s.semantic.astype(np.int64)),
                "index": s.index}
        return self.transform(item) if self.transform else item
