"""Shared by the training tests: tiny models run single-threaded.

Importing ``one_thread`` into a test module makes it autouse there. Tiny models gain nothing from a
second thread, and on a busy 2-core machine every parallel kernel waits for the other core (x100).
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
