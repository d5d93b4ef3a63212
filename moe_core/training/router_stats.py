"""Router statistics gathered by forward hooks during training and validation, without host syncs."""

from __future__ import annotations

import torch

from moe_core.model import MoETransformer
from moe_core.routing_stats import expert_counts, router_entropy


class RouterStats:
    """Forward hooks on every `layer.router`: mean router entropy (training) and loads (validation).

    Entropy and loads are `moe_core.routing_stats`'s; the sums stay on the device until the step's one copy.
    """

    def __init__(self, model: MoETransformer):
        self.n_layers = len(model.moe_layers)
        self.n_experts = model.config.moe.n_experts
        self.reset()
        self.handles = [layer.router.register_forward_hook(self._hook(i)) for i, layer in enumerate(model.moe_layers)]

    def reset(self) -> None:
        self.entropy_sum: list[torch.Tensor | float] = [0.0] * self.n_layers
        self.forwards = 0
        self.loads: list[torch.Tensor | float] = [0.0] * self.n_layers

    def _hook(self, i: int):
        def hook(module, inputs, out) -> None:
            with torch.no_grad():
                entropy_T = router_entropy(out.scores_TE.detach().float())
                self.entropy_sum[i] = self.entropy_sum[i] + entropy_T.mean()
                if not module.training:  # validation: count loads here (the layer only counts in training)
                    self.loads[i] = self.loads[i] + expert_counts(out.topk_idx_TK, self.n_experts)
            if i == 0:
                self.forwards += 1

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
