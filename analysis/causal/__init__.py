"""Causal analysis of experts: ablation (Δ loss when an expert is removed), the expert logit lens and
what-if routing. Each module has one job; see its docstring."""
