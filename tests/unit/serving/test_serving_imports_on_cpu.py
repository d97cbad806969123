"""verlkit.serving is a command-line tool's library: importing it must not pull in torch, vLLM, aiohttp
or upstream verl (``import verl`` alone costs seconds). Checked in a fresh interpreter."""

import subprocess
import sys

HEAVY = ("torch", "verl", "vllm", "aiohttp", "openai", "transformers")


def test_importing_the_package_and_its_cli_loads_nothing_heavy():
    code = (
        "import sys, verlkit.serving, verlkit.serving.cli\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_public_names():
    import verlkit.serving as serving

    for name in ("PortInUseError", "ServedModel", "ServerSpec", "ServerStartError", "gpu_available", "launch",
                 "load_lora_adapter"):  # fmt: skip
        assert hasattr(serving, name), name
    assert issubclass(serving.PortInUseError, serving.ServerStartError)
