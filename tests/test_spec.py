"""Spec validation: every kind of bad input gives one clear error naming file, key path and allowed values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from suite.cli import main
from suite.spec import SpecError, expand, load_spec, spec_files

STIFF = Path(__file__).resolve().parent.parent / "suite" / "specs" / "stiff-rk4.toml"
GOOD = STIFF.read_text()


def write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(path: Path) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert str(path) in message  # every line names the file
    return message


def test_shipped_specs_are_valid_and_expand():
    assert spec_files(), "no spec shipped"
    for path in spec_files():
        spec = load_spec(path)
        for profile in spec.file.profiles:
            cells = expand(spec, profile)
            assert cells and len({c.cell_id for c in cells}) == len(cells)


def test_stiff_matrix_is_the_issue_matrix():
    cells = expand(load_spec(STIFF), "smoke")
    published = {(c.backend, c.precision, c.scaling) for c in cells if c.variant == "published"}
    engine = {("engine", p, s) for p in ("fp32", "fp16", "bf16") for s in ("none", "dynamic")}
    engine |= {("engine-autocast", p, s) for p in ("fp16", "bf16") for s in ("none", "dynamic")}
    tdq = {(b, p, "none") for b in ("torchdiffeq", "torchdiffeq-adjoint") for p in ("fp32", "bf16", "fp16")}
    tdq |= {(b, "fp16", "grad") for b in ("torchdiffeq", "torchdiffeq-adjoint")}
    assert published == engine | tdq


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('task = "stiff-rk4"', 'task = "stiff-rk4"\ndescriptoin = "x"', r"<top level>|descriptoin"),
        ("steps = 399", "step = 399", r"solver\.step: unknown key 'step'; allowed keys: method, steps"),
        ("steps = 399", 'steps = "many"', r"solver\.steps: Input should be a valid integer"),
        ('method = "rk4"', 'method = "rk5"', r"solver\.method: .*unknown method 'rk5'; allowed: euler, .*rk4-38"),
        ('backend = ["engine",', 'backend = ["engien",',
         r"matrix\.backend: .*unknown backend 'engien'; allowed: engine, .*torchdiffeq-adjoint"),
        ('precision = ["fp32",', 'precision = ["fp8",', r"matrix\.precision: .*unknown precision 'fp8'; allowed: bf16"),
        ('scaling = ["none",', 'scaling = ["nope",', r"matrix\.scaling: .*unknown scaling 'nope'; allowed: dynamic"),
        ('task = "stiff-rk4"', 'task = "stiff-rk5"', r"task: .*unknown task 'stiff-rk5'; allowed: .*stiff-rk4"),
        ("T = 2.65", "T = -1.0", r"params\.T: Input should be greater than 0"),
        ("T = 2.65", "T = 2.65\ntheta_2 = 3",
         r"params\.theta_2: unknown parameter 'theta_2' for task stiff-rk4; allowed: theta, T"),
        ('variant = ["published",', 'variant = ["publish",',
         r"matrix\.variant: unknown variant 'publish'; defined: published"),
        ("params = { repeats = 1 }", "params = { repeats = 1, T = 1.0 }",
         r"profiles\.smoke\.params\.T: a profile may change scale knobs only; allowed: repeats"),
        ('{ backend = ["engine", "engine-autocast"], scaling = "grad" }', '{ backend = "engine", scalling = "grad" }',
         r"matrix\.exclude\.0\.scalling: unknown axis; allowed: variant, backend, method, steps, precision, "
         r"scaling, memory, seed"),
        ('device = "cuda"', 'device = "gpu"', r"profiles\.paper\.device: Input should be 'cpu' or 'cuda'"),
        ("[profiles.paper]", "[profiles.papper]", r"profiles\.paper: required profile is missing"),
    ],
)
def test_each_bad_input_names_its_key_and_the_allowed_values(tmp_path, old, new, expected):
    assert old in GOOD
    message = problems_of(write(tmp_path, GOOD.replace(old, new, 1)))
    assert re.search(expected, message), message


def test_exclusions_that_remove_every_cell(tmp_path):
    text = GOOD.replace("exclude = [", 'exclude = [\n  { seed = 0 },', 1)
    assert "the exclusions remove every cell" in problems_of(write(tmp_path, text))


def test_not_toml_and_missing_file(tmp_path):
    assert "not valid TOML" in problems_of(write(tmp_path, "task = [unclosed"))
    assert "file not found" in problems_of(tmp_path / "nope.toml")


def test_validate_command_fails_naming_a_misspelled_key(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("steps = 399", "stepz = 399"))
    assert main(["validate", str(path)]) == 1
    printed = capsys.readouterr().out
    assert "solver.stepz: unknown key 'stepz'" in printed and str(path) in printed
    assert main(["validate"]) == 0


def test_profiles_change_scale_only():
    spec = load_spec(STIFF)
    smoke, paper = (spec.params_for("published", p) for p in ("smoke", "paper"))
    science = {k: v for k, v in smoke.model_dump().items() if k != "repeats"}
    assert science == {k: v for k, v in paper.model_dump().items() if k != "repeats"}
    assert smoke.repeats != paper.repeats


def test_every_shipped_spec_has_a_gate_profile_for_gpu_runners():
    for path in spec_files():
        spec = load_spec(path)
        assert "gate" in spec.file.profiles, path
        assert spec.file.profiles["gate"].device == "cuda"
        assert expand(spec, "gate")


def test_a_gate_table_may_only_name_gated_metrics(tmp_path):
    path = write(tmp_path, GOOD + '\n[gate]\nrel_err_y_T = 0.1\n')
    assert load_spec(path).file.gate == {"rel_err_y_T": 0.1}
    path = write(tmp_path, GOOD + '\n[gate]\nwall_clock = 0.1\n', name="bad.toml")
    assert re.search(r"gate\.wall_clock: not a gated metric of task stiff-rk4; allowed: .*rel_err_y_T",
                     problems_of(path))
