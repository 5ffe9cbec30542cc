"""dqn.policy_file: the safetensors policy file (no pickle), load_policy's predict and
q_values, and each refusal as one clear error naming the file; the learner's exporter
(best version kept while pinned) and its weights-only checkpoint."""

from __future__ import annotations

import json
import pickletools
import struct
import zipfile

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dqn import policy_file
from dqn import weights as weights_codec
from dqn.config import Config, EnvConfig, NetworkConfig
from dqn.networks import build_q_network
from dqn.policy_file import PolicyFileError, PolicyInfo, load_policy

pytestmark = pytest.mark.unit

NETWORK = {"hidden": [16, 8], "dueling": True}
INFO = PolicyInfo(
    obs_shape=(4,),
    obs_dtype="float32",
    n_actions=3,
    network=NETWORK,
    env_id="CartPole-v1",
    kind="solved",
    version=7,
    updates=1234,
    env_steps=56789,
    eval_mean=487.5,
)


@pytest.fixture
def net():
    torch.manual_seed(0)
    return build_q_network((4,), 3, NetworkConfig(hidden=(16, 8), dueling=True)).eval()


@pytest.fixture
def saved(tmp_path, net):
    path = tmp_path / policy_file.FILE_NAME
    policy_file.save(path, net.state_dict(), INFO)
    return path


def header_of(path) -> dict:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size])


