"""The fused engine: many models stacked in one XLA-compiled TensorFlow program."""
