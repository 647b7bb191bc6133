"""FedAvg and what travels between server and clients."""

import torch

from federa.types import TrainSettings, Update
from federa.engines.inprocess import run_method
from federa.job import prepare_job
from federa.methods.base import state_bytes, trainable_state
from federa.results_dir import RunDir
from federa.strategies.base import derive_seed
from federa.strategies.fedavg import FedAvg
from federa.strategies.fedavg import weighted_average


def test_weighted_average_is_exact_on_hand_made_tensors():
    s1 = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([[0.0]])}
    s2 = {"w": torch.tensor([4.0, 8.0]), "b": torch.tensor([[3.0]])}
    out = FedAvg(2, 0).aggregate(1, s1, {0: Update(s1, 1), 1: Update(s2, 2)})
    assert torch.equal(out["w"], torch.tensor([3.0, 6.0]))  # (1·1 + 2·4)/3, (1·2 + 2·8)/3
    assert torch.equal(out["b"], torch.tensor([[2.0]]))
    assert out["w"].dtype == torch.float32


def test_weighted_average_keeps_dtype_and_is_order_free():
    a = {"x": torch.tensor([0.1, 0.2], dtype=torch.float16)}
    b = {"x": torch.tensor([0.3, 0.4], dtype=torch.float16)}
    ab = weighted_average([a, b], [3, 1])
    ba = weighted_average([b, a], [1, 3])
    assert ab["x"].dtype == torch.float16 and torch.equal(ab["x"], ba["x"])


def test_client_sampling_is_seeded_and_without_replacement():
    s = FedAvg(clients_per_round=3, seed=7)
    base = TrainSettings(lr=1e-3, batch_size=4, seed=7, local_steps=1)
    r1, r1_again, r2 = (s.configure_round(1, range(10), base), s.configure_round(1, range(10), base),
                        s.configure_round(2, range(10), base))
    assert list(r1) == list(r1_again) and len(set(r1)) == 3
    assert r1 != r2 or [v.seed for v in r1.values()] != [v.seed for v in r2.values()]
    assert r1[next(iter(r1))].seed == derive_seed(7, 1, next(iter(r1)))


def test_only_trainable_tensors_travel(tiny_cfg, tmp_path):
    job = prepare_job(tiny_cfg("methods=lora"))
    _, model, _ = job.server_model("lora")
    state = trainable_state(model)
    # LoRA A/B of query and value in 2 layers + the classifier head (peft modules_to_save).
    assert all(("lora_" in k or "classifier" in k) for k in state)
    assert sum("lora_A" in k for k in state) == 4 and sum("classifier" in k for k in state) == 2
    assert not any("query.base_layer" in k or "embeddings" in k for k in state)
    rd = RunDir(tmp_path)
    result = run_method(job, "lora", rd, progress=False, log=lambda *_: None)
    per_client = state_bytes(state)
    assert result["bytes_per_client_round"] == per_client
    last = rd.read_metrics()[-1]
    # 2 rounds × 2 sampled clients, each way.
    assert last["cum_bytes_up"] == last["cum_bytes_down"] == 4 * per_client
