"""Solver backends; importing this package registers all of them."""

from suite.backends import engine as _engine  # noqa: F401  (registers)
from suite.backends import otd_adjoint as _otd_adjoint  # noqa: F401  (registers)
from suite.backends import torchdiffeq as _torchdiffeq  # noqa: F401  (registers)
from suite.backends import torchode as _torchode  # noqa: F401  (registers)
from suite.backends import torchsde as _torchsde  # noqa: F401  (registers)
from suite.backends._base import BACKENDS, AbstractBackend, AbstractSolver, Capabilities, get_backend

__all__ = ["BACKENDS", "AbstractBackend", "AbstractSolver", "Capabilities", "get_backend"]
