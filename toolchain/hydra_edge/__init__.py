"""hydra-edge: compile small Hydra-attention Vision Transformers to bit-exact int8 C."""

__version__ = "0.1.0"
