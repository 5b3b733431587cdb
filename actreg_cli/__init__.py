"""actreg: run regularization experiments on small Keras MLPs from YAML configs."""

__version__ = "0.1.0"
