"""Official-compatibility facts (TRM_FACTS §2-3) on real configs, without the official code."""

from __future__ import annotations

import pytest
import torch

from carrygate.models import HRMConfig, TRMConfig, build_model
from tests.conftest import tiny_trm

FULL = {"H_cycles": 3, "L_layers": 2, "hidden_size": 512, "expansion": 4, "num_heads": 8, "puzzle_emb_ndim": 512, "halt_max_steps": 16}


def _n_params(config: TRMConfig | HRMConfig) -> int:
    return sum(p.numel() for p in build_model(config).parameters())


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (TRMConfig(seq_len=900, vocab_size=12, num_puzzle_identifiers=2, L_cycles=4, **FULL), 6_829_058),
        (TRMConfig(seq_len=81, vocab_size=11, num_puzzle_identifiers=1, L_cycles=6, mlp_t=True, pos_encodings="none", **FULL), 5_028_866),
        (TRMConfig(seq_len=81, vocab_size=11, num_puzzle_identifiers=1, L_cycles=6, **FULL), 6_828_034),
        (TRMConfig(seq_len=900, vocab_size=6, num_puzzle_identifiers=1, L_cycles=4, **FULL), 6_822_914),
        (TRMConfig(seq_len=900, vocab_size=12, num_puzzle_identifiers=1, L_cycles=4, mlp_t=True, pos_encodings="none", **FULL),
         18_801_666),
        (HRMConfig(seq_len=900, vocab_size=12, num_puzzle_identifiers=1, H_cycles=2, L_cycles=2, H_layers=4, L_layers=4,
                   hidden_size=512, expansion=4, num_heads=8, puzzle_emb_ndim=512, halt_max_steps=16), 27_276_290),
    ],
    ids=["trm-att-arc", "trm-mlp-sudoku", "trm-att-sudoku", "trm-att-maze", "trm-mlp-916", "hrm-arc"],
)
def test_parameter_counts_equal_official(config: TRMConfig | HRMConfig, expected: int) -> None:
    assert _n_params(config) == expected


def test_trm_state_dict_names_shapes_dtypes_equal_official() -> None:
    config = TRMConfig(seq_len=81, vocab_size=11, num_puzzle_identifiers=1, L_cycles=6, mlp_t=True, pos_encodings="none", **FULL)
    sd = build_model(config).state_dict()
    expected = {
        "H_init": ((512,), torch.bfloat16),
        "L_init": ((512,), torch.bfloat16),
        "embed_tokens.embedding_weight": ((11, 512), torch.float32),
        "lm_head.weight": ((11, 512), torch.float32),
        "q_head.weight": ((2, 512), torch.float32),
        "q_head.bias": ((2,), torch.float32),
        "puzzle_emb.weights": ((1, 512), torch.float32),
    }
    for i in range(2):
        expected |= {
            f"L_level.layers.{i}.mlp_t.gate_up_proj.weight": ((1024, 97), torch.float32),
            f"L_level.layers.{i}.mlp_t.down_proj.weight": ((97, 512), torch.float32),
            f"L_level.layers.{i}.mlp.gate_up_proj.weight": ((3072, 512), torch.float32),
            f"L_level.layers.{i}.mlp.down_proj.weight": ((512, 1536), torch.float32),
        }
    assert list(sd)[:2] == ["H_init", "L_init"]  # module buffers come first, as in the official file
    assert {k: (tuple(v.shape), v.dtype) for k, v in sd.items()} == expected


def test_attention_layout_and_hrm_levels() -> None:
    trm = build_model(TRMConfig(seq_len=900, vocab_size=12, num_puzzle_identifiers=2, L_cycles=4, **FULL)).state_dict()
    assert trm["L_level.layers.0.self_attn.qkv_proj.weight"].shape == (1536, 512)
    assert "rotary_emb.cos_cached" not in trm  # non-persistent, recomputed
    hrm = build_model(HRMConfig(seq_len=9, vocab_size=12, num_puzzle_identifiers=1, H_cycles=2, L_cycles=2, H_layers=4,
                                L_layers=4, hidden_size=64, expansion=4, num_heads=4, puzzle_emb_ndim=64, halt_max_steps=2))
    names = set(hrm.state_dict())
    assert len(names) == 39
    assert {n.split(".")[0] for n in names} >= {"H_level", "L_level"}
    assert hrm.config.total_len == 10  # HRM prefix: ceil(64 / 64) = 1 position


def test_puzzle_prefix_rule() -> None:
    assert tiny_trm(puzzle_emb_len=0, puzzle_emb_ndim=40).puzzle_prefix_len == 3  # ceil(40 / 16)
    assert tiny_trm(puzzle_emb_len=16).total_len == 9 + 16
    with pytest.raises(ValueError, match="does not fit"):
        tiny_trm(puzzle_emb_len=1, puzzle_emb_ndim=40)


def test_config_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="mlp_T"):
        tiny_trm(mlp_T=True)


def _count_level_calls(config: TRMConfig) -> int:
    model = build_model(config)
    calls = 0

    def hook(*_: object) -> None:
        nonlocal calls
        calls += 1

    model.L_level.register_forward_hook(hook)
    with torch.inference_mode():
        list(model.steps(torch.zeros(1, config.seq_len, dtype=torch.long), torch.zeros(1, dtype=torch.long)))
    return calls


def test_evaluation_runs_halt_max_steps_with_h_times_l_plus_one_calls() -> None:
    config = tiny_trm(H_cycles=3, L_cycles=6, halt_max_steps=4)
    assert _count_level_calls(config) == 4 * 3 * (6 + 1)


def test_bf16_forward_dtypes() -> None:
    model = build_model(tiny_trm(forward_dtype="bfloat16"))
    inputs = torch.randint(0, 5, (2, 9))
    outs = list(model.steps(inputs, torch.tensor([0, 2])))
    last = outs[-1]
    assert len(outs) == 3
    assert last.carry.z_H.dtype == torch.bfloat16 and last.carry.z_H.shape == (2, 11, 16)
    assert last.logits.dtype == torch.bfloat16 and last.logits.shape == (2, 9, 5)
    assert last.q_halt_logits.dtype == torch.float32


def test_puzzle_embedding_fills_only_first_prefix_position() -> None:
    model = build_model(tiny_trm(puzzle_emb_len=2, puzzle_emb_ndim=16))
    assert model.puzzle_emb is not None
    with torch.no_grad():
        model.puzzle_emb.weights.normal_()
    x = model.input_embeddings(torch.zeros(3, 9, dtype=torch.long), torch.tensor([0, 1, 2]))
    assert x.shape == (3, 11, 16)
    assert torch.allclose(x[:, 0], model.puzzle_emb.weights * model.embed_scale)
    assert torch.count_nonzero(x[:, 1]) == 0  # zero padding, scaled


def test_carry_starts_from_h_init_and_l_init() -> None:
    model = build_model(tiny_trm())
    carry = model.initial_carry(2)
    assert torch.equal(carry.z_H[1, 4], model.H_init) and torch.equal(carry.z_L[0, 0], model.L_init)
