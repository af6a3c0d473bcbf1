"""ctbench's mixed-precision fixed-grid ODE engine (network low, state high, trajectory 16-bit)."""

from suite.engine._field import POLICIES, CapturedParameterError, FieldDtypeError
from suite.engine._memory_setting import MEMORY_SETTINGS, MemoryPlan, parse_memory
from suite.engine._odeint import ENGINE_SCALINGS, odeint
from suite.engine._scaler import AdjointScaler, OnFailure, ScalerExhausted
from suite.engine._sde import NOISE_TYPES, SDE_METHODS, SDEProblem, sdeint
from suite.engine._stats import SolveStats
from suite.engine._tableau import METHODS, ButcherTableau, get_method

__all__ = [
    "odeint", "sdeint", "SolveStats", "ScalerExhausted", "ButcherTableau", "METHODS", "get_method", "ENGINE_SCALINGS",
    "SDE_METHODS", "NOISE_TYPES", "SDEProblem", "AdjointScaler", "POLICIES", "CapturedParameterError",
    "FieldDtypeError", "MEMORY_SETTINGS", "MemoryPlan", "parse_memory", "OnFailure",
]
