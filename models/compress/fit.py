"""Does a spec fit an architecture? Checked from the config alone, before any weights are loaded,
so the API can reject a misfit at submission (422) instead of failing the job later."""

from __future__ import annotations

from models.compress.spec import CompressionSpec, Int4Weights
from models.config import HRMConfig, TRMConfig, swiglu_intermediate


def linear_in_features(config: TRMConfig | HRMConfig) -> dict[str, int]:
    """Input width of each kind of Linear layer (glob-able names as in the model)."""
    D = config.hidden_size
    widths = {"lm_head": D, "q_head": D, "mlp.gate_up_proj": D, "mlp.down_proj": swiglu_intermediate(D, config.expansion)}
    if isinstance(config, TRMConfig) and config.mlp_t:
        T = config.total_len
        widths |= {"mlp_t.gate_up_proj": T, "mlp_t.down_proj": swiglu_intermediate(T, config.expansion)}
    else:
        widths |= {"self_attn.qkv_proj": D, "self_attn.o_proj": D}
    return widths


def spec_problems(spec: CompressionSpec, config: TRMConfig | HRMConfig) -> list[str]:
    """Reasons (each naming the spec field) why `spec` cannot apply to a model with `config`."""
    from models.compress.scope import matches

    problems: list[str] = []
    if isinstance(spec.weights, Int4Weights) and spec.weights.group_size:
        g = spec.weights.group_size
        for name, width in linear_in_features(config).items():
            if matches(name, spec.include) and not matches(name, spec.exclude) and width % g:
                problems.append(f"weights.group_size: {g} does not divide in_features={width} of the {name} layers")
    if spec.prune is not None and spec.prune.structure == "heads" and isinstance(config, TRMConfig) and config.mlp_t:
        problems.append("prune.structure: 'heads' needs attention layers; this model mixes tokens with mlp_t")
    if spec.puzzle_embedding is not None:
        if config.puzzle_emb_ndim == 0:
            problems.append("puzzle_embedding: this model has no puzzle-embedding table")
        else:
            bound = min(config.num_puzzle_identifiers, config.puzzle_emb_ndim)
            rank = spec.puzzle_embedding.rank
            if rank is not None and rank >= bound:
                problems.append(f"puzzle_embedding.rank: {rank} is not below the table's rank bound {bound}")
    return problems
