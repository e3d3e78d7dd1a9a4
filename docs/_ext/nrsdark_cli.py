"""Docs made from the code when the docs are built: ``nrsdark-help``, a command's ``--help``
text from the parser itself (:func:`nrsdark_dask.cli.commands.build_parser`), and
``nrsdark-flags``, the flag table from the flag rows
(:func:`nrsdark_dask.reduction.tables.flags_markdown`), so the pages show what the installed code
does."""

from __future__ import annotations

import os

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective


class NrsdarkHelp(SphinxDirective):
    required_arguments = 1

    def run(self):
        from nrsdark_dask.cli.commands import build_parser

        os.environ["COLUMNS"] = "96"  # argparse wraps at the terminal width
        parser = build_parser()
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        name = self.arguments[0]
        if name not in sub.choices:
            raise self.error(f"nrsdark has no command {name!r}")
        text = sub.choices[name].format_help()
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


class NrsdarkFlags(SphinxDirective):
    """The flag table, parsed as the page's own Markdown (MyST)."""

    def run(self):
        from nrsdark_dask.reduction.tables import flags_markdown

        node = nodes.container()
        self.state.nested_parse(StringList(flags_markdown().splitlines(), source="flags"),
                                self.content_offset, node)
        return node.children


def setup(app):
    app.add_directive("nrsdark-help", NrsdarkHelp)
    app.add_directive("nrsdark-flags", NrsdarkFlags)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
