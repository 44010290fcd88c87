"""Writing an export's samples in its layout: imagefolder, kohya (sd-scripts' folders, captions,
dataset.toml and fine-tune metadata), hf (a metadata.jsonl per split) or webdataset (tar shards);
the captions every format writes; the bytes of each sample (as stored, or cut and brought to
``--size``). Everything is written in a fixed order with fixed metadata: the same input gives the
same bytes.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from PIL import Image
from tqdm import tqdm

from catalog.reading import ROUND
from catalog.tags import TagIndex, normalise
from jobs.export_options import SINGLE_CLASS, SPLIT_NAMES, ExportOptions
from jobs.export_selection import Item, safe_name
from models.crops import encode, render
from models.imaging import flatten_on_white

logger = logging.getLogger("jobs.export")

AI_TAG = "ai-generated"  # Danbooru's name, in the caption of an AI-generated work (Pixiv aiType 2)
AI_GENERATED = 2  # Pixiv's aiType of an AI-generated work
# Danbooru's way of writing a character: name_(series), as mona_(genshin_impact), or Pixiv's モナ(原神).
QUALIFIED = re.compile(r"^(?P<name>.+?)_?\((?P<series>[^()]+)\)$")
LOOSE_SEPARATORS = re.compile(r"[\s_\-・·]+")
KOHYA_CONFIG = "dataset.toml"  # sd-scripts' --dataset_config, written by the kohya format
KOHYA_BALANCE_CAP = 4  # a balanced class is repeated at most this many times EXPORT_KOHYA_REPEATS
KAOMOJI_LENGTH = 3  # tags this short keep their underscores (^_^, >_<), as sd-scripts' WD14 tagger does
TAR_MTIME = 0  # every tar member's mtime: a re-export must be byte-identical


@dataclass(frozen=True)
class CaptionStyle:
    """How captions are written; the default is the plain one (imagefolder, hf, webdataset as before)."""

    underscores: str = "keep"  # space: long_hair -> long hair (tags longer than KAOMOJI_LENGTH)
    undesired: frozenset[str] = frozenset()  # keys (normalise, and canonical through aliases) left out
    rating_tags: bool = True
    characters_first: bool = False  # kohya: character tags right after the trigger word
    characters: frozenset[str] = frozenset()  # keys of the tags known as characters (a model's Character tags)
    index: TagIndex = field(default_factory=TagIndex)  # aliases and implications, to match tags by key
    merge_aliases: bool = False  # kohya: two names of one tag (モナ, mona_(genshin_impact)) written once

    @classmethod
    def of(cls, options: ExportOptions, index: TagIndex | None = None, items: Iterable[Item] = (),
           translations: dict[str, str] | None = None, model_characters: Iterable[str] = ()) -> CaptionStyle:
        """The style of an export; kohya puts characters first (``characters``)."""
        index = index or TagIndex()
        kohya = options.format == "kohya"
        characters = known_characters(index, list(items), translations or {}, model_characters) if kohya else set()
        undesired = {k for tag in options.undesired_tags for k in (normalise(tag), index.key(tag))}
        return cls(underscores=options.caption_underscores or ("space" if kohya else "keep"),
                   undesired=frozenset(undesired), rating_tags=options.rating_tags, characters_first=kohya,
                   characters=frozenset(characters), index=index, merge_aliases=kohya)


def known_characters(index: TagIndex, items: Sequence[Item], translations: dict[str, str],
                     model_characters: Iterable[str] = ()) -> set[str]:
    """Keys of the tags that name a character, so that a caption can put them first with or without a
    tagger: every tag a tagger called Character anywhere in the catalogue (``model_characters``) or in
    these pictures, and each Pixiv tag of these pictures that is one of those through an alias, or is
    written as Danbooru writes a character, ``name_(series)`` (モナ(原神), Mona (Genshin Impact),
    or what an alias makes of it), where the series is itself a tag these pictures carry."""
    characters = {index.key(tag) for tag in model_characters}
    characters |= {index.key(t["tag"]) for item in items for t in item.state["record"]["model_tags"] if is_character(t)}
    names = {name for item in items for tag in item.state["artwork"]["tags"]
             for name in (tag["name"], translations.get(tag["name"])) if name}
    series = {k for name in names for k in (normalise(name), index.key(name))}
    for name in names:
        for key in (normalise(name), index.key(name)):
            qualified = QUALIFIED.match(key)
            if qualified and (qualified["series"] in series or index.key(qualified["series"]) in series):
                characters.add(index.key(name))
    return characters


def loose_key(key: str) -> str:
    """A tag key without its separators: GenshinImpact and Genshin Impact, long_hair and long-hair are one."""
    return LOOSE_SEPARATORS.sub("", key)


def is_character(tag: dict[str, Any]) -> bool:
    return str(tag.get("category") or "").casefold() == "character"


def is_rating(tag: str, category: str | None) -> bool:
    """DeepDanbooru's ``rating:safe`` (a System tag), or any tag of a tagger's Rating category (WD14)."""
    return str(category or "").casefold() == "rating" or normalise(tag).startswith("rating:")


def caption_tags(item: Item, trigger_word: str, translations: dict[str, str],
                 style: CaptionStyle = CaptionStyle()) -> list[str]:
    """Trigger word, then model tags by score, then Pixiv tags (English when known): once each.

    By default underscores stay (``long_hair``), as DeepDanbooru writes them; ``style`` turns them into
    spaces (``long hair``, as anime LoRA captions and sd-scripts' ``--remove_underscore`` write them),
    puts character tags before the others, and leaves out undesired and rating tags. A comma inside a
    tag would split it, so it becomes a space.
    """
    index = style.index
    candidates: list[tuple[str, tuple[str, ...], bool]] = []  # (as written, the names it goes by, a character?)
    for tag in item.state["record"]["model_tags"]:  # score descending, then name
        if style.rating_tags or not is_rating(tag["tag"], tag.get("category")):
            candidates.append((tag["tag"], (tag["tag"],), is_character(tag)))
    if item.state["artwork"].get("ai_type") == AI_GENERATED:
        candidates.insert(0, (AI_TAG, (AI_TAG,), False))  # a tag to leave out, or to prompt against
    for tag in item.state["artwork"]["tags"]:  # Pixiv's order
        written = translations.get(tag["name"]) or tag["name"]
        names: tuple[str, ...] = (tag["name"], written)
        if style.rating_tags or not is_rating(written, None):
            known = bool(style.characters) and any(index.key(n) in style.characters for n in names)
            candidates.append((written, names, known))
    if style.characters_first:
        candidates.sort(key=lambda c: not c[2])  # stable: each group keeps its order

    tags: list[str] = []
    seen: set[str] = set()

    def add(tag: str, names: Sequence[str] = (), trigger: bool = False) -> None:
        if not trigger:
            if style.undesired and style.undesired & {k for n in names for k in (normalise(n), index.key(n))}:
                return
            if style.underscores == "space" and len(tag) > KAOMOJI_LENGTH:
                tag = tag.replace("_", " ")
        tag = " ".join(tag.replace(",", " ").split())
        if style.merge_aliases:  # any name of a tag already written (spaces and case aside): the same tag
            keys = {loose_key(k) for n in (*names, tag) for k in (index.key(n), normalise(n))}
        else:  # as before: by case only (space: long hair and long_hair are one)
            keys = {normalise(tag) if style.underscores == "space" else tag.casefold()}
        if tag and not keys & seen:
            seen.update(keys)
            tags.append(tag)

    add(trigger_word, trigger=True)  # never undesired, and written as given
    for tag, names, _character in candidates:
        add(tag, names)
    return tags


def sample_metadata(item: Item, caption: str, translations: dict[str, str]) -> dict[str, Any]:
    """What hf's metadata.jsonl and webdataset's .json say about a sample (the same keys in every row)."""
    record, artwork = item.state["record"], item.state["artwork"]
    model_tags = record["model_tags"]
    classifier = record["classifier"]
    return {
        "artwork_id": item.row["artwork_id"],
        "page": item.row["page"],
        "face": None if item.face is None else {k: v for k, v in item.face.items() if k != "path"},
        "label": item.label,
        "caption": caption,
        "tags": [t["tag"] for t in model_tags],
        "tag_scores": [round(t["score"], ROUND) for t in model_tags],
        "tag_categories": [t["category"] for t in model_tags],
        "tagger": model_tags[0]["model"] if model_tags else None,
        "pixiv_tags": [t["name"] for t in artwork["tags"]],
        "pixiv_tags_en": [translations.get(t["name"]) for t in artwork["tags"]],
        "classifier": None if classifier is None else {
            "label": classifier["label"], "target": classifier["target"], "model": classifier["model"],
            "score": None if classifier["score"] is None else round(classifier["score"], ROUND),
        },
        "status": item.row["status"],
        "title": item.row["title"],
        "user_id": item.row["user_id"],
        "x_restrict": item.row["x_restrict"],
        "ai_type": item.row["ai_type"],
        "width": item.width,
        "height": item.height,
        "sha256": item.sha256,
    }


def output_bytes(item: Item, file: Path, jpeg_quality: int) -> bytes:
    """The picture's bytes as exported: as stored, or (WebP, GIF, ...) its first frame as a JPEG."""
    data = file.read_bytes()
    if not item.convert:
        return data
    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)
        out = io.BytesIO()
        flatten_on_white(image).convert("RGB").save(out, "JPEG", quality=jpeg_quality)
        return out.getvalue()


