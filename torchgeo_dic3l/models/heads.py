"""Projection and prediction heads."""

from torch import nn


class ProjectionHead(nn.Sequential):
    """Two-layer MLP head: Linear, (BN), ReLU, Linear.

    Without BN this is MoCo v2's projector; with BN it is the BYOL-style projector
    and predictor used by the Dynamic Instance term.
    """

    def __init__(
        self, input_dim: int, hidden_dim: int, output_dim: int, batch_norm: bool = False
    ) -> None:
        """Initialize the head.

        Args:
            input_dim: Input features.
            hidden_dim: Hidden features.
            output_dim: Output features.
            batch_norm: Whether to put BatchNorm after the hidden layer.
        """
        layers: list[nn.Module] = [nn.Linear(input_dim, hidden_dim, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, output_dim)]
        super().__init__(*layers)
