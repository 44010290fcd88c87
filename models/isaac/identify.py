"""Name the item in a cropped photo or screenshot: top-k classes with both names and the description.

``Recognizer.load`` reads the weights and the card beside them; the card carries every class's
names and description, so nothing else (no catalogue, no sprites) is needed to identify. Input
pictures of any size and shape are fitted into the network's square without cutting anything
off: resized (box filter when shrinking) so the longer side fits, then padded by repeating the
edge pixels, which looks more like the surrounding floor than a flat colour does. Transparent
pixels (a sprite file given as is) are laid on a dark floor colour.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from core.errors import ProjectError
from models.isaac.icons import ItemClass
from models.isaac.net import IconNet, build_net
from models.isaac.train import CARD_NAME, NO_ITEM, WEIGHTS_FORMAT, WEIGHTS_NAME
from models.torch_common import CheckpointError, autocast, choose_device, load_checkpoint

FLOOR = (38, 34, 32)  # what a transparent pixel is shown on: the game's dark floors


class RecognizerError(ProjectError, RuntimeError):
    """The weights or the card are missing or do not belong together."""


@dataclass(frozen=True)
class Guess:
    """One candidate for a picture: the class (None for "no item") and its probability."""

    item: ItemClass | None
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        base = self.item.as_dict() if self.item else {"key": NO_ITEM}
        return {**base, "confidence": round(self.confidence, 4)}

    def line(self) -> str:
        if self.item is None:
            return f"(no item)  {self.confidence:.3f}"
        item = self.item
        return f"{item.name_en} / {item.name_zh}  [{item.kind} {item.game_id}]  {self.confidence:.3f}  — {item.description}"


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with EXIF orientation applied and transparency laid on ``FLOOR``."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*FLOOR, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


def fit_square(image: Image.Image, size: int) -> np.ndarray:
    """The picture inside a ``size`` square (longer side fitted, edge-padded), uint8 (size, size, 3)."""
    image = to_rgb(image)
    scale = size / max(image.width, image.height)
    width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    pixels = np.asarray(image.resize((width, height), resample), dtype=np.uint8)
    top, left = (size - height) // 2, (size - width) // 2
    return np.pad(pixels, ((top, size - height - top), (left, size - width - left), (0, 0)), mode="edge")


@dataclass
class Recognizer:
    """A trained network with its card: classes in the card's order, then "no item"."""

    model: IconNet
    card: dict[str, Any]
    classes: tuple[ItemClass, ...]
    image_size: int
    device: torch.device

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> Recognizer:
        """From a model folder (``isaac-recognizer.pt`` + ``.json``) or the weights file itself."""
        path = Path(path)
        weights = path / WEIGHTS_NAME if path.is_dir() else path
        card_path = weights.with_name(CARD_NAME) if path.is_dir() or weights.name == WEIGHTS_NAME else weights.with_suffix(".json")
        if not card_path.is_file():
            raise RecognizerError(f"no model card at {card_path} (train one with `scrapy isaac train`)")
        try:
            saved = load_checkpoint(weights, WEIGHTS_FORMAT)
        except CheckpointError as error:
            raise RecognizerError(str(error)) from None
        card = json.loads(card_path.read_text(encoding="utf-8"))
        classes = tuple(ItemClass.from_dict(entry) for entry in card["classes"])
        if int(saved["net"]["classes"]) != len(classes) + 1:
            raise RecognizerError(f"{weights}: {saved['net']['classes']} outputs, but the card lists {len(classes)} classes + none")
        torch_device = choose_device(device)
        model = build_net(saved["net"])
        model.load_state_dict(saved["model"])
        model = model.to(torch_device).to(memory_format=torch.channels_last).eval()  # type: ignore[call-overload]  # torch's stubs leave out Module.to(memory_format=)
        return cls(model, card, classes, int(card["input"]["size"]), torch_device)

    @property
    def none_index(self) -> int:
        return len(self.classes)

    def tensor(self, pictures: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 (N, 3, S, S) from (S, S, 3) arrays, on the model's device, channels-last."""
        batch = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2)
        return batch.to(self.device).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def probabilities(self, pictures: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Softmax (N, classes + 1) for square uint8 pictures already at the input size."""
        rows = []
        for start in range(0, len(pictures), batch_size):
            with autocast(self.device):
                logits = self.model(self.tensor(pictures[start:start + batch_size]))
            rows.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, len(self.classes) + 1), dtype=np.float32)

    def guesses(self, probabilities: np.ndarray, top: int = 5) -> list[Guess]:
        order = np.argsort(-probabilities)[:top]
        return [Guess(self.classes[i] if i < len(self.classes) else None, float(probabilities[i])) for i in order]

    def identify(self, images: Iterable[Image.Image], top: int = 5, batch_size: int = 64) -> list[list[Guess]]:
        """Top-``top`` guesses for each picture (a crop around one item)."""
        pictures = [fit_square(image, self.image_size) for image in images]
        return [self.guesses(row, top) for row in self.probabilities(pictures, batch_size)]


def identify_files(recognizer: Recognizer, paths: Sequence[str | Path], top: int = 5) -> list[dict[str, Any]]:
    """One result per file: ``{"path", "guesses": [...]}``, or ``{"path", "error"}`` when unreadable."""
    results: list[dict[str, Any]] = []
    readable: list[tuple[int, Image.Image]] = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
                readable.append((len(results), image.copy()))
            results.append({"path": str(path)})
        except OSError as error:
            results.append({"path": str(path), "error": f"not a readable image ({error})"})
    guesses = recognizer.identify([image for _, image in readable], top)
    for (position, _), found in zip(readable, guesses):
        results[position]["guesses"] = [guess.as_dict() for guess in found]
        results[position]["lines"] = [guess.line() for guess in found]
    return results
