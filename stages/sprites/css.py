"""Where each sprite of a CSS sprite sheet sits: a stylesheet read with a real CSS tokenizer.

The wiki draws item icons as ``<span id="collectibles_001" class="…">`` whose CSS picks a cell of
a shared sheet: the id rule gives ``background-position``, another rule (a class the spans share,
or an inline ``style``) binds the sheet. ``../shared/docs/isaac-wiki.md`` lists the forms met in the
wild; a regex for the common one breaks on the others, so tinycss2 tokenizes and this module
resolves what the tokens mean:

* rules: grouped selectors, class + id compounds, ``!important``, ``@media`` / ``@supports`` /
  ``@layer`` blocks walked (``@media print`` skipped: it is not what the page shows),
  ``@keyframes`` skipped (animation frames, not items), the cascade by importance, specificity
  and order, inline ``style`` attributes above every rule;
* ``background-image`` and the ``background`` shorthand: ``url(…)`` quoted or not, protocol-
  relative and relative URLs joined to the stylesheet's URL, ``image-set(…)``'s first candidate;
* ``background-position`` in every form (px, ``0``, keywords, 3- and 4-value edge offsets,
  percentages: offset = p × (box − image)), and ``background-position-x`` / ``-y``;
* ``background-size`` (a 2× sheet shown at half size) and the box's ``width`` / ``height``.

``sprite_from_computed`` does the same arithmetic from what a browser computed for an element
(``getComputedStyle``), for CSS that only a browser sees: rules a script injects after load.

The answer is a rectangle in *sheet* pixels, what a slicer cuts. A spider feeds it what the HTML
says about each element (id, classes, inline style); ancestors are not known from that, so a
selector is judged by its last compound, and one that names neither the element's id nor one of
its classes (``table span``) is not applied: too broad to trust without the ancestors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence, Union, cast
from urllib.parse import urljoin, urlsplit

import tinycss2
from tinycss2 import ast

from core.errors import EXIT_FAILED, ProjectError

DEFAULT_BOX = (32, 32)  # px: the wiki's icon spans, when no rule gives a width or height

# At-rules whose blocks hold ordinary style rules that apply on screen.
_WALKED_AT_RULES = {"media", "supports", "layer", "document", "-moz-document"}
_HORIZONTAL = {"left", "right"}
_VERTICAL = {"top", "bottom"}
_EDGES = _HORIZONTAL | _VERTICAL | {"center"}
_IMAGE_FUNCTIONS = {"image-set", "-webkit-image-set"}


class SpriteCssError(ProjectError, ValueError):
    """The CSS gives no usable rectangle for an element; the message says why."""

    exit_code = EXIT_FAILED


@dataclass(frozen=True)
class Element:
    """What the HTML says about one element that draws a sprite."""

    id: str
    classes: tuple[str, ...] = ()
    style: str = ""  # its inline style="…" attribute


@dataclass(frozen=True)
class SpriteRef:
    """Where an element's sprite sits: its sheet and a rectangle in the sheet's own pixels."""

    css_id: str
    sheet_url: str | None
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class SpriteResolution:
    """Every element asked about: a rectangle for each that has one, a reason for each that has not."""

    refs: dict[str, SpriteRef]
    problems: dict[str, str]


ElementLike = Union[Element, tuple[str, Iterable[str]], str]


# --- selectors -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Compound:
    """One compound selector such as ``span.item-sprite#c_001``."""

    tag: str | None = None
    ids: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    attributes: int = 0
    pseudo_classes: int = 0
    pseudo_elements: int = 0


@dataclass(frozen=True)
class _Selector:
    subject: _Compound  # the last compound: the element the declarations style
    specificity: tuple[int, int, int]
    stateful: bool  # has a pseudo-class or pseudo-element somewhere: not the element at rest

    def matches(self, element: Element) -> bool:
        subject = self.subject
        if self.stateful or subject.attributes:
            return False
        if not (subject.ids or subject.classes):
            return False
        return all(i == element.id for i in subject.ids) and set(subject.classes) <= set(element.classes)


def _split_on_commas(tokens: Sequence[ast.Node]) -> list[list[ast.Node]]:
    parts: list[list[ast.Node]] = [[]]
    for token in tokens:
        if token.type == "literal" and token.value == ",":
            parts.append([])
        else:
            parts[-1].append(token)
    return parts


def _strip(tokens: Sequence[ast.Node]) -> list[ast.Node]:
    tokens = [t for t in tokens if t.type != "comment"]
    while tokens and tokens[0].type == "whitespace":
        tokens.pop(0)
    while tokens and tokens[-1].type == "whitespace":
        tokens.pop()
    return tokens


