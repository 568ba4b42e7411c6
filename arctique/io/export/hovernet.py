"""HoVer-Net training patches: one ``<name>.npy`` per patch, (H, W, 5) int32 = RGB, instance ids,
type (Lizard codes, as in HoVer-Net's CoNIC/Lizard set-up)."""

from __future__ import annotations

import numpy as np

from .base import Writer, registry_codes
from .patches import Patch


# The network input of each of hover_net's model modes (its config's act_shape): a training patch
# must be at least this large for its FileLoader to crop an input from it.
INPUT_PX = {"original": 270, "fast": 256}


class HoverNet(Writer):
    name = "hovernet"
    codes = registry_codes("lizard")
    feeds = "HoVer-Net's training loop (vqdang/hover_net, FileLoader over the .npy patches)"

    def add(self, patch: Patch) -> None:
        types = self.code_table()[patch.classes][patch.instance]
        np.save(self.out / f"{patch.name}.npy",
                np.dstack([patch.image, patch.instance, types]).astype(np.int32))