def rewrite_metadata(path, **changes) -> None:
    """The file with ``__metadata__`` fields changed (None removes one), offsets kept."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    meta = header["__metadata__"]
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + size :])


def test_round_trip_keeps_weights_and_header(saved, net):
    policy = load_policy(saved)
    assert policy.info == INFO
    assert (policy.env_id, policy.version, policy.updates) == ("CartPole-v1", 7, 1234)
    assert policy.eval_mean == 487.5 and policy.obs_shape == (4,) and policy.n_actions == 3
    for key, tensor in net.state_dict().items():
        assert torch.equal(policy.model.state_dict()[key], tensor), key
    obs = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(policy.q_values(obs), expected, rtol=1e-6, atol=1e-7)
    assert "CartPole-v1" in repr(policy) and "487.5" in repr(policy)


def test_a_run_dir_loads_its_policy_file(saved):
    assert load_policy(saved.parent).path == saved


def test_predict_one_observation_or_a_batch(saved, net):
    policy = load_policy(saved)
    batch = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)
    with torch.no_grad():
        greedy = net(torch.from_numpy(batch)).argmax(dim=1).numpy()
    one = policy.predict(batch[0])
    assert isinstance(one, int) and one == greedy[0]
    many = policy.predict(batch)
    assert many.shape == (6,) and many.tolist() == greedy.tolist()
    assert policy.q_values(batch[0]).shape == (3,) and policy.q_values(batch).shape == (6, 3)
    assert policy.predict(batch[0].tolist()) == one  # plain lists
    assert policy.predict(torch.from_numpy(batch)).tolist() == greedy.tolist()  # tensors


@pytest.mark.parametrize("shape", [(3,), (2, 5), (1, 2, 4), ()])
def test_a_wrong_shape_says_what_was_expected(saved, shape):
    policy = load_policy(saved)
    with pytest.raises(ValueError) as info:
        policy.predict(np.zeros(shape, dtype=np.float32))
    message = str(info.value)
    assert message.startswith(f"obs: shape {shape}") and "(4,)" in message
    assert "(B, 4)" in message and "\n" not in message


def test_the_file_is_plain_safetensors_with_no_pickle(saved, net):
    data = saved.read_bytes()
    header = header_of(saved)
    meta = header.pop("__metadata__")
    assert meta["format"] == "dqn-policy" and meta["format_version"] == "1"
    assert json.loads(meta["obs_shape"]) == [4] and meta["env_id"] == "CartPole-v1"
    assert json.loads(meta["network"]) == NETWORK and json.loads(meta["eval_mean"]) == 487.5
    # every byte is the header or a tensor the header places: nothing else to run
    (size,) = struct.unpack("<Q", data[:8])
    spans = sorted(tuple(t["data_offsets"]) for t in header.values())
    assert {t["dtype"] for t in header.values()} == {"F32"}
    assert spans[0][0] == 0 and spans[-1][1] == len(data) - 8 - size
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert not zipfile.is_zipfile(saved)
    assert b"\x80\x02" not in data[: 8 + size] and not data.startswith(b"\x80")
    with pytest.raises(Exception):  # noqa: B017 - not a pickle stream at all
        list(pickletools.genops(data))
    # plain torch + safetensors read it without dqn's loader
    state = load_file(saved)
    assert set(state) == set(net.state_dict())
    with safe_open(saved, "pt") as f:
        assert f.metadata()["kind"] == "solved"
    rebuilt = build_q_network((4,), 3, NetworkConfig(hidden=(16, 8), dueling=True))
    rebuilt.load_state_dict(state)


def test_the_write_is_atomic_and_leaves_no_temp_file(tmp_path, net):
    path = tmp_path / "policy.safetensors"
    policy_file.save(path, net.state_dict(), INFO)
    policy_file.save(path, net.state_dict(), INFO)
    assert [p.name for p in tmp_path.iterdir()] == ["policy.safetensors"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"format": "other-tool"}, "not a dqn policy file (header format 'other-tool'"),
        ({"format": None}, "not a dqn policy file (header format None"),
        ({"format_version": "2"}, "format version 2, written by a newer dqn"),
        ({"format_version": "one"}, "header field format_version: bad value 'one'"),
        ({"obs_shape": "[4, -1]"}, "header field obs_shape: bad value '[4, -1]'"),
        ({"obs_shape": "{4"}, "header field obs_shape: not JSON"),
        ({"n_actions": None}, "header field 'n_actions' is missing"),
        ({"obs_dtype": "float64"}, "header field obs_dtype: bad value 'float64'"),
        ({"eval_mean": "NaN"}, "header field eval_mean: bad value 'NaN'"),
        ({"network": '{"hidden": [16, 8], "dropout": 0.1}'}, "header field network:"),
        ({"n_actions": "4"}, "the tensors do not match the network its header describes"),
        ({"obs_shape": "[5]"}, "the tensors do not match the network its header describes"),
    ],
)
def test_a_tampered_header_is_refused_naming_the_file(saved, changes, expected):
    rewrite_metadata(saved, **changes)
    with pytest.raises(PolicyFileError) as info:
        load_policy(saved)
    message = str(info.value)
    assert message.startswith(f"{saved}: ") and expected in message, message
    assert "\n" not in message


def test_a_file_that_is_not_safetensors_is_refused(tmp_path):
    for name, data in [("short", b"abc"), ("huge", struct.pack("<Q", 1 << 40) + b"{}")]:
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        with pytest.raises(PolicyFileError, match="not a safetensors file"):
            load_policy(path)
    path = tmp_path / "garbled.safetensors"
    path.write_bytes(struct.pack("<Q", 4) + b"{oops")
    with pytest.raises(PolicyFileError, match=r"garbled.safetensors: not a safetensors file"):
        load_policy(path)


def test_truncated_tensor_bytes_are_refused(saved):
    saved.write_bytes(saved.read_bytes()[:-16])
    with pytest.raises(PolicyFileError, match="unreadable tensors"):
        load_policy(saved)


def test_an_old_torchscript_policy_pt_is_refused_clearly(tmp_path, net):
    run = tmp_path / "old_run"
    run.mkdir()
    legacy = run / "policy.pt"
    torch.save(net.state_dict(), legacy)  # a zip holding a pickle, as TorchScript's is
    for where in (run, legacy):
        with pytest.raises(PolicyFileError) as info:
            load_policy(where)
        message = str(info.value)
        assert message.startswith(f"{legacy}: a TorchScript policy from an older dqn")
        assert f"python -m learner.policy_export {run}" in message and "train again" in message


def test_a_missing_policy_says_which_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="policy.safetensors not found"):
        load_policy(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.safetensors not found"):
        load_policy(tmp_path / "nope.safetensors")


# -- the learner's side -------------------------------------------------------------------
def _config() -> Config:
    env = EnvConfig(id="CartPole-v1", obs_shape=(4,), obs_dtype="float32", n_actions=3)
    return Config(env=env, network=NetworkConfig(hidden=(16, 8), dueling=True))


class FakePublisher:
    """The publisher's kept/pinned versions (learner.weight_server.WeightPublisher)."""

    def __init__(self):
        self.versions, self.version = {}, 0

    def publish(self, net, updates):
        self.version += 1
        self.versions[self.version] = weights_codec.to_proto(
            net.state_dict(), self.version, updates, 10 * updates
        )

    def kept(self, version):
        return self.versions.get(version)


def test_the_best_version_is_kept_when_its_report_arrives(tmp_path, net):
    from learner.policy_export import PolicyExporter
    from learner.records import EvalRecord

    publisher = FakePublisher()
    exporter = PolicyExporter(_config(), publisher, tmp_path)
    nets = []
    for k in range(3):
        torch.manual_seed(k)
        nets.append(build_q_network((4,), 3, NetworkConfig(hidden=(16, 8), dueling=True)))
        publisher.publish(nets[-1], updates=100 * (k + 1))

    def record(version, mean):
        return EvalRecord(version, 100 * version, 1000 * version, 1.0, mean, 0.0, 10)

    exporter.offer(record(1, 20.0))
    exporter.offer(record(2, 50.0))
    del publisher.versions[2]  # unpinned after its report: the copy must not depend on it
    exporter.offer(record(3, 30.0))  # worse: the best stays version 2
    exporter.save_best()
    best = load_policy(tmp_path / policy_file.BEST_FILE_NAME)
    assert (best.kind, best.version, best.updates, best.eval_mean) == ("best", 2, 200, 50.0)
    for key, tensor in nets[1].state_dict().items():
        assert torch.equal(best.model.state_dict()[key], tensor), key
    # A resumed run keeps the bar of the file it left: a worse version does not replace it.
    again = PolicyExporter(_config(), publisher, tmp_path, resumed=True)
    assert again.best_mean == 50.0
    again.offer(record(3, 40.0))
    assert again._best is None


