"""The node pack's key-quote filter (`PromptKeyFilter`, and `strip_key_quotes` on its encoders).

JSON-style prompts make the model draw their quoted keys as visible text. The pack rewrites
`"key":` to `key:` and then deletes every remaining double quote, values' quotes included (its
docstring promises that values keep theirs; the code, which is what runs, removes them). The first
step only deletes quotes that the second deletes anyway, so the filter amounts to: no `"` left.
"""

from __future__ import annotations


def strip_key_quotes(text: str) -> str:
    return text.replace('"', "")
