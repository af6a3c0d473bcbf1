"""How the engine calls the user's vector field, under a precision policy, without touching the caller's tensors.

The caller's parameters are never mutated: the field runs on *copies* (cast to the compute dtype under the
full-cast policy), substituted for the duration of one pass:

- a `torch.nn.Module` (or a bound method of one, torchsde's `sde.f` style) is reparametrized with the copies
  (`torch.nn.utils.stateless`, what `torch.func.functional_call` does), once per forward and once per
  backward pass, not per call;
- `args=(...)` tensors are passed as `func(t, y, *args)` copies (explicit parameters, diffrax-style);
- the tensors a field *captures* (a closure's, a lambda's, those of a Module other than the one passed:
  torchdiffeq's everyday patterns) are found by running the first evaluation under a TorchFunctionMode
  that sees every tensor reaching a torch operation: those requiring grad become inputs of the solve and
  get their gradients from the discrete adjoint like any parameter (a non-leaf one included: the gradient
  stops at it and autograd carries it on to whatever it was computed from). Under the full-cast policy the
  captured floating tensors are replaced, operation by operation, by copies in the compute dtype, so a
  closure runs in low precision as a Module does. Nothing of this costs anything when the field captures
  nothing, or (apart from the first call) when no cast is needed.

In the backward every pass uses fresh leaves, so the caller's parameters receive their gradient once, from
the autograd function's output: hooks, `clip_grad_norm_` and DDP see one full gradient per backward.
Buffers updated in place by the field (BatchNorm running statistics) are written back after the forward;
the backward's recomputation runs on throwaway copies, so statistics are updated once per forward, as with
torchdiffeq's direct backpropagation.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from suite.engine._capture import (
    Capture,
    detach,
    flat,
    graph_leaves,
    is_dtype_error,
    keep,
    leaf_like,
    substituted,
    unique,
)

__all__ = ["FieldCall", "Binding", "POLICIES", "CapturedParameterError", "FieldDtypeError"]

POLICIES = ("cast", "autocast")


class CapturedParameterError(RuntimeError):
    """The field uses a tensor that requires grad but was not given to the solver: it would get no gradient."""


class FieldDtypeError(TypeError):
    """Under the full-cast policy the field computed in another dtype than the policy's compute dtype."""


def _owner(func: Callable) -> torch.nn.Module | None:
    if isinstance(func, torch.nn.Module):
        return func
    if inspect.ismethod(func) and isinstance(func.__self__, torch.nn.Module):
        return func.__self__
    return None


class _Slots:
    """Where a module keeps its parameters and buffers: (the owning dict, key) per tensor, tied ones included.

    Swapping a tensor is one dict assignment, which is what `torch.func.functional_call` does underneath
    (`torch.nn.utils._named_member_accessor.swap_tensor`), without its per-call bookkeeping: cheap enough to
    give every Runge-Kutta stage its own parameter leaves in the backward.
    """

    def __init__(self, module: torch.nn.Module, tensors: Sequence[torch.Tensor]) -> None:
        wanted = {id(x): k for k, x in enumerate(tensors)}
        self.slots: list[list[tuple[dict, str]]] = [[] for _ in tensors]
        for sub in module.modules():
            for store in (sub._parameters, sub._buffers):
                for key, value in store.items():
                    if value is not None and id(value) in wanted:
                        self.slots[wanted[id(value)]].append((store, key))
        self.originals = list(tensors)

    def set(self, tensors: Sequence[torch.Tensor]) -> None:
        for places, tensor in zip(self.slots, tensors):
            for store, key in places:
                store[key] = tensor

    @contextlib.contextmanager
    def bound(self, tensors: Sequence[torch.Tensor]) -> Iterator[None]:
        self.set(tensors)
        try:
            yield
        finally:
            self.set(self.originals)


