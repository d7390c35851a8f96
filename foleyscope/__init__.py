"""foleyscope: a fast HunyuanVideo-Foley-compatible engine and a doctor for slow Foley inference."""

__version__ = "0.1.0"
