"""The .chronos parser: the ProblemSpec it builds, spans, values and normalization."""

from __future__ import annotations

from pathlib import Path

import pytest

from chronos.dsl import parse, parse_file
from chronos.errors import SpecError
from chronos.spec import Name, Number, ProblemSpec, SourceSpan

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

HYPERCLEAN = """\
# comment to end of line
problem hyperclean

data noisy_train = "examples.hyperclean:noisy_train"
data clean_val   = "examples.hyperclean:clean_val"
report = "examples.hyperclean:report"          # optional, called after a run

level weights {
    param logits = zeros(noisy_train.size)
    loss = "examples.hyperclean:validation_loss"(classifier, clean_val)
    optimizer = adam(lr = 0.1)
    steps = 30
}

level classifier {
    module = "examples.hyperclean:make_classifier"
    loss = "examples.hyperclean:weighted_train_loss"(weights, noisy_train)
    optimizer = sgd(lr = 0.5, momentum = 0.9)
    steps = 100 per weights
    hypergradient = auto
    staleness = 0
    warm_start = false
}

backend local
"""


def _two_levels(entries: str, extra: str = "") -> str:
    """Return a two-level spec whose lower level has ``entries`` added."""
    return (
        "problem p\n"
        'data train = "m:train"\n'
        f"{extra}"
        "level upper {\n"
        "    param lr = full(0.1, 1)\n"
        '    loss = "m:outer"(lower)\n'
        "    optimizer = adam(lr = 0.01)\n"
        "    steps = 5\n"
        "}\n"
        "level lower {\n"
        "    param w = zeros(3)\n"
        '    loss = "m:inner"(upper, train)\n'
        "    optimizer = sgd(lr = 0.1)\n"
        f"{entries}\n"
        "}\n"
    )


def _level_spec(entries: str, extra: str = "") -> ProblemSpec:
    """Parse ``_two_levels(entries, extra)`` without semantic checks."""
    return parse(_two_levels(entries, extra), check=False)


def _hypergradient(value: str):
    spec = _level_spec(f"    steps = 10\n    hypergradient = {value}")
    return spec.level("lower").hypergradient


def test_hyperclean_structure() -> None:
    spec = parse(HYPERCLEAN, "hyperclean.chronos")
    assert spec.name == "hyperclean"
    assert [data.name for data in spec.data] == ["noisy_train", "clean_val"]
    assert [level.name for level in spec.levels] == ["weights", "classifier"]
    assert spec.report == "examples.hyperclean:report"
    assert spec.backend.name == "local"
    assert spec.source == "hyperclean.chronos"


def test_string_spec_has_no_source() -> None:
    assert parse(HYPERCLEAN).source is None


def test_hyperclean_weights_level() -> None:
    weights = parse(HYPERCLEAN).level("weights")
    assert weights.params[0].name == "logits"
    assert weights.params[0].init.func == "zeros"
    assert weights.params[0].init.args[0].dotted() == "noisy_train.size"
    assert weights.loss.ref == "examples.hyperclean:validation_loss"
    assert [arg.name for arg in weights.loss.args] == ["classifier", "clean_val"]
    assert weights.optimizer.name == "adam"
    assert weights.optimizer.kwargs["lr"].value == 0.1
    assert weights.steps == 30
    assert weights.per is None


def test_hyperclean_classifier_level() -> None:
    classifier = parse(HYPERCLEAN).level("classifier")
    assert classifier.module == "examples.hyperclean:make_classifier"
    assert classifier.params == []
    assert classifier.optimizer.kwargs["momentum"].value == 0.9
    assert classifier.steps == 100
    assert classifier.per == "weights"
    assert classifier.hypergradient.method == "auto"
    assert classifier.staleness == 0
    assert classifier.warm_start is False


def test_spans_on_nodes() -> None:
    spec = parse(HYPERCLEAN, "h.chronos")
    weights, classifier = spec.levels

    def at(line: int, column: int) -> SourceSpan:
        return SourceSpan(file="h.chronos", line=line, column=column)

    assert spec.data[0].span == at(4, 6)
    assert spec.report_span == at(6, 10)
    assert weights.span == at(8, 7)
    assert weights.params[0].span == at(9, 11)
    assert weights.params[0].init.span == at(9, 20)
    assert weights.params[0].init.args[0].span == at(9, 26)
    assert weights.loss.span == at(10, 12)
    assert weights.loss.args[1].span == at(10, 62)
    assert weights.optimizer.span == at(11, 17)
    assert weights.steps_span == at(12, 13)
    assert classifier.module_span == at(16, 14)
    assert classifier.per_span == at(19, 21)
    assert classifier.hypergradient.span == at(20, 21)
    assert classifier.staleness_span == at(21, 17)
    assert spec.backend.span == at(25, 9)


def test_keyword_value_span_is_keyword() -> None:
    optimizer = parse(HYPERCLEAN, "h.chronos").level("classifier").optimizer
    assert optimizer.kwargs["momentum"].span == SourceSpan(file="h.chronos", line=18, column=31)


def test_source_order_kept() -> None:
    spec = _level_spec("    steps = 10", extra='data zeta = "m:z"\ndata alpha = "m:a"\n')
    assert [data.name for data in spec.data] == ["train", "zeta", "alpha"]


@pytest.mark.parametrize(
    ("written", "value"),
    [("3", 3), ("-3", -3), ("+4", 4), ("0.5", 0.5), (".5", 0.5), ("2.", 2.0), ("1e-3", 1e-3), ("-2.5E+2", -250.0)],
)
def test_number_values(written: str, value: float) -> None:
    text = _two_levels("    steps = 10").replace("sgd(lr = 0.1)", f"sgd(lr = {written})")
    lr = parse(text, check=False).level("lower").optimizer.kwargs["lr"]
    assert isinstance(lr, Number)
    assert lr.value == value
    assert type(lr.value) is type(value)


