"""The ``vllm`` backend where vLLM is absent (CPU machines): a clear error that says what to do."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from model_workers.backends import BackendOptions, ModelSpec, create_backend
from model_workers.errors import BackendUnavailable

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is not None,
                                reason="vLLM is installed here")


def test_missing_vllm_says_how_to_get_it() -> None:
    with pytest.raises(BackendUnavailable) as error:
        create_backend("vllm", [ModelSpec(name="m", source="m")], BackendOptions())
    assert error.value.status_code == 503
    message = error.value.message
    assert "pip install 'alpaca-arena[vllm]'" in message
    assert "--backend openai --upstream-url http://HOST:PORT/v1" in message


def test_importing_the_module_does_not_need_vllm() -> None:
    code = ("import model_workers.backends.vllm as m, sys; "
            "assert 'vllm' not in sys.modules; print(m.NOT_INSTALLED)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert "vllm serve MODEL" in result.stdout