def _parse_selector(tokens: Sequence[ast.Node]) -> _Selector | None:
    """One selector of a group; None when it is not one this module understands (it then never matches)."""
    compounds: list[_Compound] = []
    current: dict[str, Any] = {}
    stateful = False
    tokens = _strip(tokens)
    if not tokens:
        return None
    i = 0

    def close() -> None:
        nonlocal current
        if current:
            compounds.append(_Compound(
                tag=current.get("tag"), ids=tuple(current.get("ids", ())), classes=tuple(current.get("classes", ())),
                attributes=current.get("attributes", 0), pseudo_classes=current.get("pseudo_classes", 0),
                pseudo_elements=current.get("pseudo_elements", 0),
            ))
            current = {}

    while i < len(tokens):
        token = tokens[i]
        if token.type == "whitespace" or (token.type == "literal" and token.value in (">", "+", "~")):
            close()
        elif token.type == "ident" and not current:
            current["tag"] = token.lower_value
        elif token.type == "literal" and token.value == "*" and not current:
            current["tag"] = "*"
        elif token.type == "hash":
            if not token.is_identifier:
                return None
            current.setdefault("ids", []).append(token.value)
        elif token.type == "literal" and token.value == ".":
            i += 1
            if i >= len(tokens) or tokens[i].type != "ident":
                return None
            current.setdefault("classes", []).append(tokens[i].value)
        elif token.type == "[] block":
            current["attributes"] = current.get("attributes", 0) + 1
        elif token.type == "literal" and token.value == ":":
            stateful = True
            element = i + 1 < len(tokens) and tokens[i + 1].type == "literal" and tokens[i + 1].value == ":"
            i += 2 if element else 1
            if i >= len(tokens) or tokens[i].type not in ("ident", "function"):
                return None
            name = tokens[i].lower_value if tokens[i].type == "ident" else tokens[i].lower_name
            key = "pseudo_elements" if element or name in ("before", "after") else "pseudo_classes"
            current[key] = current.get(key, 0) + 1
        else:
            return None  # namespaces, nesting (&) and the like: not for sprites
        i += 1
    close()
    if not compounds:
        return None
    specificity = (
        sum(len(c.ids) for c in compounds),
        sum(len(c.classes) + c.attributes + c.pseudo_classes for c in compounds),
        sum((c.tag not in (None, "*")) + c.pseudo_elements for c in compounds),
    )
    return _Selector(compounds[-1], specificity, stateful)


# --- values ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Length:
    px: float


@dataclass(frozen=True)
class _Percent:
    value: float  # 50 for 50%


_LengthPercent = Union[_Length, _Percent]


@dataclass(frozen=True)
class _Sum:
    """A percentage plus a length: how browsers compute ``right 10px`` (``calc(100% - 10px)``)."""

    percent: float
    px: float


@dataclass(frozen=True)
class _Axis:
    """One axis of a background position: an offset from the start (left/top) or end edge."""

    from_end: bool
    offset: Union[_Length, _Percent, _Sum]


@dataclass(frozen=True)
class _Image:
    url: str | None  # None: no image (background-image: none, or only a gradient)
    resolution: float = 1.0  # image-set's 2x: the image's natural size is half its pixels


_SizeValue = Union[_Length, _Percent, str]  # str: auto, cover, contain


class _Invalid(ValueError):
    """A declaration whose value is not understood; like a browser, the cascade ignores it."""


class _Unsupported(_Invalid):
    """Valid CSS that cannot be turned into sheet pixels here (em, calc(), var(), inherit).

    Unlike an invalid value it still wins the cascade where it applies, and then makes the
    element unresolvable: guessing 32 px in its place would cut the wrong rectangle.
    """


# The longhands each property sets; the shorthand resets those it does not name.
_LONGHANDS = {
    "background": ("image", "position-x", "position-y", "size"),
    "background-image": ("image",),
    "background-position": ("position-x", "position-y"),
    "background-position-x": ("position-x",),
    "background-position-y": ("position-y",),
    "background-size": ("size",),
    "width": ("width",),
    "height": ("height",),
}


def _layers(tokens: Sequence[ast.Node]) -> list[list[ast.Node]]:
    return [[t for t in layer if t.type not in ("whitespace", "comment")] for layer in _split_on_commas(tokens)]


def _length_percent(token: ast.Node) -> _LengthPercent | None:
    if token.type == "dimension":
        if token.lower_unit != "px":
            raise _Unsupported(f"{token.value:g}{token.unit}: only px lengths can be turned into sheet pixels")
        return _Length(float(token.value))
    if token.type == "number" and token.value == 0:
        return _Length(0.0)
    if token.type == "percentage":
        return _Percent(float(token.value))
    if token.type == "function":
        raise _Unsupported(f"{token.name}() cannot be computed without a browser")
    return None


