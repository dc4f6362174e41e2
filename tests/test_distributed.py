import socket

import pytest
import torch
import torch.multiprocessing as mp

from bertkit.train.distributed import DistInfo, init_distributed
from bertkit.train.logging import read_metrics
from bertkit.train.loop import Trainer
from train_toys import ToyRegressor, ToySource, ddp_worker, save_state_dict, toy_config


def test_single_process_without_torchrun_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.is_main, info.is_distributed) == (0, 1, True, False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="gloo backend not built")
def test_two_gloo_ranks_match_one_process_with_the_double_batch(tmp_path):
    """Rank r trains on the r-th half of each batch; DDP's averaged gradients equal the full batch's."""
    overrides = dict(max_steps=6, grad_accum=2, save_every=3, log_every=2)
    dirs = [str(tmp_path / "ddp"), str(tmp_path / "rank1")]
    mp.spawn(ddp_worker, args=(2, _free_port(), dirs, 4, overrides), nprocs=2, join=True)

    single = Trainer(ToyRegressor(dropout=0.0), toy_config(tmp_path / "single", **overrides),
                     ToySource(batch_size=8), save_model=save_state_dict, dist=DistInfo.single("cpu"))
    single.fit()
    ddp_params = torch.load(tmp_path / "ddp" / "model.pt")
    for name, value in single.raw_model.state_dict().items():
        torch.testing.assert_close(ddp_params[name], value, rtol=0, atol=1e-5)
    # The logged loss is the mean over ranks, i.e. the single process's loss.
    ddp_log, single_log = (read_metrics(tmp_path / d / "metrics.jsonl") for d in ("ddp", "single"))
    assert [r["loss"] for r in ddp_log] == pytest.approx([r["loss"] for r in single_log], abs=1e-5)
    assert [r["step"] for r in ddp_log] == [2, 4, 6]
    assert not (tmp_path / "rank1").exists()  # only rank 0 writes
