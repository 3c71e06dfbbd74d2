"""The math attention kernel stays chosen while any of the engine's threads needs it."""

import threading

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from voxfit.engines.fish.attention import math_attention


def flash_on() -> bool:
    return torch.backends.cuda.flash_sdp_enabled()  # process-wide, whatever the device


@pytest.fixture(autouse=True)
def default_kernels():
    """Start from PyTorch's default (flash attention allowed) and leave the flags as they were found."""
    before = flash_on()
    torch.backends.cuda.enable_flash_sdp(True)
    yield
    torch.backends.cuda.enable_flash_sdp(before)


def overlap(context) -> list[bool]:
    """Thread A enters, thread B enters, A leaves, B leaves (as the batch's step and a codec window can):
    whether flash attention was on at each point where B still needs the math kernel, then at the end."""
    seen: list[bool] = []
    a_in, b_in, a_out, b_may_leave = (threading.Event() for _ in range(4))

    def a() -> None:
        with context():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b() -> None:
        a_in.wait(5)
        with context():
            b_in.set()
            a_out.wait(5)
            seen.append(flash_on())  # A has left: B is still inside
            b_may_leave.wait(5)

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    a_out.wait(5)
    b_may_leave.set()
    for t in threads:
        t.join(5)
    return seen + [flash_on()]


def test_one_thread_leaving_does_not_switch_the_kernel_back_under_another():
    assert flash_on()  # the default: the kernel a thread in a math block must not be handed
    # the premise: PyTorch's own context puts back what it found, under the thread still inside
    assert overlap(lambda: sdpa_kernel(SDPBackend.MATH)) == [True, False]
    torch.backends.cuda.enable_flash_sdp(True)  # what that interleaving left behind
    assert overlap(math_attention) == [False, True]  # math under B to the end, the default back after


def test_the_default_kernels_come_back_when_the_last_holder_leaves_even_on_error():
    with pytest.raises(ValueError):
        with math_attention():
            with math_attention():
                assert not flash_on()
            assert not flash_on()
            raise ValueError("a failed step")
    assert flash_on()
