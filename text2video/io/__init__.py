"""Reading and writing videos and images: uint8 (T, H, W, C) at the boundary."""