def export_bytes(item: Item, file: Path, options: ExportOptions) -> bytes:
    """The exported bytes: as stored (output_bytes), or cut to the item's region and brought to --size,
    then encoded as the picture was (PNG stays PNG, the rest JPEG at JPEG_QUALITY)."""
    fit = options.fitting
    if item.region is None and fit is None:
        return output_bytes(item, file, options.jpeg_quality)
    image = render(file.read_bytes(), item.region, fit, item.focus)
    return encode(image, "PNG" if item.suffix == ".png" else "JPEG", options.jpeg_quality)


def dump_json(value: Any, indent: int | None = 2) -> str:
    separators = (",", ": ") if indent else (",", ":")
    return json.dumps(value, sort_keys=True, ensure_ascii=False, indent=indent, separators=separators)


@dataclass
class Writer:
    """Writes the samples of one export into ``root`` (the hidden build folder)."""

    root: Path
    options: ExportOptions
    folders: dict[str, str]  # label -> class folder
    class_index: dict[str, int]  # label -> the class number ImageFolder-style loaders give it
    translations: dict[str, str]
    files: Callable[[Item], bytes]
    style: CaptionStyle = field(default_factory=CaptionStyle)
    kohya: dict[str, KohyaSubset] = field(default_factory=dict)  # label -> its sd-scripts subset
    kohya_written: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # split -> labels

    def put(self, relative: str, data: bytes) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def caption(self, item: Item) -> str:
        return ", ".join(caption_tags(item, self.options.trigger_word, self.translations, self.style))

    def write(self, split: str, items: Sequence[Item], progress: tqdm) -> None:
        fmt = self.options.format
        if fmt == "imagefolder":
            for item in items:
                self.put(f"{split}/{self.folders[item.label]}/{item.key}{item.suffix}", self.files(item))
                progress.update(1)
        elif fmt == "kohya":
            self.write_kohya(split, items, progress)
        elif fmt == "hf":
            self.write_hf(split, items, progress)
        else:
            self.write_webdataset(split, items, progress)

    def write_kohya(self, split: str, items: Sequence[Item], progress: tqdm) -> None:
        """Pictures and .txt captions in sd-scripts' ``{repeats}_{trigger} {class}`` folders, and its
        fine-tune metadata, keyed by ``{folder}/{stem}``: with ``image_dir = DEST/{split}`` it finds
        each picture as ``image_dir/key.jpg``.

        sd-scripts trains on ``caption + ", " + tags`` (or ``tags`` alone without a caption), so the
        trigger word goes in ``caption`` and the rest in ``tags``: what it trains on is the .txt.
        """
        metadata: dict[str, dict[str, str]] = {}
        for item in items:
            tags = caption_tags(item, self.options.trigger_word, self.translations, self.style)
            stem = f"{self.kohya[item.label].folder}/{item.key}"
            self.put(f"{split}/{stem}{item.suffix}", self.files(item))
            self.put(f"{split}/{stem}.txt", ", ".join(tags).encode("utf-8"))
            self.kohya_written[split].add(item.label)
            trigger = self.options.trigger_word and tags and tags[0] == self.options.trigger_word
            metadata[stem] = (
                {"caption": tags[0], "tags": ", ".join(tags[1:])} if trigger else {"tags": ", ".join(tags)}
            )
            progress.update(1)
        self.put(f"meta_cap_{split}.json", (dump_json(metadata) + "\n").encode("utf-8"))

    def write_kohya_config(self, dest: Path) -> str | None:
        """``dataset.toml``: sd-scripts' ``--dataset_config`` for the train split, one DreamBooth subset
        per class folder. ``image_dir`` is absolute (sd-scripts reads a relative one from its working
        folder), so the file names DEST as given; the config's name, or None without train pictures."""
        split = SPLIT_NAMES[0]
        labels = sorted(self.kohya_written.get(split, ()))
        if not labels:
            logger.warning("export: no picture in the %s split, so no %s (sd-scripts trains on %s only)",
                           split, KOHYA_CONFIG, split)
            return None
        lines = [
            "# kohya-ss sd-scripts dataset config, written by `scrapy export --format kohya`:",
            "#   accelerate launch train_network.py --dataset_config dataset.toml ...",
            "# One DreamBooth (caption) subset per class folder of the train split. Move DEST: re-export it.",
            "[general]",
            "shuffle_caption = true",
            f"caption_extension = {toml_string('.txt')}",
            f"keep_tokens = {1 if self.options.trigger_word else 0}  # the trigger word stays first",
            "enable_bucket = true",
            "",
            "[[datasets]]",
            f"resolution = {self.options.kohya_resolution}",
            f"batch_size = {self.options.kohya_batch_size}",
        ]
        for label in labels:
            subset = self.kohya[label]
            lines += [
                "",
                "  [[datasets.subsets]]",
                f"  image_dir = {toml_string(str(dest / split / subset.folder))}",
                f"  num_repeats = {subset.num_repeats}",
                f"  class_tokens = {toml_string(subset.class_tokens)}",
            ]
        self.put(KOHYA_CONFIG, ("\n".join(lines) + "\n").encode("utf-8"))
        return KOHYA_CONFIG

    def write_hf(self, split: str, items: Sequence[Item], progress: tqdm) -> None:
        lines = []
        for item in items:
            file_name = f"{item.key}{item.suffix}"
            self.put(f"{split}/{file_name}", self.files(item))
            lines.append(dump_json({"file_name": file_name, **sample_metadata(item, self.caption(item), self.translations)}, None))
            progress.update(1)
        self.put(f"{split}/metadata.jsonl", ("\n".join(lines) + "\n").encode("utf-8"))

    def write_webdataset(self, split: str, items: Sequence[Item], progress: tqdm) -> None:
        size = self.options.shard_size
        for shard, start in enumerate(range(0, len(items), size)):
            path = self.root / f"{split}-{shard:06d}.tar"
            with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
                for item in items[start:start + size]:
                    caption = self.caption(item)
                    members = {
                        f"{item.key}.cls": f"{self.class_index[item.label]}\n".encode(),
                        f"{item.key}{item.suffix}": self.files(item),
                        f"{item.key}.json": dump_json(sample_metadata(item, caption, self.translations), None).encode("utf-8"),
                        f"{item.key}.txt": caption.encode("utf-8"),
                    }
                    for name in sorted(members):
                        add_tar_member(tar, name, members[name])
                    progress.update(1)


