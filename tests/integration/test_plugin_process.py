"""The plugin in fresh processes: installed entry point only, no PYTHONPATH, from outside the repository."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def _fresh_python(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VERL_PLATFORM")}
    full_env.update(env)
    # Run from / so the repository is not on sys.path: only the installed entry point can graft.
    return subprocess.run([sys.executable, "-c", code], cwd="/", env=full_env, capture_output=True, text=True,
                          timeout=240)


def test_fresh_process_without_pythonpath_uses_our_dispatcher():
    out = _fresh_python(
        "import verl.utils.reward_score as rs, verl\n"
        "print(rs.default_compute_score.__module__)\n"
        "print(rs.default_compute_score('openai/gsm8k', '#### 7', '7'))\n"
        "print(rs.default_compute_score('grade', 'Total Score: 7/10', '0.7'))\n"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "verl.utils.reward_score.registry"
    assert lines[1] == "1.0"  # upstream's source: upstream's float
    assert "'reward_error': 0.0" in lines[2]  # ours: our schema


def test_plugins_can_be_disabled_with_verl_switch():
    out = _fresh_python(
        "import verl.utils.reward_score as rs, verl\nprint(rs.default_compute_score.__module__)",
        VERL_USE_EXTERNAL_PLUGINS="none",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "verl.utils.reward_score"


def test_cpu_profile_is_inert_unless_selected():
    code = "import sys, verl\nprint('verlkit.cpu_profile' in sys.modules)"
    assert _fresh_python(code).stdout.strip() == "False"
    out = _fresh_python(code + "\nfrom verl.plugin.platform import get_platform\nprint(get_platform().device_name)",
                        VERL_PLATFORM="cpu")
    assert out.stdout.split() == ["True", "cpu"], out.stderr[-2000:]
