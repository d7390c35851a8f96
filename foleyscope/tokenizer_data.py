"""A tiny RoBERTa-style byte-level BPE tokenizer for the `tiny` preset, built at runtime.

Why built, not shipped: the demo and the tests must run with no downloaded files, and a tokenizer made
from the corpus below by the pinned `tokenizers` library is the same every time (checked by a test),
needs no generator script to keep in sync with a data folder, and takes a few milliseconds. It follows
CLAP's tokenizer (laion/larger_clap_general is RoBERTa's byte-level BPE): the same special tokens and
ids (<s>=0, <pad>=1, </s>=2, <unk>=3), every byte representable, <s> ... </s> around each prompt, and it
is a transformers `RobertaTokenizer`, so the engine calls it exactly as it calls the real one.
"""

from __future__ import annotations

import functools
import json

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
VOCAB_SIZE = 600

# Short Foley descriptions: enough text for a few hundred merges of common sub-words.
CORPUS = """\
footsteps on gravel, footsteps on a wooden floor, high heels on concrete, running on wet pavement
a door creaks open, a door slams shut, a key turns in a lock, a drawer slides closed
rain on a tin roof, heavy rain and distant thunder, wind through trees, leaves rustling in the wind
waves crashing on the shore, a stream of water over rocks, water dripping into a sink, a splash
a dog barks twice, a cat meows, birds chirping in the morning, crows cawing, a horse galloping
glass shatters on the floor, a plate breaks, metal clanging, a hammer hitting a nail, sawing wood
a car engine starts, tires screeching, a motorcycle passes by, a train on the tracks, a car horn
people talking in a crowded room, a baby crying, children laughing, applause from an audience
a fire crackling, a match being struck, sizzling food in a pan, boiling water, a kettle whistles
typing on a keyboard, a mouse click, paper rustling, a page turning, a pen writing on paper
a ball bouncing on the court, a tennis racket hitting a ball, skateboard wheels rolling, a swing
an explosion in the distance, a gunshot echoes, fireworks popping, a whoosh of air, a soft thud
noisy, harsh, distorted, muffled, silence, quiet hum, low rumble, sharp click, metallic ring
the sound of footsteps and rain, the sound of a door and wind, the sound of water and birds
"""


@functools.lru_cache(maxsize=1)
def _trained() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
    return tok.get_vocab(), merges


def tiny_tokenizer(model_max_length: int = 512):
    """A fresh transformers RobertaTokenizer over the tiny vocabulary (vocab size `len(tok)`)."""
    from transformers import RobertaTokenizer

    vocab, merges = _trained()
    return RobertaTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length)
