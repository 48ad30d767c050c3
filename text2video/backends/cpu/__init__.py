"""The CPU backend: fused C kernels, Winograd and GEMM convolutions, packed weights for sampling."""
