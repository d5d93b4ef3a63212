"""DDP on CPU (gloo, 2 processes launched like torchrun): ranks stay identical and loads are global."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from moe_core import ModelConfig, build_model, preset
from moe_core.run import load_run, load_weights
from moe_core.training import batch_starts, windows

REPO = Path(__file__).resolve().parents[2]
STEPS, BATCH, SEQ = 4, 8, 32

# Each rank trains the same run; the model object is captured to compare ranks' in-memory weights.
WORKER = (
    textwrap.dedent(
        """
    import random, sys
    from safetensors.torch import save_file
    import moe_core.training as T
    import moe_core.training.loop as loop
    from moe_core import ModelConfig, preset
    from moe_core.corpus import Doc

    out, rank = sys.argv[1], sys.argv[2]
    r = random.Random(0)
    words = "the cat sat on a mat and the dog ran to the park while birds sang".split()
    docs = []
    for i in range(40):
        if i % 2:
            text = " ".join(f"{r.randint(0, 99)} + {r.randint(0, 99)} = {r.randint(0, 198)}." for _ in range(25))
        else:
            text = " ".join(r.choice(words) for _ in range(120))
        docs.append(Doc(text, "math" if i % 2 else "prose", "test", i))
    data = preset("tiny").to_dict()
    data["vocab_size"] = 320
    data["moe"]["balance"]["bias_rate"] = 1e-2  # big enough to see biases move in a few steps
    models = []
    build = loop.build_model
    loop.build_model = lambda cfg: models.append(build(cfg)) or models[-1]
    cfg = T.TrainConfig(steps=STEPS, batch_size=BATCH, seq_len=SEQ, warmup_steps=1, eval_every=2, ckpt_every=2,
                        eval_batches=2)
    T.train(out + "/run", ModelConfig.from_dict(data), cfg, docs[:32], docs[32:], device="cpu", progress=False)
    save_file({k: v.contiguous() for k, v in models[0].state_dict().items()}, f"{out}/rank{rank}.safetensors")
    """
    )
    .replace("STEPS", str(STEPS))
    .replace("BATCH", str(BATCH))
    .replace("SEQ", str(SEQ))
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_ranks_gloo(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(tmp_path), str(rank)],
                env=env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for p in procs:
        try:
            _, err = p.communicate(timeout=120)
        finally:
            p.kill()
        assert p.returncode == 0, err[-2000:]

    w0, w1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert w0.keys() == w1.keys()
    for name in w0:
        assert torch.equal(w0[name], w1[name]), f"{name} differs between ranks"
    biases = [w0[k] for k in sorted(w0) if k.endswith("router.expert_bias")]
    assert biases and all(b.abs().sum() > 0 for b in biases)  # the biases did move, identically

    run = load_run(tmp_path / "run")
    hist = run.history()
    assert [r["step"] for r in hist] == list(range(1, STEPS + 1))  # only rank 0 writes
    assert run.checkpoints() == [2, 4]
    saved, _ = load_weights(run.weights_path(4))
    assert all(torch.equal(saved[k], w0[k]) for k in w0)
    assert torch.allclose(torch.stack(biases), torch.tensor(hist[-1]["bias"]))

    # step 1's loads are those of the whole global batch, computed here in one process from the same init
    data = preset("tiny").to_dict()
    data["vocab_size"] = 320
    data["moe"]["balance"]["bias_rate"] = 1e-2
    cfg = ModelConfig.from_dict(data)
    assert cfg == run.config
    torch.manual_seed(0)
    model = build_model(cfg).train()
    tokens, _ = load_weights(tmp_path / "run" / "data" / "tokens.safetensors")
    x, _ = windows(tokens["train"], batch_starts(0, 1, tokens["train"].numel(), BATCH, SEQ), SEQ)
    model(x)
    global_loads = model.pop_expert_loads()
    assert global_loads.sum(dim=1).tolist() == [BATCH * SEQ * cfg.moe.top_k] * len(cfg.moe_layers)
    assert [sum(load) for load in hist[0]["load"]] == [BATCH * SEQ * cfg.moe.top_k] * len(cfg.moe_layers)
    diff = (global_loads - torch.tensor(hist[0]["load"], dtype=torch.float32)).abs().sum()
    assert diff <= 2, (global_loads.tolist(), hist[0]["load"])  # equal up to a rare float tie in top-k
