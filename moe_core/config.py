"""Typed, validated configuration for the MoE language model, plus named presets.

Every field has a commented default; `validate()` runs on construction and raises a
`ValueError` that names the offending field. Configs round-trip through plain dicts
(`to_dict` / `from_dict`) so they can live in `run.json` and safetensors metadata.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SCORE_FUNCS = ("softmax", "sigmoid")
DISPATCH_IMPLS = ("grouped", "loop")


@dataclass
class BalanceConfig:
    """Load-balancing strategies; each is independent and they combine freely."""

    bias_rate: float = 1e-3  # u in b_i <- b_i + u*sign(mean_load - load_i); 0 disables aux-loss-free
    bias_zero_center: bool = True  # centre each update to zero mean (torchtitan)
    switch_alpha: float = 0.0  # Switch/GShard aux loss alpha*E*sum_i f_i*P_i; 0 disables
    seq_alpha: float = 0.0  # DeepSeek-V3 sequence-wise balance loss; 1e-4 in the paper
    comp_alpha: float = 0.0  # the seed tutorial's complementary sequence loss (off-diagonal similarity)
    z_alpha: float = 0.0  # ST-MoE router z-loss: mean(logsumexp(logits)^2)

    def validate(self) -> None:
        for name in ("bias_rate", "switch_alpha", "seq_alpha", "comp_alpha", "z_alpha"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or value != value:
                raise ValueError(f"balance.{name} must be a number >= 0, got {value!r}")

    @property
    def strategies(self) -> list[str]:
        """Names of the active strategies, e.g. ['aux_free', 'switch']; ['none'] if nothing is on."""
        names = [
            name
            for name, on in (
                ("aux_free", self.bias_rate > 0),
                ("switch", self.switch_alpha > 0),
                ("seq", self.seq_alpha > 0),
                ("comp", self.comp_alpha > 0),
                ("zloss", self.z_alpha > 0),
            )
            if on
        ]
        return names or ["none"]


@dataclass
class MoEConfig:
    """One DeepSeek-V3-style MoE FFN layer: routed SwiGLU experts + shared expert(s)."""

    n_experts: int = 8  # E: routed experts per layer
    top_k: int = 2  # K: experts chosen per token
    expert_hidden: int = 256  # hidden width of each routed SwiGLU expert
    n_shared: int = 1  # shared experts, applied to every token (0 = none)
    shared_hidden: int = 512  # hidden width of each shared expert
    score_func: str = "sigmoid"  # "softmax" or "sigmoid" (DeepSeek-V3)
    renormalize: bool = True  # chosen gate weights divided by their sum (always on for sigmoid in V3)
    route_scale: float = 1.0  # gate weights multiplied by this after renormalisation
    n_groups: int = 1  # group-limited routing: experts split into this many groups
    topk_groups: int = 1  # ... and only this many groups are eligible per token
    capacity_factor: float = 0.0  # C > 0 caps tokens per expert at ceil(C*T*K/E); 0 = no dropping
    dispatch: str = "grouped"  # "grouped" (sorted tokens + grouped GEMM) or "loop" (reference)
    dropout: float = 0.0  # dropout on the MoE output (the seed tutorial has it)
    balance: BalanceConfig = field(default_factory=BalanceConfig)

    def validate(self, n_embd: int) -> None:
        positive = ("n_experts", "top_k", "expert_hidden", "n_groups", "topk_groups")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"moe.{name} must be a positive integer, got {value!r}")
        if self.top_k > self.n_experts:
            raise ValueError(f"moe.top_k ({self.top_k}) must be <= moe.n_experts ({self.n_experts})")
        if self.score_func not in SCORE_FUNCS:
            raise ValueError(f"moe.score_func must be one of {SCORE_FUNCS}, got {self.score_func!r}")
        if self.dispatch not in DISPATCH_IMPLS:
            raise ValueError(f"moe.dispatch must be one of {DISPATCH_IMPLS}, got {self.dispatch!r}")
        if self.n_shared < 0 or (self.n_shared > 0 and self.shared_hidden < 1):
            raise ValueError("moe.n_shared must be >= 0 and moe.shared_hidden >= 1 when shared experts are on")
        if self.n_experts % self.n_groups:
            raise ValueError(f"moe.n_groups ({self.n_groups}) must divide moe.n_experts ({self.n_experts})")
        if self.topk_groups > self.n_groups:
            raise ValueError(f"moe.topk_groups ({self.topk_groups}) must be <= moe.n_groups ({self.n_groups})")
        if self.top_k > self.topk_groups * (self.n_experts // self.n_groups):
            raise ValueError("moe.top_k exceeds the experts available in moe.topk_groups groups")
        if self.capacity_factor < 0:
            raise ValueError(f"moe.capacity_factor must be >= 0, got {self.capacity_factor}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"moe.dropout must be in [0, 1), got {self.dropout}")
        if self.dispatch == "grouped":
            # grouped GEMM needs 16-byte aligned strides: dims multiple of 8
            for name, value in (("n_embd", n_embd), ("moe.expert_hidden", self.expert_hidden)):
                if value % 8:
                    raise ValueError(f"{name} ({value}) must be a multiple of 8 for moe.dispatch='grouped'")
        self.balance.validate()


@dataclass
class ModelConfig:
    """A small decoder-only transformer whose FFNs are MoE layers (after `n_dense_layers` dense ones)."""

    vocab_size: int = 4096  # BPE vocabulary size (tokenizer is trained to this size)
    block_size: int = 256  # context window in tokens
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads
    n_embd: int = 256  # model width D
    n_dense_layers: int = 0  # the first k blocks use a dense SwiGLU FFN instead of MoE
    dense_hidden: int = 768  # hidden width of the dense FFN
    rope_theta: float = 10000.0  # RoPE base
    norm_eps: float = 1e-6  # RMSNorm epsilon
    dropout: float = 0.0  # attention/residual dropout
    init_std: float = 0.02  # std of the normal weight init
    moe: MoEConfig = field(default_factory=MoEConfig)

    def __post_init__(self) -> None:
        if isinstance(self.moe, dict):
            self.moe = MoEConfig(**_known(MoEConfig, self.moe, "moe"))
        if isinstance(self.moe.balance, dict):
            self.moe.balance = BalanceConfig(**_known(BalanceConfig, self.moe.balance, "moe.balance"))
        self.validate()

    def validate(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dense_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError("n_embd / n_head must be even (RoPE rotates pairs of dimensions)")
        if not 0 <= self.n_dense_layers <= self.n_layer:
            raise ValueError(f"n_dense_layers must be in [0, n_layer], got {self.n_dense_layers}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.moe.validate(self.n_embd)

    @property
    def moe_layers(self) -> list[int]:
        """Indices of the blocks whose FFN is an MoE layer."""
        return list(range(self.n_dense_layers, self.n_layer))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if not isinstance(data, dict):
            raise ValueError(f"model config must be a JSON object, got {type(data).__name__}")
        return cls(**_known(cls, data, "model"))


def _known(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """Reject unknown keys with a message naming them (a typo must not be silently ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown field(s) in {where} config: {', '.join(unknown)}")
    return dict(data)


def _seed() -> ModelConfig:
    # The tutorial's layer: n_embd 256, 4 experts of hidden 512, top-2, shared hidden 768, softmax.
    return ModelConfig(
        n_embd=256,
        n_head=8,
        n_layer=4,
        moe=MoEConfig(
            n_experts=4,
            top_k=2,
            expert_hidden=512,
            n_shared=1,
            shared_hidden=768,
            score_func="softmax",
            dropout=0.1,
            balance=BalanceConfig(bias_rate=1e-3, bias_zero_center=False),
        ),
    )


def _default() -> ModelConfig:
    # The shipped model: finer experts (16 of hidden 128, top-2) with V3's sigmoid gating, one dense
    # layer first (as in V3), small enough to train on a 2-core CPU within a session.
    return ModelConfig(
        vocab_size=4096,
        block_size=128,
        n_layer=4,
        n_head=4,
        n_embd=128,
        n_dense_layers=1,
        dense_hidden=384,
        moe=MoEConfig(
            n_experts=16,
            top_k=2,
            expert_hidden=128,
            n_shared=1,
            shared_hidden=128,
            score_func="sigmoid",
            balance=BalanceConfig(bias_rate=1e-3),
        ),
    )


def _small() -> ModelConfig:
    # For the balancing-strategy study: same shape of model, smaller so 7 runs fit on a CPU.
    return ModelConfig(
        vocab_size=2048,
        block_size=64,
        n_layer=2,
        n_head=4,
        n_embd=64,
        dense_hidden=192,
        moe=MoEConfig(n_experts=8, top_k=2, expert_hidden=64, n_shared=1, shared_hidden=64),
    )


def _tiny() -> ModelConfig:
    # For tests: d 32, 2 layers, 4 experts (vocab 320: a byte-level BPE needs >= 257).
    return ModelConfig(
        vocab_size=320,
        block_size=32,
        n_layer=2,
        n_head=2,
        n_embd=32,
        dense_hidden=64,
        moe=MoEConfig(n_experts=4, top_k=2, expert_hidden=32, n_shared=1, shared_hidden=32),
    )


PRESETS = {"seed": _seed, "default": _default, "small": _small, "tiny": _tiny}


def preset(name: str) -> ModelConfig:
    """A fresh copy of a named preset config ('seed', 'default', 'small', 'tiny')."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()