@dataclass
class Binding:
    """One pass's view of the field.

    `calls[j]` evaluates stage j (in the backward every stage runs on its own parameter leaves, so autograd
    returns one gradient per stage and parameter instead of summing them tensor by tensor);
    `stage_leaves[j]` are those leaves (aligned with the first entries of FieldCall.diff_inputs) and
    `shared_leaves` the captured tensors (closure parameters), which exist once per pass: the caller's
    tensors themselves, or their compute-dtype copies when the field runs on substituted copies.
    """

    calls: list[Callable]
    stage_leaves: list[list[torch.Tensor]]
    shared_leaves: list[torch.Tensor]
    bound: Callable[[], contextlib.AbstractContextManager]  # a fresh "copies in the module's slots" context
    written_back: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # (original, copy, copy as bound)

    @property
    def call(self) -> Callable:
        return self.calls[0]

    @property
    def context(self) -> contextlib.AbstractContextManager:
        """The module's slots hold this pass's copies inside (entered once per pass; may be entered again)."""
        return self.bound()

    def write_back(self) -> None:
        """Copy the elements of cast buffers that the field updated in place (BatchNorm running statistics)
        into the caller's tensors; unchanged elements keep their full precision. Compared by value on the
        device (kernels such as batch_norm update running statistics without bumping version counters)."""
        with torch.no_grad():
            for original, copy, snapshot in self.written_back:
                original.copy_(torch.where(copy != snapshot, copy.to(original.dtype), original))


