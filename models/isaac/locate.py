"""Find every item in a whole screenshot or photo: a box and a name for each.

Chosen after measuring three ways on held-out synthetic scenes (bench/isaac.py, docs/isaac.md):

* template matching of all 907 icons by normalised cross-correlation at integer scales is exact on
  clean screenshots but costs 907 correlations per scale (tens of seconds a picture on a CPU) and
  breaks on photos (perspective, non-integer scale, colour cast);
* a separate detector would need a second training run on scenes;
* so the recognizer itself is used as a dense sliding window, and a template is matched only for
  the one class it proposes. That is what this module does:

1. **Propose.** The network is fully convolutional up to its pooling, so one pass over a resized
   picture gives every 64×64 window's class at a 16 px stride; a few shifted passes make it 8 px.
   Pictures are resized so that icons of ``icon_sizes`` pixels appear at the size the network was
   trained on (a ladder of scales 1.3 apart). A window is a proposal when its best class is an
   item with at least ``propose_threshold``; overlapping proposals keep the strongest.
2. **Refine.** The proposed class's icon is matched (masked, colour NCC) around the window at a
   few sizes, which puts the box on the item's drawn pixels, not on the window.
3. **Confirm.** A crop around the refined box is classified again, as ``identify`` would; "no
   item" drops it, and so does a confidence under ``agree_threshold`` when it names the proposed
   class (two views agree) or under ``accept_threshold`` when it names another. Boxes overlapping
   a stronger one, or lying inside a bigger one of the same class, go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from models.isaac.icons import ICON_SIZE, ItemClass
from models.isaac.identify import Recognizer, fit_square, to_rgb

NETWORK_ICON = 52.0  # px an icon cell covers in a 64 px training crop (crop side / 1.0-1.5, middle)
STRIDE = 16  # the network's total downsampling
WINDOW_CELLS = 4  # a 64 px window is 4×4 cells of the last feature map


@dataclass(frozen=True)
class LocateOptions:
    icon_sizes: tuple[float, float] = (24.0, 96.0)  # the smallest and largest icon cell, picture px
    scale_step: float = 1.3
    phases: int = 2  # shifted passes per axis: the proposal grid is 16/phases px
    propose_threshold: float = 0.25
    accept_threshold: float = 0.5
    max_side: int = 1600  # bigger pictures are shrunk first (and boxes scaled back)
    overlap: float = 0.3  # IoU above which the weaker of two boxes is dropped
    refine_sizes: tuple[float, float, int] = (0.4, 1.1, 9)  # icon cell sizes tried, of the window side
    size_penalty: float = 0.15  # NCC lost per unit of log size away from the window's scale
    agree_threshold: float = 0.2  # least confidence kept when the confirming crop names the proposed class


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in picture pixels: the item's drawn pixels
    item: ItemClass
    confidence: float
    class_index: int

    def as_dict(self) -> dict[str, Any]:
        return {"box": [round(v, 1) for v in self.box], **self.item.as_dict(), "confidence": round(self.confidence, 4)}


def _pairwise_overlap(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For boxes ``a`` (n, 4) and ``b`` (m, 4) as x0, y0, x1, y1: the (n, m) intersection areas,
    and the areas of ``a`` as a column and of ``b`` as a row, ready to broadcast against them."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter, area_a[:, None], area_b[None, :]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (n, 4) with every box in ``b`` (m, 4)."""
    inter, area_a, area_b = _pairwise_overlap(a, b)
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def box_containment(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area, for every pair: 1 when one box lies inside the other."""
    inter, area_a, area_b = _pairwise_overlap(a, b)
    return inter / np.maximum(np.minimum(area_a, area_b), 1e-9)


def suppress(boxes: np.ndarray, scores: np.ndarray, overlap: float, contained: float = 1.01) -> list[int]:
    """Greedy non-maximum suppression: indices kept, strongest first.

    A box goes when its IoU with a kept one is over ``overlap``, or when that much of it (or of the
    kept one) is shared, by ``contained``: items do not overlap, so a box inside another is a part.
    """
    order = list(np.argsort(-scores))
    kept: list[int] = []
    while order:
        best = order.pop(0)
        kept.append(best)
        if order:
            ious = box_iou(boxes[best:best + 1], boxes[order])[0]
            shares = box_containment(boxes[best:best + 1], boxes[order])[0]
            order = [index for index, iou, share in zip(order, ious, shares) if iou <= overlap and share <= contained]
    return kept


def visible_boxes(icons: np.ndarray) -> np.ndarray:
    """Each icon's drawn-pixel box in sheet pixels (n, 4)."""
    boxes = np.zeros((len(icons), 4), dtype=np.float32)
    for index, icon in enumerate(icons):
        ys, xs = np.nonzero(icon[..., 3])
        boxes[index] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else (0, 0, ICON_SIZE, ICON_SIZE)
    return boxes


class Locator:
    """Dense proposals from the recognizer, refined by the proposed icon's template (see module doc)."""

    def __init__(self, recognizer: Recognizer, icons: np.ndarray, options: LocateOptions = LocateOptions()) -> None:
        if len(icons) != len(recognizer.classes):
            raise ValueError(f"{len(icons)} icons for a recognizer of {len(recognizer.classes)} classes")
        self.recognizer, self.icons, self.options = recognizer, icons, options
        self.visible = visible_boxes(icons)

    # ---- 1. proposals
    @torch.no_grad()
    def dense_windows(self, picture: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Window boxes (n, 4) in picture pixels and their probabilities (n, classes+1) at one scale."""
        model, device = self.recognizer.model, self.recognizer.device
        height, width = picture.shape[:2]
        size = (max(16, round(width * scale)), max(16, round(height * scale)))
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
        resized = np.asarray(Image.fromarray(picture).resize(size, resample), dtype=np.uint8)
        pad = 32  # lets windows centre on items at the picture's edge
        padded = np.pad(resized, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        step = STRIDE // self.options.phases
        boxes, probabilities = [], []
        for dy in range(0, STRIDE, step):
            for dx in range(0, STRIDE, step):
                shifted = torch.from_numpy(np.ascontiguousarray(padded[dy:, dx:])).permute(2, 0, 1)[None]
                features = model.features(shifted.to(device).contiguous(memory_format=torch.channels_last)).float()
                if features.shape[2] < WINDOW_CELLS or features.shape[3] < WINDOW_CELLS:
                    continue
                pooled = F.avg_pool2d(features, WINDOW_CELLS, stride=1)[0]  # (C, rows, cols)
                rows, cols = pooled.shape[1:]
                logits = model.head(pooled.permute(1, 2, 0).reshape(rows * cols, -1))
                probabilities.append(torch.softmax(logits, dim=1).cpu().numpy())
                ys, xs = np.mgrid[0:rows, 0:cols]
                x0 = (dx + xs.ravel() * STRIDE - pad) / scale
                y0 = (dy + ys.ravel() * STRIDE - pad) / scale
                side = WINDOW_CELLS * STRIDE / scale
                boxes.append(np.stack([x0, y0, x0 + side, y0 + side], axis=1))
        if not boxes:
            return np.zeros((0, 4)), np.zeros((0, len(self.recognizer.classes) + 1))
        return np.concatenate(boxes), np.concatenate(probabilities)

    def scales(self, picture: np.ndarray) -> list[float]:
        low, high = self.options.icon_sizes
        sizes, size = [], low
        while size <= high * 1.0001:
            sizes.append(size)
            size *= self.options.scale_step
        smallest_side = min(picture.shape[:2])
        return [NETWORK_ICON / s for s in sizes if s <= smallest_side]

    def propose(self, picture: np.ndarray) -> list[tuple[np.ndarray, int, float]]:
        """(window box, class, probability) of the strongest non-overlapping item windows."""
        none = self.recognizer.none_index
        all_boxes, all_classes, all_scores = [], [], []
        for scale in self.scales(picture):
            boxes, probabilities = self.dense_windows(picture, scale)
            items = probabilities[:, :none]
            best = items.argmax(axis=1)
            score = items[np.arange(len(items)), best]
            keep = (score >= self.options.propose_threshold) & (probabilities[:, none] < score)
            all_boxes.append(boxes[keep])
            all_classes.append(best[keep])
            all_scores.append(score[keep])
        if not all_boxes or not sum(len(b) for b in all_boxes):
            return []
        boxes, classes, scores = np.concatenate(all_boxes), np.concatenate(all_classes), np.concatenate(all_scores)
        kept = suppress(boxes, scores, 0.2)
        return [(boxes[i], int(classes[i]), float(scores[i])) for i in kept]

    # ---- 2. refine
    def refine(self, picture: np.ndarray, window: np.ndarray, label: int) -> tuple[float, float, float, float]:
        """The icon cell (x, y, side, ncc) where ``label``'s icon best matches around ``window``."""
        side = window[2] - window[0]
        cx, cy = (window[0] + window[2]) / 2, (window[1] + window[3]) / 2
        search = 0.35 * side
        # An item at the picture's edge has its cell (transparent margin included) partly outside:
        # the picture is edge-padded so the template still fits there.
        pad = int(np.ceil(0.6 * side + search))
        padded = np.pad(picture, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        height, width = padded.shape[:2]
        best = (cx - side * 0.4, cy - side * 0.4, side * 0.8, -2.0)
        for cell in side * np.geomspace(*self.options.refine_sizes):
            cell_px = max(8, round(cell))
            x0, y0 = int(max(0, cx + pad - cell_px / 2 - search)), int(max(0, cy + pad - cell_px / 2 - search))
            x1, y1 = int(min(width, cx + pad + cell_px / 2 + search)), int(min(height, cy + pad + cell_px / 2 + search))
            if x1 - x0 < cell_px or y1 - y0 < cell_px:
                continue
            score, (dx, dy) = masked_ncc(padded[y0:y1, x0:x1], self.icons[label], cell_px)
            # A small template can match a part of a bigger item, or texture: sizes far from what the
            # window's scale implies (cell ≈ window / 1.25, the training crops' margin) pay for it.
            score -= self.options.size_penalty * abs(np.log(cell_px * 1.25 / side))
            if score > best[3]:
                best = (x0 + dx - pad, y0 + dy - pad, float(cell_px), score)
        return best

    def drawn_box(self, label: int, cell: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x, y, side, _ = cell
        unit = side / ICON_SIZE
        vx0, vy0, vx1, vy1 = self.visible[label]
        return (x + vx0 * unit, y + vy0 * unit, x + vx1 * unit, y + vy1 * unit)

    # ---- the whole thing
    def locate(self, image: Image.Image | np.ndarray) -> list[Detection]:
        picture = np.asarray(to_rgb(image) if isinstance(image, Image.Image) else image, dtype=np.uint8)
        shrink = min(1.0, self.options.max_side / max(picture.shape[:2]))
        if shrink < 1.0:
            picture = np.asarray(Image.fromarray(picture).resize(
                (round(picture.shape[1] * shrink), round(picture.shape[0] * shrink)), Image.Resampling.BOX))
        proposals = self.propose(picture)
        if not proposals:
            return []
        cells = [self.refine(picture, window, label) for window, label, _ in proposals]
        probabilities = self.recognizer.probabilities([self._crop(picture, cell) for cell in cells])
        found: list[tuple[tuple[float, float, float, float], int, float]] = []
        for (window, proposed, _), cell, row in zip(proposals, cells, probabilities):
            label = int(row.argmax())
            needed = self.options.agree_threshold if label == proposed else self.options.accept_threshold
            if label == self.recognizer.none_index or row[label] < needed:
                continue
            if label != proposed:
                cell = self.refine(picture, window, label)
            found.append((self.drawn_box(label, cell), label, float(row[label])))
        if not found:
            return []
        found = _drop_parts(found)
        boxes = np.array([box for box, _, _ in found], dtype=np.float64)
        kept = suppress(boxes, np.array([score for _, _, score in found]), self.options.overlap, contained=0.6)
        detections = []
        for index in kept:
            box, label, score = found[index]
            detections.append(Detection(tuple(v / shrink for v in box), self.recognizer.classes[label], score, label))
        return detections

    def _crop(self, picture: np.ndarray, cell: tuple[float, float, float, float]) -> np.ndarray:
        """A square around the matched cell, 1.2× its side (the middle of the training margins), at input size."""
        x, y, side, _ = cell
        half = side * 0.6
        cx, cy = x + side / 2, y + side / 2
        height, width = picture.shape[:2]
        x0, y0, x1, y1 = round(cx - half), round(cy - half), round(cx + half), round(cy + half)
        crop = picture[max(0, y0):min(height, y1), max(0, x0):min(width, x1)]
        crop = np.pad(crop, ((max(0, -y0), max(0, y1 - height)), (max(0, -x0), max(0, x1 - width)), (0, 0)), mode="edge")
        return fit_square(Image.fromarray(np.ascontiguousarray(crop)), self.recognizer.image_size)


def _drop_parts(found: list[tuple[tuple[float, float, float, float], int, float]]) -> list[Any]:
    """Drop a box lying inside a bigger box of the same class: a window on part of an item can be
    named after the whole item, and its match then lands on a part of it."""
    boxes = np.array([box for box, _, _ in found], dtype=np.float64)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    shares = box_containment(boxes, boxes)
    keep = []
    for index, (_, label, _) in enumerate(found):
        inside_bigger = any(
            other != index and found[other][1] == label and shares[index, other] > 0.6 and areas[other] > areas[index]
            for other in range(len(found))
        )
        if not inside_bigger:
            keep.append(found[index])
    return keep


def masked_ncc(region: np.ndarray, icon: np.ndarray, side: int) -> tuple[float, tuple[int, int]]:
    """Best normalised cross-correlation of ``icon`` (RGBA, drawn at ``side`` px) over ``region``.

    Only the icon's drawn pixels count (its alpha is the mask), so the floor around it does not;
    the three colour channels share one mean and scale, so colour still tells icons apart.
    Returns the score (-1..1) and the top-left offset of the best match.
    """
    template = np.asarray(Image.fromarray(icon).resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32)
    mask = (template[..., 3] > 127).astype(np.float32)
    count = float(mask.sum()) * 3
    if count < 3:
        return -1.0, (0, 0)
    colours = template[..., :3]
    mean = float((colours * mask[..., None]).sum()) / count
    centred = (colours - mean) * mask[..., None]
    template_energy = float((centred ** 2).sum())
    patch = torch.from_numpy(region.astype(np.float32)).permute(2, 0, 1)[None]
    kernel = torch.from_numpy(centred).permute(2, 0, 1)[None]
    mask3 = torch.from_numpy(np.repeat(mask[None], 3, axis=0))[None]
    numerator = F.conv2d(patch, kernel)[0, 0]
    sums = F.conv2d(patch, mask3)[0, 0]
    squares = F.conv2d(patch * patch, mask3)[0, 0]
    variance = (squares - sums * sums / count).clamp_min(1e-6)
    score = numerator / torch.sqrt(variance * max(template_energy, 1e-6))
    flat = int(score.argmax())
    row, col = divmod(flat, score.shape[1])
    return float(score[row, col]), (col, row)


# --------------------------------------------------------------------------- measuring it


def match_detections(detections: Sequence[Detection], boxes: np.ndarray, labels: np.ndarray,
                     iou_threshold: float = 0.5) -> dict[str, int | float]:
    """True positives with and without the class, greedy by confidence, and the matched IoUs' sum."""
    found = np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
    order = np.argsort([-d.confidence for d in detections])
    ious = box_iou(found, boxes.astype(np.float64)) if len(found) and len(boxes) else np.zeros((len(found), len(boxes)))
    taken_class, taken_box = set(), set()
    correct = located = 0
    iou_sum = 0.0
    for index in order:
        candidates = [j for j in np.argsort(-ious[index]) if ious[index, j] >= iou_threshold]
        same = [j for j in candidates if j not in taken_class and labels[j] == detections[index].class_index]
        if same:
            taken_class.add(same[0])
            correct += 1
        free = [j for j in candidates if j not in taken_box]
        if free:
            taken_box.add(free[0])
            located += 1
            iou_sum += float(ious[index, free[0]])
    return {"detections": len(detections), "items": len(boxes), "correct": correct, "located": located, "iou_sum": iou_sum}


def summarise(counts: Sequence[dict[str, int | float]]) -> dict[str, float]:
    """Precision and recall (class must match; and class-agnostic) over scenes."""
    total = {key: sum(c[key] for c in counts) for key in ("detections", "items", "correct", "located", "iou_sum")}
    detections, items = max(total["detections"], 1), max(total["items"], 1)
    return {
        "scenes": len(counts), "items": int(total["items"]), "detections": int(total["detections"]),
        "precision": total["correct"] / detections, "recall": total["correct"] / items,
        "box_precision": total["located"] / detections, "box_recall": total["located"] / items,
        "mean_iou": total["iou_sum"] / max(total["located"], 1),
    }


def draw_detections(image: Image.Image | np.ndarray, detections: Sequence[Detection]) -> Image.Image:
    """The picture with each detection's box and English name drawn on it."""
    from PIL import ImageDraw

    picture = to_rgb(image) if isinstance(image, Image.Image) else Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    for found in detections:
        x0, y0, x1, y1 = found.box
        draw.rectangle([x0, y0, x1, y1], outline=(255, 40, 40), width=2)
        draw.text((x0, max(0, y0 - 11)), f"{found.item.name_en} {found.confidence:.2f}", fill=(255, 255, 0))
    return picture
