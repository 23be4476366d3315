import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """Run on one thread: these tiny models gain nothing from more, and on a busy 2-core machine two threads
    spin-waiting for each other can make a test 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
