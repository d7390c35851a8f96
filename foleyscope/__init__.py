"""foleyscope: a fast HunyuanVideo-Foley-compatible engine and a doctor for slow Foley inference."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`foleyscope.diagnose` without importing torch at package import."""
    if name == "diagnose":
        from foleyscope.doctor.api import diagnose

        return diagnose
    raise AttributeError(f"module 'foleyscope' has no attribute {name!r}")