def _image(token: ast.Node, base_url: str) -> _Image | None:
    """The image a background-image layer token names, or None when the token is not an image."""
    if token.type == "url":
        return _Image(urljoin(base_url, token.value.strip()))
    if token.type != "function":
        return None
    name = token.lower_name
    if name == "url":
        strings = [t for t in token.arguments if t.type == "string"]
        return _Image(urljoin(base_url, strings[0].value.strip())) if strings else None
    if name in _IMAGE_FUNCTIONS:
        candidates = _layers(token.arguments)
        first = candidates[0] if candidates else []
        url = None
        resolution = 1.0
        for part in first:
            if part.type == "string":
                url = urljoin(base_url, part.value.strip())
            elif part.type in ("url", "function") and url is None:
                inner = _image(part, base_url)
                url = inner.url if inner else None
            elif part.type == "dimension" and part.lower_unit in ("x", "dppx"):
                resolution = float(part.value)
        if url is None:
            raise _Invalid("image-set() without a URL in its first candidate")
        return _Image(url, resolution or 1.0)
    if name.endswith("gradient"):
        return _Image(None)
    raise _Unsupported(f"{token.name}() cannot be computed without a browser")


def _parse_position(terms: Sequence[ast.Node]) -> tuple[_Axis, _Axis]:
    """``<bg-position>``: 1 to 4 terms, as CSS Backgrounds 3 defines them."""
    items: list[str | _LengthPercent] = []
    for term in terms:
        if term.type == "ident" and term.lower_value in _EDGES:
            items.append(term.lower_value)
            continue
        value = _length_percent(term)
        if value is None:
            raise _Invalid(f"background-position term {tinycss2.serialize([term])!r} is not understood")
        items.append(value)
    center = _Axis(False, _Percent(50.0))

    def start(offset: _LengthPercent) -> _Axis:
        return _Axis(False, offset)

    def keyword(name: str) -> _Axis:
        return center if name == "center" else _Axis(name in ("right", "bottom"), _Percent(0.0))

    if len(items) == 1:
        (only,) = items
        if isinstance(only, str):
            if only in _VERTICAL:
                return center, keyword(only)
            return keyword(only), center
        return start(only), center
    if len(items) == 2:
        first, second = items
        if not isinstance(first, str) and not isinstance(second, str):
            return start(first), start(second)
        if not isinstance(first, str):
            if second in _HORIZONTAL:
                raise _Invalid("a length before a horizontal keyword")
            return start(first), keyword(cast(str, second))
        if not isinstance(second, str):
            if first in _VERTICAL:
                raise _Invalid("a vertical keyword before a length")
            return keyword(first), start(second)
        if first in _VERTICAL or second in _HORIZONTAL:
            first, second = second, first
        if first in _VERTICAL or second in _HORIZONTAL:
            raise _Invalid("two keywords on one axis")
        return keyword(first), keyword(second)
    if len(items) in (3, 4):
        # Edge keywords, each optionally followed by an offset from that edge.
        groups: list[tuple[str, _LengthPercent | None]] = []
        for item in items:
            if isinstance(item, str):
                groups.append((item, None))
            elif groups and groups[-1][1] is None and groups[-1][0] != "center":
                groups[-1] = (groups[-1][0], item)
            else:
                raise _Invalid("an offset that follows no edge keyword")
        if len(groups) != 2:
            raise _Invalid("3- and 4-value positions need two edge keywords")
        (first_name, first_offset), (second_name, second_offset) = groups
        if first_name in _VERTICAL or second_name in _HORIZONTAL:
            (first_name, first_offset), (second_name, second_offset) = groups[1], groups[0]
        if first_name in _VERTICAL or second_name in _HORIZONTAL or first_name == second_name == "center":
            raise _Invalid("two keywords on one axis")

        def edge(name: str, offset: _LengthPercent | None) -> _Axis:
            return keyword(name) if offset is None else _Axis(name in ("right", "bottom"), offset)

        return edge(first_name, first_offset), edge(second_name, second_offset)
    raise _Invalid(f"background-position has {len(items)} terms")


def _parse_axis(terms: Sequence[ast.Node], vertical: bool) -> _Axis:
    """``background-position-x`` / ``-y``: an edge keyword, an offset, or both."""
    names = _VERTICAL if vertical else _HORIZONTAL
    edge: str | None = None
    offset: _LengthPercent | None = None
    for term in terms:
        if term.type == "ident" and (term.lower_value in names or term.lower_value == "center") and edge is None:
            edge = term.lower_value
            continue
        value = _length_percent(term)
        if value is None or offset is not None:
            raise _Invalid(f"background-position-{'y' if vertical else 'x'} is not understood")
        offset = value
    if edge == "center":
        if offset is not None:
            raise _Invalid("center takes no offset")
        return _Axis(False, _Percent(50.0))
    if edge is None and offset is None:
        raise _Invalid("empty position")
    return _Axis(edge in ("right", "bottom"), offset or (_Length(0.0) if edge else _Percent(0.0)))


