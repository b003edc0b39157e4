"""MemoryTracker on hand-made tensor programs: exact live/peak bytes, views, frees, categories, phases, fake."""

from __future__ import annotations

from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch")

from trainer.tracker import CATEGORIES, MemoryTracker  # noqa: E402

pytestmark = pytest.mark.train


def test_counts_outputs_once_and_frees() -> None:
    tracker = MemoryTracker()
    with tracker:
        a = torch.ones(1000)  # 4000 B
        v = a.view(10, 100)  # same storage: not counted again
        b = a * 2  # 4000 B
        assert tracker.live_total == 8000
        del a, b
        assert tracker.live_total == 4000  # the view keeps a's storage alive
        del v
        assert tracker.live_total == 0
    assert tracker.peak.total == 8000
    assert tracker.peak.components["activations"] == 8000


def test_preregistered_and_reclassified_bytes_fix_the_peak_snapshot() -> None:
    tracker = MemoryTracker()
    w = torch.ones(256)  # 1024 B of "weights", made before tracking
    tracker.register(w, "weights")
    with tracker:
        with tracker.phase("backward"):
            g = w * 3  # 1024 B, becomes a gradient after the peak was recorded
            tmp = torch.ones(512)  # 2048 B temporary
            del tmp
        tracker.register(g, "gradients")
    assert tracker.peak.total == 1024 + 1024 + 2048
    assert tracker.peak.components["weights"] == 1024
    assert tracker.peak.components["gradients"] == 1024  # moved into the snapshot: it was alive at the peak
    assert tracker.peak.components["activations"] == 2048
    assert tracker.phases["backward"].components["gradients"] == 1024
    assert sum(tracker.peak.components.values()) == tracker.peak.total
    assert set(tracker.peak.components) == set(CATEGORIES)


def test_reclassifying_a_later_tensor_leaves_the_old_peak_alone() -> None:
    tracker = MemoryTracker()
    with tracker:
        a = torch.ones(1024)
        del a  # peak 4096 recorded here
        b = torch.ones(10)
        tracker.register(b, "optimizer")
    assert tracker.peak.total == 4096
    assert tracker.peak.components["optimizer"] == 0


def test_round_to_mimics_the_caching_allocator() -> None:
    tracker = MemoryTracker(round_to=512)
    with tracker:
        x = torch.ones(3)  # 12 B -> one 512 B block
        y = torch.ones(200)  # 800 B -> 1024 B
        assert tracker.live_total == 512 + 1024
        del x, y


def test_scope_and_phases() -> None:
    tracker = MemoryTracker()
    with tracker:
        with tracker.phase("forward"):
            with tracker.scope("logits"):
                lg = torch.ones(100)
            a = torch.ones(50)
        with tracker.phase("optimizer"):
            del lg
            b = torch.ones(10)
    assert tracker.phases["forward"].total == 600
    assert tracker.phases["forward"].components["logits"] == 400
    assert tracker.phases["optimizer"].total == 600  # at its start, everything from forward was still alive
    assert tracker.peak_phase == "forward"
    del a, b


def test_fake_tensors_are_counted_like_real_ones() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    def program(tracker: MemoryTracker) -> None:
        with tracker:
            x = torch.randn(64, 64)
            y = (x @ x).relu()  # x, the product and y are alive together
            del x, y

    real, fake = MemoryTracker(), MemoryTracker()
    program(real)
    with FakeTensorMode():
        program(fake)
    assert real.peak.total == fake.peak.total == 3 * 64 * 64 * 4
    assert real.live_total == fake.live_total == 0


def test_package_top_level_is_torch_free() -> None:
    import subprocess
    import sys

    code = "import sys, trainer, trainer.accuracy; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_unknown_category_is_rejected() -> None:
    with pytest.raises(ValueError):
        MemoryTracker().register(torch.ones(1), "nope")


def test_bytes_an_op_makes_inside_itself_count_while_it_runs() -> None:
    """A trace of a CUDA plan counts CUDA's softmax backward's ``grad * output`` (``trainer.traced.CUDA_IN_OP``)
    from before the op until its output exists, and not after."""
    from trainer.traced import CUDA_IN_OP

    x = torch.randn(4, 256, requires_grad=True)
    grad = torch.ones(4, 256)

    def run(in_op: dict[object, Callable[..., int]] | None) -> MemoryTracker:
        tracker = MemoryTracker(in_op=in_op)
        with tracker:
            y = torch.softmax(x, dim=-1)
            (g,) = torch.autograd.grad(y, x, grad)
            del y, g
        return tracker

    plain, cuda = run(None), run(CUDA_IN_OP)
    assert cuda.peak.total - plain.peak.total == 4 * 256 * 4  # one fp32 block of the gradient's size
    assert cuda.live_total == plain.live_total == 0
