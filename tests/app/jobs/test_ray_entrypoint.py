"""What the Ray backend asks the cluster for and how it reads a run's result back (no cluster needed)."""

from __future__ import annotations

from app.jobs.ray_backend import entrypoint, extract_result


def test_a_run_asks_for_one_gpu_per_rank_and_none_on_the_cpu() -> None:
    command, gpus = entrypoint("cuda", 2, 4, "fsdp")
    assert command.startswith("torchrun --nproc-per-node 4 -m trainer.dist ") and gpus == 4
    assert entrypoint("cuda", 1, 1, "ddp") == (
        "python -m trainer.run --device cuda --plan plan.json --config config.json --steps 1 --out result.json "
        "--print-result",
        1,
    )
    command, gpus = entrypoint("cpu", 3, 2, "fsdp")
    assert command.startswith("python -m trainer.run --device cpu ") and "--steps 3 " in command and gpus == 0
    assert entrypoint("cuda", 1, 2, "zero3")[1] == 1  # ZeRO runs under DeepSpeed's launcher, not here: one GPU


def test_the_result_is_the_last_result_line_of_the_logs() -> None:
    logs = 'loading\nTUNEPLAN-RESULT {"a": 1}\nwarning\nTUNEPLAN-RESULT {"a": 2}\nbye\n'
    assert extract_result(logs) == {"a": 2}
    assert extract_result("no result here") is None
    assert extract_result("TUNEPLAN-RESULT [1, 2]") is None
    assert extract_result("TUNEPLAN-RESULT {broken") is None
