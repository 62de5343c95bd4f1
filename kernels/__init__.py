"""tinycnn's numba kernels (filled in as the kernel modules land)."""
