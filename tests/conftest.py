import os

from hypothesis import HealthCheck, settings

# A derandomized default keeps CI reproducible; LINALG_LOWRANK_HYPOTHESIS=soak draws fresh examples.
settings.register_profile(
    "default", derandomize=True, deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("soak", deadline=None, max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("LINALG_LOWRANK_HYPOTHESIS", "default"))
