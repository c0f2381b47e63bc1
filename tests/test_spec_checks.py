"""Semantic checks of ProblemSpec (chronos.spec_checks), from parsed text and from built models."""

from __future__ import annotations

import pytest

from chronos.dsl import parse
from chronos.errors import SpecError
from chronos.spec import (
    BackendSpec,
    Call,
    DataSpec,
    HypergradientSpec,
    LevelSpec,
    LossSpec,
    Name,
    Number,
    OptimizerSpec,
    ParamSpec,
    ProblemSpec,
)
from chronos.spec_checks import check_problem_spec

TWO_LEVELS = """\
problem p
data train = "m:train"
data val = "m:val"
report = "m:report"
level upper {
    param lr = full(0.1, 1)
    param scale = ones(train.size)
    loss = "m:outer"(lower, val)
    optimizer = adam(lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, eps_root = 0, weight_decay = 0)
    steps = 5
}
level lower {
    module = "pkg.models:make_net"
    loss = "m:inner"(upper, train)
    optimizer = sgd(lr = upper.lr, momentum = 0.9, weight_decay = 1e-4)
    steps = 10 per upper
    hypergradient = unrolled(last = 3)
    staleness = 1
    warm_start = true
}
backend torch(world_size = 2)
"""


def _check(old: str, new: str) -> None:
    """Parse TWO_LEVELS with ``old`` replaced by ``new`` and run the semantic checks."""
    assert old in TWO_LEVELS, old
    check_problem_spec(parse(TWO_LEVELS.replace(old, new, 1), "t.chronos", check=False))


def _level(**fields) -> LevelSpec:
    defaults = {
        "name": "solo",
        "params": [ParamSpec(name="w", init=Call(func="zeros", args=[Number(value=3)]))],
        "loss": LossSpec(ref="m:f"),
        "optimizer": OptimizerSpec(name="sgd", kwargs={"lr": Number(value=0.1)}),
        "steps": 4,
    }
    return LevelSpec(**{**defaults, **fields})


def test_valid_spec_passes() -> None:
    check_problem_spec(parse(TWO_LEVELS, check=False))


def test_validate_spec_calls_checks() -> None:
    spec = parse(TWO_LEVELS.replace("steps = 5", "steps = 0"), check=False)
    with pytest.raises(SpecError, match="steps must be a positive integer, found 0"):
        spec.validate_spec()


def test_built_spec_passes() -> None:
    check_problem_spec(ProblemSpec(name="built", levels=[_level()]))


def test_built_spec_without_spans() -> None:
    spec = ProblemSpec(name="built", levels=[_level(steps=0)])
    with pytest.raises(SpecError) as caught:
        check_problem_spec(spec)
    assert caught.value.location is None
    assert caught.value.level == "solo"


def test_error_names_level() -> None:
    with pytest.raises(SpecError) as caught:
        _check("steps = 5", "steps = 0")
    assert caught.value.level == "upper"
    assert caught.value.location.line == 10


def test_parse_adds_source_line() -> None:
    with pytest.raises(SpecError) as caught:
        parse(TWO_LEVELS.replace("steps = 5", "steps = 0"), "t.chronos")
    assert caught.value.location.source_line == "    steps = 0"


