"""The PyTorch engine: checkpoint loading and in-flight batched generation."""
