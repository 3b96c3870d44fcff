"""Made-up probabilities for the preview's chat replies: fixed, so shaded replies draw the
same screen on every run (pane snapshots, screenshots).

Each word of the reply is one token; how sure the "model" was of it cycles through a fixed
list that visits every shading band, and the alternatives it weighed are common words.
"""

from __future__ import annotations

import math

from gemma_core.model.token_choices import Alternative, ChoiceBuilder, TokenChoice

SURENESS = (0.93, 0.46, 0.71, 0.08, 0.27, 0.58, 0.031, 0.86, 0.19, 0.64, 0.012, 0.38)
OTHER_WORDS = (" the", " my", " a", " thy", " and", " good", " lord")


def preview_choices(words: list[str], top_n: int) -> list[TokenChoice]:
    """One choice per word (each word a token after a space, as ``PreviewChatJob`` gives it)."""
    builder, choices = ChoiceBuilder(), []
    for i, word in enumerate(words):
        token = (" " + word).encode()
        sure = SURENESS[i % len(SURENESS)]
        others = [w.encode() for w in OTHER_WORDS if w.encode() != token]
        # The rest of the mass, halving from one alternative to the next.
        weighed = [(token, sure)] + [(other, (1 - sure) / 2 ** (n + 1)) for n, other in enumerate(others)]
        weighed.sort(key=lambda item: -item[1])
        likeliest = [Alternative(t, math.log(p)) for t, p in weighed[:top_n]]
        choices.append(builder.choice(token, math.log(sure), likeliest))
    return choices