def _parse_size(terms: Sequence[ast.Node]) -> tuple[_SizeValue, _SizeValue]:
    values: list[_SizeValue] = []
    for term in terms:
        if term.type == "ident" and term.lower_value in ("auto", "cover", "contain"):
            values.append(term.lower_value)
            continue
        value = _length_percent(term)
        if value is None:
            raise _Invalid(f"background-size term {tinycss2.serialize([term])!r} is not understood")
        values.append(value)
    if len(values) == 1:
        return (values[0], values[0]) if values[0] in ("cover", "contain") else (values[0], "auto")
    if len(values) == 2 and "cover" not in values and "contain" not in values:
        return values[0], values[1]
    raise _Invalid("background-size takes one or two values")


def _is_number(term: ast.Node) -> bool:
    return term.type in ("dimension", "percentage", "number")


def _is_keyword(term: ast.Node, names: Iterable[str]) -> bool:
    return term.type == "ident" and term.lower_value in names


def _parse_shorthand_layer(terms: Sequence[ast.Node], base_url: str) -> tuple[_Image, tuple[_Axis, _Axis], tuple[Any, ...]]:
    """One layer of the ``background`` shorthand: its image, position and size (others ignored)."""
    image = _Image(None)
    position: list[ast.Node] = []
    size: list[ast.Node] = []
    after_slash = False
    for term in terms:
        found = _image(term, base_url)
        if found is not None:
            image = found
            after_slash = False
        elif term.type == "literal" and term.value == "/":
            after_slash = True
        elif after_slash and (_is_number(term) or _is_keyword(term, ("auto", "cover", "contain"))):
            size.append(term)
        elif _is_number(term) or _is_keyword(term, _EDGES):
            after_slash = False
            position.append(term)
        else:
            after_slash = False  # repeat, attachment, box, colour: nothing a slicer needs
    return (
        image,
        _parse_position(position) if position else (_Axis(False, _Percent(0.0)), _Axis(False, _Percent(0.0))),
        _parse_size(size) if size else ("auto", "auto"),
    )


def _box_length(terms: Sequence[ast.Node], name: str) -> float | None:
    """A width or height in px; None for auto (the default box then applies)."""
    if len(terms) == 1 and terms[0].type == "ident" and terms[0].lower_value == "auto":
        return None
    value = _length_percent(terms[0]) if len(terms) == 1 else None
    if isinstance(value, _Length):
        return value.px
    written = tinycss2.serialize(terms).strip()
    if isinstance(value, _Percent) or (len(terms) == 1 and terms[0].type == "ident"):
        raise _Unsupported(f"{name}: {written!r} depends on the page around the element")
    raise _Invalid(f"{name}: {written!r} is not a length")


_INITIAL: dict[str, object] = {
    "image": [_Image(None)],
    "position-x": [_Axis(False, _Percent(0.0))],
    "position-y": [_Axis(False, _Percent(0.0))],
    "size": [("auto", "auto")],
    "width": None,
    "height": None,
}


def _longhands(name: str, value: list[ast.Node], base_url: str) -> dict[str, Any]:
    """The longhand values one declaration sets (the shorthand resets what it does not name)."""
    if name not in _LONGHANDS:
        return {}
    terms = [t for t in value if t.type not in ("whitespace", "comment")]
    if not terms:
        raise _Invalid("empty value")
    if len(terms) == 1 and terms[0].type == "ident" and terms[0].lower_value in ("initial", "unset"):
        return {longhand: _INITIAL[longhand] for longhand in _LONGHANDS[name]}  # none of these inherit
    if len(terms) == 1 and terms[0].type == "ident" and terms[0].lower_value in ("inherit", "revert", "revert-layer"):
        raise _Unsupported(f"{name}: {terms[0].value} depends on the page around the element")
    if name in ("width", "height"):
        return {name: _box_length(terms, name)}
    layers = _layers(value)
    if name == "background":
        parsed = [_parse_shorthand_layer(layer, base_url) for layer in layers]
        return {
            "image": [p[0] for p in parsed],
            "position-x": [p[1][0] for p in parsed],
            "position-y": [p[1][1] for p in parsed],
            "size": [p[2] for p in parsed],
        }
    if name == "background-image":
        images = []
        for layer in layers:
            if len(layer) == 1 and layer[0].type == "ident" and layer[0].lower_value == "none":
                images.append(_Image(None))
                continue
            found = _image(layer[0], base_url) if len(layer) == 1 else None
            if found is None:
                raise _Invalid(f"background-image {tinycss2.serialize(layer)!r} is not understood")
            images.append(found)
        return {"image": images}
    if name == "background-position":
        positions = [_parse_position(layer) for layer in layers]
        return {"position-x": [p[0] for p in positions], "position-y": [p[1] for p in positions]}
    if name in ("background-position-x", "background-position-y"):
        vertical = name.endswith("y")
        return {f"position-{name[-1]}": [_parse_axis(layer, vertical) for layer in layers]}
    if name == "background-size":
        return {"size": [_parse_size(layer) for layer in layers]}
    return {}