class FieldCall:
    """Everything about calling `func` that is fixed for one solve."""

    def __init__(
        self,
        func: Callable,
        *,
        policy: str,
        compute: torch.dtype,
        accumulate: torch.dtype,
        params: Sequence[torch.Tensor] | None,
        args: Sequence,
        device: torch.device,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy={policy!r}; valid: {', '.join(POLICIES)}")
        self.func, self.policy = func, policy
        self.compute, self.accumulate, self.device = compute, accumulate, device
        self.owner = _owner(func)
        self.args = tuple(args)
        self.low = compute in (torch.float16, torch.bfloat16)
        self.module_params: list[torch.Tensor] = []
        self.buffers: list[torch.Tensor] = []
        if self.owner is not None:
            all_params = list(self.owner.parameters())
            wanted = None if params is None else {id(p) for p in params}
            self.module_params = [p for p in all_params if p.requires_grad and (wanted is None or id(p) in wanted)]
            self.other_params = [p for p in all_params if all(p is not q for q in self.module_params)]
            known = {id(p) for p in all_params}
            explicit = [p for p in (params or []) if id(p) not in known and p.requires_grad]
            self.buffers = list(self.owner.buffers())
            self.slots = _Slots(self.owner, [*self.module_params, *self.other_params, *self.buffers])
        else:
            self.other_params = []
            explicit = [p for p in (params or []) if p.requires_grad]
        self.arg_indices = [k for k, a in enumerate(self.args)
                            if isinstance(a, torch.Tensor) and a.is_floating_point() and a.requires_grad]
        # Captured tensors: those listed in `params` for a closure, then those the first call finds. They
        # are the solve's last differentiable inputs; `constants` are captured floating tensors without grad
        # that the full-cast policy replaces by compute-dtype copies.
        self.closure_params: list[torch.Tensor] = unique(explicit)
        self.constants: list[torch.Tensor] = []
        self.substitute = False  # run the field with captured tensors replaced by compute-dtype copies
        self.checked = False

    @property
    def diff_inputs(self) -> list[torch.Tensor]:
        """The tensors whose gradients the autograd function returns, in order: per-stage ones, then shared."""
        return self.module_params + [self.args[k] for k in self.arg_indices] + self.closure_params

    # ------------------------------------------------------------------ dtypes
    @property
    def state_dtype(self) -> torch.dtype:
        """The dtype of the stage states f receives: compute (full cast) or accumulation (autocast)."""
        return self.compute if self.policy == "cast" else self.accumulate

    def _copy(self, tensor: torch.Tensor) -> torch.Tensor:
        """A detached copy in the dtype the policy runs the field in (the same storage when no cast is needed)."""
        if self.policy == "cast" and tensor.is_floating_point() and tensor.dtype != self.compute:
            return tensor.detach().to(self.compute)
        return tensor.detach()

    def _cast(self, tensor: torch.Tensor) -> torch.Tensor:
        """A differentiable cast (stays attached to the caller's tensor)."""
        if self.policy == "cast" and tensor.is_floating_point() and tensor.dtype != self.compute:
            return tensor.to(self.compute)
        return tensor

    # ------------------------------------------------------------------ binding
    def bind(self, for_backward: bool = False, differentiable: bool = False, n_stages: int = 1,
             private_buffers: bool | None = None) -> Binding:
        """Copies of parameters, buffers and args for one pass.

        forward: detached copies (in-place buffer updates are written back after the pass);
        for_backward: `n_stages` sets of leaves that require grad, and private buffer copies, so a
        recomputation never updates the caller's statistics;
        differentiable: copies attached to the caller's tensors, made once per solve (for solvers that
        backpropagate through their steps: the SDE stepper);
        private_buffers (default: for_backward): buffers the field updates in place are private copies
        (False: the caller's, or written back to them; memory="stages" records the forward on leaves).
        """
        private = for_backward if private_buffers is None else private_buffers
        written_back: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        if differentiable:
            make = self._cast
        else:
            make = self._copy
        base_params = [make(p) for p in self.module_params]
        others = [make(p) for p in self.other_params]
        buffers = []
        for b in self.buffers:
            copy = make(b)
            shares = copy.numel() > 0 and copy.data_ptr() == b.data_ptr()
            if private and shares:
                copy = copy.clone()
            elif not private and not shares:  # a cast copy: in-place updates are written back
                written_back.append((b, copy, copy.detach().clone()))
            buffers.append(copy)
        args = [make(a) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in self.args]
        n_sets = n_stages if for_backward else 1
        stage_leaves: list[list[torch.Tensor]] = []
        for _ in range(n_sets if for_backward else 0):
            stage_leaves.append([x.detach().requires_grad_(True) for x in
                                 [*base_params, *(args[k] for k in self.arg_indices)]])
        calls = [self._make_call(stage_leaves[j] if for_backward else [*base_params,
                                 *(args[k] for k in self.arg_indices)], args, others, buffers, switch=for_backward)
                 for j in range(n_sets)]
        if self.owner is not None:
            first = stage_leaves[0][: len(base_params)] if for_backward else base_params
            tensors = [*first, *others, *buffers]

            def bound() -> contextlib.AbstractContextManager:
                return self.slots.bound(tensors)
        else:
            bound = contextlib.nullcontext
        shared = list(self.closure_params)  # the caller's tensors themselves, when nothing is substituted
        if self.substitute:
            # The captured tensors are replaced by compute-dtype copies; in the backward each stage gets its
            # own copies requiring grad (joining the stage leaves, as module parameters do), so per-stage
            # gradients are summed in the accumulation dtype, not by autograd in the compute dtype.
            constants = {id(c): make(c) for c in self.constants}
            if for_backward:
                per_stage = [[self._copy(p).requires_grad_(True) for p in self.closure_params] for _ in calls]
                for leaves, copies in zip(stage_leaves, per_stage):
                    leaves.extend(copies)
            else:
                per_stage = [[make(p) for p in self.closure_params]]
            calls = [substituted(call, {**constants, **{id(p): x for p, x in zip(self.closure_params, copies)}})
                     for call, copies in zip(calls, per_stage)]
            shared = []
        return Binding(calls=calls, stage_leaves=stage_leaves, shared_leaves=shared,
                       bound=bound, written_back=written_back)

    def _make_call(self, leaves: list[torch.Tensor], args: list, others, buffers, switch: bool) -> Callable:
        func, n_mod = self.func, len(self.module_params)
        stage_args = list(args)
        for slot, k in enumerate(self.arg_indices):
            stage_args[k] = leaves[n_mod + slot]
        extra = tuple(stage_args)
        if self.owner is not None and switch:
            slots, params = self.slots, leaves[:n_mod]

            def call(t, y):
                slots.set(params)  # this stage's leaves (others and buffers stay bound by the context)
                return func(t, y, *extra)
        elif extra:
            def call(t, y):
                return func(t, y, *extra)
        else:
            call = func
        if self.policy == "autocast" and self.low:
            inner, kind, dtype = call, self.device.type, self.compute

            def call(t, y):
                with torch.autocast(kind, dtype=dtype):
                    return inner(t, y)
        return call

    # ------------------------------------------------------------------ first call: captures and checks
    def probe(self, binding: Binding, t: torch.Tensor, y, grad_wanted: bool):
        """The first evaluation, f(t0, y0), run under a mode that records the tensors the field captures.

        Captured tensors requiring grad become differentiable inputs of the solve (after those the caller
        passed); under the full-cast policy every captured floating tensor of another dtype is replaced by a
        compute-dtype copy, in this call and (through `binding`, updated here) in every later one. With
        gradients wanted the call is recorded, and its graph checked for leaves reached some other way
        (they would silently get no gradient). Returns the output, detached: the forward's first stage."""
        self.checked = True
        inputs = [t, *flat(y)]
        capture = Capture(inputs, self._capture_copy)
        try:
            if not grad_wanted:
                with capture:
                    out = binding.call(t, y)
            else:
                # The probe's graph is inspected, never differentiated by us, and freed right after; the
                # innermost saved-tensor hooks win, so an outer memory probe does not count it (a field that
                # takes autograd.grad inside itself, FFJORD-style, still gets its saved tensors back).
                with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(keep, keep):
                    probe_y = leaf_like(y)
                    capture.known.update(id(x) for x in flat(probe_y))
                    with capture:
                        out = binding.call(t, probe_y)
                    self._adopt(capture)
                    self._check_captured(out, probe_y, capture)
        except RuntimeError as exc:
            if self.policy == "cast" and self.low and is_dtype_error(exc):
                raise FieldDtypeError(self._dtype_advice(f"the field failed with a dtype error ({exc})")) from exc
            raise
        if not grad_wanted:
            self._adopt(capture)
        self._check_dtypes(out)
        if self.substitute:
            mapping = {key: copy.detach() for key, copy in capture.copies.items()}
            binding.calls = [substituted(call, mapping) for call in binding.calls]
        return detach(out)

    def _capture_copy(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """What the probe runs on instead of a captured tensor: a compute-dtype copy under the full-cast
        policy (a leaf requiring grad when the original does, so the graph check sees it), else itself."""
        if self.policy == "cast" and tensor.is_floating_point() and tensor.dtype != self.compute:
            return tensor.detach().to(self.compute).requires_grad_(tensor.requires_grad)
        return None

    def _adopt(self, capture: Capture) -> None:
        """Make the captured tensors inputs of the solve (requiring grad) or cast constants (without)."""
        passed = {id(x) for x in [*self.module_params, *self.other_params, *self.buffers, *self.args]}
        grads, constants = [], []
        for x in capture.found.values():
            if id(x) in passed or not x.is_floating_point():
                continue
            if x.requires_grad:
                grads.append(x)
            elif self.policy == "cast" and x.dtype != self.compute:
                constants.append(x)
        self.closure_params = unique([*self.closure_params, *grads])
        self.constants = constants
        self.substitute = self.policy == "cast" and any(
            x.dtype != self.compute for x in [*self.closure_params, *self.constants])

    def first_call(self, call: Callable, t: torch.Tensor, y):
        """The first call of a solver that differentiates through its steps: the dtype checks only, and the
        output keeps its graph."""
        self.checked = True
        try:
            out = call(t, y)
        except RuntimeError as exc:
            if self.policy == "cast" and self.low and is_dtype_error(exc):
                raise FieldDtypeError(self._dtype_advice(f"the field failed with a dtype error ({exc})")) from exc
            raise
        self._check_dtypes(out)
        return out

    def _check_captured(self, out, probe_y, capture: Capture) -> None:
        """Leaves requiring grad that the output's graph reaches without passing a tensor the field was seen
        to use (e.g. through a custom autograd.Function's saved state): refused, never silently ignored."""
        known = {id(x) for x in flat(probe_y)} | {id(p) for p in self.closure_params}
        known |= {id(c) for c in capture.copies.values()}
        stops = {id(x.grad_fn) for x in capture.found.values() if x.grad_fn is not None}
        unknown = [v for v in graph_leaves(flat(out), stops) if id(v) not in known]
        if unknown:
            shapes = ", ".join(f"{tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}" for v in unknown[:4])
            more = f" and {len(unknown) - 4} more" if len(unknown) > 4 else ""
            raise CapturedParameterError(
                f"the vector field reaches {len(unknown)} tensor(s) that require grad without passing them to "
                f"a torch operation the solver could see ({shapes}{more}): they would silently get no gradient. "
                "List them in params=[...], pass them as args=(...) (the field is then called as "
                "func(t, y, *args)), or make the field an nn.Module that owns them."
            )

    def _check_dtypes(self, out) -> None:
        if self.policy != "cast" or not self.low:
            return
        wide = [x.dtype for x in flat(out) if isinstance(x, torch.Tensor) and x.is_floating_point()
                and torch.finfo(x.dtype).bits > torch.finfo(self.compute).bits]
        if wide:
            raise FieldDtypeError(self._dtype_advice(
                f"the field returned {str(wide[0]).removeprefix('torch.')} although the state it was given is "
                f"{str(self.compute).removeprefix('torch.')}: it computes with tensors it captured"))

    def _dtype_advice(self, what: str) -> str:
        return (f"{what}. Under the full-cast policy the engine runs the field in {self.compute}: it replaces "
                "the parameters and the tensors the field captures by copies in that dtype, but not the tensors "
                "the field creates itself (e.g. torch.ones(...) in the default dtype). Create them with "
                "dtype=y.dtype, cast them inside the field to y.dtype, or use policy='autocast'.")
