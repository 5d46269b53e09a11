from concurrent.futures import ThreadPoolExecutor

import torch

from speedy.threads import limit_threads


def test_a_process_budget_also_flushes_denormals_in_the_threads_it_starts():
    denormal = torch.tensor([1e-39, 1.0])
    try:
        limit_threads(1)
        assert (denormal * 1.0).tolist() == [0.0, 1.0]
        with ThreadPoolExecutor(1) as pool:  # the trainer's and reanalyzers' worker threads
            assert pool.submit(lambda: (denormal * 1.0).tolist()).result() == [0.0, 1.0]
    finally:
        torch.set_flush_denormal(False)
    assert (denormal * 1.0)[0].item() > 0  # what every step of a trained model computed before