def test_scientific_steps_rejected() -> None:
    with pytest.raises(SpecError, match="steps must be an integer, found the number 1e3"):
        _level_spec("    steps = 1e3")


def test_negative_steps_parse() -> None:
    spec = _level_spec("    steps = -3")
    assert spec.level("lower").steps == -3


def test_string_escapes() -> None:
    spec = parse('problem p\ndata d = "m:f\\"q\\\\\\n\\t"\n', check=False)
    assert spec.data[0].ref == 'm:f"q\\\n\t'


def test_boolean_values() -> None:
    spec = _level_spec("    steps = 10\n    warm_start = true")
    assert spec.level("lower").warm_start is True


def test_comments_and_blank_lines() -> None:
    text = "# head\n\n  # indented\nproblem p # trailing\n\n\n# tail without newline"
    assert parse(text, check=False).name == "p"


def test_crlf_line_endings() -> None:
    spec = parse(HYPERCLEAN.replace("\n", "\r\n"), "h.chronos")
    assert spec.level("classifier").per_span == SourceSpan(file="h.chronos", line=19, column=21)


def test_arguments_span_lines() -> None:
    multiline = "sgd(\n        lr = 0.1,\n        momentum = 0.9\n    )"
    text = _two_levels("    steps = 10").replace("sgd(lr = 0.1)", multiline)
    optimizer = parse(text, check=False).level("lower").optimizer
    assert sorted(optimizer.kwargs) == ["lr", "momentum"]


def test_single_line_block() -> None:
    spec = parse("problem p\nlevel w { steps = 3 }\nlevel v {}\n", check=False)
    assert spec.level("w").steps == 3
    assert spec.level("v").steps is None


def test_loss_without_arguments() -> None:
    spec = parse(HYPERCLEAN.replace('"(classifier, clean_val)', '"'), check=False)
    assert spec.level("weights").loss.args == []


def test_optimizer_reads_upper_variable() -> None:
    text = _two_levels("    steps = 10").replace("sgd(lr = 0.1)", "sgd(lr = upper.lr)")
    lr = parse(text).level("lower").optimizer.kwargs["lr"]
    assert isinstance(lr, Name)
    assert lr.dotted() == "upper.lr"


def test_param_full_initializer() -> None:
    init = _level_spec("    steps = 10").level("upper").params[0].init
    assert init.func == "full"
    assert [arg.value for arg in init.args] == [0.1, 1]


@pytest.mark.parametrize(
    ("written", "method", "options"),
    [
        ("auto", "auto", {}),
        ("unrolled", "unrolled", {}),
        ("unrolled(last = 10)", "unrolled", {"last": 10}),
        ("implicit", "implicit", {"solver": "cg"}),
        ("implicit(iters = 5)", "implicit", {"solver": "cg", "iters": 5}),
        ("implicit(cg, iters = 20)", "implicit", {"solver": "cg", "iters": 20}),
        ("implicit(neumann, iters = 20, alpha = 0.1)", "implicit", {"solver": "neumann", "iters": 20, "alpha": 0.1}),
        ("implicit(solver = neumann)", "implicit", {"solver": "neumann"}),
        ("neumann(iters = 20)", "implicit", {"solver": "neumann", "iters": 20}),
        ("cg(tol = 1e-6)", "implicit", {"solver": "cg", "tol": 1e-6}),
        ("finite_difference", "finite_difference", {}),
    ],
)
def test_hypergradient_normalized(written: str, method: str, options: dict) -> None:
    spec = _hypergradient(written)
    assert spec.method == method
    assert spec.options == options


def test_hypergradient_forms_validate() -> None:
    spec = _level_spec("    steps = 10 per upper\n    hypergradient = neumann(iters = 20, alpha = 0.1)")
    spec.validate_spec()


def test_backend_options() -> None:
    spec = parse(HYPERCLEAN.replace("backend local", "backend torch(world_size = 2, device = cpu)"))
    assert spec.backend.name == "torch"
    assert spec.backend.options == {"world_size": 2, "device": "cpu"}


def test_backend_default_local() -> None:
    spec = parse(HYPERCLEAN.replace("backend local", ""))
    assert spec.backend.name == "local"


def test_check_false_skips_semantics() -> None:
    spec = parse(HYPERCLEAN.replace("steps = 30", "steps = 0"), check=False)
    assert spec.level("weights").steps == 0


def test_expression_kinds() -> None:
    spec = parse(
        HYPERCLEAN.replace("backend local", 'backend torch(a = 1, b = "s", c = true, d = name)'),
        check=False,
    )
    assert spec.backend.options == {"a": 1, "b": "s", "c": True, "d": "name"}


def test_parse_file_names_spans(tmp_path) -> None:
    path = tmp_path / "h.chronos"
    path.write_text(HYPERCLEAN, encoding="utf-8")
    spec = parse_file(path)
    assert spec.levels[0].span.file == str(path)
    assert spec.source == str(path)


def test_parse_file_skips_bom(tmp_path) -> None:
    path = tmp_path / "h.chronos"
    path.write_bytes(b"\xef\xbb\xbf" + HYPERCLEAN.encode("utf-8"))
    assert parse_file(path).name == "hyperclean"


def test_ridge_example_parses() -> None:
    spec = parse_file(EXAMPLES / "ridge.chronos")
    assert [level.name for level in spec.levels] == ["regularizer", "weights"]
    assert spec.level("weights").per == "regularizer"


def test_hyperclean_example_parses() -> None:
    path = EXAMPLES / "hyperclean.chronos"
    if not path.exists():
        pytest.skip("examples/hyperclean.chronos is not written yet")
    assert parse_file(path).name == "hyperclean"