def test_excerpt_read_from_file(tmp_path) -> None:
    path = tmp_path / "t.chronos"
    path.write_text(TWO_LEVELS.replace("steps = 5", "steps = 0"), encoding="utf-8")
    spec = parse(path.read_text(encoding="utf-8"), str(path), check=False)
    with pytest.raises(SpecError) as caught:
        check_problem_spec(spec)
    assert "        steps = 0\n                ^" in str(caught.value)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"m:report"', '"m:report:x"', r'invalid reference "m:report:x" in report: it contains 2'),
        ('"m:train"', '"m:class"', r"'class' is not a Python function name"),
        ('"pkg.models:make_net"', '"pkg..models:make_net"', r"'pkg..models' is not a dotted Python module name"),
        ('"pkg.models:make_net"', '"pkg.models:Net.build"', None),
        ('"m:inner"', '"m:"', r"'' is not a Python function name"),
    ],
)
def test_reference_form(old: str, new: str, message: str | None) -> None:
    if message is None:
        _check(old, new)
        return
    with pytest.raises(SpecError, match=message):
        _check(old, new)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("data val =", "data train =", r"duplicate data set 'train': the name is already used at line 2"),
        ("level lower", "level train", r"level 'train' has the same name as the data set at line 2"),
        ("param scale", "param lr", r"duplicate param 'lr': it is already defined at line 6"),
    ],
)
def test_duplicate_names(old: str, new: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        _check(old, new)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("ones(train.size)", "ones(trian.size)", r"unknown data 'trian' in the shape of param 'scale' \(did you mean 'train'\?\)"),
        ("ones(train.size)", "ones(train.rows)", r"can use train.size, not 'train.rows'"),
        ("ones(train.size)", "ones(2.5)", r"must be an integer of zero or more, or DATA.size"),
        ("ones(train.size)", "ones(-1)", r"must be an integer of zero or more, or DATA.size"),
        ("ones(train.size)", "ones(upper)", r"unknown data 'upper'"),
        ("full(0.1, 1)", "full(lower, 1)", r"full takes the fill value first"),
        ("ones(train.size)", "randn(3, seeds = 2)", r"unknown keyword 'seeds' for initializer 'randn' \(did you mean 'seed'\?\)"),
        ("ones(train.size)", "eye(3)", r"unknown initializer 'eye'"),
    ],
)
def test_param_initializer(old: str, new: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        _check(old, new)


def test_scalar_param_allowed() -> None:
    _check("ones(train.size)", "zeros()")


def test_initializer_keywords_allowed() -> None:
    _check("ones(train.size)", "randn(0, 2, dtype = float64, seed = 3)")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("(lower, val)", "(upper, val)", r"loss argument 'upper' names the level itself"),
        ("(lower, val)", "(lower, vall)", r"unknown level or data 'vall' in the loss arguments \(did you mean 'val'\?\)"),
        ("(upper, train)", "(uper, train)", r"\(did you mean 'upper'\?\)"),
    ],
)
def test_loss_arguments(old: str, new: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        _check(old, new)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("lr = 0.01", "lr = 0", r"optimizer keyword 'lr' must be positive, found 0"),
        ("b1 = 0.9", "b1 = 1", r"'b1' must be in \[0, 1\), found 1"),
        ("b2 = 0.999", "b2 = -0.1", r"'b2' must be in \[0, 1\)"),
        ("eps = 1e-8", "eps = 0", r"'eps' must be positive"),
        ("eps_root = 0", "eps_root = -1", r"'eps_root' must be zero or positive"),
        ("momentum = 0.9", "momentum = 1.5", r"'momentum' must be in \[0, 1\)"),
        ("weight_decay = 1e-4", "weight_decay = -1", r"'weight_decay' must be zero or positive"),
        ("momentum = 0.9", "b1 = 0.9", r"unknown keyword 'b1' for optimizer 'sgd'"),
        ("lr = upper.lr", "lr = uper.lr", r"unknown level 'uper' in optimizer keyword 'lr' \(did you mean 'upper'\?\)"),
        ("lr = upper.lr", "lr = upper.rate", r"level 'upper' has no param 'rate'"),
        ("lr = upper.lr", "lr = upper", r"optimizer keyword 'lr' must name a variable, as in upper.lr"),
    ],
)
def test_optimizer_keywords(old: str, new: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        _check(old, new)


def test_module_level_variable_unchecked() -> None:
    _check("lr = 0.01", "lr = lower.anything")


@pytest.mark.parametrize(
    ("new", "message"),
    [
        ("implicit(lu)", r"unknown implicit solver 'lu'"),
        ("implicit(neumann, alpha = 0)", r"'alpha' must be a positive number, found 0"),
        ("implicit(alpha = 0.1)", r"'alpha' applies to the neumann solver only"),
        ("implicit(iters = 2.5)", r"'iters' must be a positive integer, found 2.5"),
        ("implicit(tol = many)", r"'tol' must be a positive number, found 'many'"),
        ("unrolled(last = -1)", r"'last' must be a positive integer, found -1"),
        ("auto(last = 3)", r"unknown option 'last' for hypergradient method 'auto'"),
        ("finite_difference(eps = 0)", r"'eps' must be a positive number"),
        ("newmann(iters = 3)", r"unknown hypergradient method 'newmann' \(did you mean 'neumann'\?\)"),
    ],
)
def test_hypergradient_checks(new: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        _check("unrolled(last = 3)", new)


@pytest.mark.parametrize(
    "new",
    ["auto", "unrolled", "implicit", "implicit(cg, iters = 20, tol = 1e-6)", "neumann(iters = 20, alpha = 0.1)",
     "finite_difference(eps = 0.01)"],
)
def test_hypergradient_valid(new: str) -> None:
    _check("unrolled(last = 3)", new)


def test_hypergradient_unknown_option_hint() -> None:
    with pytest.raises(SpecError) as caught:
        _check("unrolled(last = 3)", "unrolled(iters = 3)")
    assert caught.value.hint == "unrolled takes last"


def test_backend_world_size() -> None:
    with pytest.raises(SpecError, match="world_size must be a positive integer, found 0"):
        _check("world_size = 2", "world_size = 0")


def test_backend_horovod_known() -> None:
    _check("backend torch(world_size = 2)", "backend horovod")


def test_built_unknown_backend() -> None:
    spec = ProblemSpec(name="built", levels=[_level()], backend=BackendSpec(name="mpi"))
    with pytest.raises(SpecError, match="unknown backend 'mpi'"):
        check_problem_spec(spec)


def test_built_hypergradient_method() -> None:
    level = _level(hypergradient=HypergradientSpec(method="reverse"))
    with pytest.raises(SpecError, match="unknown hypergradient method 'reverse'"):
        check_problem_spec(ProblemSpec(name="built", levels=[level]))


def test_built_loss_argument() -> None:
    level = _level(loss=LossSpec(ref="m:f", args=[Name(name="data0")]))
    spec = ProblemSpec(name="built", levels=[level], data=[DataSpec(name="data1", ref="m:d")])
    with pytest.raises(SpecError, match=r"unknown level or data 'data0' .*\(did you mean 'data1'\?\)"):
        check_problem_spec(spec)


def test_built_negative_staleness() -> None:
    with pytest.raises(SpecError, match="staleness must be an integer of zero or more, found -2"):
        check_problem_spec(ProblemSpec(name="built", levels=[_level(staleness=-2)]))
