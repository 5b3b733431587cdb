"""actreg: run regularization experiments on small Keras MLPs from YAML configs."""

from actreg_cli import quiet_tensorflow

# TensorFlow prints C++ start-up chatter (CUDA probes, oneDNN notices) that buries results and
# breaks the progress bar; silenced before anything here can import it.
quiet_tensorflow.install()

__version__ = "0.1.0"
