"""Errors of the .chronos parser: the table of typical mistakes, carets, files and fuzzing."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chronos.dsl import parse, parse_file
from chronos.dsl.mistakes import MISTAKES, Mistake
from chronos.errors import ChronosError, SpecError, SpecSyntaxError

VALID = """\
problem hyperclean

data noisy_train = "examples.hyperclean:noisy_train"
data clean_val   = "examples.hyperclean:clean_val"

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
    hypergradient = implicit(cg, iters = 20)
    staleness = 0
}

backend local
"""


@pytest.mark.parametrize("mistake", MISTAKES, ids=[mistake.name for mistake in MISTAKES])
def test_mistake_table(mistake: Mistake) -> None:
    with pytest.raises(ChronosError) as caught:
        parse(mistake.text, "broken.chronos")
    error = caught.value
    assert type(error) is mistake.error
    assert re.search(mistake.message, error.message), error.message
    assert error.location is not None
    assert error.location.line == mistake.line
    assert error.location.column == mistake.column


def test_mistake_names_unique() -> None:
    names = [mistake.name for mistake in MISTAKES]
    assert len(names) == len(set(names))


def test_error_caret_excerpt() -> None:
    with pytest.raises(SpecSyntaxError) as caught:
        parse("problem p\nlevel w {\n    steps 3\n}\n", "w.chronos")
    lines = str(caught.value).splitlines()
    assert lines[0] == "w.chronos:3:11: expected '=' after the name 'steps', found the number 3"
    assert lines[1] == "        steps 3"
    assert lines[2] == "              ^"


def test_syntax_error_expected_words() -> None:
    with pytest.raises(SpecSyntaxError) as caught:
        parse("problem p\nlevel w {\n    steps 3\n}\n")
    assert caught.value.expected == ("'='",)


def test_syntax_error_hides_lark() -> None:
    with pytest.raises(SpecSyntaxError) as caught:
        parse("problem p\nlevel w (\n")
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_syntax_error_at_empty_text() -> None:
    with pytest.raises(SpecSyntaxError, match="expected 'problem' at the start of the spec, found end of file"):
        parse("")


def test_keyword_name_hint() -> None:
    with pytest.raises(SpecSyntaxError) as caught:
        parse("problem p\nlevel per {\n}\n")
    assert caught.value.hint == "'per' is a keyword and cannot be used as a name"


def test_unclosed_block_hint() -> None:
    with pytest.raises(SpecSyntaxError) as caught:
        parse("problem p\nlevel w {\n    steps = 3\n")
    assert caught.value.hint == "add '}' after the last entry of level 'w'"


def test_semantic_error_excerpt() -> None:
    text = VALID.replace("adam(lr", "adamw(lr")
    with pytest.raises(SpecError) as caught:
        parse(text, "h.chronos")
    lines = str(caught.value).splitlines()
    assert lines[0] == "h.chronos:9:17: [level 'weights'] unknown optimizer 'adamw' (did you mean 'adam'?)"
    assert lines[1] == "        optimizer = adamw(lr = 0.1)"
    assert lines[2] == "                    ^"


def test_huge_number_shortened() -> None:
    text = VALID.replace("steps = 30", "steps = " + "9" * 5000)
    with pytest.raises(SpecError, match=r"number 9{20}\.\.\. is too large"):
        parse(text)


def test_file_missing(tmp_path) -> None:
    path = tmp_path / "missing.chronos"
    with pytest.raises(SpecError, match="cannot read spec file '.*missing.chronos'"):
        parse_file(path)


def test_file_not_utf8(tmp_path) -> None:
    path = tmp_path / "latin1.chronos"
    path.write_bytes(b"problem p\n# caf\xe9\n")
    with pytest.raises(SpecError, match="is not valid UTF-8") as caught:
        parse_file(path)
    assert caught.value.location is not None
    assert (caught.value.location.line, caught.value.location.column) == (2, 6)


def test_file_error_location(tmp_path) -> None:
    path = tmp_path / "bad.chronos"
    path.write_text(VALID.replace("steps = 30", "steps = 0"), encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        parse_file(path)
    assert caught.value.location is not None
    assert caught.value.location.file == str(path)
    assert caught.value.location.line == 10


# Replacement characters and tokens for the mutations: the language's own
# punctuation and keywords make mutations that reach deeper than random bytes.
_PIECES = list('{}()=.,:"#\n -+e0123456789_aé;@\\') + [
    "level", "data", "per", "param", "true", "problem", "backend", "steps", "loss", "1e999", '"m:f"',
]


@st.composite
def _mutated_specs(draw: st.DrawFn) -> str:
    text = VALID
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        start = draw(st.integers(min_value=0, max_value=len(text)))
        end = min(len(text), start + draw(st.integers(min_value=0, max_value=6)))
        piece = draw(st.sampled_from(_PIECES + [""]))
        text = text[:start] + piece + text[end:]
    return text


# One example takes about two milliseconds on two CPU cores, and building the
# parser on first use about 30 ms. The deadline is far above both, so a loaded
# machine does not trip it, and still catches a parser that loops on some input.
@settings(max_examples=1000, deadline=5000, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated_specs())
def test_mutations_raise_located_errors(text: str) -> None:
    try:
        parse(text, "mutated.chronos")
    except ChronosError as error:
        assert error.location is not None, str(error)
        assert error.location.line >= 1
        assert error.location.column >= 1
