"""Brain-tumour MRI classification: a ResNet-50 transfer-learning library.

The small public API::

    from core import load_classifier
    clf = load_classifier("assets/models/default")   # a checkpoint file or its directory
    clf.classes                                       # ['glioma', 'meningioma', 'notumor', 'pituitary']
    clf.predict_proba([pil_image, ...])               # array (n, len(clf.classes))
"""

from core.data import CLASSES
from core.inference import Classifier, load_classifier

__all__ = ["CLASSES", "Classifier", "load_classifier"]
__version__ = "0.1.0"
