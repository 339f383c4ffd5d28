"""AI Hub adapter against the fake qai_hub client (tests/fake_qai_hub.py): success, rate-limited,
failed job, bad token, unknown device, no token, a network that never answers, the real client offline."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from carrygate.models.aihub import AiHubOptions
from carrygate.models.checkpoint import load_checkpoint
from carrygate.models.export import OrtReasoner, export_step
from carrygate.models.tasks.dataset import read_split
from carrygate.workers.profile.aihub import StepProbe, profile_on_devices, real_client, reference_step_probe, resolve_token
from tests import fake_qai_hub
from tests.conftest import ZOO

S24 = "Samsung Galaxy S24 (Family)"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StepProbe]:
    torch.set_num_threads(1)
    model = load_checkpoint(ZOO / "maze-att").model
    path = export_step(model, tmp_path_factory.mktemp("aihub") / "step.onnx").path
    split = read_split(ZOO / "maze-att" / "data", "test")
    probe = reference_step_probe(model, OrtReasoner.from_model(path, model), np.asarray(split.inputs[:1]),
                                 np.asarray(split.puzzle_identifiers[:1]))
    return path, probe


def fake(**knobs: object) -> type[fake_qai_hub.Client]:
    return type("ScenarioClient", (fake_qai_hub.Client,), dict(knobs))


def factory(client_class: type[fake_qai_hub.Client]):  # token -> client, as workers.profile.aihub.real_client
    return lambda token: client_class(config=fake_qai_hub.ClientConfig(api_token=token))


def test_success_compiles_runs_and_compares_step_by_step(exported: tuple[Path, StepProbe]) -> None:
    path, probe = exported
    assert len(probe.feeds) == 8 and probe.steps == list(range(8))
    profiles = profile_on_devices(path, probe, AiHubOptions(devices=[S24, "Snapdragon X Elite CRD"]), "good-token", factory(fake()))
    assert [p.status for p in profiles] == ["ok", "ok"]
    s24 = profiles[0]
    assert s24.device_name == S24 and s24.device_os == "14"
    assert s24.compile_job_id and s24.inference_job_id
    assert s24.execution_summary["estimated_inference_time"] == 1234 and s24.execution_summary["inference_memory_peak_range"] == [1_000_000,
                                                                                                                                   4_194_304]
    assert s24.compute_units["NPU"] > s24.compute_units["CPU"] > 0
    assert len(s24.step_fidelity) == 8 and all(f is not None and f > 0.99999 for f in s24.step_fidelity)
    assert all(d is not None and d < 1e-4 for d in s24.step_max_abs_diff)
    assert "good-token" not in s24.model_dump_json()


def test_rate_limited_is_inconclusive(exported: tuple[Path, StepProbe]) -> None:
    path, probe = exported
    [p] = profile_on_devices(path, probe, AiHubOptions(devices=[S24]), "good-token", factory(fake(rate_limited=True)))
    assert p.status == "inconclusive" and p.reason is not None and p.reason.startswith("rate-limited by AI Hub")
    assert p.device_name == S24 and not p.step_fidelity


def test_failed_inference_job_is_inconclusive_with_the_message(exported: tuple[Path, StepProbe]) -> None:
    path, probe = exported
    [p] = profile_on_devices(path, probe, AiHubOptions(devices=[S24]), "good-token",
                             factory(fake(fail_inference="Failed to load the model on device")))
    assert p.status == "inconclusive" and p.compile_job_id and p.inference_job_id
    assert f"inference job {p.inference_job_id} FAILED: Failed to load the model on device" == p.reason
    [c] = profile_on_devices(path, probe, AiHubOptions(devices=[S24]), "good-token", factory(fake(fail_compile="unsupported op")))
    assert c.status == "inconclusive" and c.reason is not None and "FAILED: unsupported op" in c.reason and c.inference_job_id is None


def test_bad_token_unknown_device_and_no_token(exported: tuple[Path, StepProbe]) -> None:
    path, probe = exported
    [bad] = profile_on_devices(path, probe, AiHubOptions(devices=[S24]), "s3cret-but-wrong", factory(fake()))
    assert bad.status == "inconclusive" and bad.reason is not None and bad.reason.startswith("AI Hub rejected the API token")
    assert "s3cret-but-wrong" not in bad.model_dump_json()
    [unknown] = profile_on_devices(path, probe, AiHubOptions(devices=["Nokia 3310"]), "good-token", factory(fake()))
    assert unknown.status == "inconclusive" and unknown.reason == "no AI Hub device named 'Nokia 3310'"
    [none] = profile_on_devices(path, probe, AiHubOptions(devices=[S24]), None, factory(fake()))
    assert none.status == "inconclusive" and "no AI Hub token" in (none.reason or "")


def test_a_network_that_never_answers_is_cut_short(exported: tuple[Path, StepProbe]) -> None:
    path, probe = exported
    start = time.monotonic()
    [p] = profile_on_devices(path, probe, AiHubOptions(devices=[S24], connect_timeout_seconds=0.3), "good-token",
                             factory(fake(hang_seconds=5.0)))
    assert time.monotonic() - start < 2.0
    assert p.status == "inconclusive" and p.reason == "timed out: no answer from AI Hub within 0.3 s"


def test_real_client_offline_is_inconclusive_not_a_crash(exported: tuple[Path, StepProbe]) -> None:
    """The real qai_hub client (or its absence) on this offline machine: inconclusive within the deadline."""
    path, probe = exported
    start = time.monotonic()
    [p] = profile_on_devices(path, probe, AiHubOptions(devices=[S24], connect_timeout_seconds=3), "not-a-real-token", real_client)
    assert time.monotonic() - start < 10
    assert p.status == "inconclusive" and p.reason
    assert "not-a-real-token" not in p.model_dump_json()


def test_token_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_AIHUB", "from-env")
    (tmp_path / "token").write_text("from-file\n")
    assert resolve_token(AiHubOptions(devices=[S24], token_ref="env:MY_AIHUB"), None) == "from-env"
    assert resolve_token(AiHubOptions(devices=[S24], token_ref=f"file:{tmp_path / 'token'}"), None) == "from-file"
    assert resolve_token(AiHubOptions(devices=[S24], token_ref="env:UNSET_VAR_X"), "default") is None
    assert resolve_token(AiHubOptions(devices=[S24]), "default") == "default"
    with pytest.raises(ValidationError, match="env:NAME or file:/path"):
        AiHubOptions(devices=[S24], token_ref="plain-token-in-the-request")


def test_job_stage_end_to_end_against_the_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate (ORT candidate file) -> attach_device_profiles (the pipeline's AI Hub stage) -> gate."""
    from carrygate.gate import GatePolicy, judge
    from carrygate.models.compress import CompressionSpec
    from carrygate.models.evaluate import Probe, evaluate
    from carrygate.workers.profile.aihub import attach_device_profiles

    torch.set_num_threads(1)
    model = load_checkpoint(ZOO / "maze-att").model
    probe = Probe.from_split(read_split(ZOO / "maze-att" / "data", "test"), 2)
    spec = CompressionSpec.from_yaml("name: dyn\nonnxruntime: {quantization: dynamic, profile_repeats: 0}")
    result = evaluate(model, [spec], probe, batch_size=2, artifact_dir=tmp_path)
    policy = GatePolicy(min_fidelity_mean=0.99, min_fidelity_p05=None, min_answer_agreement=None, max_puzzle_exact_drop=None,
                        max_predicted_exact_drop=None)
    options = AiHubOptions(devices=[S24], token_ref="env:TEST_AIHUB_TOKEN")

    monkeypatch.setenv("TEST_AIHUB_TOKEN", "good-token")
    attach_device_profiles(result, model, probe.inputs, probe.puzzle_identifiers, tmp_path, options, client_factory=factory(fake()))
    monkeypatch.delenv("TEST_AIHUB_TOKEN")
    [device] = result.candidates[0].device_profiles
    assert device.status == "ok" and len(device.step_fidelity) == 8
    # The fake device runs the int8 file: on-device fidelity is that of the quantised graph, below 1.
    assert all(f is not None and 0.99 < f < 1.0 for f in device.step_fidelity)
    verdict = judge(result, policy)
    rule = next(r for r in verdict.candidates[0].rules if r.rule == "device_profile")
    assert rule.passed is True and verdict.decision == "go"

    attach_device_profiles(result, model, probe.inputs, probe.puzzle_identifiers, tmp_path, options,
                           client_factory=factory(fake(rate_limited=True)))  # token_ref unset now: no token at all
    assert result.candidates[0].device_profiles[0].reason.startswith("no AI Hub token")  # type: ignore[union-attr]
    attach_device_profiles(result, model, probe.inputs, probe.puzzle_identifiers, tmp_path, AiHubOptions(devices=[S24]),
                           default_token="good-token", client_factory=factory(fake(rate_limited=True)))
    verdict = judge(result, policy)
    assert verdict.decision == "inconclusive"  # never a false go when the device profile did not happen
    assert "rate-limited" in verdict.reasons[0]
