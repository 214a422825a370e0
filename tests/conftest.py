"""Shared pytest configuration: pytest-twisted drives the default reactor; Hypothesis
runs without wall-clock limits (nothing in the suite times anything, and a loaded CI
machine once failed a property test on a 2.3 s draw: its too_slow health check)."""

from hypothesis import HealthCheck, settings

settings.register_profile("kvd", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("kvd")
