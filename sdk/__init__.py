"""yoloworld-sdk: fine-tune, export and deploy YOLO-World. Importing ``sdk`` never imports torch."""

from .backends.base import RuntimeOptions
from .detections import Detections
from .detector import Detector
from .errors import CheckpointError, ImageError, VocabularyError, YoloWorldError
from .preprocess import LetterboxInfo, letterbox, preprocess
from .settings import DetectorSettings
from .vocabulary import Vocabulary, read_class_texts

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "Detections", "Detector", "DetectorSettings", "ImageError", "LetterboxInfo", "RuntimeOptions",
    "Vocabulary", "VocabularyError", "YoloWorldError", "__version__", "letterbox", "preprocess", "read_class_texts",
]
