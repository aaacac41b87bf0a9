"""The LSTM regressor: nn.LSTM plus a linear head, time-major (seq, batch, feature) like the tutorial."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from model_store import export_method

# The name of the state-carrying method in every export (the manifest's `sequence.method`).
STATE_METHOD = "forward_state"


@dataclass(frozen=True)
class ModelConfig:
    """The shape of the network; everything needed to rebuild it."""

    input_size: int = 1
    hidden_size: int = 32
    num_layers: int = 1
    output_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LSTMRegressor(nn.Module):
    """Reads a sequence and emits one prediction per step; causal, so any seq and batch work."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(config.input_size, config.hidden_size, config.num_layers)
        self.head = nn.Linear(config.hidden_size, config.output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(x)  # (seq, batch, hidden)
        output: torch.Tensor = self.head(hidden)  # (seq, batch, output); Linear acts on the last dim
        return output

    @export_method
    def forward_state(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One chunk of a longer sequence: `forward` that starts from the state (h, c) and returns the state after.

        x is (seq, batch, input); h and c are (num_layers, batch, hidden). Chained over the chunks of a
        sequence (zeros first), the outputs concatenated equal `forward` of the whole sequence.
        """
        hidden, (h_n, c_n) = self.lstm(x, (h, c))  # (seq, batch, hidden); h_n, c_n (num_layers, batch, hidden)
        output: torch.Tensor = self.head(hidden)  # (seq, batch, output)
        return output, h_n, c_n
