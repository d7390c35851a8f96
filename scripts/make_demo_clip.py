"""Make assets/demo.mp4: 5 s, 640x360, 25 fps H.264, no audio, deterministic.

A ball bounces around a small room (floor and both walls) and a block drops onto the floor and
is then struck by the ball, so the clip has clear, well-timed impacts for a Foley model to hear.
Every impact flashes an expanding ring. Plain numpy drawing and a fixed-step physics loop, so
the same script always writes the same frames; encoded single-threaded so the bytes repeat too.

    python scripts/make_demo_clip.py [-o assets/demo.mp4]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

W, H, FPS, SECONDS = 640, 360, 25, 5.0
FLOOR, LEFT, RIGHT = 312, 24, W - 24  # inner faces of floor and walls (px)
GRAVITY = 1400.0  # px/s^2
SUBSTEPS = 16


@dataclass
class Body:
    x: float
    y: float
    vx: float
    vy: float


@dataclass
class Impact:
    t: float
    x: float
    y: float
    strength: float  # normal speed in px/s


def simulate(n_frames: int) -> tuple[list[tuple[float, float]], list[float], list[Impact]]:
    """Ball centre and block top per frame, and every impact, from a fixed-step simulation."""
    r = 18.0
    ball = Body(80.0, 70.0, 330.0, 0.0)
    bw, bh, bx = 70.0, 46.0, 440.0  # block size and left edge
    block = Body(bx, -bh - 10.0, 0.0, 0.0)  # y is the block's top
    drop_at, block_landed = 1.6, False
    impacts: list[Impact] = []
    balls, blocks = [], []
    dt = 1 / (FPS * SUBSTEPS)
    last_hit = {"floor": -1.0, "wall": -1.0, "block": -1.0}

    def hit(kind: str, t: float, x: float, y: float, speed: float) -> None:
        if speed > 120 and t - last_hit[kind] > 0.08:
            impacts.append(Impact(t, x, y, speed))
            last_hit[kind] = t

    for i in range(n_frames * SUBSTEPS):
        t = i * dt
        if i % SUBSTEPS == 0:
            balls.append((ball.x, ball.y))
            blocks.append(block.y)
        ball.vy += GRAVITY * dt
        ball.x += ball.vx * dt
        ball.y += ball.vy * dt
        if ball.y + r > FLOOR:
            hit("floor", t, ball.x, FLOOR, ball.vy)
            ball.y, ball.vy = FLOOR - r, -ball.vy * 0.86
        if ball.x - r < LEFT or ball.x + r > RIGHT:
            side = LEFT if ball.x - r < LEFT else RIGHT
            hit("wall", t, side, ball.y, abs(ball.vx))
            ball.x = LEFT + r if side == LEFT else RIGHT - r
            ball.vx = -ball.vx * 0.92
        if t >= drop_at and not block_landed:
            block.vy += GRAVITY * dt
            block.y += block.vy * dt
            if block.y + bh > FLOOR:
                hit("block", t, bx + bw / 2, FLOOR, block.vy)
                block.y, block_landed = FLOOR - bh, True
        # ball against the block (circle vs rectangle): push out along the normal and reflect
        cx = min(max(ball.x, bx), bx + bw)
        cy = min(max(ball.y, block.y), block.y + bh)
        dx, dy = ball.x - cx, ball.y - cy
        dist = (dx * dx + dy * dy) ** 0.5
        if 0 < dist < r:
            nx, ny = dx / dist, dy / dist
            vn = ball.vx * nx + ball.vy * ny
            if vn < 0:
                hit("block", t, cx, cy, -vn)
                ball.vx -= 1.85 * vn * nx
                ball.vy -= 1.85 * vn * ny
            ball.x, ball.y = cx + nx * r, cy + ny * r
    return balls, blocks, impacts


def background() -> np.ndarray:
    img = np.zeros((H, W, 3), np.float32)
    rows = np.linspace(0, 1, FLOOR)[:, None]
    img[:FLOOR] = (np.array([0.80, 0.77, 0.70]) * (0.85 + 0.15 * rows))[:, None, :]  # back wall
    img[FLOOR:] = [0.45, 0.30, 0.18]  # wooden floor
    img[FLOOR:, ::80] = [0.35, 0.22, 0.12]  # floor boards
    img[FLOOR : FLOOR + 3] = [0.25, 0.16, 0.09]
    img[:, :LEFT] = [0.55, 0.53, 0.50]
    img[:, RIGHT:] = [0.55, 0.53, 0.50]
    return img


def render(t: float, ball: tuple[float, float], block_top: float, impacts: list[Impact],
           base: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    img = base.copy()
    bx, by = ball
    r = 18.0
    # soft shadow on the floor, smaller and fainter the higher the ball is
    height = max(0.0, FLOOR - (by + r))
    sw = r * (1.2 - min(height, 250) / 400)
    shadow = np.clip(1 - ((xx - bx) / sw) ** 2 - ((yy - FLOOR - 2) / 4) ** 2, 0, 1)
    img *= (1 - 0.45 * shadow * (1 - min(height, 250) / 300))[..., None]
    # block: flat blue with a darker outline
    top = int(round(block_top))
    if top + 46 > 0:
        y0, y1 = max(0, top), min(H, top + 46)
        img[y0:y1, 440:510] = [0.16, 0.36, 0.72]
        img[y0 : min(y1, y0 + 3), 440:510] = [0.30, 0.50, 0.85]
        img[y0:y1, 440:443] = img[y0:y1, 507:510] = [0.10, 0.22, 0.45]
    # ball: shaded disc with an anti-aliased edge
    d = np.sqrt((xx - bx) ** 2 + (yy - by) ** 2)
    cover = np.clip(r + 0.5 - d, 0, 1)[..., None]
    light = np.clip(1 - np.sqrt((xx - bx + 6) ** 2 + (yy - by + 6) ** 2) / (1.6 * r), 0, 1)[..., None]
    ball_rgb = np.array([0.85, 0.20, 0.12]) * (0.55 + 0.45 * light) + 0.35 * light**4
    img = img * (1 - cover) + ball_rgb * cover
    # impact rings: expand and fade over 0.25 s
    for hit in impacts:
        age = t - hit.t
        if 0 <= age < 0.25:
            radius = 10 + 180 * age
            ring = np.clip(2.5 - np.abs(np.sqrt((xx - hit.x) ** 2 + (yy - hit.y) ** 2) - radius) / 1.5, 0, 1)
            alpha = ((1 - age / 0.25) * min(1.0, hit.strength / 350) * ring)[..., None]
            img = img * (1 - alpha) + alpha * np.array([1.0, 0.85, 0.25])
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_demo(path: Path) -> list[Impact]:
    n = int(SECONDS * FPS)
    balls, blocks, impacts = simulate(n)
    base = background()
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "20", "preset": "slow", "threads": "1"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(render(i / FPS, balls[i], blocks[i], impacts, base, yy, xx),
                                               format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return impacts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path,
                        default=Path(__file__).resolve().parent.parent / "assets" / "demo.mp4")
    args = parser.parse_args()
    impacts = make_demo(args.output)
    size = args.output.stat().st_size
    print(f"wrote {args.output} ({size / 1e6:.2f} MB), impacts at: "
          + ", ".join(f"{h.t:.3f}s" for h in impacts))


if __name__ == "__main__":
    main()