@dataclass(frozen=True)
class KohyaSubset:
    """One class of a kohya export: its folder ``{num_repeats}_{class_tokens}`` (sanitised) in each split."""

    folder: str
    num_repeats: int
    class_tokens: str  # "trigger class": what sd-scripts trains a picture on when its .txt is missing


def kohya_subsets(counts: Counter[str], folders: dict[str, str], options: ExportOptions) -> dict[str, KohyaSubset]:
    """Each class's subset. ``--repeats N`` gives every class N; else one class gets EXPORT_KOHYA_REPEATS,
    and several are balanced: the largest gets EXPORT_KOHYA_REPEATS and each other one
    ``round(that * largest / its count)``, so every class is seen about as often per epoch, up to
    ``KOHYA_BALANCE_CAP`` times EXPORT_KOHYA_REPEATS (one stray picture is not repeated hundreds of times)."""
    largest = max(counts.values())
    subsets = {}
    for label, count in sorted(counts.items()):
        if options.repeats:
            repeats = options.repeats
        elif len(counts) == 1:
            repeats = options.repeats_base
        else:
            balanced = max(1, round(options.repeats_base * largest / count))
            repeats = min(balanced, KOHYA_BALANCE_CAP * options.repeats_base)
        trigger = options.trigger_word
        named = label != SINGLE_CLASS or not trigger  # one class 'all' under a trigger: the trigger alone
        tokens = " ".join(w for w in (trigger, label if named else "") if w)
        folder = " ".join(w for w in (safe_name(trigger) if trigger else "", folders[label] if named else "") if w)
        subsets[label] = KohyaSubset(f"{repeats}_{folder}", repeats, tokens)
    return subsets


def toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, and DEL, which JSON leaves raw, is escaped too."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def add_tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """A regular file with fixed metadata, so that the same bytes make the same tar."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = TAR_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))
