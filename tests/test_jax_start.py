"""The JAX start-up probe (research/guards.py `check_jax_start`): a bad XLA flag is one line, and
settings that started JAX are recorded in the environment, so the processes started with them (a
sweep's runner and trials, the test suite's commands) do not probe again."""

from __future__ import annotations

import os

import pytest

from research.errors import UserError
from research.guards import JAX_START_CHECKED, _jax_settings_digest, check_jax_start

GOOD = "--xla_backend_optimization_level=0 --xla_force_host_platform_device_count=2"
BAD = "--xla_this_flag_does_not_exist=1"


def env_with(flags: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != JAX_START_CHECKED}
    env["XLA_FLAGS"] = flags
    return env


def test_settings_that_start_jax_are_recorded_for_the_processes_that_follow():
    env = env_with(GOOD)
    check_jax_start(env)
    assert env[JAX_START_CHECKED] == _jax_settings_digest(env)
    assert _jax_settings_digest(env) != _jax_settings_digest(env_with(GOOD + " "))  # any change is probed again


def test_a_bad_flag_is_one_line_even_after_other_settings_were_checked():
    env = env_with(BAD)
    env[JAX_START_CHECKED] = _jax_settings_digest(env_with(GOOD))  # a record of other settings proves nothing
    with pytest.raises(UserError) as err:
        check_jax_start(env)
    assert "XLA_FLAGS" in str(err.value) and "\n" not in str(err.value)
    assert env[JAX_START_CHECKED] == _jax_settings_digest(env_with(GOOD))  # a failed probe records nothing


def test_recorded_settings_are_not_probed_again():
    env = env_with(BAD)
    env[JAX_START_CHECKED] = _jax_settings_digest(env)  # as if a parent process had started JAX with them
    check_jax_start(env)  # no probe: a probe of this flag would fail (previous test)
