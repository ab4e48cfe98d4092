"""docs/flags.md, the flag reference, says what each chapter's --help says."""

import re
from pathlib import Path

import pytest

import cvae_embedding
import cvae_onehot
import denoising_vae

FLAGS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "flags.md"


def help_flags(chapter, capsys):
    """Every flag `--help` lists."""
    with pytest.raises(SystemExit):
        chapter.parse_settings(["--help"])
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", capsys.readouterr().out))
    return flags - {"--help", "--no-stream-from-disk", "--no-mixed-precision", "--no-tensorboard"}


def page_rows(chapter):
    """{flag: default cell} of the chapter's table in docs/flags.md."""
    section = FLAGS_PAGE.read_text().split(f"## {chapter.__name__}.py\n")[1].split("\n## ")[0]
    return {row[0].strip(" `"): row[1].strip(" `") for row in
            (line.strip("|").split(" | ") for line in section.splitlines()
             if line.startswith("| `--"))}


@pytest.mark.parametrize("chapter", [cvae_onehot, cvae_embedding, denoising_vae],
                         ids=lambda c: c.__name__)
def test_the_flag_reference_lists_every_flag_with_its_default(chapter, capsys):
    rows = page_rows(chapter)
    assert set(rows) == help_flags(chapter, capsys)
    defaults = vars(chapter.parse_settings([]))
    for flag in rows:
        default = defaults[flag[2:].replace("-", "_")]
        if isinstance(default, (int, float, str)) and not isinstance(default, bool) and default:
            assert rows[flag] == str(default), flag
