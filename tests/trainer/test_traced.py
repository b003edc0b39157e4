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
from trainer.traced import RealIndex, StandInValues, real_inputs, traced_run, unexplained  # noqa: E402

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


def test_each_stand_in_is_logged_where_it_was_read() -> None:
    """A read the trace answers with 1 is logged by its site; a site not known to be harmless is unexplained."""
    with FakeTensorMode(allow_non_fake_inputs=True), StandInValues() as stand_in:
        hidden = torch.empty(3, 4)
        rows = int(hidden.sum())  # a value a model could shape a tensor from
        assert rows == 1
    ((site, count),) = stand_in.reads.items()
    assert site.endswith(f"test_traced.py:{test_each_stand_in_is_logged_where_it_was_read.__code__.co_firstlineno + 4}"
                         " (test_each_stand_in_is_logged_where_it_was_read)") and count == 1  # fmt: skip
    assert unexplained(stand_in.reads) == stand_in.reads
    assert unexplained({"torch/optim/optimizer.py:95 (_get_value)": 84}) == {}


def test_a_plain_step_reads_only_the_optimizers_step_counter() -> None:
    """The tiny Llama QLoRA step, traced: its only stand-ins are AdamW's step counts (one per trained tensor and
    step: the state's warm-up step and the traced one), and no note is added."""
    case = next(c for c in CPU_CASES if c.id == "llama-qlora-gc")
    result = traced_run(case.make_plan(), dict(case.config))
    ((site, count),) = result["value_reads"].items()
    assert site.startswith("torch/optim/optimizer.py:") and site.endswith("(_get_value)")
    assert count == 2 * 3 * 7 * 2  # 2 steps, 3 layers, 7 adapted linears, lora_A and lora_B
    assert not any("reads of a tensor's value" in note for note in result["notes"])


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
