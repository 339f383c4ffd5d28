"""carrygate's ML core: architectures, checkpoints, tasks, compression and trajectories.

A pure library: it imports no web, database or worker code.
"""

from __future__ import annotations

from carrygate.models.config import HRMConfig, ModelConfig, TRMConfig
from carrygate.models.hrm import HRM
from carrygate.models.reasoner import Carry, RecursiveReasoner, StepOutput
from carrygate.models.trm import TRM


def build_model(config: TRMConfig | HRMConfig) -> RecursiveReasoner:
    """The architecture a config names, freshly initialised, in eval mode."""
    model: RecursiveReasoner = TRM(config) if isinstance(config, TRMConfig) else HRM(config)
    return model.eval()


__all__ = ["HRM", "TRM", "Carry", "HRMConfig", "ModelConfig", "RecursiveReasoner", "StepOutput", "TRMConfig", "build_model"]
