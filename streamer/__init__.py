"""voiceprint streamer: real-time speaker identification for meeting rooms."""

__all__ = ["__version__"]

__version__ = "0.1.0"
