"""``dqn evaluate RUN_DIR --video FILE``: a GIF or MP4 of the greedy policy.

Frames come from the env's ``render_mode="rgb_array"`` (headless: pygame draws into a
surface, no window), one after each reset and one after every step, each captioned
with the episode, step and return so far. ``.gif`` is written with Pillow, ``.mp4``
(H.264, yuv420p) with the ffmpeg binary that ships in the imageio-ffmpeg wheel. The file
appears only when complete (temp file in the same folder + rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FORMATS = (".gif", ".mp4")


class VideoError(ValueError):
    """A bad video request; the message names the option or file at fault."""


def check_video_path(path: str | os.PathLike) -> Path:
    """The output path, after checking its suffix and that its folder is writable."""
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise VideoError(
            f"--video: unknown format {out.suffix or '(no suffix)'!r} for {out}; "
            f"use a file ending in {' or '.join(FORMATS)}"
        )
    folder = out.parent
    if not folder.exists():
        raise VideoError(f"--video: folder {folder} does not exist")
    if not folder.is_dir():
        raise VideoError(f"--video: {folder} is not a folder")
    if out.is_dir():
        raise VideoError(f"--video: {out} is a folder")
    if not os.access(folder, os.W_OK):
        raise VideoError(f"--video: folder {folder} is not writable")
    return out


def _caption(frame: np.ndarray, text: str):
    """The frame as a PIL image with ``text`` on a white box in the top-left corner."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((6, 4), text)
    draw.rectangle((left - 3, top - 2, right + 3, bottom + 2), fill=(255, 255, 255))
    draw.text((6, 4), text, fill=(0, 0, 0))
    return image


def _render(env, env_id: str) -> np.ndarray:
    try:
        frame = env.render()
    except NotImplementedError:
        frame = None
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        raise VideoError(f"--video: env {env_id} does not render RGB frames (rgb_array)")
    return frame


class _GifWriter:
    """Frames quantized to the first frame's palette as they come (a third of RGB's
    memory), saved in one go: GIF has no streaming writer in Pillow."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self.frames = []

    def add(self, image) -> None:
        from PIL import Image

        if not self.frames:
            self.frames.append(image.quantize(colors=64, dither=Image.Dither.NONE))
        else:
            self.frames.append(image.quantize(palette=self.frames[0], dither=Image.Dither.NONE))

    def close(self) -> None:
        first, *rest = self.frames
        first.save(
            self.path,
            format="GIF",
            save_all=True,
            append_images=rest,
            duration=round(1000 / self.fps),
            loop=0,
        )


class _Mp4Writer:
    """Frames streamed to ffmpeg (libx264, yuv420p) as they come."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self._gen = None

    def add(self, image) -> None:
        if self._gen is None:
            import imageio_ffmpeg

            width, height = image.size
            if width % 2 or height % 2:
                raise VideoError(f"--video: MP4 needs even frame sizes, got {width}x{height}")
            self._gen = imageio_ffmpeg.write_frames(
                str(self.path),
                (width, height),
                fps=self.fps,
                codec="libx264",
                pix_fmt_out="yuv420p",
                macro_block_size=1,
                output_params=["-f", "mp4"],
            )
            self._gen.send(None)
        self._gen.send(np.asarray(image, dtype=np.uint8).tobytes())

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()


class _Recorder:
    """``on_step`` of the greedy-play loop: a captioned frame after the reset and after
    every step of ``episode`` (``t`` steps so far), until ``max_frames`` in all."""

    def __init__(self, env, env_id: str, writer, max_frames: int):
        self.env, self.env_id, self.writer, self.max_frames = env, env_id, writer, max_frames
        self.frames, self.size = 0, None
        self.episode, self.t = 1, -1

    def __call__(self, returns: np.ndarray, done: np.ndarray) -> bool:
        self.t += 1
        frame = _render(self.env, self.env_id)
        self.size = (frame.shape[1], frame.shape[0])
        text = f"{self.env_id}  episode {self.episode}  step {self.t}  return {returns[0]:g}"
        self.writer.add(_caption(frame, text))
        self.frames += 1
        return self.frames < self.max_frames


def record_video(
    run_dir: str | os.PathLike,
    path: str | os.PathLike,
    *,
    episodes: int = 1,
    max_frames: int = 1000,
    fps: float = 30.0,
    seed: int = 12345,
    env_id: str | None = None,
) -> dict:
    """Play ``episodes`` greedy episodes of RUN_DIR/policy.safetensors and write them to ``path``
    (stopping early at ``max_frames`` frames, possibly mid-episode). Returns ``{path,
    format, frames, steps, episodes, returns, lengths, width, height, fps}``, where
    ``episodes`` counts those started and ``frames`` = ``steps`` + one reset frame each."""
    import gymnasium as gym

    from actors.evaluator import play_greedy
    from deploy.evaluate import run_env
    from dqn.envs import make_env
    from dqn.files import atomic_write_with
    from dqn.policy_file import load_policy, policy_path

    if episodes < 1:
        raise VideoError(f"--video-episodes: must be >= 1, got {episodes}")
    if max_frames < 1:
        raise VideoError(f"--video-max-frames: must be >= 1, got {max_frames}")
    if not fps > 0:
        raise VideoError(f"--video-fps: must be > 0, got {fps}")
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {run} not found")
    policy = load_policy(policy_path(run))
    out = check_video_path(path)
    env_config = run_env(run, env_id)  # the run's id, kwargs and wrappers
    env_id = env_config.id
    # Headless: classic-control envs draw on pygame surfaces, no display or sound needed.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    # ffmpeg starts without a preexec_fn, so subprocess can vfork/exec it: a full fork()
    # of a process with live gRPC threads (any grpc.aio user has a poller thread) can
    # break the child's pipe (imageio-ffmpeg's issue 58); Ctrl-C then reaches ffmpeg too.
    os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")
    plain = make_env(env_config)
    modes = plain.metadata.get("render_modes", [])
    plain.close()
    if "rgb_array" not in modes:
        raise VideoError(f"--video: env {env_id} does not render RGB frames (modes: {modes})")
    env = gym.vector.SyncVectorEnv(  # one env, for the one greedy-play loop
        [lambda: make_env(env_config, render_mode="rgb_array")],
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )
    suffix = out.suffix.lower()
    returns: list[float] = []
    lengths: list[int] = []
    recorder = None

    def record(tmp: str) -> None:  # into a temporary file that appears only when complete
        nonlocal recorder
        writer = _GifWriter(Path(tmp), fps) if suffix == ".gif" else _Mp4Writer(Path(tmp), fps)
        recorder = _Recorder(env.envs[0], env_id, writer, max_frames)
        for episode in range(episodes):
            if recorder.frames >= max_frames:
                break
            recorder.episode, recorder.t = episode + 1, -1
            returns.append(float(play_greedy(env, policy.q_values, seed + episode, recorder)[0]))
            lengths.append(recorder.t)
        writer.close()

    try:
        atomic_write_with(out, record, suffix=suffix)
    finally:
        env.close()
    return {
        "path": str(out),
        "format": suffix[1:],
        "frames": recorder.frames,
        "steps": sum(lengths),
        "episodes": len(returns),
        "returns": returns,
        "lengths": lengths,
        "width": recorder.size[0],
        "height": recorder.size[1],
        "fps": fps,
    }
