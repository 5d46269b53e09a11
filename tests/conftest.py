import pytest
import torch


@pytest.fixture(autouse=True)
def ieee_denormals():
    """Each test starts and ends with denormal floats computed, as IEEE 754 says: code that runs a role or the
    inline loop in the pytest process flushes them (speedy.threads.limit_threads), and hypothesis, for one, refuses
    to run in a process that does."""
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)
