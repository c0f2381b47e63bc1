"""Random token-level mutations of valid specs: each compiles or raises a located ChronosError."""

import re
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chronos.compiler.compile import compile_spec
from chronos.dsl import parse
from chronos.errors import ChronosError

REPO = Path(__file__).resolve().parents[1]

BASES = [
    (REPO / "examples" / "ridge.chronos").read_text(),
    """
problem chain
level top {
    param a = full(0.3, dtype = float64)
    loss = "tests.toy:chain_top"(bottom)
    optimizer = sgd(lr = 0.1)
    steps = 2
}
level mid {
    param m = zeros(2, dtype = float64)
    loss = "tests.toy:chain_mid"(bottom, top)
    optimizer = sgd(lr = 0.3)
    steps = 3 per top
}
level bottom {
    param x = zeros(2, dtype = float64)
    loss = "tests.toy:chain_bottom"(mid)
    optimizer = sgd(lr = 0.4)
    steps = 4 per mid
}
""",
]

# Replacement tokens: names and values that are valid somewhere in a spec, so
# that mutations get past the parser and reach the compiler's passes.
TOKENS = [
    "top", "mid", "bottom", "regularizer", "weights", "train", "val", "a", "m", "x", "w", "log_lambda",
    "0", "1", "-1", "2", "7", "0.5", "1e9", "100000", "float64", "float32", "per", "steps", "unrolled",
    "implicit", "neumann", "cg", "auto", "adam", "sgd", "lr", "momentum", "last", "iters", "size",
    '"tests.toy:chain_top"', '"tests.toy:reads_upper"', '"tests.toy:raises"', '"tests.toy:vector_loss"',
    '"tests.toy:not_a_module"', '"examples.ridge:train_data"', '"tests.nowhere:f"', "",
]
TOKEN = re.compile(r'"[^"\n]*"|[A-Za-z_][A-Za-z0-9_]*|-?\d+(?:\.\d+)?(?:e-?\d+)?|\S')


@st.composite
def mutated_specs(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(BASES))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        # Punctuation is left alone: the parser's own fuzz test covers it, and
        # keeping it makes most mutations reach the compiler.
        tokens = [token for token in TOKEN.finditer(text) if token.group()[0].isalnum() or token.group()[0] in '"-_']
        target = tokens[draw(st.integers(min_value=0, max_value=len(tokens) - 1))]
        replacement = draw(st.sampled_from(TOKENS))
        text = text[: target.start()] + replacement + text[target.end() :]
    return text


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


# Each example compiles (and traces) a spec of two or three tiny levels in a
# few tens of milliseconds, but the first trace imports torch's tracer, which
# took up to 3 s on a loaded two-core machine. The 30 s deadline still
# catches a pass that loops.
@settings(max_examples=150, deadline=30000, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutated_specs())
def test_mutations_compile_or_locate(text: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            compile_spec(parse(text, "mutated.chronos"))
        except ChronosError as error:
            assert error.location is not None or error.level is not None or error.edge is not None, str(error)