def test_final_and_solving_exports_carry_their_version(tmp_path, net):
    from learner.policy_export import PolicyExporter
    from learner.records import EvalRecord

    publisher = FakePublisher()
    publisher.publish(net, updates=500)
    exporter = PolicyExporter(_config(), publisher, tmp_path)
    played = EvalRecord(1, 500, 5000, 2.0, 475.0, 3.0, 10)
    exporter.final(net, 500, 5000, played)
    final = load_policy(tmp_path)
    assert (final.kind, final.version, final.updates, final.eval_mean) == ("final", 1, 500, 475.0)
    exporter.final(net, 600, 6000, played)  # newer than any published version
    final = load_policy(tmp_path)
    assert (final.version, final.updates, final.eval_mean) == (None, 600, None)
    exporter.solving(played)
    solved = load_policy(tmp_path)
    assert (solved.kind, solved.version, solved.eval_mean) == ("solved", 1, 475.0)


def test_the_checkpoint_holds_plain_containers_and_loads_weights_only(tmp_path):
    from learner import checkpoint
    from learner.records import EvalRecord, Progress

    progress = Progress(updates=3, env_steps=30)
    progress.add_eval(EvalRecord(1, 3, 30, 0.5, np.float64(1.5), 0.0, 10))
    state = {
        "online": build_q_network((4,), 3, NetworkConfig()).state_dict(),
        "progress": progress.to_state(),
        "episodes": [(30, np.float32(1.0))],
        "config": _config().to_dict(),
        "legacy_evals": [(30, 3, 0.5, 1.5, 0.0)],  # the tuples of older checkpoints
    }
    path = tmp_path / "learner.pt"
    checkpoint.save(path, state)
    loaded = torch.load(path, weights_only=True)
    assert loaded["progress"]["evals"][0]["mean"] == 1.5
    assert type(loaded["episodes"][0][1]) is float
    restored = Progress.restore({**loaded["progress"], "evals": loaded["legacy_evals"]})
    assert restored.evals[0].mean == 1.5 and restored.evals[0].updates == 3
    assert checkpoint.load(path, torch.device("cpu"))["config"]["env"]["n_actions"] == 3
    with pytest.raises(TypeError, match=r"checkpoint\['bad'\]: object cannot go"):
        checkpoint.save(path, {"bad": object()})


def test_a_checkpoint_with_other_objects_is_not_unpickled(tmp_path):
    from learner import checkpoint

    path = tmp_path / "learner.pt"
    torch.save({"progress": zipfile.ZipInfo("x")}, path)  # any class: code to run on load
    with pytest.raises(
        ValueError, match=r"not unpickled \(Unsupported global: GLOBAL zipfile.ZipInfo\)"
    ):
        checkpoint.load(path, torch.device("cpu"))


def test_an_old_run_is_re_exported_from_its_checkpoint(tmp_path, net):
    from learner import checkpoint
    from learner.policy_export import export_checkpoint

    run = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="learner.pt not found: no checkpoint to export"):
        export_checkpoint(run)
    state = {
        "online": net.state_dict(),
        "progress": {"updates": 900, "env_steps": 9000, "evals": [(1, 2, 3.0, 4.0, 5.0)]},
        "config": _config().to_dict(),
    }
    checkpoint.save(run / "checkpoints" / "learner.pt", state)
    (run / "policy.pt").write_bytes(b"PK\x03\x04old")
    assert export_checkpoint(run) == run / policy_file.FILE_NAME
    policy = load_policy(run)
    assert (policy.kind, policy.updates, policy.env_steps) == ("checkpoint", 900, 9000)
    obs = np.ones(4, dtype=np.float32)
    with torch.no_grad():
        assert policy.predict(obs) == int(net(torch.from_numpy(obs)[None]).argmax())


def test_dqn_evaluate_on_an_old_run_is_one_line_and_exit_2(tmp_path, capsys):
    from deploy import cli

    (tmp_path / "policy.pt").write_bytes(b"PK\x03\x04 not ours")
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "policy.pt" in err and "learner.policy_export" in err
