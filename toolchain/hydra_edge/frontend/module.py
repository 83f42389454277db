"""Export an in-memory nn.Module and convert it like a .pt2 file."""

from __future__ import annotations

import torch
from torch import nn

from ..ir.graph import Graph
from .aten import exported_program_to_graph
from .errors import FrontendError, first_line


def from_module(model: nn.Module, example_input: torch.Tensor) -> Graph:
    """torch.export `model` (in eval mode) on `example_input` [1, C, H, W] and convert it."""
    name = f"<{type(model).__name__}>"
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 1 or example_input.dtype != torch.float32:
        what = (
            f"{str(example_input.dtype).removeprefix('torch.')} of shape {list(example_input.shape)}"
            if isinstance(example_input, torch.Tensor)
            else type(example_input).__name__
        )
        raise FrontendError(f"{name}: the example input is {what}; give a float32 tensor [1, C, H, W]")
    if example_input.shape[0] != 1:
        raise FrontendError(
            f"{name}: the example input has batch {example_input.shape[0]}; hydra-edge compiles batch-1 "
            "inference: give an example of shape [1, C, H, W]"
        )
    was_training = model.training
    model.eval()
    try:
        program = torch.export.export(model, (example_input,))
    except Exception as exc:  # noqa: BLE001 - export raises many kinds
        why = first_line(exc)
        raise FrontendError(f"{name}: torch.export could not trace the model ({why})") from None
    finally:
        model.train(was_training)
    return exported_program_to_graph(program, name, "module")
