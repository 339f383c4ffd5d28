"""Does a spec fit an architecture? Checked from the config alone, before any weights are loaded,
so the API can reject a misfit at submission (422) instead of failing the job later."""

from __future__ import annotations

from carrygate.models.compress.spec import CompressionSpec
from carrygate.models.config import HRMConfig, TRMConfig, swiglu_intermediate


def linear_in_features(config: TRMConfig | HRMConfig) -> dict[str, int]:
    """Input width of every Linear layer, by its full module name (as `named_modules` gives it)."""
    D = config.hidden_size
    block = {"mlp.gate_up_proj": D, "mlp.down_proj": swiglu_intermediate(D, config.expansion)}
    if isinstance(config, TRMConfig) and config.mlp_t:
        T = config.total_len
        block |= {"mlp_t.gate_up_proj": T, "mlp_t.down_proj": swiglu_intermediate(T, config.expansion)}
    else:
        block |= {"self_attn.qkv_proj": D, "self_attn.o_proj": D}
    levels = {"L_level": config.L_layers} | ({"H_level": config.H_layers} if isinstance(config, HRMConfig) else {})
    widths = {"lm_head": D, "q_head": D}
    for level, layers in levels.items():
        for i in range(layers):
            widths |= {f"{level}.layers.{i}.{name}": width for name, width in block.items()}
    return widths


def spec_problems(spec: CompressionSpec, config: TRMConfig | HRMConfig) -> list[str]:
    """Reasons (each naming the spec field) why `spec` cannot apply to a model with `config`."""
    from carrygate.models.compress.scope import matches

    problems: list[str] = []
    selected = {n: w for n, w in linear_in_features(config).items() if matches(n, spec.include) and not matches(n, spec.exclude)}
    if (spec.weights is not None or spec.activations is not None or spec.noise is not None) and not selected:
        problems.append(f"include/exclude: {spec.include} minus {spec.exclude} selects no Linear layer")
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
    if spec.onnxruntime is not None and spec.onnxruntime.flash_row and config.puzzle_emb_ndim == 0:
        problems.append("onnxruntime.flash_row: this model has no puzzle-embedding table to stream")
    return problems
