"""Labels in numpy: the exact label contract and label-noise variants."""
