"""Brain-tumour MRI classification: a ResNet-50 transfer-learning library.

The small public API::

    from core import load_classifier
    clf = load_classifier("assets/models/default")   # a checkpoint file or its directory
    clf.classes                                       # ['glioma', 'meningioma', 'notumor', 'pituitary']
    clf.predict_proba([pil_image, ...])               # array (n, len(clf.classes))
"""

__all__ = ["CLASSES", "Classifier", "load_classifier"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """The public names, imported when first used: ``import core.review`` (the review database, which a worker
    process opens on its own) then does not load torch."""
    if name == "CLASSES":
        from core.data import CLASSES

        return CLASSES
    if name in ("Classifier", "load_classifier"):
        from core import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'core' has no attribute {name!r}")
