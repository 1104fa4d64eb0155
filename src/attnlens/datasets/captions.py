"""Image-caption pairs built offline from labelled image sets (a stand-in for COCO / Visual
Genome, which do not install here).

Each class has a name and several caption templates; an image's *matching* captions are its
class's, every other class's captions do not match. The captions are short and generic on
purpose: matching them needs the class, not the picture's details, which is all a labelled
set can supervise.
"""

from __future__ import annotations

import numpy as np

from attnlens._validation import check_option

CLASS_NAMES = {
    "mnist": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "digits": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "fashion_mnist": ("t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal",
                      "shirt", "sneaker", "bag", "ankle boot"),
}
DIGIT_TEMPLATES = (
    "a handwritten digit {name}.",
    "the number {name}, written by hand.",
    "a black and white picture of the digit {name}.",
    "someone wrote a {name} here.",
    "a small grey image showing a {name}.",
    "this is the numeral {name}.",
)
FASHION_TEMPLATES = (
    "a photo of a {name}.",
    "a grey picture of a {name}.",
    "a product image showing a {name}.",
    "this is a {name}.",
    "a small low resolution {name}.",
    "a {name} on a black background.",
)


def caption_bank(dataset: str) -> tuple[list[str], np.ndarray]:
    """All captions of a dataset's classes and the class of each: (texts, labels)."""
    check_option(dataset, "dataset", tuple(CLASS_NAMES))
    templates = FASHION_TEMPLATES if dataset == "fashion_mnist" else DIGIT_TEMPLATES
    texts, labels = [], []
    for label, name in enumerate(CLASS_NAMES[dataset]):
        for template in templates:
            texts.append(template.format(name=name))
            labels.append(label)
    return texts, np.asarray(labels, dtype=np.int64)


def matching_pairs(image_labels: np.ndarray, caption_labels: np.ndarray,
                   rng: np.random.Generator, positive_fraction: float = 0.5
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One caption per image: a matching one with probability ``positive_fraction``, else a
    caption of another class. Returns (caption index (n,), match (n,) 0/1)."""
    n = len(image_labels)
    match = (rng.random(n) < positive_fraction).astype(np.int64)
    out = np.empty(n, dtype=np.int64)
    for i, (label, m) in enumerate(zip(image_labels, match, strict=True)):
        pool = np.flatnonzero((caption_labels == label) == bool(m))
        out[i] = rng.choice(pool)
    return out, match


def masked_templates(dataset: str, mask_token: str) -> list[str]:
    """The dataset's caption templates with the class name replaced by ``mask_token``
    (one text per template): the inputs of masked language modelling, where the class word
    can only be recovered from the image."""
    check_option(dataset, "dataset", tuple(CLASS_NAMES))
    templates = FASHION_TEMPLATES if dataset == "fashion_mnist" else DIGIT_TEMPLATES
    return [template.format(name=mask_token) for template in templates]
