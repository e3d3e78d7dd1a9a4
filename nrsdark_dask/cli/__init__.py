"""The ``nrsdark`` command: :mod:`.commands` (the parser and one function per subcommand),
:mod:`.run` (``nrsdark run``: the stages of one TOML file, each through its command) and
:mod:`.main` (parse, run, and map what was raised to the exit status)."""
