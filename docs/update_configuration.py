"""Regenerate the tables of docs/configuration.md from mdgan.config.config_reference()."""

from pathlib import Path

from mdgan.config import config_reference

BEGIN, END = "<!-- BEGIN GENERATED -->\n", "<!-- END GENERATED -->"

path = Path(__file__).with_name("configuration.md")
text = path.read_text(encoding="utf-8")
head, rest = text.split(BEGIN, 1)
_, tail = rest.split(END, 1)
path.write_text(head + BEGIN + config_reference() + "\n" + END + tail, encoding="utf-8")
print(f"updated {path}")
