"""Task specs: load a TOML file, validate it before anything runs, expand its matrix into cells.

A spec names a task and its parameters, named variants (science), the solver (method, steps), the
matrix axes (variant × backend × precision × scaling × seed, with exclusions) and named profiles
(scale only). Every error names the file, the key path and what is allowed. The schema itself (which keys,
which values) is suite/spec_schema.py.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from suite.backends import BACKENDS
from suite.precision import PRECISIONS
from suite.rules import COMMON_RULES
from suite.scaling import SCALINGS, OnOverflow
from suite.spec_schema import NAME_PATTERN, DateInSpec, SpecFile, known_methods, validate_strictly
from suite.tasks import TASKS, TaskParams, scale_fields

__all__ = [
    "SpecError", "TaskSpec", "Cell", "load_spec", "spec_files", "SPEC_DIR", "expand", "REQUIRED_PROFILES",
    "specs_for_tasks", "NAME_PATTERN",
]

SPEC_DIR = Path(__file__).resolve().parent / "specs"
REQUIRED_PROFILES = ("smoke", "paper")
AXES = ("variant", "backend", "method", "steps", "precision", "scaling", "memory", "seed")


class SpecError(ValueError):
    """One or more problems in a spec file, each with its key path."""

    def __init__(self, path: Path | str, problems: list[tuple[str, str]]) -> None:
        self.path = str(path)
        self.problems = problems
        lines = [f"{self.path}: {loc or '<top level>'}: {msg}" for loc, msg in problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Cell:
    """One point of the matrix: everything needed to run it and to name it."""

    task: str
    variant: str
    backend: str
    method: str
    steps: int
    precision: str
    scaling: str
    seed: int
    profile: str
    device: str
    params: TaskParams = field(compare=False, hash=False)
    memory: str = "states"  # the engine's memory setting (named in the id only when not the default)
    spec_hash: str = ""
    timeout_s: float | None = None
    on_overflow: OnOverflow = OnOverflow.FAIL
    spec_path: str = field(default="", compare=False)
    spec_sha256: str = field(default="", compare=False)

    @property
    def cell_id(self) -> str:
        memory = [] if self.memory == "states" else [f"mem={self.memory}"]
        return "/".join(
            [self.task, self.variant, self.backend, self.method, f"N={self.steps}", self.precision, self.scaling,
             *memory, f"seed={self.seed}", self.profile]
        )


@dataclass(frozen=True)
class TaskSpec:
    path: Path
    raw: dict
    file: SpecFile
    sha256: str = ""

    @property
    def task(self) -> str:
        return self.file.task

    def params_for(self, variant: str, profile: str) -> TaskParams:
        task = TASKS.get(self.task)
        merged = {**self.file.params, **self.file.variants[variant], **self.file.profiles[profile].params}
        return validate_strictly(task.Params, merged)

    def spec_hash(self, variant: str, profile: str, method: str, steps: int, memory: str = "states") -> str:
        """Hash of what determines a cell's numbers: the resolved params, method, steps (and the memory
        setting when it is not the default, so that records from before the knob keep their hashes)."""
        solver = {"method": method, "steps": steps, "on_overflow": self.file.solver.on_overflow}
        if memory != "states":
            solver["memory"] = memory
        payload = {
            "task": self.task,
            "params": self.params_for(variant, profile).model_dump(mode="json"),
            "solver": solver,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _loc(parts) -> str:
    return ".".join(str(p) for p in parts)


def _pydantic_problems(err: ValidationError, prefix: tuple = (), model: type[BaseModel] | None = None):
    problems = []
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            owner = _model_at(model, tuple(e["loc"])[:-1]) if model is not None else None
            allowed = ", ".join(owner.model_fields) if owner is not None else ""
            msg = f"unknown key {str(e['loc'][-1])!r}" + (f"; allowed keys: {allowed}" if allowed else "")
        elif e["type"] == "missing":
            msg = "required key is missing"
        problems.append((_loc(loc), msg))
    return problems


def _model_at(model: type[BaseModel], path: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the key at `path` (to list its allowed keys)."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None:
            return None
        if part in fields:
            annotation = fields[part].annotation
            current = annotation
            args = getattr(annotation, "__args__", ())
            if args and isinstance(args[-1], type) and issubclass(args[-1], BaseModel):
                current = args[-1]  # dict[str, Model] / list[Model]
        else:  # a dict key (e.g. a profile name)
            continue
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _read_toml(path: Path) -> tuple[dict, bytes]:
    """The parsed TOML and the file's bytes; every way a file can be unreadable is a SpecError."""
    if path.is_dir():
        raise SpecError(path, [("", "is a directory; give a spec file (.toml)")])
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(path, [("", "file not found")]) from None
    except OSError as exc:
        raise SpecError(path, [("", f"cannot read the file ({exc.strerror or exc})")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(path, [("", f"not UTF-8 text (byte {exc.start}); TOML files are UTF-8")]) from None
    try:
        return tomllib.loads(text), data
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(path, [("", f"not valid TOML: {exc}")]) from None


def load_spec(path: Path | str) -> TaskSpec:
    """Read and fully validate one spec file; raise SpecError listing every problem found."""
    path = Path(path)
    raw, data = _read_toml(path)
    try:
        spec_file = validate_strictly(SpecFile, raw)
    except ValidationError as exc:
        raise SpecError(path, _pydantic_problems(exc, model=SpecFile)) from None
    except DateInSpec as exc:
        raise SpecError(path, [("", str(exc))]) from None
    spec = TaskSpec(path=path, raw=raw, file=spec_file, sha256=hashlib.sha256(data).hexdigest())
    problems = _semantic_problems(spec)
    if problems:
        raise SpecError(path, problems)
    return spec


def _semantic_problems(spec: TaskSpec) -> list[tuple[str, str]]:
    """Checks that need the task's schema and the registries: params, variants, profiles, matrix."""
    f = spec.file
    task = TASKS.get(f.task)
    problems: list[tuple[str, str]] = []
    for name in REQUIRED_PROFILES:
        if name not in f.profiles:
            needed = ", ".join(REQUIRED_PROFILES)
            problems.append((f"profiles.{name}", f"required profile is missing (every spec needs {needed})"))
    scale = scale_fields(task.Params)
    for pname, profile in f.profiles.items():
        for key in profile.params:
            if key not in scale:
                problems.append((
                    f"profiles.{pname}.params.{key}",
                    "a profile may change scale knobs only; "
                    f"allowed: {', '.join(sorted(scale)) or '(none)'}; put science changes in [variants]",
                ))
    for vname in f.variants:
        for pname in f.profiles:
            try:
                spec.params_for(vname, pname)
            except DateInSpec as exc:
                problems.append((f"variants.{vname}", str(exc)))
            except ValidationError as exc:
                for e in exc.errors():
                    key = str(e["loc"][0]) if e["loc"] else ""
                    where = _origin(f, vname, pname, key)
                    if e["type"] == "extra_forbidden":
                        allowed = ", ".join(task.Params.model_fields)
                        msg = f"unknown parameter {key!r} for task {f.task}; allowed: {allowed}"
                    else:
                        msg = e["msg"]
                    problems.append((_loc((where, *e["loc"])), msg))
    gated = {**COMMON_RULES, **task.gate_rules}
    for metric, tolerance in f.gate.items():
        if metric not in gated:
            problems.append((f"gate.{metric}", f"not a gated metric of task {f.task}; allowed: "
                             f"{', '.join(sorted(gated))}"))
        elif not tolerance > 0:
            problems.append((f"gate.{metric}", f"a tolerance must be positive, got {tolerance}"))
    for v in f.matrix.variant:
        if v not in f.variants:
            problems.append(("matrix.variant", f"unknown variant {v!r}; defined: {', '.join(f.variants)}"))
    axis_values = {
        "variant": list(f.variants), "backend": BACKENDS.names(), "precision": PRECISIONS.names(),
        "scaling": SCALINGS.names(), "method": known_methods(), "memory": f.matrix.memory or [f.solver.memory],
    }
    rule_sets = [("matrix.exclude", f.matrix.exclude)]
    rule_sets += [(f"profiles.{name}.exclude", prof.exclude) for name, prof in f.profiles.items()]
    for where, rules in rule_sets:
        for k, rule in enumerate(rules):
            if not rule:
                problems.append((f"{where}.{k}", "an empty exclusion would remove every cell"))
            for axis, value in rule.items():
                if axis not in AXES:
                    problems.append((f"{where}.{k}.{axis}", f"unknown axis; allowed: {', '.join(AXES)}"))
                    continue
                values = value if isinstance(value, list) else [value]
                for v in values if axis in axis_values else []:
                    if v not in axis_values[axis]:
                        problems.append((f"{where}.{k}.{axis}",
                                         f"unknown {axis} {v!r}; allowed: {', '.join(axis_values[axis])}"))
    problems = list(dict.fromkeys(problems))  # the same base-params problem shows once
    if not problems:
        for method in f.matrix.method or [f.solver.method]:
            if not any(method in BACKENDS.get(b).caps.for_kind(TASKS.get(f.task).kind)[0] for b in f.matrix.backend):
                where = "matrix.method" if f.matrix.method else "solver.method"
                problems.append((where, f"method {method!r} is supported by none of the matrix's "
                                 f"backends ({', '.join(f.matrix.backend)})"))
        for pname in f.profiles:
            if not expand(spec, pname):
                problems.append(("matrix", f"the exclusions remove every cell (profile {pname})"))
    return problems


def _origin(f: SpecFile, variant: str, profile: str, key: str) -> str:
    """Which table a merged parameter came from (the last one to set it wins, as in params_for)."""
    if key in f.profiles[profile].params:
        return f"profiles.{profile}.params"
    if key in f.variants[variant]:
        return f"variants.{variant}"
    return "params"


def _excluded(cell: dict, rules: list[dict]) -> bool:
    for rule in rules:
        if all(cell[axis] in (v if isinstance(v, list) else [v]) for axis, v in rule.items()):
            return True
    return False


def expand(spec: TaskSpec, profile: str) -> list[Cell]:
    """The cells of the spec's matrix under a profile, in a stable order."""
    f = spec.file
    if profile not in f.profiles:
        raise SpecError(spec.path, [("profiles", f"unknown profile {profile!r}; defined: {', '.join(f.profiles)}")])
    prof = f.profiles[profile]
    seeds = prof.seed if prof.seed is not None else f.matrix.seed
    cells = []
    methods = f.matrix.method or [f.solver.method]
    steps_list = f.matrix.steps or [f.solver.steps]
    memories = f.matrix.memory or [f.solver.memory]
    for variant, backend, method, steps, precision, scaling, memory, seed in itertools.product(
        f.matrix.variant, f.matrix.backend, methods, steps_list, f.matrix.precision, f.matrix.scaling, memories,
        seeds,
    ):
        axes = {"variant": variant, "backend": backend, "method": method, "steps": steps, "precision": precision,
                "scaling": scaling, "memory": memory, "seed": seed}
        if _excluded(axes, f.matrix.exclude) or _excluded(axes, prof.exclude):
            continue
        cells.append(Cell(
            task=f.task, variant=variant, backend=backend, method=method, steps=steps,
            precision=precision, scaling=scaling, seed=seed, profile=profile, device=prof.device,
            params=spec.params_for(variant, profile), memory=memory,
            spec_hash=spec.spec_hash(variant, profile, method, steps, memory),
            timeout_s=prof.timeout_s, spec_path=str(spec.path), spec_sha256=spec.sha256,
            on_overflow=f.solver.on_overflow,
        ))
    return cells


def spec_files() -> list[Path]:
    """The specs shipped with the suite, one per task."""
    return sorted(SPEC_DIR.glob("*.toml"))


def _declared_task(path: Path) -> str | None:
    """The `task = ...` a spec file declares, read without validating the rest (None if unreadable)."""
    try:
        task = tomllib.loads(path.read_text(encoding="utf-8")).get("task")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    return task if isinstance(task, str) else None


def specs_for_tasks(paths: list[Path], tasks: list[str] | None) -> dict[str, TaskSpec]:
    """Load (and validate) only the specs of `tasks` (all tasks the files declare when None).

    Two files for one task are an error naming both; a broken spec blocks only its own task. A file whose
    task cannot be read is loaded (and so reported) when it may be one the run needs: when every task
    runs, or when its file name is a requested task's name; otherwise it is skipped with a warning.
    """
    by_task: dict[str, Path] = {}
    unreadable: list[Path] = []
    for path in paths:
        task = _declared_task(path)
        if task is None:
            unreadable.append(path)
            continue
        if task in by_task:
            raise SpecError(path, [("task", f"task {task!r} is already defined by {by_task[task]}; "
                                    "one spec per task in a run (merge them, or use variants)")])
        by_task[task] = path
    wanted = set(tasks) if tasks is not None else None
    for path in unreadable:
        if wanted is None or path.stem in wanted:
            load_spec(path)  # raises its SpecError
        warnings.warn(f"skipping spec {path}: it cannot be read as TOML and is not needed by this run "
                      f"(ctbench validate {path} says why)", stacklevel=2)
    chosen = by_task if wanted is None else {t: p for t, p in by_task.items() if t in wanted}
    return {task: load_spec(path) for task, path in chosen.items()}
