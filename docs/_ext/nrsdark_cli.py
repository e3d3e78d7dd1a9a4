"""``nrsdark-help`` directive: a command's ``--help`` text, generated from the parser itself
(:func:`nrsdark_dask.commands.build_parser`), so each command page shows the options the
installed code has."""

from __future__ import annotations

import os

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


class NrsdarkHelp(SphinxDirective):
    required_arguments = 1

    def run(self):
        from nrsdark_dask.commands import build_parser

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


def setup(app):
    app.add_directive("nrsdark-help", NrsdarkHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
