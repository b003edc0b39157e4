"""trainer.build: a traced process imports bitsandbytes without torch's compiler stack."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from trainer.build import compile_on_first_call  # noqa: E402

pytestmark = pytest.mark.train

_IMPORT = """
import sys
from trainer.build import import_bitsandbytes
{how}
print("torch._inductor.compile_fx" in sys.modules, "networkx" in sys.modules)
"""


@pytest.mark.parametrize(
    ("how", "compiler_imported"),
    [("import bitsandbytes", True), ("import_bitsandbytes()", False)],
    ids=["plain-import", "compiled-on-first-call"],
)
def test_bitsandbytes_imports_torchs_compiler_only_when_imported_plainly(how: str, compiler_imported: bool) -> None:
    pytest.importorskip("bitsandbytes")
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT.format(how=how)], capture_output=True, text=True, check=True, timeout=300
    ).stdout.split()
    assert out == [str(compiler_imported)] * 2


def test_a_function_is_compiled_with_its_arguments_on_its_first_call() -> None:
    compiled_with: list[dict[str, object]] = []
    compile_now = torch.compile

    def spy(model: Any = None, **kwargs: Any) -> Any:
        compiled_with.append(kwargs)
        return compile_now(model, **kwargs)

    torch.compile = spy
    try:
        with compile_on_first_call():

            def double(x: Any) -> Any:
                return x * 2

            double = torch.compile(backend="eager", dynamic=False)(double)

            halve = torch.compile(lambda x: x / 2, backend="eager")
        assert torch.compile is spy  # given back
        assert compiled_with == []  # nothing compiled yet
        assert double(torch.ones(3)).tolist() == [2.0, 2.0, 2.0]
        assert double(torch.ones(3)).tolist() == [2.0, 2.0, 2.0]
        assert halve(torch.ones(2)).tolist() == [0.5, 0.5]
    finally:
        torch.compile = compile_now
    assert compiled_with == [{"backend": "eager", "dynamic": False}, {"backend": "eager"}]  # once each
