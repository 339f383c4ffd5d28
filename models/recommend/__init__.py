"""`carrygate recommend`: sensitivity map and label-free budgeted search (see `search.py`)."""

from carrygate.models.recommend.groups import ModuleGroup, module_groups
from carrygate.models.recommend.results import Budget, Point, Recommendation, SensitivityMap, Tolerance
from carrygate.models.recommend.search import pareto_front, recommend, spec_for

__all__ = ["Budget", "ModuleGroup", "Point", "Recommendation", "SensitivityMap", "Tolerance", "module_groups", "pareto_front",
           "recommend", "spec_for"]
