"""Optional speed backends: modules that replace a model's plain PyTorch layers on one kind of device."""
