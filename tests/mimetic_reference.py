"""Independent reference for mimetic-init tests: targets re-drawn from the documented sampling
(uniform noise of variance 1/d; per layer, H QK noises then one VO noise, from one CPU generator)
and SVD truncations computed with numpy, so the library is checked against another computation."""
import math

import numpy as np
import torch


def reference_targets(seed, d, heads, depth, a1=0.7, b1=0.7, a2=0.4, b2=0.4):
    """Per layer (A: (heads, d, d) = a1 Z_h + b1 I, B: (d, d) = a2 Z - b2 I), numpy float64."""
    g = torch.Generator().manual_seed(seed)
    bound = math.sqrt(3.0 / d)
    out = []
    for _ in range(depth):
        zq = ((torch.rand((heads, d, d), generator=g, dtype=torch.float64) * 2 - 1) * bound).numpy()
        zv = ((torch.rand((d, d), generator=g, dtype=torch.float64) * 2 - 1) * bound).numpy()
        out.append((a1 * zq + b1 * np.eye(d), a2 * zv - b2 * np.eye(d)))
    return out


def truncation(a, k):
    """Best rank-k approximation of ``a`` (numpy SVD)."""
    u, s, vt = np.linalg.svd(a)
    return (u[:, :k] * s[:k]) @ vt[:k]
