"""Drawing predictions: masks, boxes and labels over an image; grids of pictures.

Unseen classes are told apart from seen ones: their boxes are drawn thicker,
their labels sit on a white tag and start with ``*``; seen classes get a thin
box and a dark tag.
"""
from __future__ import annotations

import colorsys
import hashlib
import io
from typing import Collection, Dict, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw


def png_bytes(picture: Image.Image) -> bytes:
  """A picture encoded as PNG (to write with ``storage.write_bytes``, local or in a bucket)."""
  out = io.BytesIO()
  picture.save(out, format='PNG')
  return out.getvalue()


def class_color(name: str) -> tuple:
  """A stable, saturated RGB colour per class name (same colour in every picture)."""
  h = int(hashlib.md5(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
  r, g, b = colorsys.hsv_to_rgb(h, 0.75, 1.0)
  return int(r * 255), int(g * 255), int(b * 255)


def mask_outline(mask: np.ndarray) -> np.ndarray:
  """[H, W] bool -> the mask's border pixels (in the mask, next to a pixel outside)."""
  m = np.pad(mask, 1)
  inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
  return mask & ~inner


# Pictures of large images are upscaled no further than this, and shrunk to it.
MAX_PICTURE_SIDE = 2048


def picture_scale(image_hw, wanted: int, max_side: int = MAX_PICTURE_SIDE) -> int:
  """The integer upscaling ``wanted`` for small images, less (at least 1) where
  it would take the picture beyond ``max_side`` pixels."""
  return max(1, min(int(wanted), max_side // max(1, max(image_hw))))


def draw_predictions(image: np.ndarray, prediction: Dict[str, object],
                     unseen: Collection[str] = (), alpha: float = 0.35,
                     scale: int = 1, max_side: int = 0) -> Image.Image:
  """Overlays one image's predictions.

  Args:
    image: [H, W, 3] uint8.
    prediction: ``Predictor.predict`` output: boxes [N, 4] xyxy, scores [N],
      class_names (N names), masks [N, H, W] bool (optional).
    unseen: names of classes not seen in training (drawn distinctly).
    alpha: mask fill opacity (the outline is opaque, so the object's own colour
      stays visible under the fill).
    scale: integer upscaling of the picture (small images stay legible).
    max_side: > 0: a picture larger than this is shrunk to it (keeping its ratio).
  Returns:
    PIL RGB image of size [scale*H, scale*W] (or shrunk to ``max_side``).
  """
  img = np.asarray(image, np.float32).copy()
  names = list(prediction['class_names'])
  masks = prediction.get('masks')
  # Paint low-score detections first so the confident ones end up on top.
  order = np.argsort(np.asarray(prediction['scores']))
  if masks is not None and len(names):
    for i in order:
      m = np.asarray(masks[i], bool)
      color = np.array(class_color(names[i]), np.float32)
      img[m] = (1 - alpha) * img[m] + alpha * color
      img[mask_outline(m)] = color
  pil = Image.fromarray(img.clip(0, 255).astype(np.uint8))
  if scale != 1:
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
  draw = ImageDraw.Draw(pil)
  boxes = np.asarray(prediction['boxes'], np.float32).reshape(-1, 4) * scale
  scores = np.asarray(prediction['scores'])
  for i in order:
    is_unseen = names[i] in unseen
    color = class_color(names[i])
    x1, y1, x2, y2 = (float(v) for v in boxes[i])
    draw.rectangle([x1, y1, x2, y2], outline=color, width=3 if is_unseen else 1)
    text = f"{'*' if is_unseen else ''}{names[i]} {scores[i]:.2f}"
    tb = draw.textbbox((x1, y1), text)
    ty = max(y1 - (tb[3] - tb[1]) - 2, 0)
    tb = draw.textbbox((x1, ty), text)
    draw.rectangle([tb[0] - 1, tb[1] - 1, tb[2] + 1, tb[3] + 1],
                   fill=(255, 255, 255) if is_unseen else (30, 30, 30))
    draw.text((x1, ty), text, fill=(0, 0, 0) if is_unseen else (255, 255, 255))
  if max_side and max(pil.size) > max_side:
    pil.thumbnail((max_side, max_side), Image.BILINEAR)
  return pil


def grid(pictures: Sequence[Image.Image], columns: int = 4, pad: int = 4,
         captions: Optional[Sequence[str]] = None) -> Image.Image:
  """Tiles pictures (all resized to the first one's size) into one image."""
  if not pictures:
    raise ValueError('grid needs at least one picture')
  w, h = pictures[0].size
  cap = 14 if captions else 0
  rows = (len(pictures) + columns - 1) // columns
  out = Image.new('RGB', (columns * (w + pad) + pad, rows * (h + pad + cap) + pad),
                  (255, 255, 255))
  draw = ImageDraw.Draw(out)
  for k, p in enumerate(pictures):
    r, c = divmod(k, columns)
    x, y = pad + c * (w + pad), pad + r * (h + pad + cap)
    out.paste(p.convert('RGB').resize((w, h)), (x, y + cap))
    if captions:
      draw.text((x, y), captions[k], fill=(0, 0, 0))
  return out


def calibration_curve(sweep: Dict[str, object], size: int = 480) -> Image.Image:
  """The seen-unseen curve of a GZSI calibration sweep (``runner.calibration_sweep``).

  Unseen mAP against seen mAP (both 0..1) for boxes and masks; the point at
  gamma = 0 is a filled circle, the oracle best harmonic mean a square. The
  legend gives each curve's AUSUC.
  """
  margin, top = 56, 40
  w = h = size
  img = Image.new('RGB', (w + margin + 20, h + margin + top), 'white')
  draw = ImageDraw.Draw(img)
  x0, y0 = margin, top + h                                      # the origin, in pixels
  to_px = lambda s, u: (x0 + s * w, y0 - u * h)
  draw.rectangle([x0, top, x0 + w, y0], outline=(0, 0, 0))
  for t in np.linspace(0, 1, 6):
    draw.line([to_px(t, 0), (to_px(t, 0)[0], y0 + 4)], fill=(0, 0, 0))
    draw.text((to_px(t, 0)[0] - 8, y0 + 8), f'{t:.1f}', fill=(0, 0, 0))
    draw.line([to_px(0, t), (x0 - 4, to_px(0, t)[1])], fill=(0, 0, 0))
    draw.text((x0 - 30, to_px(0, t)[1] - 6), f'{t:.1f}', fill=(0, 0, 0))
  draw.text((x0 + w // 2 - 40, y0 + 26), 'seen mAP@0.5', fill=(0, 0, 0))
  draw.text((4, top - 24), 'unseen mAP@0.5', fill=(0, 0, 0))
  legend = []
  for kind, color in (('box', (31, 119, 180)), ('mask', (214, 39, 40))):
    curve = sweep[kind]
    points = [to_px(s, u) for s, u in zip(curve['seen_map'], curve['unseen_map'])
              if s == s and u == u]
    if len(points) > 1:
      draw.line(points, fill=color, width=2)
    gammas = np.asarray(curve['gammas'])
    zero = int(np.argmin(np.abs(gammas)))
    px, py = to_px(curve['seen_map'][zero], curve['unseen_map'][zero])
    draw.ellipse([px - 5, py - 5, px + 5, py + 5], fill=color)
    best = int(np.argmin(np.abs(gammas - curve['best_gamma'])))
    px, py = to_px(curve['seen_map'][best], curve['unseen_map'][best])
    draw.rectangle([px - 5, py - 5, px + 5, py + 5], outline=color, width=2)
    legend.append((f"{kind}: AUSUC {100 * curve['ausuc_map']:.1f}, HM {100 * curve['hm_map'][zero]:.1f}"
                   f" at gamma 0, oracle best {100 * curve['best_hm_map']:.1f} "
                   f"at {curve['best_gamma']:.2f}", color))
  for i, (text, color) in enumerate(legend):
    draw.text((x0 + 8, top + 8 + 14 * i), text, fill=color)
  draw.text((x0 + 8, top + 8 + 14 * len(legend)), 'circle: gamma 0; square: oracle best HM',
            fill=(0, 0, 0))
  return img