def parse_declarations(text_or_tokens: str | Sequence[ast.Node]) -> list[ast.Declaration]:
    """The declarations of a rule's block or of an inline ``style="…"`` attribute (nested rules dropped)."""
    parsed = tinycss2.parse_blocks_contents(text_or_tokens, skip_comments=True, skip_whitespace=True)
    return [d for d in parsed if d.type == "declaration"]


# --- the stylesheet --------------------------------------------------------------------------------
@dataclass
class _Rule:
    order: int
    content: list[ast.Node]
    _declarations: list[ast.Declaration] | None = field(default=None, repr=False)

    def declarations(self) -> list[ast.Declaration]:
        if self._declarations is None:  # parsed on first use: most of a site stylesheet is never asked
            self._declarations = parse_declarations(self.content)
        return self._declarations


def _style_rules(nodes: Iterable[ast.Node]) -> Iterator[ast.QualifiedRule]:
    for node in nodes:
        if node.type == "qualified-rule":
            yield node
        elif node.type == "at-rule" and node.lower_at_keyword in _WALKED_AT_RULES and node.content is not None:
            if node.lower_at_keyword == "media" and _print_only(node.prelude):
                continue
            yield from _style_rules(tinycss2.parse_rule_list(node.content, skip_comments=True, skip_whitespace=True))
        # @keyframes (animation frames, not items), @font-face, @import, @page: nothing for sprites


def _print_only(prelude: Sequence[ast.Node]) -> bool:
    words = [t.lower_value for t in prelude if t.type == "ident"]
    return bool(words) and words[0] in ("print", "only") and "screen" not in words and "all" not in words


