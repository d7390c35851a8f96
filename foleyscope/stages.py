"""The pipeline's stage names, defined once for the engine, the doctor and the server."""

from enum import StrEnum


class Stage(StrEnum):
    LOAD = "load"
    DECODE = "decode"
    VISUAL_ENCODE = "visual_encode"
    SYNC_ENCODE = "sync_encode"
    TEXT_ENCODE = "text_encode"
    DENOISE = "denoise"
    VAE_DECODE = "vae_decode"
    POSTPROCESS = "postprocess"


STAGES: tuple[str, ...] = tuple(s.value for s in Stage)
