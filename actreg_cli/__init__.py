"""actreg: run regularization experiments on small Keras MLPs from YAML configs."""

import os

# TensorFlow prints pages of C++ start-up chatter (CUDA probes, CPU features) that bury results.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