class Stylesheet:
    """A parsed stylesheet, indexed by the ids and classes its rules target.

    :param css: the stylesheet's text (a whole site stylesheet is fine: only what the asked
        elements match is ever looked at)
    :param base_url: the stylesheet's own URL; relative ``url()``s are joined to it
    """

    def __init__(self, css: str, base_url: str = ""):
        self.base_url = base_url
        self._by_id: dict[str, list[tuple[_Selector, _Rule]]] = {}
        self._by_class: dict[str, list[tuple[_Selector, _Rule]]] = {}
        self._ids: dict[str, None] = {}
        self.rule_count = 0
        nodes = tinycss2.parse_stylesheet(css, skip_comments=True, skip_whitespace=True)
        for order, qualified in enumerate(_style_rules(nodes)):
            rule = _Rule(order, qualified.content)
            self.rule_count += 1
            for tokens in _split_on_commas(qualified.prelude):
                selector = _parse_selector(tokens)
                if selector is None:
                    continue
                subject = selector.subject
                if subject.ids:  # indexed by the id it needs (a second id in one compound never matches)
                    self._by_id.setdefault(subject.ids[0], []).append((selector, rule))
                    if not selector.stateful:
                        self._ids.setdefault(subject.ids[0])
                elif subject.classes:  # ... else by one class it needs
                    self._by_class.setdefault(subject.classes[0], []).append((selector, rule))

    def ids(self, pattern: str | re.Pattern[str] | None = None) -> list[str]:
        """Element ids that style rules target (first appearance first), those fully matching ``pattern`` if given."""
        if pattern is None:
            return list(self._ids)
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        return [css_id for css_id in self._ids if regex.fullmatch(css_id)]

    def sheet_url(self, element: ElementLike, *, page_url: str | None = None) -> str | None:
        """The image an element's background shows (its first layer with one), or None.

        What a spider that has no other word on the sheet (no API) downloads; unlike
        :meth:`resolve` it needs no sheet size.
        """
        values, _, _ = self._cascade(as_element(element), page_url)
        images = values.get("image")
        if not isinstance(images, list):
            return None
        return next((image.url for image in images if image.url), None)

    def rules_for_id(self, css_id: str) -> int:
        """How many style rules name this id in their subject (keyframes excluded)."""
        return len({id(rule) for _, rule in self._by_id.get(css_id, [])})

    def _cascade(self, element: Element, page_url: str | None) -> tuple[dict[str, Any], list[str], int]:
        """The winning value of each longhand for this element, the declarations ignored as invalid,
        and how many rules (or an inline style) applied at all."""
        matched: dict[int, tuple[tuple[int, int, int], _Rule]] = {}
        candidates = list(self._by_id.get(element.id, []))
        for css_class in element.classes:
            candidates += self._by_class.get(css_class, [])
        for selector, rule in candidates:
            if selector.matches(element):
                best = matched.get(id(rule))
                if best is None or selector.specificity > best[0]:
                    matched[id(rule)] = (selector.specificity, rule)
        sources: list[tuple[tuple[Any, ...], list[ast.Declaration], str]] = [
            ((0, specificity, rule.order), rule.declarations(), self.base_url) for specificity, rule in matched.values()
        ]
        if element.style:
            sources.append(((1, (0, 0, 0), 0), parse_declarations(element.style), page_url or self.base_url))
        winners: dict[str, tuple[Any, ...]] = {}
        ignored: list[str] = []
        for (inline, specificity, order), declarations, base in sources:
            for position, declaration in enumerate(declarations):
                try:
                    values = _longhands(declaration.lower_name, declaration.value, base)
                except _Unsupported as why:
                    values = dict.fromkeys(_LONGHANDS[declaration.lower_name], why)
                except _Invalid as why:
                    ignored.append(f"{declaration.lower_name}: {why}")
                    continue
                key = (declaration.important, inline, specificity, order, position)
                for longhand, value in values.items():
                    if longhand not in winners or key > winners[longhand][0]:
                        winners[longhand] = (key, value)
        return {name: value for name, (_, value) in winners.items()}, ignored, len(sources)

    def resolve(
        self,
        element: ElementLike,
        *,
        default_sheet_url: str | None = None,
        sheet_sizes: Mapping[str, tuple[int, int]] | None = None,
        page_url: str | None = None,
        default_box: tuple[int, int] = DEFAULT_BOX,
    ) -> SpriteRef:
        """The sheet and rectangle (sheet pixels) that ``element`` shows.

        :param default_sheet_url: the sheet when no matching rule names one (the wiki binds it in
            a rule the captured stylesheet may not hold; the spider knows it from the file's page)
        :param sheet_sizes: each sheet's size in pixels, by URL; needed only for percentages,
            ``right``/``bottom``/``center`` and ``background-size``
        :param page_url: what relative URLs in an inline style are joined to (else ``base_url``)
        :raises SpriteCssError: when the CSS gives no usable rectangle
        """
        element = as_element(element)
        values, ignored, matched = self._cascade(element, page_url)
        why_not = f"; ignored: {'; '.join(ignored)}" if ignored else ""
        if not matched:
            raise SpriteCssError(f"no style rule or inline style applies to #{element.id}")
        if "position-x" not in values and "position-y" not in values:
            raise SpriteCssError(f"nothing gives #{element.id} a background-position{why_not}")
        for value in values.values():
            if isinstance(value, _Unsupported):
                raise SpriteCssError(f"#{element.id}: {value}")
        images: list[_Image] = values.get("image") or [_Image(None)]
        layer = next((i for i, image in enumerate(images) if image.url), 0)
        image = images[layer]
        sheet_url = image.url or default_sheet_url

        def in_layer(name: str, initial: object) -> Any:
            """A layered longhand's value for the sheet's layer (lists repeat to the layer count)."""
            layers = values.get(name) or [initial]
            return layers[layer % len(layers)]

        axis_x = in_layer("position-x", _Axis(False, _Percent(0.0)))
        axis_y = in_layer("position-y", _Axis(False, _Percent(0.0)))
        size = in_layer("size", ("auto", "auto"))
        box_w = values.get("width") or default_box[0]
        box_h = values.get("height") or default_box[1]
        sheet_size = _size_of(sheet_url, sheet_sizes) if sheet_url else None
        try:
            return _rectangle(element.id, sheet_url, image.resolution, sheet_size, (box_w, box_h),
                              size, axis_x, axis_y)
        except SpriteCssError as error:
            raise SpriteCssError(f"{error}{why_not}") from None


def _rectangle(css_id: str, sheet_url: str | None, resolution: float, sheet_size: tuple[int, int] | None,
               box: tuple[float, float], size: tuple[Any, ...], axis_x: _Axis, axis_y: _Axis) -> SpriteRef:
    """Turn the computed background into a rectangle in sheet pixels."""
    needs_size = size != ("auto", "auto") or any(a.from_end or _percent_of(a.offset) for a in (axis_x, axis_y))
    if needs_size and sheet_size is None:
        raise SpriteCssError(f"#{css_id}: its position or background-size needs the sheet's size, which is not known")
    if sheet_size is None:
        scale = (resolution, resolution)  # sheet pixels per displayed pixel
        shown = (0.0, 0.0)  # unused: every offset is a plain start-edge length
    else:
        shown = _shown_size(sheet_size, resolution, box, size)
        if not (shown[0] > 0 and shown[1] > 0):
            raise SpriteCssError(f"#{css_id}: background-size makes the sheet empty")
        scale = (sheet_size[0] / shown[0], sheet_size[1] / shown[1])

    def offset(axis: _Axis, box_length: float, shown_length: float) -> float:
        free = box_length - shown_length  # percentages are of the space the image can move in
        length = 0.0 if isinstance(axis.offset, _Percent) else axis.offset.px
        value = length + _percent_of(axis.offset) / 100 * free
        return free - value if axis.from_end else value

    x = -offset(axis_x, box[0], shown[0]) * scale[0]
    y = -offset(axis_y, box[1], shown[1]) * scale[1]
    w, h = box[0] * scale[0], box[1] * scale[1]
    return SpriteRef(css_id, sheet_url, _pixel(x), _pixel(y), _pixel(w), _pixel(h))


