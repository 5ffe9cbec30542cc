"""``dqn evaluate --video``: real CartPole rendering (pygame, headless), real encoders,
the written files decoded again."""

from __future__ import annotations

import json

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image, ImageSequence

from deploy.cli import main
from deploy.video import VideoError, record_video
from dqn.config import Config, EnvConfig, NetworkConfig, save
from dqn.networks import build_q_network
from learner.policy_export import export_policy

pytestmark = pytest.mark.component

CARTPOLE_FRAME = (600, 400)  # width, height of CartPole-v1's rgb_array


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory with config.json and an (untrained) CartPole policy.safetensors."""
    run = tmp_path_factory.mktemp("run")
    save(Config(), run / "config.json")
    net = build_q_network((4,), 2, NetworkConfig(hidden=(16,)))
    env = EnvConfig(obs_shape=(4,), obs_dtype="float32", n_actions=2)
    export_policy(net, run / "policy.safetensors", Config(env=env, network=NetworkConfig((16,))))
    return run


def test_gif_has_one_frame_per_step_plus_reset(run_dir, tmp_path):
    out = tmp_path / "agent.gif"
    result = record_video(run_dir, out, episodes=2, fps=25)
    assert result["episodes"] == 2 and len(result["lengths"]) == 2
    assert result["frames"] == sum(result["lengths"]) + 2 == result["steps"] + 2
    assert (result["width"], result["height"]) == CARTPOLE_FRAME
    with Image.open(out) as gif:
        assert gif.format == "GIF"
        assert gif.size == CARTPOLE_FRAME
        assert gif.n_frames == result["frames"]
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
    assert durations == [40] * result["frames"]  # 25 fps
    assert not list(tmp_path.glob(".*.tmp*"))  # no temporary file left


def test_mp4_decodes_to_the_frames_rendered(run_dir, tmp_path):
    out = tmp_path / "agent.mp4"
    result = record_video(run_dir, out, episodes=10, max_frames=40, fps=20)
    assert result["frames"] == 40 == result["steps"] + result["episodes"]  # capped
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    assert tuple(meta["size"]) == CARTPOLE_FRAME
    assert meta["fps"] == pytest.approx(20)
    frames = [np.frombuffer(f, np.uint8).reshape(400, 600, 3) for f in reader]
    assert len(frames) == 40
    assert imageio_ffmpeg.count_frames_and_secs(str(out))[0] == 40
    # the picture is CartPole's: mostly white background, a dark cart somewhere
    assert (frames[0] > 200).all(axis=2).mean() > 0.8
    assert (frames[0] < 80).all(axis=2).sum() > 100


def test_the_returns_are_the_greedy_policy_s(run_dir, tmp_path):
    """The video plays the same greedy episodes as `dqn evaluate` with the same seed."""
    from deploy.evaluate import evaluate_run

    result = record_video(run_dir, tmp_path / "a.gif", episodes=1, max_frames=10_000)
    evaluation = evaluate_run(str(run_dir), episodes=1, seed=12345)
    assert result["returns"] == evaluation["returns"]


@pytest.mark.parametrize(
    "name, message",
    [
        ("agent.avi", "unknown format '.avi'"),
        ("agent", "unknown format '(no suffix)'"),
        ("missing/agent.gif", "does not exist"),
    ],
)
def test_bad_video_paths_are_refused_before_playing(run_dir, tmp_path, name, message):
    with pytest.raises(VideoError, match=message.replace("(", r"\(").replace(")", r"\)")):
        record_video(run_dir, tmp_path / name)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_missing_run_dir_and_unrenderable_env(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory"):
        record_video(tmp_path / "nope", tmp_path / "a.gif")
    with pytest.raises(VideoError, match="Probe1-v0 does not render"):
        record_video(run_dir, tmp_path / "a.gif", env_id="Probe1-v0")
    assert not list(tmp_path.iterdir())  # no partial file left


def test_cli_writes_video_and_names_bad_options(run_dir, tmp_path, capsys):
    out = tmp_path / "agent.gif"
    code = main(
        ["evaluate", str(run_dir), "--episodes", "2", "--video", str(out),
         "--video-episodes", "5", "--video-max-frames", "30", "--json"]
    )  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    result = json.loads(printed.out)
    assert result["episodes"] == 2 and result["video"]["path"] == str(out)
    assert result["video"]["frames"] == 30
    with Image.open(out) as gif:
        assert gif.n_frames == 30

    def refused(*args: str) -> str:
        assert main(["evaluate", *args]) == 2
        return capsys.readouterr().err

    assert "--video: unknown format '.webm'" in refused(
        str(run_dir), "--video", str(tmp_path / "a.webm")
    )
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    assert "is not a folder" in refused(str(run_dir), "--video", str(not_a_folder / "a.gif"))
    assert "not found" in refused(str(tmp_path / "nope"), "--video", str(tmp_path / "b.gif"))
    assert "--video-episodes: must be >= 1" in refused(
        str(run_dir), "--video", str(tmp_path / "c.gif"), "--video-episodes", "0"
    )
