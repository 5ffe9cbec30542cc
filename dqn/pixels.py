"""``PixelCartPole-v1``: CartPole-v1 seen through rendered frames, as uint8 images.

Each step renders CartPole's 600x400 ``rgb_array`` frame (pygame, headless through
SDL's dummy video driver), then:

0. reads it from CartPole's pygame surface in row order (``pygame.image.tobytes``):
   CartPole's own ``rgb_array`` return copies the surface column by column, which
   took over half of the render time here; the pixels are the same (a unit test
   compares them with ``render_mode="rgb_array"``);

1. crops a strip of rows around the cart and pole (rows 160..320: the pole's tip
   at its +-12 degree limit down to the cart's bottom edge) and a window of
   ``CROP_WIDTH`` columns centred on the cart, shifted inwards at the screen edges
   (as the PyTorch DQN tutorial does: near an edge the cart leaves the centre of
   the view, which is how the network sees the cart's position);
2. turns it to gray and inverts it (background 0, cart and pole bright);
3. downscales it 4x by averaging 4x4 blocks (anti-aliased: sub-pixel motion still
   changes the pixel values) to ``FRAME_SHAPE`` = 40 x 80.

The observation is the stack of the last ``FRAMES`` frames, ``[FRAMES, 40, 80]``
uint8, oldest first (after a reset the first frame is repeated). Two frames carry
both positions and velocities. Rewards, ``terminated`` and ``truncated`` are
CartPole-v1's, unchanged. ``reward_threshold`` is 195 (the classic goal of the
pixel version), the episode limit CartPole-v1's 500 steps.
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

ENV_ID = "PixelCartPole-v1"
FRAMES = 2
ROWS = (160, 320)  # rows of the 400-row screen kept
CROP_WIDTH = 320  # columns kept, centred on the cart where the screen allows
SCALE = 4  # downscale factor (block average)
FRAME_SHAPE = ((ROWS[1] - ROWS[0]) // SCALE, CROP_WIDTH // SCALE)
# Any mode but "human" makes CartPole draw its rgb_array frame on an off-screen surface;
# one other than "rgb_array" skips the slow column-major copy (we read the surface).
_DRAW_ONLY = "rgb_array_surface"
_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma


def crop_columns(cart_x: float, screen_width: int = 600, world_width: float = 4.8) -> int:
    """First column of the ``CROP_WIDTH`` window: centred on the cart, kept on screen."""
    centre = cart_x * screen_width / world_width + screen_width / 2
    left = int(round(centre)) - CROP_WIDTH // 2
    return min(max(left, 0), screen_width - CROP_WIDTH)


def preprocess(rgb: np.ndarray, cart_x: float) -> np.ndarray:
    """A ``[400, 600, 3]`` uint8 CartPole frame -> ``FRAME_SHAPE`` uint8 (see module doc)."""
    left = crop_columns(cart_x, rgb.shape[1])
    strip = rgb[ROWS[0] : ROWS[1], left : left + CROP_WIDTH].astype(np.float32)
    gray = 255.0 - strip @ _GRAY  # [160, 320], background 0
    h, w = FRAME_SHAPE
    small = gray.reshape(h, SCALE, w, SCALE).mean(axis=(1, 3))
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def render_rgb(cartpole: CartPoleEnv) -> np.ndarray:
    """CartPole's rgb_array frame ``[400, 600, 3]`` uint8, read row-major from its surface."""
    import pygame  # imported by CartPole's render too; only pixel envs need it

    cartpole.render()
    surface = cartpole.screen
    if not isinstance(surface, pygame.Surface):
        raise RuntimeError("CartPole drew no pygame surface (gymnasium changed its renderer?)")
    w, h = surface.get_size()
    return np.frombuffer(pygame.image.tobytes(surface, "RGB"), np.uint8).reshape(h, w, 3)


class PixelCartPole(gym.Env):
    """CartPole-v1 whose observation is a stack of preprocessed rendered frames."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, frames: int = FRAMES, render_mode: str | None = None):
        if frames < 1:
            raise ValueError(f"frames: must be >= 1, got {frames}")
        # pygame reads the driver when its display initialises (first render): no window,
        # no X server needed. setdefault keeps a driver the user chose.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        self.cartpole = CartPoleEnv(render_mode=_DRAW_ONLY)
        self.render_mode = render_mode
        self.frames = frames
        self.action_space = self.cartpole.action_space
        self.observation_space = spaces.Box(0, 255, shape=(frames, *FRAME_SHAPE), dtype=np.uint8)
        self._stack = np.zeros((frames, *FRAME_SHAPE), dtype=np.uint8)
        self._rgb: np.ndarray | None = None

    def frame(self) -> np.ndarray:
        """Render the current state and preprocess it: ``FRAME_SHAPE`` uint8."""
        self._rgb = render_rgb(self.cartpole)
        return preprocess(self._rgb, float(self.cartpole.state[0]))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        _, info = self.cartpole.reset(seed=seed, options=options)
        self._stack[:] = self.frame()
        return self._stack.copy(), info

    def step(self, action):
        _, reward, terminated, truncated, info = self.cartpole.step(action)
        self._stack[:-1] = self._stack[1:]
        self._stack[-1] = self.frame()
        return self._stack.copy(), reward, terminated, truncated, info

    def render(self):
        """The last full rendered frame, ``[400, 600, 3]`` uint8."""
        return self._rgb

    def close(self) -> None:
        self.cartpole.close()


def register_pixels() -> None:
    if ENV_ID not in gym.registry:
        gym.register(
            ENV_ID, entry_point=PixelCartPole, max_episode_steps=500, reward_threshold=195.0
        )