def _percent_of(offset: _Length | _Percent | _Sum) -> float:
    """The percentage part of an offset (0 for a plain length)."""
    if isinstance(offset, _Percent):
        return offset.value
    return offset.percent if isinstance(offset, _Sum) else 0.0


def _shown_size(sheet_size: tuple[int, int], resolution: float, box: tuple[float, float],
                size: tuple[Any, ...]) -> tuple[float, float]:
    """The sheet's displayed size after ``background-size`` (CSS Backgrounds 3, 3.9)."""
    natural_w, natural_h = sheet_size[0] / resolution, sheet_size[1] / resolution
    width, height = size
    if width in ("cover", "contain"):
        pick = max if width == "cover" else min
        factor = pick(box[0] / natural_w, box[1] / natural_h)
        return natural_w * factor, natural_h * factor

    def length(value: _SizeValue, box_length: float) -> float | None:
        if isinstance(value, _Length):
            return value.px
        if isinstance(value, _Percent):
            return value.value / 100 * box_length
        return None

    shown_w, shown_h = length(width, box[0]), length(height, box[1])
    if shown_w is None and shown_h is None:
        return natural_w, natural_h
    if shown_w is None:
        assert shown_h is not None
        return shown_h * natural_w / natural_h, shown_h
    if shown_h is None:
        return shown_w, shown_w * natural_h / natural_w
    return shown_w, shown_h


def same_resource(url: str | None, other: str | None) -> bool:
    """Whether two URLs name the same file, whatever their scheme (``//host/x`` = ``https://host/x``)."""
    if url is None or other is None:
        return url == other
    return urlsplit(url)[1:4] == urlsplit(other)[1:4]


def _size_of(url: str, sizes: Mapping[str, tuple[int, int]] | None) -> tuple[int, int] | None:
    if not sizes:
        return None
    if url in sizes:
        return sizes[url]
    return next((size for known, size in sizes.items() if same_resource(known, url)), None)


def _pixel(value: float) -> int:
    return int(round(value)) + 0  # + 0 turns -0 into 0


def as_element(element: ElementLike) -> Element:
    """An :class:`Element` from an element, an ``(id, classes)`` pair or a bare id."""
    if isinstance(element, Element):
        return element
    if isinstance(element, str):
        return Element(element)
    css_id, classes = element
    classes = classes.split() if isinstance(classes, str) else tuple(classes)
    return Element(css_id, tuple(classes))


def resolve_sprites(
    css: str | Stylesheet,
    base_url: str,
    elements: Iterable[ElementLike],
    *,
    default_sheet_url: str | None = None,
    sheet_sizes: Mapping[str, tuple[int, int]] | None = None,
    page_url: str | None = None,
    default_box: tuple[int, int] = DEFAULT_BOX,
) -> SpriteResolution:
    """Resolve many elements at once: what a spider calls with the page's CSS and its icon spans.

    ``elements`` are :class:`Element` s or ``(id, classes)`` pairs as read from the HTML.
    """
    sheet = css if isinstance(css, Stylesheet) else Stylesheet(css, base_url)
    refs: dict[str, SpriteRef] = {}
    problems: dict[str, str] = {}
    for item in elements:
        element = as_element(item)
        try:
            refs[element.id] = sheet.resolve(
                element, default_sheet_url=default_sheet_url, sheet_sizes=sheet_sizes, page_url=page_url,
                default_box=default_box,
            )
        except SpriteCssError as why:
            problems[element.id] = str(why)
    return SpriteResolution(refs, problems)


# --- what a browser computed -----------------------------------------------------------------------
@dataclass(frozen=True)
class ComputedIcon:
    """One icon element as a browser shows it: ``getComputedStyle`` values and the element's box.

    This is what ``scrapy crawl isaac_wiki -a render=browser`` reads from the rendered page, so CSS
    that a script adds after load counts as well as the stylesheets'. Computed values are already
    resolved by the browser: positions are px, % or ``calc(% ± px)`` pairs, sizes px, % or keywords.
    """

    id: str
    background_image: str
    background_position: str
    background_size: str = "auto"
    width: float = DEFAULT_BOX[0]  # offsetWidth
    height: float = DEFAULT_BOX[1]  # offsetHeight


