"""The traced dry run's handling of the values a step reads: the batch entries kept real, and the optimizer state of
parameters the step never reaches. The trace of every vision family equals its real CPU run in the slow tier
(``tests/trainer/test_accuracy.py``, ``TRACED_VS_REAL_CASES``); here, one family, and the mechanisms themselves."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("PIL")

from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode  # noqa: E402

from trainer.accuracy import CPU_CASES  # noqa: E402
from trainer.run import run  # noqa: E402
from trainer.traced import RealIndex, StandInValues, real_inputs, traced_run  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.filterwarnings("ignore::FutureWarning")]


def test_an_index_keeps_its_values_where_a_fake_tensor_would_answer_one() -> None:
    sizes = torch.tensor([[224, 112], [112, 56]])
    with FakeTensorMode(allow_non_fake_inputs=True), StandInValues():
        features = torch.empty(10, 4)  # fake: the step's tensors
        assert isinstance(features, FakeTensor)
        # a plain real tensor is read as a fake one, whose values are stood in for
        assert [row.tolist() for row in sizes] == [[1, 1], [1, 1]]

        index = sizes.as_subclass(RealIndex)
        rows = [(row[0] // 56, row[1] // 56) for row in index]  # an op on indices alone runs real
        assert [(int(h), int(w)) for h, w in rows] == [(4, 2), (2, 1)]
        parts = torch.split(features, [h * w for h, w in rows])  # a fake op given the index's values
        assert [tuple(p.shape) for p in parts] == [(8, 4), (2, 4)]
        assert all(isinstance(p, FakeTensor) for p in parts)
        assert tuple(features[: rows[1][0], : int(index[0, 1] // 112)].shape) == (2, 1)


def test_the_entries_kept_real_are_those_the_model_reads() -> None:
    assert real_inputs("llava_next") == ("image_grid_thw", "video_grid_thw", "image_sizes")
    assert {"pixel_values", "pixel_attention_mask"} <= set(real_inputs("idefics3")) == set(real_inputs("smolvlm"))
    assert "pixel_values" not in real_inputs("qwen2_vl")


def test_llava_next_traced_equals_its_real_run() -> None:
    """LLaVA-NeXT picks each image's tiles from its ``image_sizes`` (stood in for as 1 × 1 before, which traced 3
    tiles of 5 and unpadded to nothing: 150 MB under the real run at CLIP ViT-L/14-336), and with feature layer -2
    the tower's last layer gets no gradient, so AdamW makes no state for it (made up front before: the trace was
    above the run by that state)."""
    case = next(c for c in CPU_CASES if c.id == "llava-next-qlora-gc-2img")
    plan = case.make_plan()
    real = run(plan, dict(case.config), device="cpu")
    traced = traced_run(plan, dict(case.config))
    assert traced["measured"]["peak_allocated"] == real["measured"]["peak_allocated"]
    assert traced["measured"]["phases"] == real["measured"]["phases"]
    assert traced["measured"]["components"]["optimizer"] == real["measured"]["components"]["optimizer"]