def _computed_offset(term: ast.Node) -> _Length | _Percent | _Sum:
    """A computed position term: ``-32px``, ``0``, ``5.26316%`` or ``calc(100% - 10px)``."""
    if term.type == "function" and term.lower_name == "calc":
        percent = px = 0.0
        sign = 1.0
        for part in (t for t in term.arguments if t.type not in ("whitespace", "comment")):
            if part.type == "literal" and part.value in ("+", "-"):
                sign = 1.0 if part.value == "+" else -1.0
                continue
            value = _length_percent(part) if part.type != "function" else None
            if value is None:
                raise _Unsupported(f"calc({tinycss2.serialize(term.arguments)}) is not a sum of % and px")
            if isinstance(value, _Percent):
                percent += sign * value.value
            else:
                px += sign * value.px
            sign = 1.0
        return _Sum(percent, px)
    value = _length_percent(term)
    if value is None:
        raise _Invalid(f"computed position term {tinycss2.serialize([term])!r} is not understood")
    return value


def _computed_position(terms: Sequence[ast.Node]) -> tuple[_Axis, _Axis]:
    """One layer of a computed ``background-position``: two offsets from the top left corner.

    A browser that keeps edge keywords in computed values (``right 10px top 0px``) is read as the
    specified form is.
    """
    if len(terms) == 2 and not any(t.type == "ident" for t in terms):
        return _Axis(False, _computed_offset(terms[0])), _Axis(False, _computed_offset(terms[1]))
    return _parse_position(terms)


def sprite_from_computed(
    icon: ComputedIcon,
    *,
    page_url: str = "",
    sheet_sizes: Mapping[str, tuple[int, int]] | None = None,
) -> SpriteRef:
    """The sheet and rectangle (sheet pixels) that a browser's computed background shows.

    The same arithmetic as :meth:`Stylesheet.resolve`, from values the browser has already
    cascaded: the first layer with an image is the sheet's.

    :param page_url: what a relative ``url()`` is joined to (browsers mostly report absolute URLs)
    :param sheet_sizes: each sheet's size in pixels, by URL; needed for percentages and ``background-size``
    :raises SpriteCssError: when the computed values give no usable rectangle
    """
    def layers(value: str) -> list[list[ast.Node]]:
        return _layers(tinycss2.parse_component_value_list(value or ""))

    try:
        images = cast("list[_Image]", _longhands(
            "background-image", tinycss2.parse_component_value_list(icon.background_image or "none"), page_url)["image"])
        positions = [_computed_position(layer) for layer in layers(icon.background_position)]
        sizes = [_parse_size(layer) for layer in layers(icon.background_size or "auto")]
    except _Invalid as why:
        raise SpriteCssError(f"#{icon.id}: {why}") from None
    layer = next((i for i, image in enumerate(images) if image.url), None)
    if layer is None:
        raise SpriteCssError(f"#{icon.id}: the browser shows no background image on it")
    if not positions:
        raise SpriteCssError(f"#{icon.id}: the browser reports no background-position")
    if not (icon.width > 0 and icon.height > 0):
        raise SpriteCssError(f"#{icon.id}: the element has no box ({icon.width}x{icon.height}); is it displayed?")
    image = images[layer]
    axis_x, axis_y = positions[layer % len(positions)]
    size = sizes[layer % len(sizes)] if sizes else ("auto", "auto")
    sheet_size = _size_of(image.url, sheet_sizes) if image.url else None
    return _rectangle(icon.id, image.url, image.resolution, sheet_size, (icon.width, icon.height), size, axis_x, axis_y)


def first_image_url(background_image: str, base_url: str = "") -> str | None:
    """The URL of the first image in a (computed) ``background-image`` value, or None."""
    try:
        images = _longhands("background-image", tinycss2.parse_component_value_list(background_image or "none"),
                            base_url)["image"]
    except _Invalid:
        return None
    return next((image.url for image in images if image.url), None)


def resolve_computed(
    icons: Iterable[ComputedIcon],
    *,
    page_url: str = "",
    sheet_sizes: Mapping[str, tuple[int, int]] | None = None,
) -> SpriteResolution:
    """:func:`sprite_from_computed` for many icons: a rectangle for each that has one, a reason for the rest."""
    refs: dict[str, SpriteRef] = {}
    problems: dict[str, str] = {}
    for icon in icons:
        try:
            refs[icon.id] = sprite_from_computed(icon, page_url=page_url, sheet_sizes=sheet_sizes)
        except SpriteCssError as why:
            problems[icon.id] = str(why)
    return SpriteResolution(refs, problems)
